"""conveyor: durable background jobs that people can pause, resume, cancel, retry and watch."""

from conveyor.aio import AsyncConveyor
from conveyor.app import Conveyor, EnqueueRequest
from conveyor.context import AsyncJobContext, JobContext, JobInterrupt
from conveyor.errors import (
    ConfigurationError,
    ConveyorError,
    DuplicateJob,
    FailJob,
    InvalidParams,
    InvalidStateError,
    JobNotCompleted,
    JobNotFound,
    PayloadTooLarge,
    StoreError,
    UnknownJobType,
    WaitTimeout,
    WorkerNotFound,
)
from conveyor.events import (
    JobCancelled,
    JobCompleted,
    JobCreated,
    JobEvent,
    JobFailed,
    JobPaused,
    JobProgressed,
    JobRequested,
    JobResumed,
    JobRetried,
    JobSnoozed,
    JobStarted,
)
from conveyor.joblogs import JobLogLimits
from conveyor.lifecycle import TRANSITIONS, JobState, JobStateMachine
from conveyor.model import HistoryEntry, Job, JobError, JobProgress, LogLine
from conveyor.presence import WorkerInfo, WorkerStatus
from conveyor.retention import Retention
from conveyor.retry import Backoff

__version__ = "0.1.0"

__all__ = [
    "TRANSITIONS",
    "AsyncConveyor",
    "AsyncJobContext",
    "Backoff",
    "ConfigurationError",
    "Conveyor",
    "ConveyorError",
    "DuplicateJob",
    "EnqueueRequest",
    "FailJob",
    "HistoryEntry",
    "InvalidParams",
    "InvalidStateError",
    "Job",
    "JobCancelled",
    "JobCompleted",
    "JobContext",
    "JobCreated",
    "JobError",
    "JobEvent",
    "JobFailed",
    "JobInterrupt",
    "JobLogLimits",
    "JobNotCompleted",
    "JobNotFound",
    "JobPaused",
    "JobProgress",
    "JobProgressed",
    "JobRequested",
    "JobResumed",
    "JobRetried",
    "JobSnoozed",
    "JobStarted",
    "JobState",
    "JobStateMachine",
    "LogLine",
    "PayloadTooLarge",
    "Retention",
    "StoreError",
    "UnknownJobType",
    "WaitTimeout",
    "WorkerInfo",
    "WorkerNotFound",
    "WorkerStatus",
]

"""Workers: the loop, the per-job executor, heartbeats and leases, the reaper."""

from conveyor.worker.reaper import ReapResult, reap
from conveyor.worker.worker import Worker, WorkerStats

__all__ = ["ReapResult", "Worker", "WorkerStats", "reap"]

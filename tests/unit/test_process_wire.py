"""What a process-pool worker and its children send each other: JSON, checked on arrival."""

from __future__ import annotations

import json
import multiprocessing
from datetime import UTC, datetime

import pytest

from conveyor import Job, JobState
from conveyor.model import JobError, JobProgress
from conveyor.worker import wire


def test_a_job_crosses_as_json_and_comes_back_equal() -> None:
    at = datetime(2026, 11, 30, 12, 0, 1, 500, tzinfo=UTC)
    job = Job(id="0b6c2f5e-9a7d-4c1e-8f3a-2d4b6c8e0f12", state=JobState.RUNNING, created_at=at,
              started_at=at, job_type="files.process", params={"paths": ["a.csv"], "n": 2},
              attempt=1, progress=JobProgress(3, 10, {"next": 3}),
              error=JobError("RuntimeError", "boom", "Traceback ..."), timeout=2.5,
              backoff={"base": 1.0}, pause_requested=True, worker_id="w", lease_token="t",
              lease_expires_at=at)
    message = json.loads(json.dumps(wire.job_to_wire(job)))
    assert wire.job_from_wire(message) == job


def test_what_is_not_a_message_is_refused() -> None:
    mine, theirs = multiprocessing.Pipe()
    with mine, theirs:
        theirs.send_bytes(b"[1, 2]")
        with pytest.raises(ValueError, match="not a message"):
            wire.receive(mine)
        theirs.send_bytes(b"\x80 not json")
        with pytest.raises(ValueError):
            wire.receive(mine)
        wire.send(theirs, {"op": "progress", "current": 1})
        assert wire.receive(mine) == {"op": "progress", "current": 1}
    assert wire.error_from_wire("nonsense").type == "ProtocolError"
    assert wire.error_from_wire({"type": "X" * 500, "message": 7}) == JobError("X" * 200, "7")

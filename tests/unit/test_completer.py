"""The batch completer's hand-off with the worker's loop: while the loop says it will take the
gathered completions into its next claim, the completer's thread leaves them to it; once the
loop says it will not (it waits for new work, backs off, or stops), the thread writes them.
Real threads; a fake engine records what the thread writes."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from conveyor import transitions
from conveyor.changes import Change, Lease
from conveyor.context import Execution
from conveyor.engine import Engine
from conveyor.lifecycle import JobState
from conveyor.model import Job
from conveyor.worker.completer import HANDOFF, Completer
from conveyor.worker.executor import OutcomeKind

WAIT = 10.0


class _Engine:
    """What the completer's thread writes (every change lands)."""

    def __init__(self) -> None:
        self.written: list[list[str]] = []
        self.wrote = threading.Event()

    def apply_many(self, changes: Sequence[Change]) -> list[Job | None]:
        self.written.append([c.job_id for c in changes])
        self.wrote.set()
        return [cast(Job, object()) for _ in changes]


def _execution(n: int) -> Execution:
    job = Job(id=f"00000000-0000-4000-8000-{n:012d}", job_type="t", state=JobState.RUNNING,
              run_at=datetime.now(UTC), lease_token=f"token-{n}")
    return Execution(job, Lease(job.id, f"token-{n}", 0), cast(Any, None))


def _submit(completer: Completer, n: int) -> None:
    x = _execution(n)
    completer.submit(x, transitions.complete(x.lease, None, "w"))


def _completer(engine: _Engine, counted: list[OutcomeKind], **options: Any) -> Completer:
    completer = Completer(cast(Engine, engine), counted.append, retry_for=1.0, **options)
    completer.start()
    return completer


@contextlib.contextmanager
def _running(**options: Any) -> Iterator[tuple[Completer, _Engine, list[OutcomeKind]]]:
    """A started completer over a fake engine, and what it counted; closed on the way out."""
    engine, counted = _Engine(), list[OutcomeKind]()
    completer = _completer(engine, counted, **options)
    try:
        yield completer, engine, counted
    finally:
        completer.close()


def test_a_loop_that_comes_back_takes_the_completions_itself() -> None:
    with _running() as (completer, engine, counted):
        completer.loop_takes(True)
        _submit(completer, 1)
        _submit(completer, 2)
        time.sleep(20 * HANDOFF)  # longer than the thread would have waited for the loop
        batch = completer.take()
        assert [c.execution.job.id[-1] for c in batch] == ["1", "2"]
        assert engine.written == []
        completer.recorded(batch, [cast(Job, object()), None])
        assert counted == [OutcomeKind.COMPLETED, OutcomeKind.LOST]
        assert not completer.busy
    assert engine.written == []


def test_completions_gathered_while_the_loop_takes_are_written_once_it_stops_taking() -> None:
    with _running() as (completer, engine, counted):
        completer.loop_takes(True)
        _submit(completer, 1)
        completer.loop_takes(False)  # e.g. the loop now waits for new work
        assert engine.wrote.wait(WAIT)
        assert engine.written == [["00000000-0000-4000-8000-000000000001"]]
        assert completer.take() == []
    assert counted == [OutcomeKind.COMPLETED]


def test_the_thread_writes_when_the_loop_does_not_come_back() -> None:
    with _running() as (completer, engine, _):
        completer.loop_takes(False)
        _submit(completer, 3)
        assert engine.wrote.wait(WAIT)
        assert engine.written == [["00000000-0000-4000-8000-000000000003"]]


def test_with_linger_the_thread_gathers_whatever_the_loop_says() -> None:
    with _running(linger=0.01) as (completer, engine, counted):
        completer.loop_takes(True)  # ignored: the thread gathers for `linger` on purpose
        _submit(completer, 4)
        assert engine.wrote.wait(WAIT)
        assert completer.take() == []
    assert counted == [OutcomeKind.COMPLETED]


def test_close_writes_what_the_loop_left() -> None:
    engine, counted = _Engine(), list[OutcomeKind]()
    completer = _completer(engine, counted)
    completer.loop_takes(True)
    _submit(completer, 5)
    completer.close()
    assert engine.written == [["00000000-0000-4000-8000-000000000005"]]
    assert counted == [OutcomeKind.COMPLETED]

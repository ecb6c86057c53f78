"""The PostgreSQL store writes a batch of same-shaped changes as one statement."""

from __future__ import annotations

from conveyor import transitions
from conveyor.changes import Change, Lease
from conveyor.model import JobProgress
from conveyor.stores.postgres.changes import compile_batch, shape_of
from conveyor.stores.postgres.store import _Q


def _complete(n: int, progress: JobProgress | None = None) -> Change:
    return transitions.complete(Lease(f"job-{n}", f"token-{n}", n % 2), {"n": n}, "w",
                                progress=progress)


def test_same_shaped_changes_become_one_statement_with_a_column_per_varying_value() -> None:
    changes = [_complete(n) for n in range(3)]
    assert len({shape_of(c) for c in changes}) == 1
    compiled = compile_batch(_Q["apply_change_batch"], changes)
    assert compiled is not None
    _, params = compiled
    assert params["a_job_id"] == ["job-0", "job-1", "job-2"]
    arrays = {name: values for name, values in params.items() if name.startswith("a_")}
    assert ["token-0", "token-1", "token-2"] in arrays.values()  # each row's own lease
    assert [0, 1, 0] in arrays.values()  # and attempt
    assert params["a_actor"] == ["w", "w", "w"]


def test_changes_of_different_shapes_are_not_one_statement() -> None:
    plain, with_steps = _complete(1), _complete(2, progress=JobProgress(3, 4))
    assert shape_of(plain) != shape_of(with_steps)
    assert compile_batch(_Q["apply_change_batch"], [plain, with_steps]) is None

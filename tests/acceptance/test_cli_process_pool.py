"""``conveyor worker --pool process``: the command line runs its jobs in child processes."""

from __future__ import annotations

from collections.abc import Callable

from conveyor import Conveyor
from tests.acceptance.apps.sample import register
from tests.acceptance.cli_helpers import SAMPLE_APP, cli_on


def test_worker_with_a_process_pool_runs_the_jobs_in_children(
        db_url: str, make_app: Callable[..., Conveyor]) -> None:
    app = register(make_app())
    sums = [app.enqueue("math.add", {"a": i, "b": 1}) for i in range(2)]
    steps = app.enqueue("steps.run", {"steps": 3, "delay": 0})
    result = cli_on(db_url, "worker", "--app", SAMPLE_APP, "--burst", "-c", "1",
                    "--pool", "process", "--max-jobs-per-child", "3",
                    "--poll-interval", "0.05", "--heartbeat-interval", "1")
    assert result.exit_code == 0, result.output
    assert [app.get(j.id).result for j in sums] == [1, 2]
    done = app.get(steps.id)
    assert done.result == {"steps": 3, "resumed_from": 0}
    assert done.progress.last_checkpoint == {"next": 3}
    assert "Traceback" not in result.stderr


def test_max_jobs_per_child_without_a_process_pool_is_refused(db_url: str) -> None:
    result = cli_on(db_url, "worker", "--app", SAMPLE_APP, "--burst",
                    "--max-jobs-per-child", "5")
    assert result.exit_code != 0
    assert "max_jobs_per_child applies to pool='process' only" in result.output
    assert "Traceback" not in result.output
    bad = cli_on(db_url, "worker", "--app", SAMPLE_APP, "--pool", "fork")
    assert bad.exit_code == 2
    assert "fork" in bad.output

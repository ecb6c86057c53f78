"""The throughput benchmark's rounds (``bench.bench_throughput``): which runs a round takes in
which order, and how the table's figures come from the rounds. A ratio is each round's own
(a run beside the loop measured seconds before it), the median of the rounds: the point of
the rounds is that a loop measured minutes away from a run no longer sets its ratio. Only the
bookkeeping is tested: the measurements are replaced, and no time is measured."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from bench import bench_throughput as bt
from bench import loops
from bench.bench_throughput import Rate, Round, Sizes, Step, in_rounds, paired
from bench.procs import Target

SIZES = Sizes(jobs=50, pg_jobs=20, probes=1, single=10, pg_single=5, idle_seconds=0.1,
              rounds=3)


def _step(name: str, calls: list[tuple[int, str]], rate: float = 1.0) -> Step:
    def measure(n: int) -> Rate:
        calls.append((n, name))
        return Rate(rate)

    return (name, measure)


def test_groups_go_in_order_and_their_steps_reverse_every_other_round() -> None:
    calls: list[tuple[int, str]] = []
    groups = [[_step("loop a", calls), _step("loop b", calls)],
              [_step("1x4", calls), _step("4x1", calls)],
              [_step("pool", calls)]]
    rounds = in_rounds(groups, 3)
    assert calls == [
        (0, "loop a"), (0, "loop b"), (0, "1x4"), (0, "4x1"), (0, "pool"),
        (1, "loop b"), (1, "loop a"), (1, "4x1"), (1, "1x4"), (1, "pool"),
        (2, "loop a"), (2, "loop b"), (2, "1x4"), (2, "4x1"), (2, "pool")]
    assert [sorted(r) for r in rounds] == [["1x4", "4x1", "loop a", "loop b", "pool"]] * 3


def test_a_step_that_returns_none_is_left_out_of_its_round() -> None:
    rounds = in_rounds([[("loop", lambda n: Rate(100.0)),
                         ("odd only", lambda n: Rate(50.0) if n % 2 else None)]], 3)
    assert ["odd only" in r for r in rounds] == [False, True, False]
    assert paired(rounds, "odd only", "loop").ratio == 0.5


def _rounds(*pairs: tuple[float, float], cpu: float = math.nan) -> list[Round]:
    return [{"run": Rate(run, cpu), "loop": Rate(loop)} for run, loop in pairs]


def test_the_ratio_is_the_median_of_the_rounds_own_ratios() -> None:
    # medians alone: run 200 / loop 150 = 133 %, from rounds that did not run together
    figure = paired(_rounds((100, 100), (200, 400), (300, 150)), "run", "loop")
    assert (figure.per_second, figure.loop) == (200, 150)
    assert figure.ratio == 1.0
    assert (figure.low, figure.high) == (0.5, 2.0)


def test_one_slow_loop_does_not_set_the_ratio() -> None:
    # the loop stalled in one round of five: that round's ratio is an outlier, not the median
    figure = paired(_rounds((500, 520), (480, 500), (510, 150), (490, 510), (505, 500)),
                    "run", "loop")
    assert figure.ratio == pytest.approx(500 / 520)
    assert figure.high == pytest.approx(510 / 150)


def test_worker_cpu_is_the_median_of_the_rounds_that_measured_it() -> None:
    rounds = _rounds((1, 1), (1, 1), (1, 1))
    for figures, cpu in zip(rounds, (300.0, math.nan, 500.0), strict=True):
        figures["run"] = Rate(1.0, cpu)
    assert paired(rounds, "run", "loop").cpu_us == 400.0
    assert math.isnan(paired(_rounds((1, 1), (2, 2)), "run", "loop").cpu_us)


def test_only_rounds_that_measured_both_count() -> None:
    rounds = [*_rounds((100, 100), (300, 100)), {"loop": Rate(1.0)}, {"run": Rate(1.0)}]
    figure = paired(rounds, "run", "loop")
    assert (figure.per_second, figure.loop, figure.ratio) == (200, 100, 2.0)
    with pytest.raises(ValueError, match="no round"):
        paired(rounds, "run", "other loop")


class _Fake:
    """The measurements ``throughput_rounds`` takes, replaced: each call is recorded, and
    returns a rate made of its kind and its round's number."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.round = 0
        monkeypatch.setattr(loops, "sqlite_claim_complete", self.sqlite_loop)
        monkeypatch.setattr(loops, "pg_claim_complete", self.pg_loop)
        monkeypatch.setattr(loops, "sqlite_conveyor_worker_sql", self.sql_alone)
        monkeypatch.setattr(bt, "throughput", self.throughput)

    def sqlite_loop(self, folder: Path, jobs: int, processes: int, synchronous: str) -> float:
        self.calls.append(("loop", processes, jobs, synchronous))
        return 1000.0 * processes

    def pg_loop(self, url: str, schema: str, jobs: int, connections: int) -> float:
        self.calls.append(("loop", connections, jobs, schema))
        return 400.0

    def sql_alone(self, url: str, jobs: int, per_transaction: int) -> float:
        self.calls.append(("sql", per_transaction, jobs, url))
        return 100.0 * per_transaction

    def throughput(self, target: Target, processes: int, slots: int, jobs: int,
                   pool: str = "thread") -> Rate:
        self.calls.append((pool, processes, slots, jobs))
        return Rate(10.0 * processes + slots, 7.0)


def test_sqlite_rounds_pair_each_run_with_the_loops_of_its_round(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = _Fake(monkeypatch)
    rounds = bt.throughput_rounds(Target("SQLite", folder=tmp_path), SIZES)
    assert len(rounds) == 3
    every = ["1x4", "4x1", "loop 1", "loop 2", "sql 1", "sql 4"]
    assert [sorted(r) for r in rounds] == [every, sorted([*every, "pool"]), every]
    kinds = [call[:2] if call[0] != "thread" else (call[1], call[2]) for call in fake.calls]
    assert kinds[:6] == [("loop", 1), ("loop", 2), (1, 4), (4, 1), ("sql", 4), ("sql", 1)]
    # the second round reverses each group, and is the one with the process pool
    assert kinds[6:13] == [("loop", 2), ("loop", 1), (4, 1), (1, 4), ("process", 1),
                           ("sql", 1), ("sql", 4)]
    assert kinds[13:] == kinds[:6]
    assert {call[2] if call[0] == "loop" or call[0] == "sql" else call[3]
            for call in fake.calls} == {SIZES.jobs}
    # the SQL alone gets a database of its own in each round
    sql_files = [call[3] for call in fake.calls if call[0] == "sql"]
    assert len(set(sql_files)) == len(sql_files) == 6
    assert all(url.startswith(f"sqlite:///{tmp_path}/") for url in sql_files)


def test_postgres_rounds_run_one_loop_on_a_fresh_schema_each_round(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = _Fake(monkeypatch)
    target = Target("PostgreSQL", "postgresql://unused.invalid/bench", folder=tmp_path)
    sizes = replace(SIZES, jobs=SIZES.pg_jobs)
    rounds = bt.throughput_rounds(target, sizes)
    assert [sorted(r) for r in rounds] == [["1x4", "4x1", "loop"],
                                           ["1x4", "4x1", "loop", "pool"],
                                           ["1x4", "4x1", "loop"]]
    schemas = [call[3] for call in fake.calls if call[0] == "loop"]
    assert len(set(schemas)) == 3
    assert set(schemas) <= set(target.schemas)  # dropped by the target's cleanup
    assert not any(call[0] == "sql" for call in fake.calls)


def test_the_table_shows_medians_and_the_rounds_ratios(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    # three rounds: 1 x 4 at 50 % and 150 % of slow and fast loops, and 100 % in between
    rounds: list[Round] = [
        {"loop 1": Rate(1000.0), "loop 2": Rate(800.0), "1x4": Rate(500.0, 300.0),
         "4x1": Rate(400.0, 450.0), "sql 4": Rate(900.0),
         "sql 1": Rate(400.0)},
        {"loop 1": Rate(400.0), "loop 2": Rate(500.0), "1x4": Rate(600.0, 320.0),
         "4x1": Rate(300.0, 430.0), "pool": Rate(120.0), "sql 4": Rate(380.0),
         "sql 1": Rate(190.0)},
        {"loop 1": Rate(800.0), "loop 2": Rate(600.0), "1x4": Rate(800.0, 310.0),
         "4x1": Rate(350.0, 440.0), "sql 4": Rate(700.0),
         "sql 1": Rate(300.0)}]
    monkeypatch.setattr(bt, "throughput_rounds", lambda target, sizes: rounds)
    monkeypatch.setattr(bt, "pickup", lambda target, probes: [0.001, 0.002])
    monkeypatch.setattr(bt, "idle_cpu", lambda target, seconds: 0.0)
    monkeypatch.setattr(bt, "sqlite_wake", lambda: "inotify")
    monkeypatch.setattr(bt, "enqueue_rounds", lambda target, sizes: bt.EnqueueRates(
        (1.0, 1.0, 1.0, 1.0, 1.0), 1.0, 1.0))
    monkeypatch.setattr(bt, "sqlite_full", lambda sizes: ("FULL",))
    sections: dict[str, list[tuple[object, ...]]] = {
        "throughput": [], "latency": [], "idle": [], "enqueue": [], "sqlite_sync": []}
    bt.measure_store(Target("SQLite", folder=tmp_path), SIZES, sections)
    one_x_4, four_x_1, pool = sections["throughput"]
    # 1 x 4: ratios 50 %, 150 %, 100 %; jobs/s, CPU and loop each their own median
    assert one_x_4[2:] == ("600", "310", "claim+complete, 1 connection, WAL, NORMAL", "800",
                           "100% (50%-150%)", "700 (90%)")
    # 4 x 1 beside the 2-process loop (50 %, 60 %, 58 %), its floor beside the 1-process one
    assert four_x_1[2:] == ("350", "440", "the same, 2 processes", "600", "58% (50%-60%)",
                            "300 (40%)")
    # the process pool, in one round: its children's CPU is not counted
    assert pool[2:] == ("120", "-", "claim+complete, 1 connection, WAL, NORMAL", "400",
                        "30% (1 round)", "700 (90%)")
    assert sections["sqlite_sync"][0][1:3] == ("600", "800")

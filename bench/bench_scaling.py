"""Throughput against slots and against worker processes, on SQLite and PostgreSQL.

The same measurement as ``bench_throughput``'s (N no-op jobs enqueued first, then the workers
start; jobs/s from the first ``started_at`` to the last ``finished_at``), repeated for:

- one worker process with 1, 2, 4, 8 and 16 slots;
- 1, 2 and 4 worker processes of one slot each.

Writes the table into docs/benchmarks.md (``--docs``) and draws it (``--plot``, a PNG; needs
matplotlib, the ``bench`` extra: ``pip install -e '.[bench]'``). The machine's load average is
printed with the table, since on a shared machine it moves every figure.

    .venv/bin/python -m bench.bench_scaling [--quick] [--docs docs/benchmarks.md]
        [--plot docs/images/scaling.png]
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.bench_throughput import PG_ENV, throughput
from bench.common import bench_arguments, table, write_sections
from bench.procs import Target

SLOTS = (1, 2, 4, 8, 16)
PROCESSES = (1, 2, 4)
#: One curve: a store's name, then (x, jobs/s) points.
Curve = tuple[str, list[tuple[int, float]]]


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f}"


def sweep(target: Target, jobs: int) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """jobs/s of one process at each slot count, and of each process count at one slot."""
    by_slots = [(slots, throughput(target, 1, slots, jobs).per_second) for slots in SLOTS]
    by_procs = [(procs, throughput(target, procs, 1, jobs).per_second)
                for procs in PROCESSES]
    return by_slots, by_procs


def plot(path: Path, slots: list[Curve], procs: list[Curve], note: str) -> bool:
    """Draw both sweeps side by side as a PNG; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot drawn")
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for axis, curves, label, ticks in ((left, slots, "slots (1 worker process)", SLOTS),
                                       (right, procs, "worker processes (1 slot each)",
                                        PROCESSES)):
        for name, points in curves:
            axis.plot([x for x, _ in points], [y for _, y in points], marker="o", label=name)
        axis.set_xscale("log", base=2)
        axis.set_xticks(list(ticks), [str(t) for t in ticks])
        axis.set_xlabel(label)
        axis.set_ylabel("no-op jobs/s")
        axis.set_ylim(bottom=0)
        axis.grid(True, alpha=0.3)
        axis.legend()
    fig.suptitle("conveyor throughput (higher is better)")
    fig.text(0.5, 0.01, note, ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def main() -> None:
    parser = bench_arguments(__doc__, "fewer jobs, for a fast look")
    parser.add_argument("--plot", type=Path, help="draw the PNG here (needs matplotlib)")
    args = parser.parse_args()
    jobs = {"SQLite": 2000 if args.quick else 5000, "PostgreSQL": 300 if args.quick else 1000}
    targets = [Target("SQLite")]
    pg_url = os.environ.get(PG_ENV)
    if pg_url:
        targets.append(Target("PostgreSQL", pg_url))
    started, load_before = time.monotonic(), load_average()
    when = f"{datetime.now(UTC):%Y-%m-%d %H:%M}"
    slot_curves: list[Curve] = []
    proc_curves: list[Curve] = []
    try:
        for target in targets:
            by_slots, by_procs = sweep(target, jobs[target.name])
            slot_curves.append((target.name, by_slots))
            proc_curves.append((target.name, by_procs))
    finally:
        for target in targets:
            target.cleanup()
    rows: list[tuple[object, ...]] = []
    for (name, by_slots), (_, by_procs) in zip(slot_curves, proc_curves, strict=True):
        rows.append((name, "1 process, N slots", f"{jobs[name]:,}",
                     *(f"{rate:,.0f}" for _, rate in by_slots)))
        rows.append((name, "N processes, 1 slot each", f"{jobs[name]:,}",
                     *(f"{rate:,.0f}" for _, rate in by_procs),
                     *("" for _ in range(len(SLOTS) - len(PROCESSES)))))
    note = (f"{when} UTC, {os.cpu_count()} CPUs; load average (1/5/15 min) {load_before} "
            f"before, {load_average()} after")
    out = table("Throughput against slots and processes (no-op jobs/s)",
                ["store", "sweep", "jobs", *(f"N={n}" for n in SLOTS)], rows)
    print(f"{note}; took {time.monotonic() - started:.0f}s")
    drawn = args.plot is not None and plot(args.plot, slot_curves, proc_curves, note)
    if args.docs:
        text = f"{out}\n\nRun on {note}."
        if drawn and args.plot is not None:
            link = os.path.relpath(args.plot, args.docs.parent)
            text += f"\n\n![Throughput against slots and processes]({link})"
        write_sections(args.docs, {"scaling": text})


if __name__ == "__main__":
    main()

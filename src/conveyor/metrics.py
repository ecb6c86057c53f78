"""Prometheus metrics (``pip install 'conveyor[metrics]'``), imported only when asked for.

Two sources, because the process that runs jobs is not the one that serves the dashboard:

- **In a worker** (``Worker(metrics=True)``, ``conveyor worker --metrics-port 9100``):
  counters and histograms of the runs this process made — runs by queue and outcome
  (throughput), retries, run duration, pickup latency (claim time minus the time the job was
  due), leases reaped — and gauges of its own workers and their running jobs. They live in
  ``prometheus_client``'s default registry; ``--metrics-port`` serves it with
  ``start_http_server``. Sum over the workers in PromQL (``sum(rate(...))``).
- **In the dashboard's process** (``GET /metrics``): jobs by queue and state, counted at each
  scrape by one statement that reads indexes alone (``Store.queues``; docs/observability.md
  says which), followed by this process's default registry (a worker run in the same process
  shows there too).

Workers alive across the fleet is not known to the store yet: each worker process exports
``conveyor_workers_running`` (its own, usually 1); ``sum()`` over the scrape targets counts them.
"""

from __future__ import annotations

import threading
import weakref
from collections import Counter as Tally
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from conveyor.lifecycle import JobState
from conveyor.model import Job
from conveyor.presence import WorkerStatus

if TYPE_CHECKING:
    from conveyor.stores.base import Store
    from conveyor.worker.worker import Worker

__all__ = ["CONTENT_TYPE", "StoreCollector", "WorkerMetrics", "exposition",
           "serve_worker_metrics", "worker_metrics"]

#: The Prometheus text format's content type.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900,
                     3600)


class WorkerMetrics:
    """The run counters and histograms of this process (one set, shared by its workers)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.runs = Counter("conveyor_job_runs", "Job runs by how they ended.",
                            ["queue", "outcome"], registry=registry)
        self.retries = Counter("conveyor_job_retries", "Failed runs retried automatically.",
                               ["queue"], registry=registry)
        self.duration = Histogram("conveyor_job_run_seconds", "How long a run took.",
                                  ["queue"], buckets=_DURATION_BUCKETS, registry=registry)
        self.pickup = Histogram("conveyor_job_pickup_seconds", "From due to claimed.",
                                ["queue"], buckets=_DURATION_BUCKETS, registry=registry)
        self.reaped_leases = Counter("conveyor_leases_reaped",
                                     "Runs whose worker stopped heartbeating, failed by a "
                                     "reaper in this process.", registry=registry)
        self.workers: weakref.WeakSet[Worker] = weakref.WeakSet()
        self._children: dict[tuple[Any, ...], Any] = {}
        registry.register(_WorkersCollector(self.workers))

    def picked_up(self, job: Job) -> None:
        if job.started_at is not None:
            due = (job.started_at - job.run_at).total_seconds()
            self._of(self.pickup, job.queue).observe(max(0.0, due))

    def ran(self, job: Job, outcome: str, seconds: float) -> None:
        self._of(self.runs, job.queue, outcome).inc()
        self._of(self.duration, job.queue).observe(seconds)
        if outcome == "retried":
            self._of(self.retries, job.queue).inc()

    def _of(self, metric: Any, *labels: str) -> Any:
        """The labelled child, kept: ``labels()`` takes a lock and builds a key on each call,
        and this runs twice per job."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def reaped(self, lost: int) -> None:
        self.reaped_leases.inc(lost)


class _WorkersCollector(Collector):
    """This process's running workers and their busy slots, read at scrape time."""

    def __init__(self, workers: weakref.WeakSet[Worker]) -> None:
        self.workers = workers

    def collect(self) -> Iterator[Metric]:
        running = [w for w in list(self.workers) if w.running]
        alive = GaugeMetricFamily("conveyor_workers_running",
                                  "Workers running in this process.", value=len(running))
        busy = GaugeMetricFamily("conveyor_worker_jobs_running", "Jobs this worker is running.",
                                 labels=["worker"])
        slots = GaugeMetricFamily("conveyor_worker_slots", "Jobs this worker may run at once.",
                                  labels=["worker"])
        for worker in running:
            busy.add_metric([worker.worker_id], worker.active)
            slots.add_metric([worker.worker_id], worker.concurrency)
        yield from (alive, busy, slots)


_shared: list[WorkerMetrics] = []
_lock = threading.Lock()


def worker_metrics() -> WorkerMetrics:
    """The process's worker metrics, made on first use in the default registry."""
    with _lock:
        if not _shared:
            _shared.append(WorkerMetrics())
        return _shared[0]


def serve_worker_metrics(port: int, addr: str = "127.0.0.1") -> None:
    """Serve the default registry (this process's worker metrics) on ``addr:port``."""
    start_http_server(port, addr=addr)


class StoreCollector(Collector):
    """``conveyor_jobs{queue,state}`` and ``conveyor_workers{status}``: the store's counts and
    the fleet's worker rows, read at each scrape (the workers of every host, not only this
    process's)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("conveyor_jobs", "Jobs in the store by queue and state.",
                                   labels=["queue", "state"])
        for info in self.store.queues():
            for state in JobState:
                family.add_metric([info.name, state.value], info.counts.get(state.value, 0))
        yield family
        fleet = GaugeMetricFamily("conveyor_workers", "Registered workers by status (running: "
                                  "heartbeating; gone: its heartbeat stopped).",
                                  labels=["status"])
        statuses = Tally(worker.status.value for worker in self.store.workers())
        for status in WorkerStatus:
            fleet.add_metric([status.value], statuses.get(status.value, 0))
        yield fleet


def exposition(store: Store) -> bytes:
    """The dashboard's ``/metrics`` body: the store's counts, then this process's registry."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    return generate_latest(registry) + generate_latest(REGISTRY)

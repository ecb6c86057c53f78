"""The PostgreSQL store's claim-time limits: concurrency and rate limits (see conveyor.limits).

A mixin of :class:`~conveyor.stores.postgres.store.PostgresStore`. Many workers claim at once
here, so counting and claiming must not interleave: a limited claim is one transaction that
first takes a transaction-level advisory lock per limit it obeys (in key order), then counts
the running jobs and the window's claims, picks what fits, claims it and records the claims
in the rate windows. The locks are released at commit, once the claim is visible, so the
next claimer of the same limit counts it. Every claimer of a limited type or queue takes this
path: the plain claim statement claims nothing while a limit applies to its types or queues
(its gate), and only then does the store look at the limits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import psycopg
from psycopg.rows import TupleRow, dict_row

from conveyor.lifecycle import JobState
from conveyor.limits import Candidate, LimitRule, Rate, Usage, admit, applying, full
from conveyor.stores.postgres.common import fetch_rows as fetch
from conveyor.stores.postgres.rows import utc
from conveyor.stores.sqlfiles import load_queries

_Q = load_queries("conveyor.stores.postgres", "limits.sql")
Conn = psycopg.Connection[TupleRow]
T = TypeVar("T")
#: How many candidates past ``limit`` a limited claim looks at (see the SQLite store's).
SCAN_EXTRA = 32


class _Store(Protocol):
    schema: str

    def _run(self, what: str, work: Callable[[Conn], T], *, transaction: bool = False,
             retry: bool = False) -> T: ...
    def notify_work(self) -> None: ...
    def _claim_statement(self, worker_id: str, queues: Sequence[str],
                         job_types: Sequence[str], limit: int, lease_seconds: float,
                         query: str | None = None) -> tuple[str, dict[str, Any]]: ...


def _composed(conn: Conn, statement: str, params: dict[str, Any]
              ) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(statement, params)
        return cur.fetchall()


def _rule(row: Mapping[str, Any]) -> LimitRule:
    rate = (Rate(row["rate_count"], float(row["rate_seconds"]))
            if row["rate_count"] is not None else None)
    return LimitRule(row["scope"], row["name"], row["max_running"], rate, row["key"],
                     utc(row["changed_at"]), row["actor"], row["reason"])


def _params(rule: LimitRule) -> dict[str, Any]:
    return {"scope": rule.scope, "name": rule.name, "max_running": rule.max_running,
            "rate_count": rule.rate.count if rule.rate else None,
            "rate_seconds": rule.rate.seconds if rule.rate else None, "key": rule.key,
            "actor": rule.actor, "reason": rule.reason}


def _usage(conn: Conn, rules: Sequence[LimitRule], at: Any, *, prune: bool) -> Usage:
    running = [(r["job_type"], r["queue"], r["limit_key"], int(r["n"]))
               for r in fetch(conn, _Q["running_counts"])]
    rated = [rule for rule in rules if rule.rate is not None]
    claimed: list[tuple[str, str, str, int]] = []
    if rated:
        claimed = [(r["scope"], r["name"], r["limit_key"], int(r["n"])) for r in fetch(
            conn, _Q["rate_counts"], {
                "scopes": [r.scope for r in rated], "names": [r.name for r in rated],
                "seconds": [r.rate.seconds for r in rated if r.rate], "at": at,
                "prune": prune})]
    return Usage.of(rules, running, claimed)


class PostgresLimits:
    """Limits as rows of ``flow_limits``; claims under them serialised per limit."""

    def save_type_limits(self: _Store, job_types: Sequence[str],
                         rules: Sequence[LimitRule]) -> None:
        limited = {rule.name for rule in rules}

        def work(conn: Conn) -> None:
            for rule in rules:
                fetch(conn, _Q["upsert_limit"], _params(rule))
            fetch(conn, _Q["delete_limit"], {
                "scope": "type", "names": sorted(set(job_types) - limited)})

        self._run("record job type limits", work, transaction=True)
        self.notify_work()

    def set_queue_limit(self: _Store, queue: str, max_running: int | None, rate: Rate | None,
                        *, actor: str, reason: str) -> LimitRule | None:
        rule = LimitRule("queue", queue, max_running, rate, None, actor=actor, reason=reason)

        def work(conn: Conn) -> list[dict[str, Any]]:
            fetch(conn, _Q["forget_rates"], {"scope": "queue", "name": queue})
            if max_running is None and rate is None:
                return fetch(conn, _Q["delete_limit"], {"scope": "queue", "names": [queue]})
            return fetch(conn, _Q["upsert_limit"], _params(rule))

        rows = self._run("set a queue's limit", work, transaction=True)
        self.notify_work()  # a limit raised or removed may free waiting jobs
        return _rule(rows[0]) if rows else None

    def limits(self: _Store) -> list[LimitRule]:
        rows = self._run("list limits", lambda c: fetch(c, _Q["all_limits"]), retry=True)
        return [_rule(row) for row in rows]

    def limit_usage(self: _Store, rules: Sequence[LimitRule]) -> Usage:
        def work(conn: Conn) -> Usage:
            at = fetch(conn, "SELECT clock_timestamp() AS at")[0]["at"]
            return _usage(conn, rules, at, prune=False)

        return self._run("count limited jobs", work, retry=True)

    def _claim_limited(self: _Store, worker_id: str, queues: Sequence[str],
                       job_types: Sequence[str], limit: int,
                       lease_seconds: float) -> list[dict[str, Any]]:
        """The claim when limits apply to these queues or types (none when none do)."""
        found = self._run("read limits", lambda c: fetch(c, _Q["all_limits"]), retry=True)
        if not applying([_rule(row) for row in found], queues, job_types):
            return []
        update, params = self._claim_statement(worker_id, queues, job_types, limit,
                                               lease_seconds, _Q["claim_picked"])
        candidates, _ = self._claim_statement(worker_id, queues, job_types, limit,
                                              lease_seconds, _Q["limited_candidates"])
        schema = self.schema

        def work(conn: Conn) -> list[dict[str, Any]]:
            rules = applying([_rule(r) for r in fetch(conn, _Q["all_limits"])], queues,
                             job_types)
            keys = sorted({_lock_key(schema, rule) for rule in rules})
            at = fetch(conn, _Q["lock_limits"], {"keys": keys})[0]["at"]
            usage = _usage(conn, rules, at, prune=True)
            types, full_queues, pairs = full(rules, usage)
            rows = _composed(conn, candidates, {
                **params, "full_types": sorted(types), "full_queues": sorted(full_queues),
                "pair_types": [p[0] for p in sorted(pairs)],
                "pair_keys": [p[1] for p in sorted(pairs)], "scan": limit + SCAN_EXTRA})
            taken, rated = admit([Candidate(r["id"], r["job_type"], r["queue"], r["limit_key"],
                                            JobState(r["source"])) for r in rows],
                                 rules, usage, limit)
            if not taken:
                return []
            claimed = _composed(conn, update, {**params, "ids": [c.id for c in taken],
                                           "sources": [c.source.value for c in taken]})
            if rated:
                fetch(conn, _Q["record_rates"], {
                    "scopes": [b[0] for b in rated], "names": [b[1] for b in rated],
                    "keys": [b[2] for b in rated], "at": at})
            return claimed

        return self._run("claim jobs under limits", work, transaction=True)


def _lock_key(schema: str, rule: LimitRule) -> int:
    """The advisory lock of one limit, per schema (two schemas' limits never contend)."""
    digest = hashlib.blake2b(f"conveyor.limit:{schema}:{rule.scope}:{rule.name}".encode(),
                             digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)

"""What a benchmark run ran on: written at the top of docs/benchmarks.md with the figures."""

from __future__ import annotations

import os
import platform
import sqlite3
from datetime import UTC, datetime
from typing import Any

PG_SETTINGS = ("server_version", "fsync", "synchronous_commit", "full_page_writes")


def _memory_gib() -> str:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


def _pg_settings(url: str) -> dict[str, str]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return {name: str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
                for name in PG_SETTINGS}


def machine_section(pg_url: str | None, *, quick: bool, sizes: dict[str, Any]) -> str:
    """A markdown list: the machine, the versions, the date and the settings of this run."""
    lines = [
        f"- Run on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        + (" with `--quick` (smaller samples)" if quick else ""),
        f"- Machine: {os.cpu_count()} CPUs (`nproc`), {_memory_gib()} memory, "
        f"{platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}, SQLite {sqlite3.sqlite_version} "
        "(WAL, `synchronous=NORMAL` unless said)",
        "- Sizes: " + ", ".join(f"{k}={v}" for k, v in sizes.items()),
    ]
    if pg_url:
        pg = _pg_settings(pg_url)
        lines.append(f"- PostgreSQL {pg['server_version']} on loopback: "
                     f"fsync={pg['fsync']}, synchronous_commit={pg['synchronous_commit']}, "
                     f"full_page_writes={pg['full_page_writes']}")
    else:
        lines.append("- PostgreSQL: not measured in this run")
    return "\n".join(lines)

"""The public API changes only on purpose: it is compared with a snapshot kept in the repo.

A failure here means the public API changed. If that was intended, regenerate the snapshot
(``.venv/bin/python -m tests.unit.public_api --write``), review the diff, and say what changed
in CHANGELOG.md ([versioning policy](../../docs/about/versioning.md)).
"""

from __future__ import annotations

import difflib

import conveyor
from tests.unit.public_api import SNAPSHOT, render, snapshot

HOW = "the public API changed; if on purpose: .venv/bin/python -m tests.unit.public_api --write"


def test_public_api_matches_the_snapshot() -> None:
    expected = SNAPSHOT.read_text(encoding="utf-8")
    actual = render()
    diff = "".join(difflib.unified_diff(expected.splitlines(keepends=True),
                                        actual.splitlines(keepends=True),
                                        "tests/unit/public_api.json", "the code now"))
    assert actual == expected, f"{HOW}\n{diff}"


def test_the_snapshot_covers_every_kind_of_public_surface() -> None:
    api = snapshot()
    assert set(api["conveyor.__all__"]) == set(conveyor.__all__)
    assert "--concurrency -c" in api["cli"]["worker"]
    assert "post" in api["http"]["/api/jobs"]
    assert "url" in api["conveyor.__all__"]["Conveyor"]["__init__"]

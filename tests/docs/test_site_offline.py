"""The check that ``make docs`` runs on the built site: a page may link to the internet, but
must load nothing from it (the site works offline)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CHECK = Path(__file__).resolve().parents[2] / "scripts" / "check-site-offline"


def _check(site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CHECK), str(site)], capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.mark.parametrize("loaded", [
    '<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">',
    '<script src="https://unpkg.com/mermaid/dist/mermaid.min.js"></script>',
    '<img src="//cdn.example.org/logo.png">',
    "<style>@import url('https://fonts.example.org/a.css');</style>",
])
def test_a_page_that_loads_from_the_network_fails(tmp_path: Path, loaded: str) -> None:
    (tmp_path / "index.html").write_text(f"<html><head>{loaded}</head></html>")
    done = _check(tmp_path)
    assert done.returncode == 1
    assert "index.html" in done.stderr


def test_links_and_local_assets_pass(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text(
        '<html><head><link rel="stylesheet" href="assets/main.css">'
        '<link rel="canonical" href="https://example.org/">'
        '<script src="assets/bundle.js"></script></head>'
        '<body><a href="https://keepachangelog.com/">a link</a></body></html>')
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "main.css").write_text("body { background: url(img/x.png) }")
    assert _check(tmp_path).returncode == 0


def test_an_empty_site_fails(tmp_path: Path) -> None:
    assert _check(tmp_path).returncode == 1

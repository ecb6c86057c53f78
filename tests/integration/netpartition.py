"""Real network partitions for the PostgreSQL tests: network namespaces, a veth pair, nftables.

Layout (all made here and removed in ``close()``, whatever happened in the test):

    namespace cvs-XXXX: the PostgreSQL server, on 192.0.2.1 (and on a Unix socket that the
                        test and the healthy worker, in the host's namespace, use)
    namespace cvc-XXXX: the worker to be cut off, reaching the server at 192.0.2.1 over a veth
                        pair (192.0.2.2 on its end)

Addresses live only on the veth pair inside those two namespaces (192.0.2.0/24 is reserved
for documentation, so it can clash with nothing real); the host's own network is not touched.
:meth:`Partition.cut` drops every packet on the server's end of the pair with nftables, in the
server's namespace: the cut-off worker's kernel sends happily and hears nothing back, with no
RST and no ICMP: a half-open partition. :meth:`Partition.heal` removes the rule.

Needs root, ``ip`` (iproute2) and ``nft`` (nftables).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVER_ADDRESS = "192.0.2.1"
WORKER_ADDRESS = "192.0.2.2"
NETWORK = "192.0.2.0/30"


_PACKAGES = {"ip": "iproute2", "nft": "nftables"}


def missing_tools() -> str | None:
    """Why a partition cannot be made here, or None. Missing tools are installed with
    apt-get when it is there (as scripts/pg-test-server does for PostgreSQL)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    missing = [tool for tool in _PACKAGES if shutil.which(tool) is None]
    if missing and shutil.which("apt-get") is not None:
        packages = [_PACKAGES[tool] for tool in missing]
        subprocess.run(["apt-get", "install", "-y", "-q", *packages], capture_output=True,
                       check=False, timeout=600,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    for tool, package in _PACKAGES.items():
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {package})"
    return None


def _run(*args: str, timeout: float = 60) -> str:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                          check=False)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


class Partition:
    """Two namespaces joined by a veth pair, and a PostgreSQL server in one of them."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.server_ns, self.worker_ns = f"cvs-{tag}", f"cvc-{tag}"
        self._veth_server, self._veth_worker = f"cvs{tag}", f"cvc{tag}"
        self.folder = Path(tempfile.mkdtemp(prefix="cv-part-", dir="/tmp"))
        self.folder.chmod(0o755)
        self.port = 0
        self._made: list[str] = []

    # -- setup ------------------------------------------------------------------------------
    def start(self) -> None:
        for ns in (self.server_ns, self.worker_ns):
            _run("ip", "netns", "add", ns)
            self._made.append(ns)
        _run("ip", "link", "add", self._veth_server, "netns", self.server_ns, "type", "veth",
             "peer", "name", self._veth_worker, "netns", self.worker_ns)
        for ns, dev, address in ((self.server_ns, self._veth_server, SERVER_ADDRESS),
                                 (self.worker_ns, self._veth_worker, WORKER_ADDRESS)):
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "-n", ns, "addr", "add", f"{address}/30", "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "up")
        out = _run("ip", "netns", "exec", self.server_ns, "env",
                   f"PG_TEST_LISTEN={SERVER_ADDRESS}", f"PG_TEST_TRUST={NETWORK}",
                   str(ROOT / "scripts" / "pg-test-server"), "start", str(self.folder),
                   timeout=180)
        self.port = int(out.strip().splitlines()[-1].rsplit(":", 1)[1].split("/")[0])

    @property
    def local_url(self) -> str:
        """The server as seen from the host's namespace: through its Unix socket."""
        return f"postgresql://postgres@/conveyor_test?host={self.folder}&port={self.port}"

    @property
    def remote_url(self) -> str:
        """The server as seen from the worker namespace: over the veth pair."""
        return f"postgresql://postgres@{SERVER_ADDRESS}:{self.port}/conveyor_test"

    def in_worker_ns(self, args: list[str]) -> list[str]:
        """``args`` as a command run inside the worker namespace."""
        return ["ip", "netns", "exec", self.worker_ns, *args]

    # -- the partition -----------------------------------------------------------------------
    def cut(self) -> None:
        dev = self._veth_server
        rules = (f"table inet partition {{\n"
                 f"  chain inbound {{ type filter hook input priority -300; policy accept;\n"
                 f"    iifname \"{dev}\" drop\n  }}\n"
                 f"  chain outbound {{ type filter hook output priority -300; policy accept;\n"
                 f"    oifname \"{dev}\" drop\n  }}\n"
                 f"}}\n")
        done = subprocess.run(["ip", "netns", "exec", self.server_ns, "nft", "-f", "-"],
                              input=rules, text=True, capture_output=True, timeout=30,
                              check=False)
        if done.returncode != 0:
            raise AssertionError(f"nft refused the partition rules: {done.stderr.strip()}")

    def heal(self) -> None:
        _run("ip", "netns", "exec", self.server_ns, "nft", "delete", "table", "inet",
             "partition")

    # -- teardown ------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the server, end every process left in our namespaces, delete them."""
        with contextlib.suppress(Exception):
            subprocess.run([str(ROOT / "scripts" / "pg-test-server"), "stop",
                            str(self.folder)], capture_output=True, timeout=120, check=False)
        for ns in self._made:
            self._kill_inside(ns)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False,
                           timeout=30)
        shutil.rmtree(self.folder, ignore_errors=True)

    @staticmethod
    def _kill_inside(ns: str) -> None:
        """Processes still in ``ns`` (all started by this test) keep it alive: end them."""
        listed = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                                check=False, timeout=30)
        for pid in listed.stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.2)


@contextlib.contextmanager
def partition() -> Iterator[Partition]:
    made = Partition()
    try:
        made.start()
        yield made
    finally:
        made.close()

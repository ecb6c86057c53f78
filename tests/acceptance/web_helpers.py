"""Helpers for the web tests: an in-process HTTP client, a real server, a controllable job.

The in-process client drives the ASGI app through httpx's ``ASGITransport`` from sync code
(Starlette's ``TestClient`` warns that its httpx backend is deprecated, and our warnings are
errors). The real server runs uvicorn in a thread on a free loopback port, for what needs real
sockets: the endless event stream and the browser.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import httpx
import uvicorn
from anyio.from_thread import BlockingPortal, start_blocking_portal

from conveyor import Conveyor, JobContext
from conveyor.web import AuthConfig, create_app

TOKEN = "admin-token-" + "a" * 24
READ_TOKEN = "read-token-" + "r" * 24
BEARER = {"Authorization": f"Bearer {TOKEN}"}
READ_BEARER = {"Authorization": f"Bearer {READ_TOKEN}"}


class AsgiClient:
    """A sync HTTP client over an ASGI app, in this process (no sockets)."""

    def __init__(self, app: Any, base_url: str = "http://127.0.0.1:8080",
                 peer: tuple[str, int] = ("127.0.0.1", 123)) -> None:
        self._stack = contextlib.ExitStack()
        self.portal: BlockingPortal = self._stack.enter_context(start_blocking_portal())
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=peer),
                                        base_url=base_url)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.portal.call(partial(self.client.request, method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    @property
    def cookies(self) -> httpx.Cookies:
        return self.client.cookies

    def close(self) -> None:
        self.portal.call(self.client.aclose)
        self._stack.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerThread:
    """uvicorn serving an ASGI app on 127.0.0.1:<free port>, in a background thread."""

    def __init__(self, app: Any, stopping: threading.Event | None = None) -> None:
        self.stopping = stopping or threading.Event()
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                timeout_graceful_shutdown=1, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="test-uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()  # open event streams end now, not after the grace period
        self.server.should_exit = True
        self.thread.join(timeout=10)


@contextlib.contextmanager
def serving(app: Conveyor, **options: Any) -> Iterator[ServerThread]:
    """The app's dashboard served on a free loopback port; its event streams end on exit."""
    stopping = threading.Event()
    with ServerThread(make_web(app, stopping=stopping, **options), stopping) as server:
        yield server


class Stepper:
    """A job type that advances one step each time the test calls :meth:`step`.

    Between steps it checkpoints every 50 ms, so pause and cancel requests take effect
    promptly, and a resumed run continues from the steps already done.
    """

    def __init__(self, app: Conveyor, name: str = "test.stepper") -> None:
        self.name = name
        self._steps = threading.Semaphore(0)
        self.runs = 0
        app.job(name, max_attempts=2)(self._run)

    def _run(self, ctx: JobContext, steps: int = 10, **_: Any) -> dict[str, int]:
        self.runs += 1
        done = int(ctx.checkpoint_data.get("done", 0))
        ctx.progress(done, steps)
        while done < steps:
            if self._steps.acquire(timeout=0.05):
                done += 1
                ctx.progress(done, steps)
                ctx.log(f"step {done} of {steps}")  # the job page's Logs panel follows these
            ctx.checkpoint({"done": done})
        return {"done": done}

    def step(self, n: int = 1) -> None:
        self._steps.release(n)


def register_types(app: Conveyor) -> Stepper:
    """The job types the web tests use; returns the controllable one."""

    @app.job("test.add")
    def add(ctx: JobContext, a: int, b: int = 0) -> int:
        return a + b

    @app.job("test.fail", max_attempts=0)
    def fail(ctx: JobContext, message: str = "boom") -> None:
        raise RuntimeError(message)

    return Stepper(app)


def typed_app(make_app: Callable[..., Conveyor]) -> Conveyor:
    """A fresh app with the web tests' job types (what most web tests' ``app`` fixture is)."""
    app = make_app()
    register_types(app)
    return app


@contextlib.contextmanager
def web_client(app: Conveyor) -> Iterator[AsgiClient]:
    """An in-process client of ``app``'s HTTP API and dashboard, closed on exit."""
    client = AsgiClient(make_web(app))
    try:
        yield client
    finally:
        client.close()


@contextlib.contextmanager
def logged_in(app: Conveyor) -> Iterator[AsgiClient]:
    """An in-process client of ``app``'s dashboard, logged in with the admin token."""
    with web_client(app) as client:
        assert client.get(f"/login?token={TOKEN}").status_code == 303
        yield client


@contextlib.contextmanager
def running_worker(app: Conveyor) -> Iterator[None]:
    """A real worker in a thread, with short timings, stopped on exit."""
    worker = app.worker(concurrency=2, lease_seconds=2, heartbeat_interval=0.5,
                        poll_interval=0.05, progress_interval=0.05, handle_signals=False)
    thread = threading.Thread(target=worker.run, name="test-worker", daemon=True)
    thread.start()
    try:
        yield
    finally:
        worker.stop()
        thread.join(timeout=15)


def wait_until(predicate: Callable[[], object], timeout: float = 10.0,
               message: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy (and return that)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(0.02)


def make_web(app: Conveyor, **options: Any) -> Any:
    """The ASGI app with both tokens (a fixed secret is not needed: sessions are per app)."""
    auth = options.pop("auth", None) or AuthConfig(token=TOKEN, read_token=READ_TOKEN)
    return create_app(app, auth=auth, **options)


def fail_without_retry(app: Conveyor, job_id: str, message: str = "upstream said no") -> None:
    """Fail a pending job the way the reaper can leave it: failed, its retries not yet used.

    A worker's failure and its automatic retry are one transaction, so a failed job with
    retries left is rare; the dashboard still offers Retry for it, and the tests need one.
    """
    from conveyor import JobError
    from conveyor.changes import Lease
    from conveyor.transitions import fail

    job = app.get(job_id)
    (claimed,) = app.store.claim("test-claimer", queues=[job.queue], job_types=[job.job_type],
                                 limit=1, lease_seconds=30)
    assert claimed.id == job_id
    assert claimed.lease_token is not None
    lease = Lease(job_id, claimed.lease_token, claimed.attempt)
    error = JobError("ConnectionError", message, "Traceback (most recent call last):\n  ...\n"
                     f"ConnectionError: {message}\n")
    app.apply([fail(lease, job_id, error, "failed", "test")])


class EventReader:
    """Reads a Server-Sent Events stream in a thread; the test takes events with a timeout."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        import json
        import queue

        self._json = json
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.seen: list[tuple[str, Any]] = []  # every event, including those next() skipped
        self._client = httpx.Client(timeout=httpx.Timeout(5.0, read=None))
        self._context = self._client.stream("GET", url, headers=headers)
        self.response = self._context.__enter__()
        self._thread = threading.Thread(target=self._read, name="test-sse", daemon=True)
        if self.response.status_code == 200:
            self._thread.start()

    def _read(self) -> None:
        name, data = "message", []
        try:
            for line in self.response.iter_lines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line == "" and data:
                    event = (name, self._json.loads("\n".join(data)))
                    self.seen.append(event)
                    self.events.put(event)
                    name, data = "message", []
        except (httpx.HTTPError, RuntimeError):
            pass  # closed by the test

    def next(self, predicate: Callable[[str, Any], bool] = lambda n, d: True,
             timeout: float = 10.0) -> tuple[str, Any]:
        """The next event that satisfies ``predicate`` (others are dropped)."""
        import queue

        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no matching event arrived in time")
            try:
                name, data = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if predicate(name, data):
                return name, data

    def drain(self, seconds: float) -> list[tuple[str, Any]]:
        """Everything that arrives in the next ``seconds``."""
        import queue

        got = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                got.append(self.events.get(timeout=left))
            except queue.Empty:
                break
        return got

    def close(self) -> None:
        # Closing a socket does not wake a thread blocked reading it; shutting it down does.
        stream = self.response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self._context.__exit__(None, None, None)
        self._client.close()

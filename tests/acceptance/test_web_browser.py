"""The dashboard in a real headless Chromium, against a real server and a real worker.

The job under test (``Stepper``) advances one step each time the test says so, so the test can
watch its progress bar move, and pause, resume and cancel it at known points.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.sync_api import APIResponse, Browser, Dialog, Locator, Page, Route, expect

from conveyor import Conveyor, JobState

from .web_browser import chromium, chromium_available
from .web_helpers import (
    READ_TOKEN,
    TOKEN,
    ServerThread,
    Stepper,
    make_web,
    register_types,
    running_worker,
    serving,
    wait_until,
)
from .web_screenshot import demo_site


@pytest.fixture(autouse=True)
def _chromium_present() -> None:
    """Fail, never skip, without the browser: `make test` installs it."""
    if not chromium_available():
        pytest.fail("needs Chromium at /usr/bin/chromium: run scripts/install-browser")

TIMEOUT = 10_000  # ms, for every expectation on the page
expect.set_options(timeout=TIMEOUT)


@dataclass
class Site:
    app: Conveyor
    stepper: Stepper
    server: ServerThread

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def site(make_app: Callable[..., Conveyor]) -> Iterator[Site]:
    app = make_app()
    stepper = register_types(app)
    with serving(app, poll_interval=0.2) as server, running_worker(app):
        yield Site(app, stepper, server)
        stepper.step(1000)  # let anything still running finish, so the worker stops at once


@pytest.fixture
def page(browser: Browser, site: Site) -> Iterator[Page]:
    """A fresh browser tab; closed before the site stops, and checked for script errors."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield page
    page.goto("about:blank")
    context.close()
    # No script errors and no CSP violations (Chromium reports those on the console); the
    # browser's own line for a request the server refused (401, or 422 for a bad form) is not.
    refused = ("status of 401", "status of 422")
    assert [e for e in errors if not any(code in e for code in refused)] == []


def log_in(page: Page, site: Site, token: str = TOKEN) -> None:
    page.goto(f"{site.url}/login?token={token}")
    expect(page).to_have_url(f"{site.url}/")
    expect(page.locator("#live")).to_have_text("live")


def row(page: Page, job_id: str) -> Locator:
    return page.locator(f'tr[data-job-id="{job_id}"]')


def running(site: Site, steps: int = 10) -> str:
    job = site.app.enqueue("test.stepper", {"steps": steps})
    wait_until(lambda: site.app.get(job.id).state is JobState.RUNNING, message="running")
    return job.id


def wait_in_page(page: Page, predicate: Callable[[], object], message: str) -> None:
    """Like ``wait_until``, but waiting through Playwright: a route or dialog handler runs only
    while a Playwright call is in progress, so a plain sleep would wait for it forever."""
    deadline = time.monotonic() + 10
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        page.wait_for_timeout(20)


def test_an_unauthenticated_browser_sees_only_the_login_page(page: Page, site: Site) -> None:
    job = site.app.enqueue("test.add", {"a": 1, "b": 2}, queue="secret-queue", delay=60)
    for path in ("/", f"/jobs/{job.id}", "/?state=pending"):
        page.goto(f"{site.url}{path}")
        expect(page).to_have_url(f"{site.url}/login?next={quote(path, safe='')}")
        expect(page.locator("h1")).to_have_text("Log in")
        content = page.content()
        assert "secret-queue" not in content  # no job data (the id only in the URL asked for)
        assert "test.add" not in content
        assert content.count(job.id) == (1 if job.id in path else 0)
    api = page.request.get(f"{site.url}/api/jobs")
    assert api.status == 401
    events = page.request.get(f"{site.url}/api/events")
    assert events.status == 401


def test_logging_in_with_the_form(page: Page, site: Site) -> None:
    job = site.app.enqueue("test.add", {"a": 1})
    page.goto(f"{site.url}/jobs/{job.id}")
    page.fill("#token", "not-the-token-at-all")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_have_text("That token is not valid.")
    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{site.url}/jobs/{job.id}")
    expect(page.locator("#job .type")).to_have_text("test.add")


def test_progress_moves_live_then_pause_and_resume(page: Page, site: Site) -> None:
    job_id = running(site)
    log_in(page, site)
    page.evaluate("window.__noReload = true")  # gone if the page ever reloads
    bar = row(page, job_id).locator('[role="progressbar"]')
    fill = bar.locator(".fill")
    expect(bar).to_have_attribute("aria-valuenow", "0")

    widths = [fill.bounding_box()["width"]]  # type: ignore[index]
    for step, percent in ((1, "10"), (2, "20"), (3, "30")):
        site.stepper.step()
        expect(bar).to_have_attribute("aria-valuenow", percent)
        expect(row(page, job_id).locator('[data-field="steps"]')).to_have_text(f"{step}/10")
        page.wait_for_function("([el, w]) => el.getBoundingClientRect().width > w",
                               arg=[fill.element_handle(), widths[-1]])
        widths.append(fill.bounding_box()["width"])  # type: ignore[index]
    assert widths == sorted(widths)
    assert widths[-1] > widths[0]

    actions = row(page, job_id).locator('[data-field="actions"]')
    expect(actions.locator("button")).to_have_text(["Pause", "Cancel"])
    actions.locator('button[data-action="pause"]').click()
    badge = row(page, job_id).locator('[data-field="state"]')
    expect(badge).to_have_text("paused")
    expect(actions.locator('button[data-action="pause"]')).to_have_count(0)
    expect(actions.locator("button")).to_have_text(["Resume", "Cancel"])
    assert site.app.get(job_id).state is JobState.PAUSED

    actions.locator('button[data-action="resume"]').click()
    expect(badge).to_have_text("running")
    site.stepper.step(7)
    expect(badge).to_have_text("completed")
    expect(bar).to_have_attribute("aria-valuenow", "100")
    expect(actions.locator("button")).to_have_text(["Requeue"])
    expect(page.locator('[data-count="completed"]')).to_have_text("1")
    assert page.evaluate("window.__noReload") is True
    done = site.app.get(job_id)
    assert done.result == {"done": 10}
    assert site.stepper.runs == 2  # resumed from its checkpoint, not restarted


def test_a_late_action_answer_does_not_undo_what_the_stream_showed(page: Page,
                                                                     site: Site) -> None:
    """The resume's answer (paused, resume requested) is held back until the stream has shown
    the worker's resume (running); arriving last, the older answer must not win."""
    job_id = running(site)
    site.app.pause(job_id)
    site.stepper.step()  # reach the checkpoint where the pause takes effect
    wait_until(lambda: site.app.get(job_id).state is JobState.PAUSED, message="paused")
    log_in(page, site)
    badge = row(page, job_id).locator('[data-field="state"]')
    expect(badge).to_have_text("paused")
    held: list[tuple[Route, APIResponse]] = []

    def hold(route: Route) -> None:
        held.append((route, route.fetch()))

    page.route(f"**/api/jobs/{job_id}/resume", hold)
    row(page, job_id).locator('button[data-action="resume"]').click()
    expect(badge).to_have_text("running")  # from the stream, the answer still held
    wait_in_page(page, lambda: held, "the resume request")
    (route, answer), = held
    assert answer.json()["state"] == "paused"
    route.fulfill(response=answer)
    page.wait_for_timeout(500)  # give the late answer time to (wrongly) repaint the row
    expect(badge).to_have_text("running")


def test_cancelling_a_running_job(page: Page, site: Site) -> None:
    job_id = running(site)
    log_in(page, site)
    actions = row(page, job_id).locator('[data-field="actions"]')
    actions.locator('button[data-action="cancel"]').click()
    expect(row(page, job_id).locator('[data-field="state"]')).to_have_text("cancelled")
    expect(actions.locator("button")).to_have_text(["Requeue"])
    expect(row(page, job_id).locator('[data-field="flags"]')).to_have_text("")  # no request
    assert site.app.get(job_id).state is JobState.CANCELLED


def test_new_jobs_appear_and_the_job_page_shows_history(page: Page, site: Site) -> None:
    log_in(page, site)
    job = site.app.enqueue("test.add", {"a": 2, "b": 3})
    expect(row(page, job.id).locator('[data-field="state"]')).to_have_text("completed")
    row(page, job.id).locator("a.mono").click()
    expect(page).to_have_url(f"{site.url}/jobs/{job.id}")
    expect(page.locator("#history li")).to_have_count(3)
    expect(page.locator("#history li strong")).to_have_text(["create", "start", "complete"])
    expect(page.locator("#params")).to_contain_text('"a": 2')
    expect(page.locator(".panel pre").nth(0)).to_have_text("5")


def test_the_job_page_follows_its_job_live(page: Page, site: Site) -> None:
    job_id = running(site, steps=4)
    log_in(page, site)
    page.goto(f"{site.url}/jobs/{job_id}")
    page.locator('#job button[data-action="pause"]').click()
    expect(page.locator('#job [data-field="state"]')).to_have_text("paused")
    expect(page.locator("#history li strong").last).to_have_text("pause")
    expect(page.locator("#checkpoint")).to_contain_text('"done": 0')
    page.locator('#job button[data-action="cancel"]').click()
    expect(page.locator('#job [data-field="state"]')).to_have_text("cancelled")
    expect(page.locator("#job .actions button")).to_have_text(["Requeue"])
    page.locator('#job button[data-action="requeue"]').click()
    expect(page.locator("#job dt", has_text="copy of")).to_be_visible()
    assert page.url != f"{site.url}/jobs/{job_id}"


def test_a_slow_page_read_does_not_leave_the_job_page_stale(page: Page, site: Site) -> None:
    """The pause's answer makes the page re-read itself; that read is held back until the
    stream has shown the job paused, then answered with the page as it was before the pause.
    Arriving last, its older "running" must not stay on screen."""
    job_id = running(site)
    log_in(page, site)
    page.goto(f"{site.url}/jobs/{job_id}")
    stale = page.request.get(f"{site.url}/jobs/{job_id}")
    assert ">running<" in stale.text()
    held: list[Route] = []

    def hold_first(route: Route) -> None:
        if held:
            route.continue_()
        else:
            held.append(route)

    page.route(f"**/jobs/{job_id}", hold_first)
    page.locator('#job button[data-action="pause"]').click()
    state = page.locator('#job [data-field="state"]')
    expect(state).to_have_text("paused")  # from the stream, the re-read still held
    # The stream can show the pause before the pause's answer starts the re-read.
    wait_in_page(page, lambda: held, "the re-read the pause's answer starts")
    held[0].fulfill(response=stale)
    page.wait_for_timeout(500)  # give the stale page time to (wrongly) stay
    expect(state).to_have_text("paused")
    expect(page.locator("#history li strong").last).to_have_text("pause")


def test_a_read_only_session_shows_no_buttons(page: Page, site: Site) -> None:
    job_id = running(site)
    log_in(page, site, READ_TOKEN)
    expect(row(page, job_id)).to_be_visible()
    expect(page.locator(".role")).to_have_text("read-only")
    site.stepper.step()
    expect(row(page, job_id).locator('[role="progressbar"]')).to_have_attribute(
        "aria-valuenow", "10")
    expect(page.locator("button[data-action]")).to_have_count(0)


def test_the_screenshot_recipe_shows_every_state(page: Page, tmp_path: Path) -> None:
    with demo_site(tmp_path) as (url, _, _):
        page.goto(f"{url}/login?token={TOKEN}")
        expect(page.locator("#jobs tbody tr")).to_have_count(6)
        states = page.locator('tbody [data-field="state"]')
        expect(states).to_have_text(["pending", "running", "paused", "cancelled", "failed",
                                     "completed"])
        target = tmp_path / "dashboard.png"
        page.screenshot(path=str(target), full_page=True)
        page.goto("about:blank")
    assert target.stat().st_size > 10_000


def test_live_rows_show_hidden_characters_escaped(page: Page, site: Site) -> None:
    log_in(page, site)
    job = site.app.enqueue("test.fail", {"message": "\u202egpj.exe \x1b[31m"})
    hint = row(page, job.id).locator('[data-field="error"]')
    expect(hint).to_contain_text("\\u202egpj.exe \\x1b[31m")  # built live by the script
    assert "\u202e" not in (hint.text_content() or "")


def test_the_dashboard_works_mounted_under_a_prefix(browser: Browser,
                                                    make_app: Callable[..., Conveyor]) -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    app = make_app()
    stepper = register_types(app)
    stopping = threading.Event()

    async def own_login(request: object) -> PlainTextResponse:
        return PlainTextResponse("the host application's login")

    host = Starlette(routes=[Route("/login", own_login), Mount(
        "/conveyor", app=make_web(app, stopping=stopping, poll_interval=0.2))])
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    try:
        with ServerThread(host, stopping) as server, running_worker(app):
            base = f"{server.url}/conveyor"
            job_id = running(Site(app, stepper, server))
            page.goto(f"{base}/")
            expect(page).to_have_url(f"{base}/login?next=%2F")
            page.fill("#token", TOKEN)
            page.click("button[type=submit]")
            expect(page).to_have_url(f"{base}/")
            expect(page.locator("#live")).to_have_text("live")  # the stream, under the prefix
            added = app.enqueue("test.add", {"a": 1, "b": 1})
            expect(row(page, added.id).locator('[data-field="state"]')).to_have_text("completed")
            row(page, job_id).locator('button[data-action="cancel"]').click()
            expect(row(page, job_id).locator('[data-field="state"]')).to_have_text("cancelled")
            row(page, job_id).locator("a.mono").click()
            expect(page).to_have_url(f"{base}/jobs/{job_id}")
            page.click("#logout")
            expect(page).to_have_url(f"{base}/login")
            page.goto(f"{base}/")
            expect(page).to_have_url(f"{base}/login?next=%2F")
            stepper.step(1000)
    finally:
        page.goto("about:blank")
        context.close()
    assert [e for e in errors if "401" not in e] == []


def test_the_dashboard_works_behind_the_host_applications_login(
        browser: Browser, make_app: Callable[..., Conveyor]) -> None:
    """Mounted with HostAuth: the host's cookie lets Alice in, the page's script sends her
    CSRF token with each action, and a stranger is sent to the host's login page."""
    from .test_web_host_auth import host_app

    app = make_app()
    stepper = register_types(app)
    stopping = threading.Event()
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    try:
        with ServerThread(host_app(app, stopping=stopping), stopping) as server, \
                running_worker(app):
            base = f"{server.url}/jobs"
            job_id = running(Site(app, stepper, server))
            stranger = page.request.get(f"{base}/", max_redirects=0)
            assert stranger.status == 303
            assert stranger.headers["location"] == "/accounts/login?next=%2Fjobs%2F"
            context.add_cookies([{"name": "host_session", "value": "alice-session",
                                  "url": server.url}])
            page.goto(f"{base}/")
            expect(page.locator(".user")).to_have_text("alice")
            expect(page.locator("#live")).to_have_text("live")
            expect(page.locator("#logout")).to_have_count(0)
            row(page, job_id).locator('button[data-action="cancel"]').click()
            expect(row(page, job_id).locator('[data-field="state"]')).to_have_text("cancelled")
            assert ("request_cancel", "user:alice") in [(entry.action, entry.actor)
                                                        for entry in app.history(job_id)]
            stepper.step(1000)
    finally:
        page.goto("about:blank")
        context.close()
    assert errors == []


def test_the_overview_draws_throughput_queue_depth_and_queues(page: Page, site: Site) -> None:
    jobs = [site.app.enqueue("test.add", {"a": n}) for n in range(3)]
    site.app.enqueue("test.fail")
    wait_until(lambda: all(site.app.get(j.id).is_terminal for j in jobs), message="finished")
    site.app.enqueue("test.add", {"a": 1}, queue="later", delay=600)
    wait_until(lambda: site.app.counts()[JobState.FAILED] == 1, message="failed")
    log_in(page, site)
    bars = page.locator("#chart-throughput svg g.bar")
    totals = [int(t) for t in bars.evaluate_all("gs => gs.map(g => g.dataset.total)")]
    assert sum(totals) == 4
    expect(page.locator("#chart-throughput svg rect.failed")).not_to_have_count(0)
    pending = page.locator('#chart-depth svg g.series[data-series="pending"]')
    # this minute's sample (the worker's reaper or the page took it): drawn as a dot
    expect(pending).to_have_attribute("data-samples", "1")
    expect(pending.locator("circle")).to_have_count(1)
    expect(page.locator('#queue-counts tr[data-queue="later"] td[data-state="pending"]')
           ).to_have_text("1")


def test_the_overview_moves_on_while_the_page_stays_open(page: Page, site: Site) -> None:
    """Every half minute the page re-reads the overview: jobs finished since it loaded show
    up in the throughput chart and the queue table without a reload."""
    page.clock.install()
    log_in(page, site)
    bars = page.locator("#chart-throughput svg g.bar")
    late = page.locator('#queue-counts tr[data-queue="late"]')
    expect(bars).to_have_count(0)
    expect(late).to_have_count(0)
    job = site.app.enqueue("test.add", {"a": 1}, queue="late")
    wait_until(lambda: site.app.get(job.id).is_terminal, message="finished")
    page.clock.run_for(31_000)
    expect(bars).to_have_count(1)
    expect(late).to_have_count(1)


def test_a_bulk_cancel_confirms_the_count_then_cancels_live(page: Page, site: Site) -> None:
    targets = [site.app.enqueue("test.add", {"a": n}, queue="bulk", delay=600) for n in range(3)]
    other = site.app.enqueue("test.add", {"a": 9}, delay=600)
    log_in(page, site)
    page.goto(f"{site.url}/?state=pending&queue=bulk")
    expect(page.locator("#jobs tbody tr[data-job-id]")).to_have_count(3)
    questions: list[str] = []

    def answer(accept: bool) -> None:
        def on_dialog(dialog: Dialog) -> None:
            questions.append(dialog.message)
            if accept:
                dialog.accept()
            else:
                dialog.dismiss()

        page.once("dialog", on_dialog)
        page.locator('button[data-bulk="cancel"]').click()

    answer(False)
    wait_in_page(page, lambda: questions, "the confirmation")
    assert questions == ["Cancel 3 jobs matching this filter?"]
    assert site.app.count_jobs(state="pending", queue="bulk") == 3  # declined: nothing changed
    answer(True)
    expect(page.locator("#flash")).to_contain_text("Cancel: 3 changed")
    for job in targets:  # each row changes live, and each job's history says who did it
        expect(row(page, job.id).locator('[data-field="state"]')).to_have_text("cancelled")
        last = site.app.history(job.id)[-1]
        assert (last.action, last.actor, last.reason) == ("cancel", "dashboard", "bulk cancel")
    assert site.app.get(other.id).state is JobState.PENDING


def test_searching_by_text_queue_and_id_prefix(page: Page, site: Site) -> None:
    needle = site.app.enqueue("test.add", {"a": 424242}, queue="search", delay=600)
    site.app.enqueue("test.add", {"a": 7}, queue="search", delay=600)
    log_in(page, site)
    page.select_option('select[name="queue"]', "search")
    page.fill('input[name="text"]', "424242")
    page.click('form.filters button[type="submit"]')
    expect(page.locator("#jobs tbody tr[data-job-id]")).to_have_count(1)
    expect(row(page, needle.id)).to_be_visible()
    page.fill('input[name="text"]', "")
    page.fill('input[name="id_prefix"]', needle.id[-8:])  # the short id a listing shows
    page.click('form.filters button[type="submit"]')
    expect(page.locator("#jobs tbody tr[data-job-id]")).to_have_count(1)
    expect(page.locator('input[name="id_prefix"]')).to_have_value(needle.id[-8:])


def test_the_logs_panel_follows_a_running_job(page: Page, site: Site) -> None:
    job_id = running(site, steps=5)
    site.stepper.step()
    wait_until(lambda: site.app.logs(job_id), message="the first line written")
    log_in(page, site)
    page.goto(f"{site.url}/jobs/{job_id}")
    lines = page.locator("#logs li.log-line")
    expect(lines).to_have_count(1)
    expect(lines.first).to_contain_text("step 1 of 5")
    site.stepper.step(2)  # written by the worker about once a second; the page follows live
    expect(lines).to_have_count(3)
    expect(lines.last).to_contain_text("step 3 of 5")


def test_the_workers_page_lists_workers_and_stops_one(page: Page, site: Site) -> None:
    extra = site.app.worker(concurrency=1, lease_seconds=2, heartbeat_interval=0.2,
                            poll_interval=0.05, handle_signals=False, worker_id="browser-extra")
    thread = threading.Thread(target=extra.run, name="extra-worker", daemon=True)
    thread.start()
    try:
        wait_until(lambda: any(w.id == "browser-extra" for w in site.app.workers()),
                   message="the extra worker registered")
        log_in(page, site)
        page.goto(f"{site.url}/workers")
        extra_row = page.locator('tr[data-worker="browser-extra"]')
        expect(extra_row).to_contain_text("running")
        expect(page.locator("#workers tbody tr")).to_have_count(2)  # and the site's own
        questions: list[str] = []

        def on_dialog(dialog: Dialog) -> None:
            questions.append(dialog.message)
            dialog.accept()

        page.once("dialog", on_dialog)
        with page.expect_navigation():  # the page reloads itself once the request is taken
            extra_row.locator("button[data-post]").click()
        thread.join(15)
        assert not thread.is_alive(), "the worker stopped on the operator's request"
        assert questions and "browser-extra" in questions[0]
        page.goto(f"{site.url}/workers")
        expect(page.locator('tr[data-worker="browser-extra"]')).to_contain_text("stopped")
    finally:
        extra.stop()
        thread.join(15)


def test_a_queues_limits_are_set_and_removed_from_its_form(page: Page, site: Site) -> None:
    site.app.enqueue("test.add", {"a": 1}, queue="mail", delay=600)
    log_in(page, site)
    page.goto(f"{site.url}/flow")
    form = page.locator('form.limit-form[data-queue="mail"]')
    form.locator('input[name="max_running"]').fill("2")
    form.locator('input[name="rate_limit"]').fill("10/m")
    with page.expect_navigation():  # the page reloads itself once the API took the limits
        form.locator('button[type="submit"]').click()
    expect(page.locator('td[data-limits="mail"]')).to_contain_text("2 running, 10/m")
    queue = next(q for q in site.app.queues() if q.name == "mail")
    assert (queue.max_running, queue.rate_limit, queue.limit_actor) == (2, "10/m", "dashboard")
    form.locator('input[name="rate_limit"]').fill("10 per day")  # refused: nothing changes
    form.locator('button[type="submit"]').click()
    expect(page.locator("#flash")).to_contain_text("10 per day")
    assert next(q for q in site.app.queues() if q.name == "mail").rate_limit == "10/m"
    form.locator('input[name="max_running"]').fill("")
    form.locator('input[name="rate_limit"]').fill("")
    with page.expect_navigation():
        form.locator('button[type="submit"]').click()
    expect(page.locator('td[data-limits="mail"]')).to_contain_text("—")
    assert next(q for q in site.app.queues() if q.name == "mail").max_running is None

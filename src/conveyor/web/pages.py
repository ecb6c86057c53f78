"""The dashboard's HTML pages and the login that lets a browser in.

Pages are rendered on the server (they work before the script loads, and every value is escaped
by :mod:`conveyor.web.templates`); the script in ``static/dashboard.js`` then keeps them live
from the event stream and sends the control actions. The buttons each job shows are its
``legal_actions``, computed from the lifecycle table: the page never decides what is legal.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from conveyor import __version__
from conveyor.app import Conveyor
from conveyor.ids import short_id
from conveyor.lifecycle import JobState
from conveyor.model import HistoryEntry, Job, LogLine
from conveyor.web.charts import overview_html, read_overview
from conveyor.web.common import DEFAULT_LIMIT, ApiError, call, read_body
from conveyor.web.flow_pages import run_now_button
from conveyor.web.hostauth import HostAuth
from conveyor.web.middleware import principal_of, root_of
from conveyor.web.search import SEARCH_FIELDS
from conveyor.web.search_page import bulk_bar, filter_form, page_filters, pager_query
from conveyor.web.security import SESSION_COOKIE, AuthConfig, Principal
from conveyor.web.templates import (
    Markup,
    action_buttons,
    esc_lines,
    join,
    page,
    pretty_json,
    progress_bar,
    render,
    state_badge,
    when,
)

_LOGIN_BODY_LIMIT = 4096
#: The most log lines the job page shows when it loads (the API pages through the rest).
LOG_LINES_SHOWN = 2000


def safe_next(target: str | None) -> str:
    """Only a path on this site: an open redirect would make a fine phishing link."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return target


class Pages:
    """``/``, ``/jobs/{id}``, ``/login`` and ``/logout``."""

    def __init__(self, app: Conveyor, auth: AuthConfig | HostAuth) -> None:
        self.app = app
        self.auth = auth

    def routes(self) -> list[Route]:
        return [
            Route("/", self.dashboard, methods=["GET"], name="dashboard"),
            Route("/overview", self.overview, methods=["GET"], name="overview"),
            Route("/jobs/{job_id}", self.job_page, methods=["GET"], name="job_page"),
            Route("/login", self.login, methods=["GET", "POST"], name="login"),
            Route("/logout", self.logout, methods=["POST"], name="logout"),
        ]

    def _page(self, request: Request, title: str, body: Markup, page_name: str) -> HTMLResponse:
        principal = principal_of(request)
        return HTMLResponse(page(
            title, body, page_name=page_name, csrf=principal.csrf_token or "",
            can_write=principal.can_write, user=_user_box(principal), version=__version__,
            live="connecting…"))

    async def overview(self, request: Request) -> Response:
        """The overview's charts and queue table alone: the dashboard re-reads them every
        half minute, so the last hour moves on while the page stays open."""
        return HTMLResponse(overview_html(await call(read_overview, self.app)))

    # -- dashboard ----------------------------------------------------------------------------
    async def dashboard(self, request: Request) -> Response:
        query = request.query_params
        filters, raw = page_filters(query)
        state = raw["state"] or None
        before = query.get("before") or None
        jobs = await call(self.app.list, **filters, limit=DEFAULT_LIMIT, before=before)
        overview = await call(read_overview, self.app)
        counts = overview.counts()  # from the queues' counts: one count of the jobs, not two
        can_write = principal_of(request).can_write
        rows = join([_job_row(job, can_write) for job in jobs]) or Markup(
            '<tr class="empty"><td colspan="7">No jobs match.</td></tr>')
        older = Markup("")
        if len(jobs) == DEFAULT_LIMIT:
            older = render('<a class="older" href="{root}/?{query}">Older jobs →</a>',
                           query=pager_query(raw, jobs[-1].id))
        body = render(
            DASHBOARD, counts=_counts(counts, state), overview=overview_html(overview),
            filters=filter_form(raw, sorted(self.app.job_types),
                                [q.name for q in overview.queues]),
            bulk=bulk_bar(filters, can_write=can_write), rows=rows, older=older,
            state=state or "", job_type=raw["job_type"],
            searching="true" if any(raw[k] for k in (*SEARCH_FIELDS, "queue")) else "")
        return self._page(request, "Jobs", body, "dashboard")

    # -- one job ------------------------------------------------------------------------------
    async def job_page(self, request: Request) -> Response:
        job = await call(self.app.get, request.path_params["job_id"])
        history = await call(self.app.history, job.id)
        lines = await call(self.app.logs, job.id, limit=LOG_LINES_SHOWN)
        links = await call(self.app.dependencies, job.id)
        can_write = principal_of(request).can_write
        body = render(
            JOB_PAGE, id=job.id, state=job.state.value, job_type=job.job_type,
            updated_at=job.to_dict()["updated_at"],
            badge=state_badge(job),
            progress=progress_bar(job), actions=action_buttons(job, can_write=can_write),
            edits=run_now_button(job, await call(self.app.store.now), can_write=can_write),
            rendered=",".join(job.legal_actions) if can_write else "",
            details=_details(job, _ran_by(history), await call(self.app.held_reason, job),
                             links),
            params=pretty_json(job.params),
            checkpoint=pretty_json(job.progress.last_checkpoint),
            outcome=_outcome(job), history=join([_history_item(e) for e in history]),
            logs=join([log_item(line) for line in lines]),
            logs_after=lines[-1].id if lines else 0,
            logs_empty="" if lines else "No lines logged yet.")
        return self._page(request, f"{job.job_type} {short_id(job.id)}", body, "job")

    # -- login --------------------------------------------------------------------------------
    async def login(self, request: Request) -> Response:
        if isinstance(self.auth, HostAuth):  # the host application logs its users in
            return _host_login(request, self.auth)
        if request.method == "POST":
            return await self.login_submit(request)
        return await self.login_form(request)

    async def login_form(self, request: Request) -> Response:
        next_path = safe_next(request.query_params.get("next"))
        token = request.query_params.get("token")
        if not self.auth.enabled:
            return RedirectResponse(root_of(request.scope) + next_path, status_code=303)
        if token is not None:
            return self._log_in(request, token, next_path)
        return _login_page(next_path)

    async def login_submit(self, request: Request) -> Response:
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return _login_page("/", "Log in from this site's own login page.", 403)
        try:
            body = await read_body(request, _LOGIN_BODY_LIMIT)
        except ApiError:
            return _login_page("/", "That request was too large.", 413)
        try:
            form = parse_qs(body.decode("utf-8", "replace"), max_num_fields=10)
        except ValueError:  # more fields than the form has: not our form
            return _login_page("/", "That request had too many fields.", 400)
        next_path = safe_next((form.get("next") or ["/"])[0])
        if not self.auth.enabled:
            return RedirectResponse(root_of(request.scope) + next_path, status_code=303)
        return self._log_in(request, (form.get("token") or [""])[0], next_path)

    def _log_in(self, request: Request, token: str, next_path: str) -> Response:
        if not isinstance(self.auth, AuthConfig):  # pragma: no cover - login() routes it away
            raise TypeError("token login without tokens")
        role = self.auth.role_of_token(token.strip()) if token.strip() else None
        if role is None:
            return _login_page(next_path, "That token is not valid.", 401)
        root = root_of(request.scope)
        response = RedirectResponse(root + next_path, status_code=303)
        response.set_cookie(SESSION_COOKIE, self.auth.new_session(role),
                            max_age=self.auth.session_max_age, path=root or "/", httponly=True,
                            samesite="strict", secure=request.scope.get("scheme") == "https")
        return response

    async def logout(self, request: Request) -> Response:
        principal = principal_of(request)
        if principal.session_id is not None and isinstance(self.auth, AuthConfig):
            self.auth.end_session(principal)  # a copy of the cookie is refused from now on
        root = root_of(request.scope)
        response = RedirectResponse(f"{root}/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=root or "/", httponly=True,
                               samesite="strict")
        return response


def _host_login(request: Request, auth: HostAuth) -> Response:
    """Under the host's authentication there is no conveyor login: send the browser to the
    host's, or say where to go."""
    next_path = root_of(request.scope) + safe_next(request.query_params.get("next"))
    if auth.login_url is not None:
        return RedirectResponse(f"{auth.login_url}?{urlencode({'next': next_path})}",
                                status_code=303)
    body = render('<section class="panel"><h1>Log in</h1><p>This dashboard uses the '
                  'application\'s own login: log in there, then come back.</p></section>')
    return HTMLResponse(page("Log in", body, page_name="login", version=__version__),
                        status_code=401)


def _login_page(next_path: str, error: str = "", status: int = 200) -> HTMLResponse:
    message = render('<p class="error" role="alert">{error}</p>', error=error) if error else ""
    body = render(LOGIN, next=next_path, error=message)
    return HTMLResponse(page("Log in", body, page_name="login", version=__version__),
                        status_code=status)


def _user_box(principal: Principal) -> Markup:
    if principal.via == "open":
        return Markup('<span class="role role-open">no authentication</span>')
    role = render('<span class="role role-{role}">{text}</span>', role=principal.role.value,
                  text="admin" if principal.can_write else "read-only")
    if principal.user is not None:
        return join([render('<span class="user">{user}</span>', user=principal.user), role])
    if principal.via != "session":
        return role
    return join([role, Markup('<button type="button" class="btn btn-quiet" id="logout">'
                              'Log out</button>')])


def _counts(counts: dict[JobState, int], selected: str | None) -> Markup:
    cells = [render('<a class="count state-{state}{current}" href="{root}/?state={state}">'
                    '<span class="n" data-count="{state}">{n}</span>'
                    '<span class="label">{state}</span></a>',
                    state=state.value, n=counts.get(state, 0),
                    current=" current" if selected == state.value else "")
             for state in JobState]
    cells.append(render('<a class="count total{current}" href="{root}/"><span class="n" '
                        'data-count="total">{n}</span><span class="label">all</span></a>',
                        n=sum(counts.values()), current="" if selected else " current"))
    return join(cells)


def _job_row(job: Job, can_write: bool) -> Markup:
    return render(
        '<tr data-job-id="{id}" data-state="{state}" data-job-type="{job_type}">'
        '<td><a class="mono" href="{root}/jobs/{id}" title="{id}">{short}</a></td>'
        '<td><span class="type" title="{job_type}">{job_type}</span>'
        '<span class="queue">{queue}</span></td>'
        '<td>{badge}</td><td class="progress-cell">{progress}</td>'
        '<td class="num" data-field="attempt" title="retries used / allowed">{attempt}</td>'
        '<td data-field="updated">{updated}</td>'
        '<td class="actions" data-field="actions" data-rendered="{rendered}">{actions}</td>'
        '</tr>',
        id=job.id, short=short_id(job.id), state=job.state.value, job_type=job.job_type,
        queue=job.queue, badge=state_badge(job, with_error=True), progress=progress_bar(job),
        attempt=f"{job.attempt}/{job.max_attempts}", updated=when(job.updated_at),
        actions=action_buttons(job, can_write=can_write),
        rendered=",".join(job.legal_actions) if can_write else "")


def _ran_by(history: list[HistoryEntry]) -> str | None:
    """The worker of the job's last run: the actor of its last claim (``start``/``resume``).

    A finished job's ``worker_id`` is cleared with its lease; its history still says who ran it.
    """
    claims = [entry.actor for entry in history if entry.to_state is JobState.RUNNING
              and entry.from_state is not JobState.RUNNING and entry.actor]
    return claims[-1] if claims else None


def _details(job: Job, ran_by: str | None = None, held: str | None = None,
             links: tuple[list[Job], list[Job]] = ([], [])) -> Markup:
    rows: list[tuple[str, object]] = [
        *([("held", held)] if held else []),  # why a limit keeps it waiting (limits.py)
        ("queue", job.queue), ("priority", job.priority),
        *([("limit key", job.limit_key)] if job.limit_key else []),
        ("attempt", f"{job.attempt} of {job.max_attempts} retries used"),
        ("created", when(job.created_at)), ("run at", when(job.run_at)),
        ("started", when(job.started_at)), ("paused", when(job.paused_at)),
        ("finished", when(job.finished_at)), ("updated", when(job.updated_at)),
        ("worker", job.worker_id or ran_by or "—"),
        ("timeout", f"{job.timeout:g} s" if job.timeout else "none"),
    ]
    items = [render('<dt>{name}</dt><dd data-detail="{key}">{value}</dd>', name=name,
                    key=name.replace(" ", "_"), value=value) for name, value in rows]
    if job.requeued_from:
        items.append(render('<dt>copy of</dt><dd><a class="mono" href="{root}/jobs/{id}">{id}</a>'
                            '</dd>', id=job.requeued_from))
    if job.state is JobState.PENDING and job.waiting_on:
        items.append(render('<dt>waiting for</dt><dd data-detail="waiting_on">{n} dependency '
                            'job(s) to complete</dd>', n=job.waiting_on))
    for name, key, linked in (("depends on", "upstream", links[0]),
                              ("needed by", "downstream", links[1])):
        if linked:
            items.append(render('<dt>{name}</dt><dd data-detail="{key}"><ul class="links">'
                                '{items}</ul></dd>', name=name, key=key,
                                items=join([_link(other) for other in linked])))
    return join(items)


def _link(job: Job) -> Markup:
    """One upstream or downstream job: a link to its page, its type and state."""
    return render('<li><a class="mono" href="{root}/jobs/{id}" title="{id}">{short}</a> '
                  '<span class="type">{job_type}</span> '
                  '<span class="badge state-{state}">{state}</span></li>', id=job.id,
                  short=short_id(job.id), job_type=job.job_type, state=job.state.value)


def _outcome(job: Job) -> Markup:
    if job.error is not None:
        return render('<section class="panel error-panel"><h2>Error</h2>'
                      '<p class="error-line"><strong>{type}</strong>: {message}</p>'
                      '<pre class="traceback">{traceback}</pre></section>',
                      type=job.error.type, message=job.error.message,
                      traceback=esc_lines(job.error.traceback or "(no traceback)"))
    if job.state is JobState.COMPLETED:
        return render('<section class="panel"><h2>Result</h2><pre>{result}</pre></section>',
                      result=pretty_json(job.result))
    return Markup("")


def log_item(line: LogLine) -> Markup:
    """One line of the Logs panel (dashboard.js builds the same from the API's JSON)."""
    return render('<li class="log-line level-{lvl}" data-id="{id}"><span class="log-meta">'
                  '{at} {level} #{attempt}</span> <span class="log-msg">{message}</span></li>',
                  lvl=line.level.lower(), id=line.id, at=f"{line.at:%H:%M:%S}",
                  level=line.level, attempt=line.attempt, message=esc_lines(line.message))


def _history_item(entry: HistoryEntry) -> Markup:
    moved = entry.from_state is not entry.to_state
    change = (f"{entry.from_state.value if entry.from_state else 'created'} → "
              f"{entry.to_state.value}" if moved else f"in {entry.to_state.value}")
    return render(
        '<li class="event state-{to}"><span class="dot" aria-hidden="true"></span>'
        '<div class="event-body"><div class="event-head"><strong>{action}</strong> '
        '<span class="change">{change}</span></div>'
        '<div class="event-meta">{at} · attempt {attempt} · by {actor}</div>'
        '<div class="event-reason">{reason}</div></div></li>',
        to=entry.to_state.value, action=entry.action, change=change, at=when(entry.at),
        attempt=entry.attempt, actor=entry.actor or "?", reason=entry.reason)


DASHBOARD = """
<section class="counts" aria-label="jobs per state">{counts}</section>
{overview}
<form class="filters" method="get" action="{root}/">{filters}</form>
{bulk}
<table class="jobs" id="jobs" data-filter-state="{state}" data-filter-type="{job_type}"
 data-searching="{searching}">
<thead><tr><th>Job</th><th>Type / queue</th><th>State</th><th>Progress</th>
<th title="retries used / allowed">Retries</th><th>Updated</th><th>Actions</th></tr></thead>
<tbody>{rows}</tbody>
</table>
<nav class="pager">{older}</nav>
"""

JOB_PAGE = """
<p class="crumbs"><a href="{root}/">← all jobs</a></p>
<article class="job" id="job" data-job-id="{id}" data-state="{state}"
 data-updated-at="{updated_at}">
<header class="job-head">
  <h1><span class="type">{job_type}</span> {badge}</h1>
  <p class="mono muted">{id}</p>
  <div class="job-progress">{progress}</div>
  <div class="actions" data-field="actions" data-rendered="{rendered}">{actions}</div>
  <div class="actions edits">{edits}</div>
</header>
<div class="grid">
  <section class="panel"><h2>Details</h2><dl class="details">{details}</dl></section>
  <section class="panel"><h2>History</h2><ol class="timeline" id="history">{history}</ol>
  </section>
</div>
{outcome}
<section class="panel logs-panel"><h2>Logs</h2>
  <p class="muted" id="logs-empty">{logs_empty}</p>
  <ol class="logs" id="logs" data-after="{logs_after}">{logs}</ol>
</section>
<div class="grid">
  <section class="panel"><h2>Params</h2><pre id="params">{params}</pre></section>
  <section class="panel"><h2>Checkpoint</h2><pre id="checkpoint">{checkpoint}</pre></section>
</div>
</article>
"""

LOGIN = """
<section class="login panel">
<h1>Log in</h1>
<p>Paste the dashboard's token (printed when it started, or set in
<code>CONVEYOR_TOKEN</code>).</p>
{error}
<form method="post" action="{root}/login">
<input type="hidden" name="next" value="{next}">
<label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required
 autofocus>
<button type="submit" class="btn btn-primary">Log in</button>
</form>
</section>
"""

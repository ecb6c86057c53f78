// conveyor dashboard: keeps server-rendered pages live and sends the control actions.
//
// Rules this file keeps, and why:
// - Job data is only ever put into the page with textContent (never parsed as HTML), so params,
//   errors and type names chosen by whoever enqueued a job can never become markup.
// - The buttons a job shows are its `legal_actions` from the server (derived from the
//   lifecycle table); this script never decides what is legal.
// - Every POST carries the session's CSRF token (from the page's meta tag) as a header.
// - Job text is shown through visible(): control, bidi and invisible characters appear as
//   \u202e-style escapes (as on the server-rendered page), so they cannot reorder or hide text.
// - Every URL starts with the mount prefix (meta conveyor-root): the dashboard may be mounted
//   under a path of another application.
(function () {
  "use strict";

  function meta(name) {
    var tag = document.querySelector('meta[name="' + name + '"]');
    return tag ? tag.getAttribute("content") : "";
  }

  var csrfToken = meta("csrf-token");
  var canWrite = meta("conveyor-can-write") === "true";
  var pageName = document.body.getAttribute("data-page");
  var prefix = meta("conveyor-root");

  // -- untrusted text ------------------------------------------------------------------------
  // The same rule as conveyor.display.visible (Python): C0/C1 controls, DEL, format characters
  // (bidi overrides and isolates, LRM/RLM, zero-width space, BOM), surrogates and line/paragraph
  // separators become escapes; a joiner between two non-ASCII characters (emoji) is kept.
  var HIDDEN = /^[\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}]$/u;

  function hex(code, width) {
    var text = code.toString(16);
    while (text.length < width) text = "0" + text;
    return text;
  }

  function escapeChar(code) {
    if (code < 0x100) return "\\x" + hex(code, 2);
    if (code < 0x10000) return "\\u" + hex(code, 4);
    return "\\U" + hex(code, 8);
  }

  function visible(value) {
    var chars = Array.from(value === undefined || value === null ? "" : String(value));
    var out = "";
    for (var i = 0; i < chars.length; i++) {
      var c = chars[i];
      var joins = (c === "\u200c" || c === "\u200d") && i > 0 && i < chars.length - 1 &&
        chars[i - 1].codePointAt(0) > 0x7f && chars[i + 1].codePointAt(0) > 0x7f;
      out += !joins && HIDDEN.test(c) ? escapeChar(c.codePointAt(0)) : c;
    }
    return out;
  }

  // -- small DOM helpers ---------------------------------------------------------------------
  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function label(action) {
    return action.charAt(0).toUpperCase() + action.slice(1);
  }

  function formatTime(iso) {
    if (!iso) return "—";
    return iso.replace("T", " ").slice(0, 19) + " UTC";
  }

  // The server says which requests are still pending (none once a job stopped for good).
  function flagsText(job) {
    return (job.pending_requests || []).join(", ");
  }

  function errorText(job) {
    if (!job.error) return "";
    return visible(job.error.message ? job.error.type + ": " + job.error.message
      : job.error.type);
  }

  function stepsText(progress) {
    if (progress.total_steps) return progress.current_step + "/" + progress.total_steps;
    return progress.current_step ? String(progress.current_step) : "";
  }

  function flash(message) {
    var box = document.getElementById("flash");
    if (!box) return;
    box.removeAttribute("data-kind");
    box.textContent = message;
    box.hidden = !message;
  }

  function setLive(state, text) {
    var live = document.getElementById("live");
    if (!live) return;
    live.setAttribute("data-state", state);
    live.textContent = text;
  }

  // -- progress bars -------------------------------------------------------------------------
  // The fill's width is set here through the CSSOM: the page's CSP forbids inline styles.
  function setProgress(bar, percent) {
    var value = Math.max(0, Math.min(100, Number(percent) || 0));
    bar.setAttribute("aria-valuenow", String(Math.round(value * 100) / 100));
    var fill = bar.querySelector(".fill");
    if (fill) fill.style.width = value + "%";
  }

  function initBars(root) {
    root.querySelectorAll(".progress").forEach(function (bar) {
      setProgress(bar, bar.getAttribute("aria-valuenow"));
    });
  }

  // -- one job's visible fields --------------------------------------------------------------
  function renderActions(container, job) {
    var wanted = canWrite ? job.legal_actions.join(",") : "";
    if (container.getAttribute("data-rendered") === wanted) return;
    container.setAttribute("data-rendered", wanted);
    container.replaceChildren();
    if (!canWrite) return;
    job.legal_actions.forEach(function (action) {
      var button = el("button", "btn btn-" + action, label(action));
      button.type = "button";
      button.setAttribute("data-action", action);
      button.setAttribute("data-job-id", job.id);
      container.appendChild(button);
    });
  }

  function field(scope, name) {
    return scope.querySelector('[data-field="' + name + '"]');
  }

  function updateFields(scope, job) {
    var badge = field(scope, "state");
    if (badge) {
      badge.textContent = job.state;
      badge.className = "badge state-" + job.state;
    }
    var flags = field(scope, "flags");
    if (flags) flags.textContent = flagsText(job);
    var error = field(scope, "error");
    if (error) {
      error.textContent = errorText(job);
      error.title = errorText(job);
    }
    var bar = field(scope, "progress");
    if (bar) setProgress(bar, job.progress.percent);
    var steps = field(scope, "steps");
    if (steps) steps.textContent = stepsText(job.progress);
    var attempt = field(scope, "attempt");
    if (attempt) attempt.textContent = job.attempt + "/" + job.max_attempts;
    var updated = field(scope, "updated");
    if (updated) {
      var time = el("time", "", formatTime(job.updated_at));
      time.setAttribute("datetime", job.updated_at);
      updated.replaceChildren(time);
    }
    var actions = field(scope, "actions");
    if (actions) renderActions(actions, job);
    scope.setAttribute("data-state", job.state);
  }

  // -- the dashboard's table -----------------------------------------------------------------
  function buildRow(job) {
    var row = el("tr");
    row.setAttribute("data-job-id", job.id);
    row.setAttribute("data-job-type", job.job_type);
    var idCell = el("td");
    var link = el("a", "mono", job.id.slice(0, 8));
    link.href = prefix + "/jobs/" + encodeURIComponent(job.id);
    link.title = job.id;
    idCell.appendChild(link);
    var typeCell = el("td");
    var type = el("span", "type", visible(job.job_type));
    type.title = visible(job.job_type);
    typeCell.append(type, el("span", "queue", visible(job.queue)));
    var stateCell = el("td");
    var badge = el("span", "", job.state);
    badge.setAttribute("data-field", "state");
    var flags = el("span", "flags");
    flags.setAttribute("data-field", "flags");
    var error = el("span", "error-hint");
    error.setAttribute("data-field", "error");
    stateCell.append(badge, flags, error);
    var progressCell = el("td", "progress-cell");
    var bar = el("div", "progress");
    bar.setAttribute("role", "progressbar");
    bar.setAttribute("aria-label", "progress of job " + job.id);
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    bar.setAttribute("data-field", "progress");
    bar.appendChild(el("div", "fill"));
    var steps = el("span", "steps");
    steps.setAttribute("data-field", "steps");
    progressCell.append(bar, steps);
    var attempt = el("td", "num");
    attempt.setAttribute("data-field", "attempt");
    var updated = el("td");
    updated.setAttribute("data-field", "updated");
    var actions = el("td", "actions");
    actions.setAttribute("data-field", "actions");
    row.append(idCell, typeCell, stateCell, progressCell, attempt, updated, actions);
    return row;
  }

  function findRow(tbody, jobId) {
    var rows = tbody.querySelectorAll("tr[data-job-id]");
    for (var i = 0; i < rows.length; i++) {
      if (rows[i].getAttribute("data-job-id") === jobId) return rows[i];
    }
    return null;
  }

  function updateTable(job) {
    var table = document.getElementById("jobs");
    if (!table) return;
    var tbody = table.tBodies[0];
    var row = findRow(tbody, job.id);
    if (!row) {
      // A job we have not shown: add it on top if the page's filter wants it and the page
      // shows the newest jobs (not an older page).
      var wantState = table.getAttribute("data-filter-state");
      var wantType = table.getAttribute("data-filter-type");
      if (new URLSearchParams(location.search).get("before")) return;
      // a search (queue, id, text, times) this script cannot check: the page shows its own
      if (table.getAttribute("data-searching") === "true") return;
      if ((wantState && wantState !== job.state) || (wantType && wantType !== job.job_type)) {
        return;
      }
      var empty = tbody.querySelector("tr.empty");
      if (empty) empty.remove();
      row = buildRow(job);
      tbody.insertBefore(row, tbody.firstChild);
    }
    updateFields(row, job);
  }

  function updateCounts(data) {
    Object.keys(data.counts).forEach(function (state) {
      var cell = document.querySelector('[data-count="' + state + '"]');
      if (cell) cell.textContent = String(data.counts[state]);
    });
    var total = document.querySelector('[data-count="total"]');
    if (total) total.textContent = String(data.total);
  }

  // -- the job page --------------------------------------------------------------------------
  // When the job changes state, re-read the page from the server and swap in its sections:
  // the server renders (and escapes) them, so this script does not duplicate that work.
  // One read at a time; a change that arrives while one is in flight asks for another after
  // it. A read rendered before the newest change shown (older data-updated-at, as when the
  // server was slow to answer) is not swapped in: it is read again, a few times at most.
  // One element of a page this server renders (and escaped), or null when it could not be read.
  function readFragment(path, selector) {
    return fetch(prefix + path, {credentials: "same-origin"})
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (text) {
        return text ? new DOMParser().parseFromString(text, "text/html").querySelector(selector)
          : null;
      });
  }

  var refreshing = false;
  var refreshAgain = false;
  function refreshJobPage(jobId, tries) {
    if (refreshing) {
      refreshAgain = true;
      return;
    }
    refreshing = true;
    refreshAgain = false;
    var stale = false;
    readFragment("/jobs/" + encodeURIComponent(jobId), "#job")
      .then(function (fresh) {
        var current = document.getElementById("job");
        if (!fresh || !current) return;
        var key = timeKey(fresh.getAttribute("data-updated-at"));
        if (shownAt[jobId] !== undefined && key < shownAt[jobId]) {
          stale = true;
          return;
        }
        current.replaceWith(document.importNode(fresh, true));
        initBars(document);
      })
      .catch(function () { /* the stream will bring the next change */ })
      .finally(function () {
        refreshing = false;
        var left = tries === undefined ? 5 : tries;
        if (refreshAgain || (stale && left > 0)) {
          setTimeout(function () { refreshJobPage(jobId, stale ? left - 1 : 5); },
                     stale ? 200 : 0);
        }
      });
  }

  function updateJobPage(job) {
    var root = document.getElementById("job");
    if (!root || root.getAttribute("data-job-id") !== job.id) return;
    var before = root.getAttribute("data-shown") ||
      (field(root, "state") ? field(root, "state").textContent : "") + "|" +
      (field(root, "flags") ? field(root, "flags").textContent : "");
    updateFields(root, job);
    var after = job.state + "|" + flagsText(job);
    root.setAttribute("data-shown", after);
    if (before !== after) refreshJobPage(job.id);
  }

  // -- actions -------------------------------------------------------------------------------
  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrfToken},
      body: JSON.stringify(body || {})
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (!response.ok) {
          throw new Error(data.message || ("request failed (" + response.status + ")"));
        }
        return data;
      });
    });
  }

  // A job's rows reach the page from two sources, an action's answer and the stream, and they
  // may arrive out of order (a worker resumes a job before the resume's answer gets back).
  // updated_at orders them; it has microseconds, which Date.parse would cut to milliseconds.
  var shownAt = {};
  function timeKey(iso) {
    var fraction = /\.(\d+)/.exec(iso || "");
    var micros = fraction ? parseInt((fraction[1] + "000000").slice(0, 6), 10) : 0;
    return Date.parse(iso) * 1000 + (micros % 1000);
  }

  function showJob(job) {
    var key = timeKey(job.updated_at);
    if (shownAt[job.id] !== undefined && key < shownAt[job.id]) return;  // older than shown
    shownAt[job.id] = key;
    updateTable(job);
    updateJobPage(job);
  }

  function onAction(button) {
    var action = button.getAttribute("data-action");
    var jobId = button.getAttribute("data-job-id");
    button.disabled = true;
    flash("");
    post(prefix + "/api/jobs/" + encodeURIComponent(jobId) + "/" + encodeURIComponent(action))
      .then(function (job) {
        if (action === "requeue" && pageName === "job") {
          location.assign(prefix + "/jobs/" + encodeURIComponent(job.id));
          return;
        }
        showJob(job);
      })
      .catch(function (error) {
        flash(error.message);
        button.disabled = false;
      });
  }

  // Queue pause/resume (the "Queues & schedules" page) and "Run now" (a waiting job's page):
  // not job verbs of the lifecycle table, so the page is reloaded to show their outcome.
  function onFlowAction(button) {
    var queue = button.getAttribute("data-queue");
    var url = queue !== null
      ? prefix + "/api/queues/" + encodeURIComponent(queue) + "/" +
        encodeURIComponent(button.getAttribute("data-queue-action"))
      : prefix + "/api/jobs/" + encodeURIComponent(button.getAttribute("data-job-id")) + "/" +
        encodeURIComponent(button.getAttribute("data-edit-action"));
    button.disabled = true;
    flash("");
    post(url).then(function () { location.reload(); }).catch(function (error) {
      flash(error.message);
      button.disabled = false;
    });
  }

  // A queue's limits form: an empty field is left out, so both empty removes the limits.
  function onLimitForm(form) {
    var running = form.elements.namedItem("max_running").value.trim();
    var rate = form.elements.namedItem("rate_limit").value.trim();
    var body = {};
    if (running !== "") body.max_running = Number(running);
    if (rate !== "") body.rate_limit = rate;
    var button = form.querySelector("button");
    button.disabled = true;
    flash("");
    post(prefix + "/api/queues/" + encodeURIComponent(form.getAttribute("data-queue")) +
      "/limit", body).then(function () { location.reload(); }).catch(function (error) {
      flash(error.message);
      button.disabled = false;
    });
  }

  document.addEventListener("submit", function (event) {
    var form = event.target instanceof Element ? event.target.closest("form.limit-form") : null;
    if (!form) return;
    event.preventDefault();
    onLimitForm(form);
  });

  // A bulk action: ask the API how many jobs the page's filter matches (a dry run), show that
  // count in a confirmation, then act on them. The filter is the one the server read for this
  // page (data-filter), so the count and the action name the same jobs; the rows then change
  // live through the stream.
  function onBulk(button) {
    var bar = document.getElementById("bulk");
    if (!bar) return;
    var filter = JSON.parse(bar.getAttribute("data-filter"));
    var verb = button.getAttribute("data-bulk");
    var url = prefix + "/api/jobs/bulk/" + encodeURIComponent(verb);
    button.disabled = true;
    flash("");
    post(url, {filter: filter, dry_run: true})
      .then(function (preview) {
        if (!preview.matched) {
          flash("No job matches this filter.");
          return null;
        }
        var question = label(verb) + " " + preview.matched + " job" +
          (preview.matched === 1 ? "" : "s") + " matching this filter?";
        return window.confirm(question) ? post(url, {filter: filter}) : null;
      })
      .then(function (result) {
        if (!result) return;
        flash(label(verb) + ": " + result.changed + " changed, " + result.unchanged +
              " left as they were, " + result.skipped + " skipped (moved meanwhile).");
        var box = document.getElementById("flash");
        if (box) box.setAttribute("data-kind", "notice");
      })
      .catch(function (error) { flash(error.message); })
      .finally(function () { button.disabled = false; });
  }

  // A button that posts to one endpoint and reloads (a worker's "Stop"), asking first when it
  // carries data-confirm.
  function onPostButton(button) {
    var question = button.getAttribute("data-confirm");
    if (question && !window.confirm(question)) return;
    button.disabled = true;
    flash("");
    post(prefix + button.getAttribute("data-post")).then(function () { location.reload(); })
      .catch(function (error) {
        flash(error.message);
        button.disabled = false;
      });
  }

  function logout() {
    post(prefix + "/logout").catch(function () { return null; })
      .finally(function () { location.assign(prefix + "/login"); });
  }

  // The overview's charts cover the last hour by minute: re-read them (server-rendered and
  // escaped, like the job page) every half minute while the tab is visible.
  var OVERVIEW_EVERY = 30000;
  function refreshOverview() {
    if (!document.querySelector("section.overview")) return;
    setTimeout(function () {
      if (document.visibilityState === "hidden") {
        refreshOverview();
        return;
      }
      readFragment("/overview", "section.overview")
        .then(function (fresh) {
          var current = document.querySelector("section.overview");
          if (fresh && current) current.replaceWith(document.importNode(fresh, true));
        })
        .catch(function () { /* try again at the next turn */ })
        .finally(refreshOverview);
    }, OVERVIEW_EVERY);
  }

  // -- live updates --------------------------------------------------------------------------
  var storeProblem = false;  // a "problem" event is on screen until the stream works again
  function clearProblem() {
    if (storeProblem) flash("");
    storeProblem = false;
  }

  function connect() {
    if (!window.EventSource || (pageName !== "dashboard" && pageName !== "job")) return;
    // Every job the page shows is watched by id, however old (the stream's own lists cover
    // only the newest and the unfinished jobs).
    var ids = [];
    var root = document.getElementById("job");
    if (root) ids.push(root.getAttribute("data-job-id"));
    document.querySelectorAll("#jobs tbody tr[data-job-id]").forEach(function (row) {
      ids.push(row.getAttribute("data-job-id"));
    });
    var url = prefix + "/api/events";
    if (ids.length) {
      url += "?" + ids.slice(0, 200).map(function (id) {
        return "job_id=" + encodeURIComponent(id);
      }).join("&");
    }
    var source = new EventSource(url);
    source.addEventListener("open", function () { setLive("on", "live"); });
    source.addEventListener("error", function () {
      if (source.readyState === EventSource.CLOSED) {
        setLive("off", "disconnected — reload to reconnect");
      } else {
        setLive("wait", "reconnecting…");
      }
    });
    source.addEventListener("job", function (event) {
      clearProblem();
      showJob(JSON.parse(event.data));
    });
    source.addEventListener("counts", function (event) {
      updateCounts(JSON.parse(event.data));
      clearProblem();
    });
    source.addEventListener("problem", function (event) {
      storeProblem = true;
      flash(JSON.parse(event.data).message);
    });
    window.addEventListener("pagehide", function () { source.close(); });
  }

  document.addEventListener("click", function (event) {
    var target = event.target instanceof Element ? event.target : null;
    if (!target) return;
    var button = target.closest("button[data-action]");
    var flowButton = target.closest("button[data-queue-action], button[data-edit-action]");
    var bulkButton = target.closest("button[data-bulk]");
    if (button) {
      onAction(button);
    } else if (bulkButton) {
      onBulk(bulkButton);
    } else if (flowButton) {
      onFlowAction(flowButton);
    } else if (target.closest("button[data-post]")) {
      onPostButton(target.closest("button[data-post]"));
    } else if (target.closest("#logout")) {
      logout();
    }
  });

  // -- the job's logs: read every second while it runs (and once more when it stops) -------------
  var logsFollowed = false;
  function logLine(line) {
    var item = el("li", "log-line level-" + String(line.level).toLowerCase());
    item.setAttribute("data-id", String(line.id));
    var time = String(line.at).replace("T", " ").slice(11, 19);
    item.appendChild(el("span", "log-meta", time + " " + visible(line.level) + " #" +
                        line.attempt));
    item.appendChild(document.createTextNode(" "));
    item.appendChild(el("span", "log-msg",
                        String(line.message).split("\n").map(visible).join("\n")));
    return item;
  }

  function pollLogs() {
    var list = document.getElementById("logs");
    var root = document.getElementById("job");
    if (!list || !root) return;
    var running = root.getAttribute("data-state") === "running";
    if (!running && !logsFollowed) {
      setTimeout(pollLogs, 1000);
      return;
    }
    logsFollowed = running;
    var url = prefix + "/api/jobs/" + encodeURIComponent(root.getAttribute("data-job-id")) +
      "/logs?after=" + encodeURIComponent(list.getAttribute("data-after") || "0");
    fetch(url, {credentials: "same-origin"})
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) {
        var current = document.getElementById("logs");  // the page may have been redrawn
        if (!data || !current) return;
        var last = Number(current.getAttribute("data-after") || "0");
        data.logs.forEach(function (line) {
          if (line.id > last) current.appendChild(logLine(line));
        });
        if (data.next_after > last) current.setAttribute("data-after", String(data.next_after));
        var empty = document.getElementById("logs-empty");
        if (empty && data.logs.length) empty.textContent = "";
      })
      .catch(function () { /* tried again in a second */ })
      .finally(function () { setTimeout(pollLogs, 1000); });
  }

  initBars(document);
  connect();
  refreshOverview();
  if (pageName === "job") pollLogs();
})();

// pymapreduce dashboard: a read-only view of the broker's HTTP API (docs/observability.md).
// Everything from the API (job names, worker names, error texts, tracebacks) is untrusted:
// it only ever reaches the page as text nodes or attribute values, never as HTML.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token") || "";
// the broker answered this page with the token as a cookie: out of the address bar (and
// so out of the history and of what is copied or shown on a screen) once read
if (TOKEN && window.history && history.replaceState) {
  history.replaceState(null, "", location.pathname + location.hash);
}
const REFRESH_MS = 2000;       // periodic refresh of the JSON endpoints
const EVENT_DEBOUNCE_MS = 250; // a burst of events costs one refresh
const JOB_DEBOUNCE_MS = 1000;  // ... of a job's view (its attempts table is the big answer)
const FEED_SIZE = 40;
const SVG_NS = "http://www.w3.org/2000/svg";

const state = {
  view: "jobs", jobId: null, jobs: null, cluster: null, detail: null,
  history: null, historyPages: 1,
  cursor: 0, source: null, retryMs: 1000, pending: null, feed: [], denied: false,
  shown: "", closed: new Set(),  // the job view drawn last; failures the user folded
};

// ---- tiny DOM helpers (text only) -----------------------------------------------------
function el(tag, attrs, ...kids) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v; else node.setAttribute(k, String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined) continue;
    node.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return node;
}
function svg(tag, attrs, ...kids) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) node.setAttribute(k, String(v));
  }
  for (const kid of kids) {
    node.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return node;
}
function fill(id, ...kids) {
  const n = document.getElementById(id);
  n.replaceChildren(...kids.flat(Infinity).filter(k => k !== null && k !== undefined));
  return n;
}
// a header is a label, or {label, num: right-aligned figures, wrap: free text (errors,
// reasons) that wraps; other cells (ids, names, times) do not break}
function table(headers, rows, empty) {
  if (!rows.length) return el("div", { class: "empty" }, empty || "none");
  const cls = h => h.num ? "num" : h.wrap ? "wrap" : null;
  const head = el("tr", {}, headers.map(h => el("th", { class: cls(h) }, h.label || h)));
  const word = c => (typeof c === "string" || typeof c === "number") && !/\s/.test(String(c));
  const body = rows.map(r => el("tr", {}, r.map((c, i) =>
    el("td", { class: cls(headers[i]) || (word(c) ? "word" : null) }, c))));
  // a table wider than the window scrolls in its own box, not the whole page
  return el("div", { class: "table-wrap" },
            el("table", {}, el("thead", {}, head), el("tbody", {}, body)));
}
function badge(text) { return el("span", { class: "badge " + text }, text); }
function jobLink(job) { return el("a", { href: "#job/" + encodeURIComponent(job.id), class: "job-link id", "data-job": job.id }, job.name); }
function fact(label, value) { return el("div", {}, el("b", {}, value), el("span", {}, label)); }

// ---- formatting -----------------------------------------------------------------------
function num(n) { return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"); }
function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0; while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}
function secs(s) {
  if (s === null || s === undefined) return "–";
  // a task of a fraction of a millisecond is not "0 ms"
  if (s > 0 && s < 0.00005) return "< 0.1 ms";
  if (s < 0.01) return s ? (s * 1000).toFixed(1) + " ms" : "0 s";
  if (s < 1) return (s * 1000).toFixed(0) + " ms";
  if (s < 60) return s.toFixed(1) + " s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + " min " + Math.round(s % 60) + " s";
  return Math.floor(m / 60) + " h " + (m % 60) + " min";
}
function clock(t) { return t ? new Date(t * 1000).toLocaleTimeString() : "–"; }
function pct(done, total) { return total ? Math.floor(100 * done / total) : 100; }
function position(p) {
  if (!p) return "";
  return Object.entries(p).map(([k, v]) => k + " " + v).join(", ");
}
function progressBar(kind, pair, step) {
  // step: the step of a multi-step job its tasks are of (they are that step's alone)
  const [done, total] = pair || [0, 0];
  const p = pct(done, total);
  const of = step ? `step ${step}: ` : "";
  const inner = el("span"); inner.style.width = (total ? p : 0) + "%";
  return el("div", { class: "bar " + kind, title: `${kind}: ${of}${done} of ${total} tasks`,
                     "data-phase": kind, "data-percent": total ? p : null, "data-step": step },
            inner, el("em", {}, (step ? `s${step} ` : "") + (total ? `${p}%  ${done}/${total}` : "none")));
}
// a multi-step job's progress over its steps: its tasks are its current step's (as
// status() gives them), so its phases' bars start again at each step; this one does not
// go back: the steps before it done, and its share of the current one
function stepProgress(job) {
  const [step, steps] = job.step || [1, 1];
  const [md, mt] = job.progress.map, [rd, rt] = job.progress.reduce;
  const share = job.state === "succeeded" ? 1 : mt + rt ? (md + rd) / (mt + rt) : 0;
  return { step, steps, label: `step ${step} of ${steps}`,
           percent: Math.floor(100 * (step - 1 + share) / steps) };
}
function stepsBar(job) {
  const s = stepProgress(job);
  const inner = el("span"); inner.style.width = s.percent + "%";
  return el("div", { class: "bar steps", "data-step": s.step, "data-steps": s.steps,
                     "data-percent": s.percent,
                     title: `${s.label}: the tasks of each phase are this step's` },
            inner, el("em", {}, `${s.label}  ${s.percent}%`));
}
function finished(job) { return ["succeeded", "failed", "cancelled"].includes(job.state); }

// ---- fetching -------------------------------------------------------------------------
async function api(path) {
  const reply = await fetch(path, {
    headers: TOKEN ? { Authorization: "Bearer " + TOKEN } : {},
    credentials: "same-origin", cache: "no-store",
  });
  if (reply.status === 401) { denied(); throw new Error("401"); }
  if (!reply.ok) {
    let message = reply.status + " " + reply.statusText;
    try { message = (await reply.json()).error || message; } catch (e) { /* not JSON */ }
    const err = new Error(message); err.status = reply.status; throw err;
  }
  state.denied = false;
  return reply.json();
}

function denied() {
  // no data stays on the page once the broker refuses us
  state.denied = true; state.jobs = state.cluster = state.detail = null;
  for (const v of document.querySelectorAll(".view")) v.hidden = true;
  banner("This broker needs its token. Open the dashboard with the URL that ",
         el("code", {}, "pymapreduce dashboard-url http://HOST:PORT/ --keys KEY_DIR"),
         " prints (it ends in ?token=...).");
  if (state.source) { state.source.close(); state.source = null; }
  setLive(false, "needs the token");
}
function banner(...kids) {
  const b = fill("banner", ...kids); b.hidden = !kids.length; b.id = "banner";
}

async function refresh() {
  if (state.denied) return;
  try {
    if (state.view === "cluster") {
      state.cluster = await api("api/cluster"); renderCluster();
    } else if (state.view === "job" && state.jobId) {
      try {
        const id = state.jobId, detail = await api("api/jobs/" + encodeURIComponent(id));
        if (id !== state.jobId) return;  // another job was opened meanwhile
        // an ended job's answer stops changing: redrawing it would only reset scrolling
        const shown = JSON.stringify({ ...detail, time: 0 });
        state.detail = detail;
        if (shown !== state.shown) { state.shown = shown; renderJob(); }
      } catch (e) {
        if (e.status !== 404) throw e;
        // nothing of the job shown before (or of the job opened before it) stays
        state.detail = null; state.shown = ""; clearJob();
        banner("No job " + state.jobId + " on this broker: never submitted, or forgotten after its result TTL.");
        return;
      }
    } else {
      state.jobs = await api("api/jobs");
      if (state.view === "history") await fetchHistory();
    }
    if (state.view !== "cluster") state.cluster = await api("api/cluster");  // the header
    if (state.view === "history") renderHistory(); else if (state.view === "jobs") renderJobs();
    if (state.cluster) {
      const b = state.cluster.broker;
      // (the broker's jobs_running counts the queued jobs too)
      fill("broker", `${b.address}  ·  ${b.workers} workers  ·  ${b.jobs_running} running or queued`);
    }
    if (!state.denied) banner();
  } catch (e) {
    if (e.message !== "401") banner("Cannot reach the broker: " + e.message + " (retrying)");
  }
}
function soon() {
  if (state.pending) return;
  state.pending = setTimeout(() => { state.pending = null; refresh(); },
                             state.view === "job" ? JOB_DEBOUNCE_MS : EVENT_DEBOUNCE_MS);
}

// ---- the live event stream ------------------------------------------------------------
function setLive(on, text) {
  const n = document.getElementById("live");
  n.className = "live " + (on ? "on" : "off"); n.textContent = text;
}
function connect() {
  if (state.denied) return;
  // our own cursor, so a reconnect resumes after the last event seen, not from the start
  let url = "api/events?since=" + state.cursor;
  if (TOKEN) url += "&token=" + encodeURIComponent(TOKEN);
  const source = new EventSource(url);
  state.source = source;
  source.onopen = () => { state.retryMs = 1000; setLive(true, "live"); };
  source.onmessage = (msg) => {
    let event; try { event = JSON.parse(msg.data); } catch (e) { return; }
    if (event.seq > state.cursor) state.cursor = event.seq;
    state.feed.push(event);
    if (state.feed.length > FEED_SIZE) state.feed.shift();
    if (state.view !== "job" || event.job === state.jobId || !event.job) soon();
  };
  source.onerror = () => {
    // EventSource would reconnect with its first URL (an old cursor): do it ourselves
    source.close();
    if (state.source !== source) return;
    state.source = null;
    setLive(false, "reconnecting");
    refresh();  // a 401 here shows the token message instead
    setTimeout(connect, state.retryMs);
    state.retryMs = Math.min(state.retryMs * 2, 15000);
  };
}

// ---- views ----------------------------------------------------------------------------
function route() {
  const hash = decodeURIComponent(location.hash.slice(1));
  if (hash.startsWith("job/")) { state.view = "job"; state.jobId = hash.slice(4); }
  else { state.view = ["cluster", "history"].includes(hash) ? hash : "jobs"; state.jobId = null; }
  if (state.denied) return;
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== "view-" + state.view;
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.view === state.view ||
                                 (state.view === "job" && a.dataset.view === "jobs"));
  }
  if (state.view === "job") { state.detail = null; state.shown = ""; clearJob(); }
  refresh();
}

function multiStep(job) { return !!(job.step && job.step[1] > 1); }
function jobRow(job) {
  return [
    el("div", {}, jobLink(job), el("div", { class: "muted id" }, job.id)),
    badge(job.state),
    multiStep(job) ? el("div", {}, job.phase, stepsBar(job)) : job.phase,
    progressBar("map", job.progress.map, multiStep(job) && job.step[0]),
    progressBar("reduce", job.progress.reduce, multiStep(job) && job.step[0]),
    // bytes out: what the job wrote as its result (its last phase's, of its last step),
    // not its map outputs (the shuffle) too
    num(job.records), bytes(job.bytes), bytes(job.bytes_out),
    secs(job.elapsed), finished(job) ? "–" : secs(job.eta),
    job.queued_reason || (job.error ? job.error.message : ""),
  ];
}
const JOB_HEADERS = ["job", "state", "phase", "map", "reduce", { label: "records in", num: 1 },
  { label: "bytes in", num: 1 }, { label: "bytes out", num: 1 }, { label: "elapsed", num: 1 },
  { label: "time left", num: 1 }, { label: "waiting for / error", wrap: 1 }];

function renderJobs() {
  const jobs = state.jobs ? state.jobs.jobs : [];
  const live = jobs.filter(j => !finished(j)), done = jobs.filter(finished);
  fill("jobs-summary", `${live.length} running or queued, ${done.length} finished and held by the broker.`);
  fill("jobs-live", table(JOB_HEADERS, live.map(jobRow), "No job is running."));
  fill("jobs-recent", table(JOB_HEADERS, done.slice(0, 10).map(jobRow), "No job has finished yet."));
  renderFeed();
}
function renderFeed() {
  const items = state.feed.slice().reverse().map(e => el("li", {},
    clock(e.t), "  ", e.type, e.phase ? " " + e.phase + (e.step > 1 ? " (step " + e.step + ")" : "") : "",
    "  ", e.job || "", "  ", e.task || "", e.worker ? "  on " + e.worker : "",
    e.error ? "  " + e.error : ""));
  fill("events-feed", items.length ? items : [el("li", { class: "empty" }, "waiting for events")]);
}

const HISTORY_PAGE = 100;        // rows of /api/history per page ("older" adds a page)
async function fetchHistory() {
  // the pages shown so far, newest first, following each answer's cursor
  const pages = []; let before = null;
  for (let i = 0; i < state.historyPages; i++) {
    const page = await api("api/history?limit=" + HISTORY_PAGE + (before === null ? "" : "&before=" + before));
    pages.push(page); before = page.next;
    if (before === null) break;
  }
  state.history = pages;
}
function dateTime(t) { return t ? new Date(t * 1000).toLocaleString() : "–"; }
function renderHistory() {
  const pages = state.history || [];
  const rows = pages.flatMap(p => p.jobs);
  const more = pages.length && pages[pages.length - 1].next !== null;
  const held = new Set((state.jobs ? state.jobs.jobs : []).map(j => j.id));
  const b = state.cluster ? state.cluster.broker : null;
  fill("history-note", `The last ${pages.length ? num(pages[0].keep) : ""} finished jobs, also after ` +
       `their results are gone${b && b.state_dir ? " and across restarts (kept in the --state-dir journal)" : " (until the broker stops: without --state-dir they are kept in memory only)"}` +
       `. A job's own view (its timeline, failures) lasts while the broker holds it` +
       (b ? ` (--result-ttl ${secs(b.result_ttl)} after it ends).` : "."));
  fill("history", table(["job", { label: "owner", wrap: 1 }, "state", "submitted", { label: "duration", num: 1 },
    { label: "tasks", num: 1 }, { label: "records in", num: 1 }, { label: "bytes in", num: 1 },
    { label: "bytes out", num: 1 }, { label: "backups", num: 1 }, { label: "skipped", num: 1 }, { label: "error", wrap: 1 }],
    rows.map(j => [el("div", { class: "history-job", "data-job": j.id },
        held.has(j.id) ? jobLink(j) : el("b", { class: "id" }, j.name), el("div", { class: "muted id" }, j.id)),
      j.owner || "–", badge(j.state), dateTime(j.submitted), secs(j.secs),
      num(j.maps[0] + j.reduces[0]) + " / " + num(j.maps[1] + j.reduces[1]),
      num(j.records), bytes(j.bytes), bytes(j.bytes_out), num(j.backups), num(j.skipped),
      j.error ? j.error.message : ""]),
    "No job has finished yet."),
    more ? el("button", { id: "history-older", type: "button" }, "older jobs") : null);
  const older = document.getElementById("history-older");
  if (older) older.addEventListener("click", () => { state.historyPages++; refresh(); });
}

function taskLink(text) {
  // "JOB_ID map-3": the job's id links to its view
  const cut = text.lastIndexOf(" ");
  if (cut < 0) return el("div", {}, text);
  const id = text.slice(0, cut);
  return el("div", { class: "id" }, el("a", { href: "#job/" + encodeURIComponent(id) }, id), " ", text.slice(cut + 1));
}

function renderCluster() {
  const c = state.cluster; const b = c.broker;
  fill("broker-facts", fact("broker", b.address), fact("host / pid", `${b.host} / ${b.pid}`),
       fact("workers", num(b.workers)), fact("jobs running or queued", num(b.jobs_running)),
       fact("jobs held", num(b.jobs_held)), fact("stored", bytes(b.stored_bytes)),
       fact("spilled", bytes(b.spilled_bytes)), fact("keys", b.secured ? "yes" : "no"),
       fact("up", secs(c.time - b.started)));
  fill("workers", table(["worker", "host", { label: "pid", num: 1 }, "tags", "current tasks",
    { label: "held", num: 1 }, { label: "done", num: 1 }, "liveness",
    { label: "last heartbeat", num: 1 }, { label: "up", num: 1 }],
    c.workers.map(w => [w.name, w.host, w.pid, w.tags.join(", ") || "–",
      w.tasks.length ? el("div", {}, w.tasks.map(taskLink)) : "idle",
      num(w.held), num(w.done), badge(w.liveness), secs(w.heartbeat_age) + " ago", secs(w.up)]),
    "No worker has joined."));
  const gone = c.gone_workers || [];
  fill("gone-workers", gone.length ? [el("h2", {}, "Workers lost or left lately"),
    table(["worker", "host", { label: "pid", num: 1 }, "tags", { label: "done", num: 1 },
      { label: "attempts lost", num: 1 }, { label: "why", wrap: 1 }, { label: "when", num: 1 },
      { label: "was up", num: 1 }],
      gone.map(w => [w.name, w.host, w.pid, w.tags.join(", ") || "–", num(w.done),
        num(w.lost_attempts), w.reason, secs(w.gone_ago) + " ago", secs(w.up)]))] : []);
  fill("sinks", c.sinks && c.sinks.length ? [el("h2", {}, "Sinks"),
    table([{ label: "sink", wrap: 1 }], c.sinks.map(s => [JSON.stringify(s)]))] : []);
}

const JOB_PARTS = ["job-facts", "job-progress", "job-flow", "job-counters", "timeline-legend",
                   "timeline", "job-troubles", "job-failures", "job-slowest", "job-skipped"];
function clearJob() {
  // the job view of state.jobId before (or without) its answer: its id only
  fill("job-title", state.jobId);
  for (const id of JOB_PARTS) fill(id);
  document.getElementById("job-error").hidden = true;
  document.getElementById("job-body").hidden = true;
}

function renderJob() {
  const d = state.detail; const job = d.job;
  document.getElementById("job-body").hidden = false;
  fill("job-title", job.name, " ", badge(job.state), " ", el("span", { class: "muted" }, job.id));
  const errBox = document.getElementById("job-error");
  if (job.error) {
    fill("job-error", el("b", {}, job.state === "cancelled" ? "The job was cancelled: " : "The job failed: "),
         job.error.message,
         job.error.task ? ` (task ${job.error.task})` : "");
    errBox.hidden = false;
  } else errBox.hidden = true;
  fill("job-facts", fact("phase", job.phase + (multiStep(job) ? `, step ${job.step[0]} of ${job.step[1]}` : "")),
       fact("elapsed", secs(job.elapsed)), fact("time left", finished(job) ? "–" : secs(job.eta)),
       fact("running attempts", num(job.running)), fact("pending tasks", num(job.pending)),
       fact("failed attempts", num(d.failed_attempts)),
       fact("attempts lost with their worker", num(d.lost_attempts)),
       fact("backups", num(job.backups)), fact("skipped records", num(job.skipped)),
       fact("priority", job.priority), fact("requires", job.requires.join(", ") || "–"),
       job.queued_reason ? fact("waiting for", job.queued_reason) : null);
  const step = multiStep(job) && job.step[0];
  fill("job-progress", el("div", { class: "phase-bars" },
    step ? [el("b", {}, "steps"), stepsBar(job), el("span", { class: "muted" }, stepProgress(job).label)] : [],
    ["map", "reduce"].map(k => [el("b", {}, k), progressBar(k, job.progress[k], step),
      el("span", { class: "muted" }, `${job.progress[k][0]} of ${job.progress[k][1]} tasks` +
                                     (step ? ` of step ${step}` : ""))])));
  fill("job-flow", flowTable(job));
  fill("job-counters", table([{ label: "counter", wrap: 1 }, { label: "value", num: 1 }],
    Object.entries(job.counters).map(([k, v]) => [k, typeof v === "number" ? num(v) : JSON.stringify(v)]),
    "No counters."));
  // a multi-step job has a map-0 in every step: name the step with the task
  const steps = job.step && job.step[1] > 1;
  const task = a => steps && a.step ? `${a.task} (step ${a.step})` : a.task;
  renderTimeline(d.attempts, d.time, steps);
  const troubles = d.attempts.filter(a => a.outcome !== "done" && a.outcome !== "running" || a.attempt > 1 || a.backup);
  fill("job-troubles", table(["task", { label: "attempt", num: 1 }, "worker", "outcome",
    { label: "time", num: 1 }, { label: "why", wrap: 1 }], troubles.map(a => [task(a), a.attempt + (a.backup ? " (backup)" : ""),
    a.worker, el("span", { class: "outcome-" + a.outcome }, OUTCOMES[a.outcome] || a.outcome),
    a.end ? secs(a.end - a.start) : "running", a.note || (a.attempt > 1 ? "retry" : "")]),
    "No retry, failure or lost attempt."));
  fill("job-failures", d.failures.length ? d.failures.slice().reverse().map(failure) :
       el("div", { class: "empty" }, "No failure."));
  if (job.error && job.error.traceback && !d.failures.length) {
    document.getElementById("job-failures").append(failure({ type: "failed", task: job.error.task,
      error: job.error.message, traceback: job.error.traceback, position: job.error.position }));
  }
  fill("job-slowest", table(["task", "worker", { label: "attempt", num: 1 }, { label: "time", num: 1 }],
    d.slowest.map(s => [task(s), s.worker, s.attempt, secs(s.secs)]), "No task has finished."));
  fill("job-skipped", table(["task", { label: "position", wrap: 1 }], d.skipped.map(s =>
    [s.task, position(Object.fromEntries(Object.entries(s).filter(([k]) => k !== "task")))]),
    "No record was skipped."));
}

// records and bytes per phase: a map phase's bytes out are the shuffle (what its reduce
// phase reads) unless the job is map-only; the job's result is its last phase's
function flowTable(job) {
  const flow = job.flow || {}, steps = job.step && job.step[1] > 1;
  const reduces = job.progress && job.progress.reduce && job.progress.reduce[1] > 0;
  const what = k => steps ? (k === "map" ? "map outputs (shuffle, or a map-only step's output)" :
                             "reduce outputs (each step's)") :
    k === "map" && reduces ? "shuffle" : "result";
  const rows = Object.entries(flow).map(([k, f]) =>
    [k, num(f.records_in), bytes(f.bytes_in), bytes(f.bytes_out), what(k)]);
  rows.push(["result", "", "", bytes(job.bytes_out), steps ? `what its step ${job.step[0]} of ${job.step[1]} wrote` : "what the job wrote"]);
  return [table(["phase", { label: "records in", num: 1 }, { label: "bytes in", num: 1 },
    { label: "bytes out", num: 1 }, { label: "written as", wrap: 1 }], rows),
    steps ? el("div", { class: "muted" }, `per phase: summed over the job's ${job.step[1]} steps`) : null];
}

const OUTCOMES = { killed: "lost with its worker" };  // (the API's outcome names otherwise)
// how the engine counted an ended attempt against its task (its --max-attempts): a failed
// attempt counts; one lost with its worker counts when the worker died or went silent (a
// task that kills the process running it must not kill every worker), not when it left
// or re-registered; an attempt whose input was lost does not
function counting(f) {
  const lost = f.type === "killed";
  if (f.counted === false) {
    return `not counted against the task: ${lost ? "its worker left or registered again" : "not its own fault"}` +
           (f.failures ? ` (attempts counted against it so far: ${f.failures})` : "");
  }
  if (!f.failures) return null;
  return lost ? `not a failure of its own, but counted against the task as its worker died or went silent ` +
                `(attempts counted against it so far, failed or lost: ${f.failures})`
              : `attempts counted against the task so far (failed, or lost with a worker that died): ${f.failures}`;
}
function failure(f) {
  const where = position(f.position);
  const why = counting(f);
  const node = el("details", { class: "failure", open: !state.closed.has(f.seq), "data-task": f.task,
                               "data-outcome": f.type === "killed" ? "lost" : "failed" },
    el("summary", {}, `${f.task} attempt ${f.attempt ?? "?"}`, f.worker ? ` on ${f.worker}` : "",
       `: ${f.type === "killed" ? "lost with its worker" : "failed"}: `, f.error || ""),
    where ? el("div", { class: "pos" }, "input position: " + where) : null,
    why ? el("div", { class: "muted" }, why) : null,
    f.traceback ? el("pre", { class: "traceback" }, f.traceback) : null);
  node.addEventListener("toggle", () => {
    if (node.open) state.closed.delete(f.seq); else state.closed.add(f.seq);
  });
  return node;
}

// ---- the task timeline (a Gantt of attempts per worker, in SVG) ------------------------
function renderTimeline(attempts, now, steps) {
  fill("timeline-legend", [["map", "map"], ["reduce", "reduce"],
    ["queued", "handed out, queued on its worker"], ["running", "running"],
    ["failed", "failed"], ["killed", "lost with its worker"], ["abandoned", "abandoned"],
    ["retry", "retry (attempt 2+)"], ["backup", "backup attempt"]].map(([k, t]) =>
    el("span", {}, el("i", { class: "sw-" + k }), t)));
  if (!attempts.length) { fill("timeline", el("div", { class: "empty" }, "No attempt yet.")); return; }
  const t0 = Math.min(...attempts.map(a => a.start));
  const t1 = Math.max(...attempts.map(a => a.end ?? now), t0 + 0.001);
  // lanes by when attempts ran: a worker process runs one at a time, so its ended
  // attempts share one lane (their waits in its queue, drawn thin, may cross); one
  // still out, or that ended with no run time, takes its lane from its hand-out (a
  // worker holds several handed out at once: they get lanes of their own meanwhile)
  const from = a => (a.run !== null && a.run !== undefined) ? a.run : a.start;
  const until = a => a.run_end ?? a.end ?? now;  // (its run's end, when a report placed it)
  const lanes = {};
  for (const a of attempts.slice().sort((x, y) => from(x) - from(y))) {
    const ends = lanes[a.worker] || (lanes[a.worker] = []);
    let i = ends.findIndex(e => e <= from(a) + 1e-6);
    if (i < 0) { i = ends.length; ends.push(0); }
    ends[i] = until(a); a._lane = i;
  }
  const rows = []; const rowOf = {};
  for (const w of Object.keys(lanes).sort()) {
    lanes[w].forEach((_, i) => { rowOf[w + "\u0000" + i] = rows.length; rows.push(i ? "" : w); });
  }
  const box = document.getElementById("timeline");
  const W = Math.max(600, box.clientWidth - 2), LEFT = 130, TOP = 22, ROW = 22;
  const H = TOP + rows.length * ROW + 8, span = W - LEFT - 16;
  const x = t => LEFT + span * (t - t0) / (t1 - t0);
  const root = svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, id: "timeline-svg",
                            role: "img", "aria-label": "task attempts over time, per worker" });
  const step = niceStep((t1 - t0) / 8);
  for (let t = 0; t <= t1 - t0 + 1e-9; t += step) {
    root.append(svg("line", { x1: x(t0 + t), x2: x(t0 + t), y1: TOP - 4, y2: H - 6, stroke: "#eaeef2" }),
                svg("text", { x: x(t0 + t), y: 13, "text-anchor": "middle", fill: "#656d76" },
                    secs(t).replace(" ", "")));
  }
  rows.forEach((w, i) => {
    if (i % 2) root.append(svg("rect", { x: 0, y: TOP + i * ROW, width: W, height: ROW, fill: "#f6f8fa" }));
    if (w) root.append(svg("text", { x: 6, y: TOP + i * ROW + 15, fill: "#1f2328" }, w));
  });
  // (SVG presentation attributes take no CSS variables: the legend's colours, spelled out)
  const colour = { done: null, running: "#f2a93b", failed: "#d62728", killed: "#3b3b3b",
                   abandoned: "#b8b8b8" };
  const labels = [], drawn = rows.map(() => []);  // what each row holds: [x0, x1] each
  for (const a of attempts) {
    const row = rowOf[a.worker + "\u0000" + a._lane];
    const x0 = x(a.start), w = Math.max(3, x(until(a)) - x0), y = TOP + row * ROW + 3;
    const g = svg("g", { class: "attempt", "data-task": a.task, "data-step": a.step, "data-attempt": a.attempt,
                         "data-outcome": a.outcome, "data-worker": a.worker,
                         "data-backup": a.backup ? "true" : "false" });
    // handed out at start, running from run (when its report said): the wait in its
    // worker's queue is drawn pale, the run solid. One that ended with no run time (an
    // abandoned attempt, mostly: run_from "hand-out") is one lighter bar from its
    // hand-out, its wait and its run not told apart
    const placed = a.run !== null && a.run !== undefined;
    const unplaced = !placed && a.run_from === "hand-out";
    const queued = placed ? Math.max(0, x(a.run) - x0) : 0;
    const fillColour = colour[a.outcome] || (a.kind === "reduce" ? "#59a14f" : "#4e79a7");
    if (placed) g.setAttribute("data-queued", (a.run - a.start).toFixed(3));
    if (a.run_from) g.setAttribute("data-run-from", a.run_from);
    const step = steps && a.step ? " (step " + a.step + ")" : "";
    g.append(svg("title", {}, `${a.task}${step} attempt ${a.attempt}${a.backup ? " (backup)" : ""} on ${a.worker}: ` +
      `${a.outcome}, ${a.end ? (placed ?
        `queued ${secs(a.run - a.start)}, ran ${secs(until(a) - a.run)}` :
        `out ${secs(a.end - a.start)}${unplaced ? " (queued or running: not reported)" : ""}`) : "running"}` +
      `${a.note ? " — " + a.note : ""}`));
    if (queued >= 1) {  // (thin, mid-lane: the lane is laid out by runs, waits may cross)
      g.append(svg("rect", { class: "queued", x: x0, y: y + (ROW - 6) / 2 - 1.5,
                             width: Math.min(queued, w), height: 3, rx: 1, fill: fillColour,
                             "fill-opacity": 0.35 }));
    }
    const xs = x0 + Math.min(queued, w - 3), ws = Math.max(3, w - queued);  // the run
    g.append(svg("rect", { class: unplaced ? "out" : "ran", x: xs, y, width: ws,
      height: ROW - 6, rx: 2, fill: fillColour, "fill-opacity": unplaced ? 0.6 : null,
      stroke: a.backup ? "#000" : a.attempt > 1 ? "#7a3e9d" : "none",
      "stroke-width": a.backup || a.attempt > 1 ? 2 : 0,
      "stroke-dasharray": a.backup ? "4 2" : null }));
    const mark = { failed: "✕ ", killed: "† " }[a.outcome] || (a.attempt > 1 ? "↻ " : "");
    const label = `${mark}${steps && a.step ? "s" + a.step + " " : ""}${a.task}${a.attempt > 1 ? " #" + a.attempt : ""}`;
    labels.push({ g, row, x0, x1: x0 + w, xs, ws, y, mark: mark.trim(), label });
    drawn[row].push([x0, x0 + w]);
    root.append(g);
  }
  box.replaceChildren(root);
  placeLabels(root, labels, drawn, LEFT, W);
}
// Each attempt's label, laid out once the bars are drawn (its text measured): inside its
// bar where it fits; a failed, lost or retried attempt's beside its bar where nothing of
// its row is (no other bar, no other label), else cut to what fits inside (its mark at
// least); else none: its hover text (its title) names it all. A label never lies on
// another bar.
function placeLabels(root, labels, drawn, left, width) {
  const probe = svg("text", { x: 0, y: -50 });
  root.append(probe);
  const measure = text => {
    probe.textContent = text;
    return probe.getComputedTextLength() || text.length * 6.2;  // (not laid out: guess)
  };
  const free = (row, a, b) => a >= left && b <= width &&
    !drawn[row].some(([x0, x1]) => x0 < b + 1 && x1 > a - 1);
  for (const L of labels) {
    const w = measure(L.label);
    let text = null;
    if (w + 8 <= L.ws) {
      text = svg("text", { x: L.xs + 4, y: L.y + 12, fill: "#fff" }, L.label);
    } else if (L.mark) {
      const after = [L.x1 + 2, L.x1 + 2 + w], before = [L.x0 - 2 - w, L.x0 - 2];
      const beside = free(L.row, ...after) ? after : free(L.row, ...before) ? before : null;
      if (beside) {
        text = svg("text", { x: beside[0], y: L.y + 12, fill: "#1f2328" }, L.label);
        drawn[L.row].push(beside);
      } else {  // inside, cut: "✕ map-…", or the mark alone
        let cut = L.label;
        while (cut.length > L.mark.length && measure(cut + "…") + 8 > L.ws) cut = cut.slice(0, -1);
        cut = cut.length > L.mark.length ? cut.trimEnd() + "…" : L.mark;
        if (measure(cut) + 4 <= L.ws) {
          text = svg("text", { x: L.xs + 2, y: L.y + 12, fill: "#fff" }, cut);
        }
      }
    }
    if (text) { text.setAttribute("class", "label"); L.g.append(text); }
  }
  probe.remove();
}
function niceStep(raw) {
  const p = Math.pow(10, Math.floor(Math.log10(raw || 1)));
  for (const m of [1, 2, 5, 10]) if (raw <= m * p) return m * p;
  return 10 * p;
}

// ---- start ----------------------------------------------------------------------------
window.addEventListener("hashchange", route);
window.addEventListener("resize", () => { if (state.view === "job" && state.detail) renderJob(); });
route();
connect();
setInterval(refresh, REFRESH_MS);

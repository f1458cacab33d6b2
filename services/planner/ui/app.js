// The planner's status page. It polls the jobs API and draws what it answers; every text that comes
// from the API (job names, error messages) goes into the page as text, never as markup.
"use strict";

(() => {
  const tokenKey = "sluice-planner-token";
  const pollMs = 2000;
  // Dead letters arrive rarely and their answer is the largest: asked for less often.
  const lettersMs = 5000;
  // The SVG namespace is a name, not an address: nothing is fetched from it.
  const svgNS = "http://www.w3.org/2000/svg";
  const maxTaskRows = 500;
  // The API serves its lists in pages of at most 1000; the page asks for all of the jobs' pages.
  const pageLimit = 1000;
  const maxPages = 1000;
  const states = ["running", "succeeded", "failed", "cancelled", "waiting", "extracting", "extracted", "dead_lettered"];

  const $ = (id) => document.getElementById(id);
  const numbers = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const decimals = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

  const page = {
    // selected is the job whose tasks show; null follows the first running job, else the newest.
    selected: null,
    jobs: [],
    timers: { poll: 0, letters: 0 },
    gens: { poll: 0, letters: 0 },
    errors: { poll: null, letters: null },
    stopped: false,
    lastOK: null,
  };

  // APIError is an answer other than 2xx, or no answer (status 0).
  class APIError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // takeToken moves a token given as #token=… into this tab's session storage and takes it out of
  // the address bar, so that it is neither bookmarked nor shown over a shoulder.
  function takeToken() {
    const params = new URLSearchParams(location.hash.slice(1));
    const token = params.get("token");
    if (token === null) {
      return;
    }
    if (token !== "") {
      sessionStorage.setItem(tokenKey, token);
    }
    params.delete("token");
    setFragment(params);
  }

  // The page's view lives in the address's fragment, so that it can be bookmarked and shared:
  // tasks=JOB shows that job's tasks; job=, stage=, class= and limit= filter the dead letters.
  const filterIds = [["job", "dlq-job"], ["stage", "dlq-stage"], ["class", "dlq-class"], ["limit", "dlq-limit"]];

  function setFragment(params) {
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
  }

  // readView takes the view from the fragment: a filter's value is offered even before the
  // planner names it.
  function readView() {
    const params = new URLSearchParams(location.hash.slice(1));
    page.selected = params.get("tasks") || null;
    for (const [name, id] of filterIds) {
      const v = params.get(name);
      if (v === null) {
        continue;
      }
      const sel = $(id);
      if (v && ![...sel.options].some((o) => o.value === v)) {
        sel.append(el("option", { value: v }, v));
      }
      sel.value = v;
    }
  }

  // writeView puts the view in the fragment.
  function writeView() {
    const params = new URLSearchParams();
    if (page.selected) {
      params.set("tasks", page.selected);
    }
    for (const [name, id] of filterIds) {
      if ($(id).value && !(name === "limit" && $(id).value === $(id).options[0].value)) {
        params.set(name, $(id).value);
      }
    }
    setFragment(params);
  }

  // api asks the planner; paths are relative so that the page works behind a proxy's path prefix.
  async function api(path) {
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem(tokenKey);
    if (token) {
      headers.Authorization = "Bearer " + token;
    }
    let resp;
    try {
      resp = await fetch(path, { headers, cache: "no-store", credentials: "omit" });
    } catch (err) {
      throw new APIError(0, err.message);
    }
    if (!resp.ok) {
      let message = resp.statusText;
      try {
        const body = await resp.json();
        if (body && typeof body.error === "string") {
          message = body.error;
        }
      } catch {
        // The body was not the API's JSON error (a proxy's page): the status says enough.
      }
      throw new APIError(resp.status, message);
    }
    return resp.json();
  }

  // everyPage asks for a list's pages in turn, from the first, and returns the items under field of
  // all of them.
  async function everyPage(path, field) {
    const items = [];
    let cursor = "";
    for (let n = 0; n < maxPages; n++) {
      const q = new URLSearchParams({ limit: String(pageLimit) });
      if (cursor) {
        q.set("cursor", cursor);
      }
      const answer = await api(path + "?" + q.toString());
      items.push(...(answer[field] || []));
      // A planner that answered the same cursor again would be asked for ever.
      if (!answer.next_cursor || answer.next_cursor === cursor) {
        break;
      }
      cursor = answer.next_cursor;
    }
    return items;
  }

  // el makes an element with attributes and children; strings become text nodes.
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    setAttrs(e, attrs);
    for (const c of children) {
      if (c === null || c === undefined) {
        continue;
      }
      e.append(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return e;
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS(svgNS, tag);
    setAttrs(e, attrs);
    if (text !== undefined) {
      e.textContent = text;
    }
    return e;
  }

  function setAttrs(e, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined) {
        e.setAttribute(k, String(v));
      }
    }
  }

  function count(n) {
    return typeof n === "number" ? numbers.format(n) : "—";
  }

  // duration reads seconds as a person would say them.
  function duration(s) {
    if (typeof s !== "number" || s < 0) {
      return "—";
    }
    if (s < 1) {
      return "< 1 s";
    }
    s = Math.round(s);
    if (s < 60) {
      return s + " s";
    }
    if (s < 3600) {
      return Math.floor(s / 60) + " min " + (s % 60) + " s";
    }
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }

  function when(iso) {
    const d = new Date(iso);
    if (isNaN(d)) {
      return "—";
    }
    const today = new Date().toDateString() === d.toDateString();
    return today ? d.toLocaleTimeString() : d.toLocaleString();
  }

  // taskCell shows a task by what follows its job's id (t0003), with the whole id on hover.
  function taskCell(jobID, taskID) {
    if (!taskID) {
      return el("td", { class: "mono" }, "—");
    }
    const short = jobID && taskID.startsWith(jobID + "-") ? taskID.slice(jobID.length + 1) : taskID;
    return el("td", { class: "mono nowrap", title: taskID }, short);
  }

  function badge(state) {
    const known = states.includes(state) ? state : "other";
    return el("span", { class: "badge state-" + known }, String(state).replace("_", " "));
  }

  // showStatus shows the first error of the two loops, or when the page last heard from the planner;
  // the last data stays on the page. A 401 asks for a token.
  function showStatus() {
    const main = $("main");
    const box = $("error");
    const err = page.errors.poll || page.errors.letters;
    if (!err) {
      box.hidden = true;
      box.textContent = "";
      $("token-form").hidden = true;
      main.dataset.api = "ok";
      $("content").hidden = false; // from the first answer on, the last data stays through errors
      page.lastOK = new Date();
      $("updated").textContent = "updated " + page.lastOK.toLocaleTimeString() + " · every " + pollMs / 1000 + " s";
      return;
    }
    $("updated").textContent = page.lastOK ? "last updated " + page.lastOK.toLocaleTimeString() : "no data yet";
    box.hidden = false;
    if (err.status === 401) {
      main.dataset.api = "unauthorized";
      const had = sessionStorage.getItem(tokenKey);
      box.textContent = had ? "The planner refused the token: " + err.message : "The planner wants a token to show its jobs.";
      $("token-form").hidden = false;
      return;
    }
    main.dataset.api = "error";
    if (err.status === 0) {
      box.textContent = "Cannot reach the planner (" + err.message + "). Trying again every " + pollMs / 1000 + " s.";
    } else if (err.status === 403) {
      box.textContent = "The token may not read this: " + err.message;
    } else if (err.status > 0) {
      box.textContent = "The planner answered " + err.status + ": " + err.message;
    } else {
      box.textContent = "The page could not show the planner's answer: " + err.message;
    }
  }

  // --- jobs ---

  function selectedJob(jobs) {
    if (page.selected && jobs.some((j) => j.id === page.selected)) {
      return page.selected;
    }
    const running = jobs.find((j) => j.state === "running");
    return running ? running.id : jobs.length ? jobs[0].id : null;
  }

  function progressBar(j) {
    const r = j.records;
    const total = r.expected > 0 ? r.expected : Math.max(r.extracted, r.loaded + r.dead_lettered, 1);
    const w = 120;
    const part = (n) => Math.max(0, Math.min(w, (n / total) * w));
    const bar = svg("svg", { class: "progress", viewBox: `0 0 ${w} 10`, width: w, height: 10, role: "img" });
    const done = r.loaded + r.dead_lettered;
    // Never past 100 %: counts are of records, and a source may give more than it said it had.
    const pct = r.expected > 0 ? Math.min(100, Math.floor((done / r.expected) * 100)) + "%" : "";
    bar.append(
      svg("rect", { class: "track", x: 0, y: 0, width: w, height: 10 }),
      svg("rect", { class: "extracted", x: 0, y: 0, width: part(Math.max(r.extracted, done)), height: 10 }),
      svg("rect", { class: "loaded", x: 0, y: 0, width: part(r.loaded), height: 10 }),
      svg("rect", { class: "dead", x: part(r.loaded), y: 0, width: part(r.dead_lettered), height: 10 }),
      svg("title", {}, pct ? pct + " loaded or dead-lettered" : "no expected count"),
    );
    return el("td", { class: "bar" }, bar, pct ? el("span", { class: "pct" }, pct) : null);
  }

  function timeLeft(j) {
    if (j.state !== "running") {
      if (!j.finished_at) {
        return el("td", { class: "num muted" }, "—");
      }
      const took = (new Date(j.finished_at) - new Date(j.created_at)) / 1000;
      return el("td", { class: "num muted", title: "the job ran for this long" }, "took " + duration(took));
    }
    if (typeof j.eta_seconds !== "number") {
      return el("td", { class: "num muted", title: "unknown: no expected count or no rate yet" }, "—");
    }
    return el("td", { class: "num", "data-eta-seconds": j.eta_seconds }, duration(j.eta_seconds));
  }

  function jobRow(j, selected) {
    const r = j.records;
    const t = j.tasks;
    const pick = el("button", { type: "button", class: "link", title: "show this job's tasks" }, j.id);
    pick.addEventListener("click", () => {
      page.selected = j.id;
      writeView();
      poll();
    });
    const notes = [];
    if (j.reason) {
      notes.push(el("div", { class: "note" }, j.reason));
    }
    if (j.held) {
      notes.push(el("div", { class: "note warn" },
        `held: ${j.held.table} refuses ${count(j.held.records)} records (${j.held.error_class}): ${j.held.reason}`));
    }
    return el("tr", {
      class: selected ? "selected" : null,
      "data-job-id": j.id,
      "data-state": j.state,
      "data-expected": r.expected,
      "data-extracted": r.extracted,
      "data-loaded": r.loaded,
      "data-dead-lettered": r.dead_lettered,
    },
      el("td", { class: "job" }, el("div", {}, j.name), pick),
      el("td", {}, j.table),
      el("td", {}, badge(j.state), ...notes),
      el("td", { title: "extracted + dead-lettered of planned" },
        `${t.extracted + t.dead_lettered} / ${t.planned}`, t.dead_lettered ? el("span", { class: "dead-text" }, ` (${t.dead_lettered} dead)`) : null),
      progressBar(j),
      el("td", { class: "num" }, r.expected >= 0 ? count(r.expected) : "unknown"),
      el("td", { class: "num" }, count(r.extracted)),
      el("td", { class: "num" }, count(r.loaded)),
      el("td", { class: "num" + (r.dead_lettered ? " dead-text" : "") }, count(r.dead_lettered)),
      // A finished job's rate is its average, from its start to its last load.
      el("td", { class: "num" }, decimals.format(j.records_per_second || 0)),
      timeLeft(j),
      el("td", { class: "nowrap" }, when(j.created_at)),
    );
  }

  function renderJobs(jobs) {
    page.jobs = jobs;
    const sel = selectedJob(jobs);
    $("jobs").replaceChildren(...jobs.map((j) => jobRow(j, j.id === sel)));
    $("jobs-empty").hidden = jobs.length > 0;
  }

  // --- tasks ---

  // renderTasks draws the first page of a job's tasks, maxTaskRows of them, and how many more
  // there are.
  function renderTasks(id, answer) {
    const tasks = answer.tasks || [];
    const total = typeof answer.total === "number" ? answer.total : tasks.length;
    $("tasks-section").hidden = false;
    $("tasks-job").textContent = id;
    $("tasks-note").hidden = answer.all !== false;
    const rows = tasks.slice(0, maxTaskRows).map((t) => el("tr", { "data-task-id": t.id, "data-state": t.state },
      taskCell(id, t.id),
      el("td", {}, badge(t.state), t.follows ? el("span", { class: "muted", title: "a page that another task's end published" }, " followed") : null),
      el("td", { class: "num" }, count(t.runs)),
      // A task's records are known when it ends: the extractor reports them then.
      t.state === "waiting" || t.state === "extracting"
        ? el("td", { class: "num muted", title: "known when the task ends" }, "—")
        : el("td", { class: "num" }, count(t.records)),
      el("td", { class: "num" }, count(t.loaded)),
      el("td", { class: "num" + (t.dead_lettered ? " dead-text" : "") }, count(t.dead_lettered)),
    ));
    if (total > rows.length) {
      rows.push(el("tr", {}, el("td", { colspan: 6, class: "muted" }, `and ${count(total - rows.length)} more tasks`)));
    }
    $("tasks").replaceChildren(...rows);
  }

  // --- lag ---

  // series gives each group a colour that stays the same from one poll to the next.
  const seriesOf = new Map();
  function series(group) {
    if (!seriesOf.has(group)) {
      seriesOf.set(group, seriesOf.size % 6);
    }
    return seriesOf.get(group);
  }

  // nice rounds a chart's top up to 1, 2 or 5 times a power of ten.
  function nice(v) {
    if (v <= 0) {
      return 1;
    }
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) {
      if (v <= m * p) {
        return m * p;
      }
    }
    return 10 * p;
  }

  function drawChart(chart, histories, key, label) {
    const W = 400, H = 170, left = 56, right = 10, top = 10, bottom = 22;
    const lines = histories.map((h) => ({
      group: h.group,
      points: (h.samples || []).map((s) => ({ t: Date.parse(s.at), v: Number(s[key]) || 0 })).filter((p) => !isNaN(p.t)),
    }));
    const all = lines.flatMap((l) => l.points);
    const parts = [];
    if (all.length === 0) {
      parts.push(svg("text", { x: W / 2, y: H / 2, class: "empty", "text-anchor": "middle" }, "no measure yet"));
      chart.replaceChildren(...parts);
      return;
    }
    let t1 = Math.max(...all.map((p) => p.t));
    let t0 = Math.min(...all.map((p) => p.t));
    if (t1 - t0 < 10000) {
      t0 = t1 - 10000; // a planner that just started has a few seconds of measures: spread them out
    }
    // At least 2 records (whole ticks 0, 1, 2) or 1 s: a group caught up draws a flat line at 0.
    const vmax = nice(Math.max(...all.map((p) => p.v), key === "records" ? 2 : 1));
    const x = (t) => left + ((t - t0) / (t1 - t0)) * (W - left - right);
    const y = (v) => top + (1 - v / vmax) * (H - top - bottom);
    for (const f of [0, 0.5, 1]) {
      const v = vmax * f;
      parts.push(svg("line", { class: "grid", x1: left, x2: W - right, y1: y(v), y2: y(v) }));
      parts.push(svg("text", { class: "axis", x: left - 6, y: y(v) + 4, "text-anchor": "end" }, label(v)));
    }
    const clock = (t) => new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    parts.push(svg("text", { class: "axis", x: left, y: H - 6, "text-anchor": "start" }, clock(t0)));
    parts.push(svg("text", { class: "axis", x: W - right, y: H - 6, "text-anchor": "end" }, clock(t1)));
    for (const l of lines) {
      const cls = "series-" + series(l.group);
      if (l.points.length === 1) {
        const p = l.points[0];
        parts.push(svg("circle", { class: "dot " + cls, cx: x(p.t), cy: y(p.v), r: 3, "data-group": l.group }));
        continue;
      }
      const pts = l.points.map((p) => x(p.t).toFixed(1) + "," + y(p.v).toFixed(1)).join(" ");
      parts.push(svg("polyline", { class: "line " + cls, points: pts, "data-group": l.group, "data-samples": l.points.length }));
    }
    chart.replaceChildren(...parts);
  }

  function renderLag(groups, histories) {
    for (const g of histories) {
      series(g.group);
    }
    drawChart($("lag-records"), histories, "records", (v) => numbers.format(v));
    drawChart($("lag-seconds"), histories, "seconds", (v) => decimals.format(v) + " s");
    $("groups").replaceChildren(...groups.map((g) => {
      let drain = "—";
      if (g.drain_seconds === 0) {
        drain = "caught up";
      } else if (g.drain_seconds > 0) {
        drain = duration(g.drain_seconds);
      }
      const swatch = svg("svg", { class: "swatch", viewBox: "0 0 12 12", width: 12, height: 12 });
      swatch.append(svg("rect", { class: "series-" + series(g.group), x: 0, y: 0, width: 12, height: 12, rx: 2 }));
      return el("tr", { "data-group": g.group, "data-lag-records": g.lag_records },
        el("td", {}, swatch),
        el("td", { class: "mono wrap" }, g.group, el("div", { class: "muted" }, "on " + g.topic)),
        el("td", {}, g.state),
        el("td", { class: "num" }, count(g.members)),
        el("td", { class: "num" }, count(g.lag_records),
          g.uncommitted_partitions ? el("div", { class: "note" }, `${g.uncommitted_partitions} without a commit`) : null),
        el("td", { class: "num" }, decimals.format(g.lag_seconds || 0)),
        el("td", { class: "num" }, drain),
      );
    }));
  }

  // --- dead letters ---

  // fillSelect offers values (and any chosen before) in a filter, keeping the choice.
  function fillSelect(sel, values) {
    const keep = sel.value;
    const all = [...new Set(values.filter((v) => v))];
    if (keep && !all.includes(keep)) {
      all.unshift(keep);
    }
    const have = [...sel.options].slice(1).map((o) => o.value);
    if (have.join("\n") === all.join("\n")) {
      return; // rebuilt, an open list would close under the user's pointer
    }
    const opts = [el("option", { value: "" }, "any")].concat(all.map((v) => el("option", { value: v }, v)));
    sel.replaceChildren(...opts);
    sel.value = keep;
  }

  function lettersQuery() {
    const q = new URLSearchParams();
    for (const [name, id] of filterIds) {
      if ($(id).value) {
        q.set(name, $(id).value);
      }
    }
    return q.toString();
  }

  function renderLetters(answer) {
    const letters = answer.letters || [];
    const counts = answer.counts || [];
    fillSelect($("dlq-class"), counts.map((c) => c.error_class));
    fillSelect($("dlq-job"), page.jobs.map((j) => j.id).concat(counts.map((c) => c.job_id)));
    const total = counts.reduce((n, c) => n + (c.letters || 0), 0);
    $("dlq-counts").replaceChildren(
      counts.length ? `${count(total)} dead letter${total === 1 ? "" : "s"}: ` : "No dead letters.",
      ...counts.map((c) => el("span", { class: "chip", "data-count-job": c.job_id, "data-count-class": c.error_class },
        `${c.job_id} · ${c.stage} · ${c.error_class}: ${count(c.letters)}`)),
    );
    $("letters").replaceChildren(...letters.map((d) => {
      const message = d.error_message || "";
      const short = message.length > 160 ? message.slice(0, 160) + "…" : message;
      return el("tr", { "data-letter": `${d.partition}/${d.offset}`, "data-letter-job": d.job_id, "data-stage": d.stage },
        el("td", { class: "nowrap" }, when(d.failed_at)),
        el("td", { class: "mono nowrap" }, d.job_id || "—"),
        taskCell(d.job_id, d.task_id),
        el("td", {}, d.stage),
        el("td", {}, d.error_class, d.http_status ? ` (${d.http_status})` : ""),
        el("td", { class: "message", title: message }, short),
        el("td", { class: "num" }, count(d.attempts)),
        el("td", { class: "mono" }, `${d.original_topic}[${d.original_partition}]@${d.original_offset}`),
        el("td", { class: "num" }, count(d.payload_size) + " B", d.truncated ? el("div", { class: "note" }, "truncated") : null),
        el("td", { class: "mono", title: "sluicectl dlq show " + d.partition + "/" + d.offset }, `${d.partition}/${d.offset}`),
      );
    }));
    $("letters-empty").hidden = letters.length > 0;
  }

  // --- polling ---

  // loop runs ask every ms: ask asks the API and returns what draws the answer. A run started
  // while another waits for the planner (a click, a filter) supersedes it, so that one timer is left.
  function loop(name, ms, ask) {
    const run = async () => {
      clearTimeout(page.timers[name]);
      if (page.stopped) {
        return;
      }
      const gen = ++page.gens[name];
      let draw = null;
      let err = null;
      try {
        draw = await ask();
      } catch (e) {
        err = e instanceof APIError ? e : new APIError(-1, String(e && e.message ? e.message : e));
      }
      if (gen !== page.gens[name]) {
        return;
      }
      if (!err) {
        try {
          draw();
        } catch (e) {
          err = new APIError(-1, String(e && e.message ? e.message : e));
        }
      }
      page.errors[name] = err;
      showStatus();
      if (err && err.status === 401) {
        page.stopped = true; // until a token is given
        return;
      }
      page.timers[name] = setTimeout(run, ms);
    };
    return run;
  }

  const poll = loop("poll", pollMs, async () => {
    const [list, lag, history] = await Promise.all([everyPage("v1/jobs", "jobs"), api("v1/lag"), api("v1/lag/history")]);
    const id = selectedJob(list);
    let tasks = null;
    if (id) {
      try {
        tasks = await api("v1/jobs/" + encodeURIComponent(id) + "/tasks?limit=" + maxTaskRows);
      } catch (e) {
        if (!(e instanceof APIError) || e.status !== 404) {
          throw e;
        }
        // The planner let go of the job between the two requests: no tasks to show.
      }
    }
    return () => {
      renderJobs(list);
      renderLag(lag.groups || [], history.groups || []);
      if (tasks) {
        renderTasks(id, tasks);
      }
      $("tasks-section").hidden = !tasks;
    };
  });

  const pollLetters = loop("letters", lettersMs, async () => {
    const answer = await api("v1/deadletters?" + lettersQuery());
    return () => renderLetters(answer);
  });

  function resume() {
    page.stopped = false;
    page.errors.poll = page.errors.letters = null;
    poll();
    pollLetters();
  }

  function init() {
    takeToken(); // before readView: the token is not part of the view
    $("token-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const token = $("token").value.trim();
      if (!token) {
        return;
      }
      sessionStorage.setItem(tokenKey, token);
      $("token").value = "";
      $("token-form").hidden = true;
      resume();
    });
    $("dlq-filters").addEventListener("submit", (ev) => ev.preventDefault());
    $("dlq-filters").addEventListener("change", () => {
      writeView();
      pollLetters();
    });
    // A token or a view pasted into the address bar later works too.
    window.addEventListener("hashchange", () => {
      takeToken();
      readView();
      resume();
    });
    readView();
    resume();
  }

  init();
})();

// AgentMem web console: plain JavaScript over the REST API, no build step.
// The credential (an API key or a sign-in's access token) lives in sessionStorage and is only ever sent in the
// Authorization header. Event streams (EventSource) get a short-lived stream token in their URL instead.
"use strict";

const API = "/api/v1";
const store = window.sessionStorage;
let me = null;          // GET /api/v1/auth/whoami: role and permissions of the caller
let teardown = [];      // closers of the current page's streams

// ---------- small helpers ----------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const $ = (sel, root = document) => root.querySelector(sel);
const view = () => $("#view");
const fmtTime = (t) => (t ? new Date(t).toLocaleString() : "—");
const short = (id) => (id ? String(id).slice(0, 8) : "—");
const json = (v) => JSON.stringify(v, null, 2);
const can = (permission) => !!me && me.permissions.includes(permission);

// A button that changes something: rendered only when the caller holds `permission` (viewers see none).
function writeButton(label, permission, onclick, cls) {
  if (!can(permission)) return null;
  return h("button", { type: "button", "data-write": permission, class: cls || null, onclick }, label);
}

class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code;
  }
}

function authHeaders() {
  const headers = { Authorization: `Bearer ${store.getItem("agentmem.credential")}` };
  const org = store.getItem("agentmem.organization");
  if (org) headers["X-Organization-Id"] = org;
  return headers;
}

async function api(method, path, body) {
  const init = { method, headers: authHeaders() };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(API + path, init);
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    if (response.status === 401) signOut("Your session ended: sign in again.");
    throw new ApiError(response.status, data);
  }
  return data;
}

function showError(where, err) {
  where.replaceChildren(h("p", { class: "error" }, err.code ? `${err.code}: ${err.message}` : String(err.message || err)));
}

// ---------- event streams with stream tokens ----------
// EventSource can't send headers: ask for a 5-minute stream token (for one job, or the organization) and put
// that in the URL. When the stream breaks (the token expired, the server restarted) get a new one and reconnect.
const TERMINAL = ["succeeded", "failed", "cancelled"];

function follow(path, jobId, onEvent) {
  let source = null;
  let closed = false;
  let retry = null;
  let lastId = null;  // a reconnect (with a new token, so a new URL) resumes after the last event seen
  async function open() {
    try {
      const { token } = await api("POST", "/stream-tokens", jobId ? { job_id: jobId } : {});
      if (closed) return;
      const resume = lastId ? `&last_event_id=${encodeURIComponent(lastId)}` : "";
      source = new EventSource(`${API}${path}?token=${encodeURIComponent(token)}${resume}`);
      const types = ["snapshot", "queued", "started", "progress", "retrying", "token", "tool_call", "tool_result",
        "message", "usage", "succeeded", "failed", "cancelled", "error", "webhook.disabled"];
      for (const type of types) {
        source.addEventListener(type, (e) => {
          if (e.lastEventId) lastId = e.lastEventId;
          onEvent(type, JSON.parse(e.data));
          // A job's stream ends after its outcome: don't reconnect to replay it.
          if (jobId && (TERMINAL.includes(type) || type === "error")) close();
        });
      }
      source.onerror = () => {
        source.close();
        if (!closed) retry = setTimeout(open, 1500);
      };
    } catch (err) {
      if (!closed && err.status !== 401) retry = setTimeout(open, 3000);
    }
  }
  open();
  const close = () => { closed = true; clearTimeout(retry); if (source) source.close(); };
  teardown.push(close);
  return close;
}

// ---------- progress bars ----------
function percent(job) {
  if (job.status === "succeeded") return 100;
  const p = job.progress || {};
  return p.total ? Math.min(100, Math.floor((100 * p.done) / p.total)) : 0;
}
function bar(job) {
  const pct = percent(job);
  const fill = h("span", { class: "fill" });
  fill.style.width = `${pct}%`;  // CSSOM, not a style attribute: the console's CSP allows no inline styles
  return h("span", { class: "progress", "data-job": job.id },
    h("span", { class: `bar ${job.status}`, "data-pct": pct }, fill),
    h("span", { class: "pct" }, `${pct}%`));
}
const statusCell = (job) => h("span", { class: `status ${job.status}` }, job.status);

// Apply an event to a job object (the row is the truth; events move it along until the next read).
function applyEvent(job, type, event) {
  const d = event.data || {};
  if (type === "snapshot") return Object.assign(job, d);
  if (TERMINAL.includes(job.status) && !TERMINAL.includes(type)) return job;  // a late hint never undoes an outcome
  if (type === "started") job.status = "running";
  if (type === "queued") job.status = job.status || "queued";
  if (type === "progress") job.progress = { done: d.done, total: d.total, message: d.message };
  if (type === "retrying") { job.status = "queued"; job.error = d.error || job.error; }
  if (type === "succeeded") { job.status = "succeeded"; job.result = d.result; }
  if (type === "failed") { job.status = "failed"; job.error = d.error || d; }
  if (type === "cancelled") job.status = "cancelled";
  return job;
}

function errorText(job) {
  if (!job.error) return "";
  return job.error.code ? `${job.error.code}: ${job.error.message}` : (job.error.message || json(job.error));
}

function jobRow(job) {
  return h("tr", { "data-job-row": job.id },
    h("td", {}, h("a", { href: `#/jobs/${job.id}` }, h("code", {}, short(job.id)))),
    h("td", {}, job.kind || "…"),
    h("td", {}, statusCell(job)),
    h("td", {}, bar(job)),
    h("td", { class: "error" }, job.status === "failed" || job.status === "queued" ? errorText(job) : ""),
    h("td", { class: "muted" }, fmtTime(job.created_at)),
    h("td", {}, ["queued", "running"].includes(job.status)
      ? writeButton("Cancel", "jobs:cancel", () => cancelJob(job.id), "danger") : null));
}

async function cancelJob(id) {
  await api("POST", `/jobs/${id}/cancel`);
}

const JOB_HEAD = () => h("tr", {}, ["Job", "Kind", "Status", "Progress", "Error", "Created", ""].map((t) => h("th", {}, t)));

// ---------- pages ----------
async function pageLive(root) {
  root.append(h("h1", {}, "Live"),
    h("p", { class: "hint" }, "Your organization's event stream: new jobs appear, progress bars move, failures show their error."));
  if (can("memories:write")) {
    const content = h("input", { id: "live-ingest-content", placeholder: "a memory to store", size: 40 });
    const user = h("input", { id: "live-ingest-user", placeholder: "user_id", size: 12 });
    root.append(h("form", { class: "inline", onsubmit: async (e) => {
      e.preventDefault();
      await api("POST", "/memories", { user_id: user.value || undefined, items: [{ content: content.value }] });
      content.value = "";
    } }, content, user, h("button", { type: "submit", "data-write": "memories:write" }, "Add memory")));
  }
  const body = h("tbody");
  root.append(h("table", { id: "live-jobs" }, h("thead", {}, JOB_HEAD()), body));
  const jobs = new Map();
  const render = (job) => {
    const row = jobRow(job);
    const old = body.querySelector(`[data-job-row="${job.id}"]`);
    if (old) old.replaceWith(row); else body.prepend(row);
  };
  const first = await api("GET", "/jobs?limit=20");
  for (const job of first.items.reverse()) { jobs.set(job.id, job); render(job); }
  // Events are applied in order: a job seen for the first time is read (its kind, its state) before the
  // events after it.
  let chain = Promise.resolve();
  follow("/events", null, (type, event) => {
    chain = chain.then(async () => {
      if (!event.job_id) return;
      let job = jobs.get(event.job_id);
      if (!job) {
        job = { id: event.job_id, status: "queued", progress: { done: 0, total: 0 } };
        jobs.set(job.id, job);
        try { Object.assign(job, await api("GET", `/jobs/${job.id}`)); } catch (err) { /* shown as it comes */ }
      }
      applyEvent(job, type, event);
      render(job);
    });
  });
}

async function pageJobs(root) {
  const status = h("select", { id: "jobs-status" }, ["", "queued", "running", "succeeded", "failed", "cancelled"]
    .map((s) => h("option", { value: s }, s || "any status")));
  const body = h("tbody");
  const load = async () => {
    const page = await api("GET", `/jobs?limit=100${status.value ? `&status=${status.value}` : ""}`);
    body.replaceChildren(...page.items.map(jobRow));
  };
  status.addEventListener("change", load);
  root.append(h("h1", {}, "Jobs"), h("form", { class: "inline" }, status,
    h("button", { type: "button", class: "secondary", onclick: load }, "Refresh")),
  h("table", { id: "jobs" }, h("thead", {}, JOB_HEAD()), body));
  await load();
}

async function pageJob(root, id) {
  let job = await api("GET", `/jobs/${id}`);
  const head = h("div", { class: "card" });
  const result = h("pre", { id: "job-result" });
  const log = h("tbody", { class: "events" });
  const render = () => {
    head.replaceChildren(
      h("p", {}, h("b", {}, job.kind), " ", statusCell(job), " ", bar(job), " ",
        ["queued", "running"].includes(job.status) ? writeButton("Cancel", "jobs:cancel", () => cancelJob(id), "danger") : null),
      h("p", { class: "muted" }, `id ${job.id} · attempts ${job.attempts}/${job.max_attempts} · worker ${job.worker || "—"} · `,
        `created ${fmtTime(job.created_at)} · finished ${fmtTime(job.finished_at)}`),
      job.progress && job.progress.message ? h("p", {}, job.progress.message) : null,
      job.error ? h("p", { class: "error" }, errorText(job)) : null);
    result.textContent = job.result ? json(job.result) : "(no result yet)";
  };
  render();
  root.append(h("h1", {}, "Job ", h("code", {}, short(id))), head, h("h2", {}, "Result"), result,
    h("h2", {}, "Event log"), h("table", { id: "job-events" },
      h("thead", {}, h("tr", {}, h("th", {}, "Event"), h("th", {}, "Time"), h("th", {}, "Data"))), log));
  follow(`/jobs/${id}/events`, id, (type, event) => {
    job = applyEvent(job, type, event);
    render();
    const data = type === "snapshot" ? { status: event.data.status, progress: event.data.progress } : event.data;
    log.append(h("tr", {}, h("td", {}, type), h("td", { class: "muted" }, new Date(event.ts * 1000).toLocaleTimeString()),
      h("td", {}, h("code", {}, JSON.stringify(data)))));
  });
}

function scopeInputs(prefix) {
  const kind = h("select", { id: `${prefix}-scope` }, ["user_id", "agent_id", "run_id"].map((s) => h("option", { value: s }, s)));
  const value = h("input", { id: `${prefix}-scope-value`, placeholder: "scope value (optional)", size: 16 });
  return { kind, value, scope: () => (value.value ? { [kind.value]: value.value } : {}) };
}

async function pageMemories(root) {
  const query = h("input", { id: "search-query", placeholder: "search by meaning or words", size: 40 });
  const mode = h("select", { id: "search-mode" }, ["hybrid", "vector", "text"].map((m) => h("option", { value: m }, m)));
  const searchScope = scopeInputs("search");
  const results = h("div", { id: "search-results" });
  const listScope = scopeInputs("list");
  const list = h("div", { id: "memory-list" });
  const history = h("div", { id: "memory-history" });

  async function showHistory(memory) {
    const page = await api("GET", `/memories/${memory.id}/history`);
    history.replaceChildren(h("h2", {}, "History of ", h("code", {}, short(memory.id))),
      h("table", {}, h("thead", {}, h("tr", {}, ["Version", "Event", "Before", "After", "By", "When"].map((t) => h("th", {}, t)))),
        h("tbody", {}, page.items.map((v) => h("tr", {}, h("td", {}, v.version), h("td", {}, v.event),
          h("td", {}, v.old_content || ""), h("td", {}, v.new_content || ""), h("td", { class: "muted" }, v.actor || v.metadata.source || ""),
          h("td", { class: "muted" }, fmtTime(v.created_at)))))));
  }
  const actions = (memory, reload) => h("span", {},
    h("button", { type: "button", class: "secondary", onclick: () => showHistory(memory) }, "History"), " ",
    writeButton("Delete", "memories:delete", async () => { await api("DELETE", `/memories/${memory.id}`); reload(); }, "danger"));
  const scopeText = (m) => ["user_id", "agent_id", "run_id"].filter((k) => m[k]).map((k) => `${k.split("_")[0]}=${m[k]}`).join(" ");

  async function search(e) {
    if (e) e.preventDefault();
    try {
      const out = await api("POST", "/memories/search", { query: query.value, mode: mode.value, top_k: 10, ...searchScope.scope() });
      const fx = (x) => (x === null || x === undefined ? "—" : Number(x).toFixed(3));
      results.replaceChildren(h("p", { class: "muted" }, `${out.hits.length} hits, mode ${out.mode}${out.refined ? ", refined by feedback" : ""}. `,
        "Scores rank hits within this search; they are not absolute."),
      h("table", { id: "hits" }, h("thead", {}, h("tr", {}, ["Memory", "Scope", "Score", "Vector (rank)", "Text (rank)", "Fused", ""].map((t) => h("th", {}, t)))),
        h("tbody", {}, out.hits.map((hit) => h("tr", { class: "hit" },
          h("td", {}, hit.memory.content), h("td", { class: "muted" }, scopeText(hit.memory)),
          h("td", { class: "num score" }, fx(hit.score)),
          h("td", { class: "num" }, `${fx(hit.explanation.vector_score)} (${hit.explanation.vector_rank ?? "—"})`),
          h("td", { class: "num" }, `${fx(hit.explanation.text_score)} (${hit.explanation.text_rank ?? "—"})`),
          h("td", { class: "num" }, fx(hit.explanation.fused_score)),
          h("td", {}, actions(hit.memory, search)))))));
    } catch (err) { showError(results, err); }
  }
  async function loadList(e) {
    if (e) e.preventDefault();
    const params = new URLSearchParams({ limit: "50", ...listScope.scope() });
    try {
      const page = await api("GET", `/memories?${params}`);
      list.replaceChildren(h("table", {}, h("thead", {}, h("tr", {}, ["Memory", "Scope", "Created", ""].map((t) => h("th", {}, t)))),
        h("tbody", {}, page.items.map((m) => h("tr", {}, h("td", {}, m.content), h("td", { class: "muted" }, scopeText(m)),
          h("td", { class: "muted" }, fmtTime(m.created_at)), h("td", {}, actions(m, loadList)))))));
    } catch (err) { showError(list, err); }
  }
  root.append(h("h1", {}, "Memories"),
    h("form", { class: "inline", id: "search-form", onsubmit: search }, query, mode, searchScope.kind, searchScope.value,
      h("button", { type: "submit" }, "Search")), results,
    h("h2", {}, "Browse by scope"),
    h("form", { class: "inline", onsubmit: loadList }, listScope.kind, listScope.value, h("button", { type: "submit", class: "secondary" }, "List")),
    list, history);
  await loadList();
}

// A line diff (longest common subsequence): what a block version changed against the current value.
function lineDiff(before, after) {
  const a = before.split("\n"), b = after.split("\n");
  const n = a.length, m = b.length;
  const lcs = Array.from({ length: n + 1 }, () => new Array(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) {
    lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  }
  const out = [];
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) { out.push(h("span", {}, a[i] + "\n")); i++; j++; }
    else if (j < m && (i === n || lcs[i][j + 1] >= lcs[i + 1][j])) { out.push(h("span", { class: "add" }, "+ " + b[j])); j++; }
    else { out.push(h("span", { class: "del" }, "- " + a[i])); i++; }
  }
  return h("pre", { class: "diff" }, out);
}

async function pageAgents(root) {
  const page = await api("GET", "/agents?limit=100");
  root.append(h("h1", {}, "Agents"));
  if (can("agents:write")) {
    const name = h("input", { id: "agent-name", placeholder: "name" });
    const system = h("input", { id: "agent-system", placeholder: "system prompt", size: 40 });
    root.append(h("form", { class: "inline", onsubmit: async (e) => {
      e.preventDefault();
      const agent = await api("POST", "/agents", { name: name.value, system: system.value || undefined });
      location.hash = `#/agents/${agent.id}`;
    } }, name, system, h("button", { type: "submit", "data-write": "agents:write" }, "Create agent")));
  }
  root.append(h("table", { id: "agents" }, h("thead", {}, h("tr", {}, ["Agent", "Blocks", "Model", "Created"].map((t) => h("th", {}, t)))),
    h("tbody", {}, page.items.map((a) => h("tr", {}, h("td", {}, h("a", { href: `#/agents/${a.id}` }, a.name)),
      h("td", {}, a.blocks.map((b) => h("span", { class: "pill" }, b.label))), h("td", { class: "muted" }, (a.llm && a.llm.model) || "default"),
      h("td", { class: "muted" }, fmtTime(a.created_at)))))));
}

async function pageAgent(root, id) {
  const agent = await api("GET", `/agents/${id}`);
  root.append(h("h1", {}, "Agent ", agent.name), h("p", { class: "muted" }, agent.description || ""),
    h("pre", {}, agent.system), h("p", {}, h("a", { href: `#/chat/${agent.id}` }, "Chat with this agent →")));
  if (can("blocks:write")) {
    const label = h("input", { id: "block-label", placeholder: "label (e.g. persona)" });
    const value = h("input", { id: "block-value", placeholder: "value", size: 40 });
    root.append(h("form", { class: "inline", onsubmit: async (e) => {
      e.preventDefault();
      const block = await api("POST", "/blocks", { label: label.value, value: value.value });
      await api("POST", `/agents/${id}/blocks/${block.id}`);
      render();
    } }, label, value, h("button", { type: "submit", "data-write": "blocks:write" }, "Add block")));
  }
  const blocks = h("div", { id: "blocks" });
  root.append(h("h2", {}, "Blocks"), blocks);
  async function render() {
    const list = await api("GET", `/agents/${id}/blocks`);
    blocks.replaceChildren(...list.map(blockCard));
    if (!list.length) blocks.append(h("p", { class: "muted" }, "No blocks attached."));
  }
  function blockCard(block) {
    const versions = h("div");
    const edit = h("textarea", { class: "block-edit" });
    edit.value = block.value;
    const card = h("div", { class: "card block", "data-block": block.id },
      h("p", {}, h("b", {}, block.label), " ", h("span", { class: "pill" }, `v${block.version}`), " ",
        h("span", { class: "muted" }, `${block.chars}/${block.limit} chars${block.read_only ? " · read-only" : ""}`)),
      can("blocks:write") && !block.read_only ? [edit, writeButton("Save", "blocks:write", async () => {
        await api("PATCH", `/blocks/${block.id}`, { value: edit.value });
        render();
      })] : h("pre", {}, block.value),
      " ", h("button", { type: "button", class: "secondary", onclick: () => showVersions() }, "Versions"), versions);
    async function showVersions() {
      const page = await api("GET", `/blocks/${block.id}/versions?limit=50`);
      versions.replaceChildren(h("table", { class: "versions" },
        h("thead", {}, h("tr", {}, ["Version", "Reason", "Diff to current", "By", "When", ""].map((t) => h("th", {}, t)))),
        h("tbody", {}, page.items.map((v) => h("tr", {}, h("td", {}, v.version), h("td", {}, v.reason),
          h("td", {}, v.version === block.version ? h("span", { class: "muted" }, "(current)") : lineDiff(v.value, block.value)),
          h("td", { class: "muted" }, v.actor || ""), h("td", { class: "muted" }, fmtTime(v.created_at)),
          h("td", {}, v.version === block.version ? null : writeButton("Revert", "blocks:write", async () => {
            await api("POST", `/blocks/${block.id}/revert`, { version: v.version });
            render();
          })))))));
    }
    return card;
  }
  await render();
}

// Read a fetch() response of Server-Sent Events: the chat's POST answers with its turn's stream directly.
async function readSse(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let type = "message", data = "";
      for (const line of frame.split("\n")) {
        if (line.startsWith("event: ")) type = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data && onEvent(type, JSON.parse(data)) === false) { reader.cancel(); return; }
    }
  }
}

async function pageChat(root, agentId) {
  const agents = (await api("GET", "/agents?limit=100")).items;
  root.append(h("h1", {}, "Chat playground"));
  if (!agents.length) { root.append(h("p", { class: "muted" }, "No agents yet: create one on the Agents page.")); return; }
  const pick = h("select", { id: "chat-agent" }, agents.map((a) => h("option", { value: a.id, selected: a.id === agentId }, a.name)));
  const user = h("input", { id: "chat-user", placeholder: "user_id (optional)", size: 14 });
  const log = h("div", { class: "chat-log", id: "chat-log" });
  const input = h("input", { id: "chat-input", placeholder: "say something", size: 60 });
  let conversation = null;
  pick.addEventListener("change", () => { conversation = null; log.replaceChildren(); });
  root.append(h("form", { class: "inline" }, h("label", {}, "Agent ", pick), user), log);
  if (!can("conversations:write")) { root.append(h("p", { class: "muted" }, "Your role can read conversations but not write them.")); return; }
  const send = async (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    if (!conversation) conversation = await api("POST", `/agents/${pick.value}/conversations`, { user_id: user.value || undefined });
    log.append(h("div", { class: "msg user" }, text));
    let answer = null;
    const response = await fetch(`${API}/conversations/${conversation.id}/messages?stream=true`, {
      method: "POST", headers: { ...authHeaders(), "content-type": "application/json" }, body: JSON.stringify({ content: text }) });
    if (!response.ok) { log.append(h("p", { class: "error" }, (await response.json()).error.message)); return; }
    await readSse(response, (type, event) => {
      const d = event.data || {};
      if (type === "token") {
        if (!answer) { answer = h("div", { class: "msg assistant streaming" }); log.append(answer); }
        answer.textContent += d.text;
      } else if (type === "tool_call") {
        answer = null;
        log.append(h("div", { class: "msg tool tool-call" }, `→ ${d.name}(${typeof d.arguments === "string" ? d.arguments : JSON.stringify(d.arguments)})`));
      } else if (type === "tool_result") {
        log.append(h("div", { class: "msg tool tool-result" }, `← ${d.name}: ${d.content}`));
      } else if (type === "succeeded") {
        if (!answer) { answer = h("div", { class: "msg assistant" }); log.append(answer); }
        answer.textContent = d.result.content;
        answer.classList.remove("streaming");
        answer.classList.add("done");
        return false;
      } else if (type === "failed" || type === "cancelled" || type === "error") {
        log.append(h("p", { class: "error" }, d.error ? `${d.error.code}: ${d.error.message}` : type));
        return false;
      }
      log.scrollTop = log.scrollHeight;
      return true;
    });
  };
  root.append(h("form", { class: "inline", id: "chat-form", onsubmit: send }, input,
    h("button", { type: "submit", "data-write": "conversations:write" }, "Send")));
}

async function pageSchedules(root) {
  const render = async () => {
    const list = await api("GET", "/schedules");
    body.replaceChildren(...list.map((s) => h("tr", {},
      h("td", {}, s.name, s.platform ? h("span", { class: "pill" }, "platform") : null), h("td", {}, s.task),
      h("td", {}, s.cron ? h("code", {}, `${s.cron} ${s.timezone}`) : `every ${s.interval_seconds}s`),
      h("td", {}, s.enabled ? "on" : "off"), h("td", { class: "muted" }, fmtTime(s.next_run_at)),
      h("td", {}, s.last_run_at ? [fmtTime(s.last_run_at), " ", s.last_job_id
        ? h("a", { href: `#/jobs/${s.last_job_id}` }, h("span", { class: `status ${s.last_job_status}` }, s.last_job_status || "job")) : null] : "never"),
      h("td", {}, s.platform ? null : writeButton(s.enabled ? "Disable" : "Enable", "schedules:write", async () => {
        await api("PATCH", `/schedules/${s.id}`, { enabled: !s.enabled });
        render();
      }, "secondary")))));
  };
  const body = h("tbody");
  root.append(h("h1", {}, "Schedules"), h("table", { id: "schedules" },
    h("thead", {}, h("tr", {}, ["Name", "Task", "When", "Enabled", "Next run", "Last run", ""].map((t) => h("th", {}, t)))), body));
  await render();
}

async function pageWebhooks(root) {
  root.append(h("h1", {}, "Webhooks"));
  if (!can("webhooks:read")) { root.append(h("p", { class: "muted" }, "Webhooks are for admins and owners (webhooks:read).")); return; }
  const page = await api("GET", "/webhooks?limit=100");
  const deliveries = h("div", { id: "deliveries" });
  async function showDeliveries(hook) {
    const list = await api("GET", `/webhooks/${hook.id}/deliveries?limit=50`);
    deliveries.replaceChildren(h("h2", {}, "Deliveries to ", hook.url), h("table", {},
      h("thead", {}, h("tr", {}, ["Event", "Attempt", "Result", "Status", "Time", "Error", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, list.items.map((d) => h("tr", {}, h("td", {}, d.event_type), h("td", {}, d.attempt),
        h("td", { class: `status ${d.succeeded ? "succeeded" : "failed"}` }, d.succeeded ? "delivered" : "failed"),
        h("td", {}, d.status_code ?? "—"), h("td", { class: "muted" }, fmtTime(d.created_at)),
        h("td", { class: "error" }, d.error_code ? `${d.error_code}: ${d.error_message || ""}` : ""),
        h("td", {}, writeButton("Redeliver", "webhooks:write", () => api("POST", `/webhooks/${hook.id}/deliveries/${d.id}/redeliver`), "secondary")))))));
  }
  root.append(h("table", { id: "webhooks" }, h("thead", {}, h("tr", {}, ["URL", "Events", "Enabled", "Last delivery", "Last success", "Failures", ""].map((t) => h("th", {}, t)))),
    h("tbody", {}, page.items.map((w) => h("tr", {}, h("td", {}, h("code", {}, w.url)), h("td", {}, w.event_types.join(", ")),
      h("td", {}, w.enabled ? "on" : `off${w.disabled_reason ? ` (${w.disabled_reason})` : ""}`),
      h("td", { class: "muted" }, fmtTime(w.last_delivery_at)), h("td", { class: "muted" }, fmtTime(w.last_success_at)),
      h("td", {}, w.consecutive_failures),
      h("td", {}, h("button", { type: "button", class: "secondary", onclick: () => showDeliveries(w) }, "Deliveries"), " ",
        writeButton("Send test", "webhooks:write", () => api("POST", `/webhooks/${w.id}/test`), "secondary")))))), deliveries);
}

const PAGES = {
  live: pageLive, jobs: pageJobs, memories: pageMemories, agents: pageAgents, chat: pageChat,
  schedules: pageSchedules, webhooks: pageWebhooks,
};

// ---------- routing and sign-in ----------
async function route() {
  for (const close of teardown) close();
  teardown = [];
  const [name, id] = (location.hash.replace(/^#\/?/, "") || "live").split("/");
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === name);
  const root = h("div", { id: `page-${name}${id && name !== "chat" ? "-detail" : ""}`, "data-page": name });
  view().replaceChildren(root);
  try {
    if (name === "jobs" && id) await pageJob(root, id);
    else if (name === "agents" && id) await pageAgent(root, id);
    else await (PAGES[name] || pageLive)(root, id);
    root.setAttribute("data-ready", "");
  } catch (err) {
    root.append(h("p", { class: "error" }, err.code ? `${err.code}: ${err.message}` : String(err)));
  }
}

function signOut(message) {
  for (const close of teardown) close();
  teardown = [];
  store.removeItem("agentmem.credential");
  store.removeItem("agentmem.organization");
  me = null;
  $("#nav").hidden = true;
  $("#sign-out").hidden = true;
  $("#who").textContent = "";
  view().replaceChildren();
  $("#sign-in").hidden = false;
  $("#sign-in-error").textContent = message || "";
}

async function signedIn() {
  try {
    me = await api("GET", "/auth/whoami");
  } catch (err) {
    signOut(err.code ? `${err.code}: ${err.message}` : String(err));
    return;
  }
  $("#sign-in").hidden = true;
  $("#nav").hidden = false;
  $("#sign-out").hidden = false;
  $("#who").textContent = `${me.name} · ${me.role || "no organization"}`;
  $("#who").dataset.role = me.role || "";
  await route();
}

function setUp() {
  for (const tab of document.querySelectorAll(".tabs button")) {
    tab.addEventListener("click", () => {
      for (const t of document.querySelectorAll(".tabs button")) t.classList.toggle("active", t === tab);
      $("#key-form").hidden = tab.dataset.tab !== "key";
      $("#login-form").hidden = tab.dataset.tab !== "login";
    });
  }
  $("#key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    store.setItem("agentmem.credential", $("#api-key").value.trim());
    $("#api-key").value = "";
    signedIn();
  });
  $("#login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const org = $("#organization").value.trim();
    const response = await fetch(`${API}/auth/login`, { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: $("#username").value, password: $("#password").value, organization_id: org || undefined }) });
    const data = await response.json();
    $("#password").value = "";
    if (!response.ok) { $("#sign-in-error").textContent = `${data.error.code}: ${data.error.message}`; return; }
    store.setItem("agentmem.credential", data.access_token);
    if (org) store.setItem("agentmem.organization", org);
    signedIn();
  });
  $("#sign-out").addEventListener("click", () => signOut());
  window.addEventListener("hashchange", () => { if (me) route(); });
  if (store.getItem("agentmem.credential")) signedIn(); else signOut();
}

setUp();

// runledger console: local times, live updates from the event stream,
// time travel, sign-in and actions. No framework, nothing fetched from
// elsewhere: every request goes to this server.
"use strict";

// Unsafe calls signed in by cookie carry this header (the CSRF defence;
// the browser adds Origin too).
const CSRF = { "X-Runledger-CSRF": "1" };

function localTimes(root) {
  for (const t of root.querySelectorAll("time[datetime]")) {
    const d = new Date(t.getAttribute("datetime"));
    if (!isNaN(d)) t.textContent = d.toLocaleString();
  }
}

async function api(method, path, body) {
  const headers = Object.assign({ Accept: "application/json" }, CSRF);
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin" });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch (_) { json = text; }
  if (!r.ok) {
    const detail = json && json.detail ? json.detail : r.status + " " + r.statusText;
    const err = new Error(detail); err.body = json; throw err;
  }
  return json;
}

function show(el, text, data) {
  el.textContent = text;
  if (data !== undefined) {
    const pre = document.createElement("pre");
    pre.textContent = JSON.stringify(data, null, 2);
    el.appendChild(pre);
  }
}

// Refreshes the live part of the page from the server (the same URL), so
// the server stays the one place that filters, sorts and renders.
let refreshing = false, again = false;
async function refresh() {
  if (refreshing) { again = true; return; }
  refreshing = true;
  try {
    const r = await fetch(location.href, { credentials: "same-origin" });
    if (!r.ok) return;
    const doc = new DOMParser().parseFromString(await r.text(), "text/html");
    for (const id of ["live-region", "run-status", "total", "bulk-count", "head-position", "chain", "actions", "travel"]) {
      const fresh = doc.getElementById(id), old = document.getElementById(id);
      if (!fresh || !old) continue;
      // Never pull a control from under the viewer's hands.
      if (id === "travel" && old.contains(document.activeElement)) continue;
      if (id === "live-region") {
        const checked = new Set([...old.querySelectorAll("input[name=id]:checked")].map(i => i.value));
        const before = new Map([...old.querySelectorAll("tr[data-id]")].map(tr => [tr.dataset.id, tr.dataset.status]));
        old.replaceWith(fresh);
        for (const tr of fresh.querySelectorAll("tr[data-id]")) {
          if (before.get(tr.dataset.id) !== tr.dataset.status) tr.classList.add("flash");
          const box = tr.querySelector("input[name=id]");
          if (box && checked.has(box.value)) box.checked = true;
        }
        localTimes(fresh);
      } else {
        old.replaceWith(fresh);
        localTimes(fresh);
        if (id === "actions") wireActions();
        if (id === "travel") travel();
      }
    }
  } finally {
    refreshing = false;
    if (again) { again = false; setTimeout(refresh, 0); }
  }
}

function live() {
  const url = document.body.dataset.live;
  const state = document.getElementById("live-state");
  if (!url || !window.EventSource) { if (state) state.textContent = url ? "" : /[?&]as_of=/.test(location.search) ? "not live: a view of the past" : "not live"; return; }
  const source = new EventSource(url, { withCredentials: true });
  let timer = null;
  const changed = () => { clearTimeout(timer); timer = setTimeout(refresh, 100); };
  source.onopen = () => { state.textContent = "● live"; document.body.dataset.connected = "true"; };
  source.onerror = () => {
    document.body.dataset.connected = "false";
    // Refused (a session without ledger:read) is final; a dropped link is retried.
    state.textContent = source.readyState === EventSource.CLOSED ? "○ not live: the stream was refused (it needs ledger:read)" : "○ reconnecting…";
  };
  // Frames are named by event type; any of them may change what is shown.
  for (const type of ["run.created", "run.started", "run.heartbeat", "run.paused", "run.resumed", "run.rescheduled", "run.checkpointed", "run.logged", "run.usage_recorded", "run.tool_called", "run.output_recorded", "run.ended", "run.dead_lettered", "run.deleted", "run.restored", "run.retried", "run.debug_mode_set", "run.idempotency_key_reset"]) {
    source.addEventListener(type, changed);
  }
  source.onmessage = changed;
}

function travel() {
  const slider = document.getElementById("as-of-slider"), field = document.getElementById("as_of");
  if (!slider || !field) return;
  slider.addEventListener("input", () => { field.value = slider.value; });
  slider.addEventListener("change", () => slider.form.submit());
  // The date picker is in the viewer's zone; as_of is sent in UTC.
  const picker = document.getElementById("as-of-time");
  if (picker) picker.addEventListener("change", () => {
    const d = new Date(picker.value);
    if (!isNaN(d)) { field.value = d.toISOString(); field.form.submit(); }
  });
}

function signIn() {
  const form = document.getElementById("sign-in");
  if (form) form.addEventListener("submit", async ev => {
    ev.preventDefault();
    const token = form.querySelector("#token").value.trim();
    const err = document.getElementById("sign-in-error");
    try {
      const r = await fetch("/api/session", { method: "POST", headers: { Authorization: "Bearer " + token }, credentials: "same-origin" });
      if (!r.ok) { const b = await r.json().catch(() => ({})); err.textContent = b.detail || "sign-in failed (" + r.status + ")"; return; }
      location.reload();
    } catch (e) { err.textContent = String(e); }
  });
  const out = document.getElementById("sign-out");
  if (out) out.addEventListener("click", async () => { await api("DELETE", "/api/session"); location.reload(); });
}

// Confirms in a dialog; resolves to true when confirmed.
function confirmDialog(title, lines) {
  return new Promise(resolve => {
    const d = document.createElement("dialog");
    d.setAttribute("aria-labelledby", "confirm-title");
    d.innerHTML = '<h2 id="confirm-title"></h2><p class="lines"></p><form method="dialog"><button value="cancel">Cancel</button> <button value="ok" id="confirm-ok">Confirm</button></form>';
    d.querySelector("h2").textContent = title;
    d.querySelector(".lines").textContent = lines;
    document.body.appendChild(d);
    d.addEventListener("close", () => { resolve(d.returnValue === "ok"); d.remove(); });
    d.showModal();
    d.querySelector("#confirm-ok").focus();
  });
}

function wireActions() {
  const box = document.getElementById("actions");
  if (!box) return;
  const run = box.dataset.run, out = document.getElementById("action-result");
  for (const b of box.querySelectorAll("button[data-action]")) {
    b.addEventListener("click", async () => {
      const action = b.dataset.action;
      if (!await confirmDialog(action + " this run?", "run " + run)) return;
      try {
        const result = action === "delete" ? await api("DELETE", "/api/runs/" + run, {})
          : await api("POST", "/api/runs/" + run + "/" + action, {});
        show(out, action + " done", result);
        if (action === "retry" && result && result.new_run_id) {
          const a = document.createElement("a"); a.href = "/runs/" + result.new_run_id; a.textContent = "open the new run"; a.id = "new-run";
          out.prepend(a, " ");
        }
        refresh();
      } catch (e) { show(out, action + " refused: " + e.message, e.body); }
    });
  }
}

function bulk() {
  const form = document.getElementById("bulk");
  if (!form) return;
  const all = document.getElementById("select-all");
  document.addEventListener("change", ev => {
    if (ev.target && ev.target.id === "select-all") for (const c of document.querySelectorAll("#runs input[name=id]")) c.checked = ev.target.checked;
  });
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    const out = document.getElementById("bulk-result");
    const action = form.elements.action.value;
    const everything = form.elements.scope.value === "all";
    let selector;
    if (everything) {
      selector = { match_all: true, filter: JSON.parse(form.dataset.filter || "{}") };
    } else {
      const ids = [...document.querySelectorAll("#runs input[name=id]:checked")].map(c => c.value);
      if (!ids.length) { show(out, "select runs first, or choose all matching"); return; }
      selector = { ids };
    }
    try {
      // The exact count, pinned at a position: acting later acts on exactly these runs.
      const dry = await api("POST", "/api/runs/bulk/" + action, Object.assign({ dry_run: true }, selector, everything && form.dataset.asOf ? { as_of: Number(form.dataset.asOf) } : {}));
      if (!await confirmDialog(action + " " + dry.affected + " runs?", "Selected at position " + dry.as_of + (everything ? "; runs that match later are not touched." : "."))) { show(out, "nothing done"); return; }
      const body = Object.assign({}, selector, everything ? { as_of: dry.as_of } : {});
      const result = await api("POST", "/api/runs/bulk/" + action, body);
      show(out, action + ": done", result);
      refresh();
    } catch (e) { show(out, action + " refused: " + e.message, e.body); }
  });
  if (all) all.checked = false;
}

// Keyboard: "/" focuses the filters, "j"/"k" move through runs, Enter opens.
function keys() {
  document.addEventListener("keydown", ev => {
    if (ev.target.closest("input, select, textarea, dialog")) return;
    if (ev.key === "/") { const f = document.querySelector("#filters input"); if (f) { ev.preventDefault(); f.closest("details").open = true; f.focus(); } }
    if (ev.key === "j" || ev.key === "k") {
      const links = [...document.querySelectorAll("#runs tbody a")];
      if (!links.length) return;
      const i = links.indexOf(document.activeElement);
      const next = ev.key === "j" ? Math.min(i + 1, links.length - 1) : Math.max(i - 1, 0);
      links[next].focus(); ev.preventDefault();
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  signIn(); travel(); wireActions(); bulk(); keys(); live();
});

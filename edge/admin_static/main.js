// postback-relay admin page: sign-in, tabs, filters, tables, paging, refresh and replay.
// Plain JavaScript modules, no build step, no libraries. Every value from the API goes
// into the page as text (see dom.js); the token travels only as an Authorization header.
import { REFRESH_MS, Refused, TOKEN_KEY, api, failed, onRefused, refused, token } from "./api.js";
import { closeDialog, find, openDeadLetter, openDelivery, openPostback } from "./detail.js";
import { $, badge, clear, el, outcomeKind, partnerLabel, resultKind, show, timeCell } from "./dom.js";
import { refreshLag } from "./lag.js";

const AUTO_KEY = "postback-relay.auto-refresh";
const PER_PAGE = 50;
const POSTBACK_STATUSES = ["approved", "pending", "rejected", "test"];
const OUTCOMES = ["matched", "unmatched", "duplicate", "test", "dead-lettered"];

// -- session ------------------------------------------------------------------------------
async function signIn(event) {
  event.preventDefault();
  const candidate = $("token").value.trim();
  const message = $("sign-in-message");
  message.textContent = "";
  if (!candidate) {
    message.textContent = "Enter the admin token.";
    return;
  }
  try {
    await api("/api/admin/lag", { bearer: candidate });
  } catch (error) {
    message.textContent =
      error instanceof Refused ? error.message : "Could not reach the admin API: " + error.message;
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, candidate);
  $("token").value = "";
  start();
}

function signOut(reason) {
  sessionStorage.removeItem(TOKEN_KEY);
  stopTimer();
  if ($("detail").open) $("detail").close();
  $("app-view").hidden = true;
  $("session-controls").hidden = true;
  $("sign-in-view").hidden = false;
  $("sign-in-message").textContent = typeof reason === "string" ? reason : "";
  $("token").focus();
}

function start() {
  $("sign-in-view").hidden = true;
  $("app-view").hidden = false;
  $("session-controls").hidden = false;
  $("auto-refresh").checked = sessionStorage.getItem(AUTO_KEY) !== "off";
  selectTab(state.tab, { focus: false });
  loadPartners();
  refreshLag();
  syncTimer();
}

// -- tabs, filters, tables ------------------------------------------------------------------
const hoursFilter = { name: "hours", label: "Hours", type: "number", initial: "24" };
const perPageFilter = {
  name: "per_page", label: "Rows per page", type: "select", options: ["10", "25", "50", "100", "200"], initial: String(PER_PAGE), required: true,
};
const partnerFilter = { name: "partner", label: "Partner", type: "text", list: "partner-ids" };

const TABS = {
  received: {
    path: "/api/admin/received-postbacks",
    list: "logs",
    filters: [
      hoursFilter,
      { name: "source", label: "Source", type: "text", placeholder: "name" },
      partnerFilter,
      { name: "status", label: "Status", type: "select", options: POSTBACK_STATUSES },
      { name: "outcome", label: "Outcome", type: "select", options: OUTCOMES },
      perPageFilter,
    ],
    columns: [
      ["Time", (r) => timeCell(r.time_ms)],
      ["Source", (r) => show(r.source)],
      ["Status", (r) => show(r.status)],
      ["Outcome", (r) => badge(r.outcome, outcomeKind(r.outcome))],
      ["Click", (r) => show(r.click_id)],
      ["Transaction", (r) => show(r.transaction_id)],
      ["Partner", (r) => show(r.partner_id)],
      ["Payout", (r) => (r.payout ? r.payout + " " + (r.currency || "") : "—")],
      ["Reason", (r) => show(r.reason || r.warning)],
    ],
    open: (row) => openPostback(row.log_id, row),
  },
  forwarded: {
    path: "/api/admin/partner-distribution-logs",
    list: "logs",
    filters: [
      hoursFilter,
      partnerFilter,
      { name: "success", label: "Success", type: "select", options: ["true", "false"], names: { true: "succeeded", false: "failed" } },
      perPageFilter,
    ],
    columns: [
      ["Time", (r) => timeCell(r.time_ms)],
      ["Partner", (r) => partnerLabel(r.partner_id, r.partner_name)],
      ["Result", (r) => badge(r.result || (r.success ? "delivered" : "failed"), resultKind(r))],
      ["HTTP", (r) => show(r.status_code)],
      ["Attempt", (r) => show(r.attempt)],
      ["Status", (r) => show(r.payload && r.payload.status)],
      ["Payout", (r) => show(r.payout)],
      ["Conversion", (r) => show(r.conversion_id)],
      ["Time (ms)", (r) => show(r.response_ms)],
      ["URL", (r) => el("span", { className: "url", title: r.url }, show(r.url))],
    ],
    open: (row) => openDelivery(row),
  },
  dead: {
    path: "/api/admin/dead-letters",
    list: "dead_letters",
    filters: [partnerFilter, perPageFilter],
    columns: [
      ["Time", (r) => timeCell(r.time_ms)],
      ["Kind", (r) => show(r.kind)],
      ["Partner", (r) => partnerLabel(r.partner_id, r.partner_name)],
      ["Error", (r) => el("span", { className: "url", title: r.error }, show(r.error))],
      ["Attempts", (r) => show(r.attempt)],
      ["Conversion", (r) => show(r.conversion_id)],
      ["", (r) => el("button", { type: "button", className: "small", "data-replay": r.id, onclick: (e) => { e.stopPropagation(); replayOne(r.id); } }, "Replay")],
    ],
    open: (row) => openDeadLetter(row, replayOne),
  },
};

const state = {
  tab: "received",
  values: { received: {}, forwarded: {}, dead: {} },
  page: { received: 1, forwarded: 1, dead: 1 },
  loading: false,
  seq: 0,
  timer: null,
  partners: [],
};

function tabButtons() {
  return Array.from(document.querySelectorAll('[role="tab"]'));
}

function selectTab(name, { focus = true } = {}) {
  if (name !== state.tab) say("");
  state.tab = name;
  for (const button of tabButtons()) {
    const selected = button.dataset.tab === name;
    button.setAttribute("aria-selected", String(selected));
    button.tabIndex = selected ? 0 : -1;
    if (selected) {
      $("panel").setAttribute("aria-labelledby", button.id);
      if (focus) button.focus();
    }
  }
  buildFilters();
  buildHead();
  clear($("rows").tBodies[0]);
  $("page-info").textContent = "";
  loadTable();
}

function onTabKey(event) {
  const buttons = tabButtons();
  const at = buttons.indexOf(event.target);
  if (at < 0) return;
  let next = null;
  if (event.key === "ArrowRight") next = (at + 1) % buttons.length;
  else if (event.key === "ArrowLeft") next = (at - 1 + buttons.length) % buttons.length;
  else if (event.key === "Home") next = 0;
  else if (event.key === "End") next = buttons.length - 1;
  if (next === null) return;
  event.preventDefault();
  selectTab(buttons[next].dataset.tab);
}

function buildFilters() {
  const form = clear($("filters"));
  const tab = TABS[state.tab];
  const values = state.values[state.tab];
  for (const filter of tab.filters) {
    const id = "filter-" + filter.name;
    let input;
    if (filter.type === "select") {
      input = el("select", { id, name: filter.name }, filter.required ? null : el("option", { value: "" }, "any"));
      for (const option of filter.options) {
        input.append(el("option", { value: option }, (filter.names && filter.names[option]) || option));
      }
    } else {
      input = el("input", {
        id,
        name: filter.name,
        type: filter.type === "number" ? "number" : "search",
        min: filter.type === "number" ? "0.1" : null,
        step: filter.type === "number" ? "any" : null,
        list: filter.list || null,
        placeholder: filter.placeholder || (filter.type === "number" ? "" : "any"),
        spellcheck: "false",
        autocomplete: "off",
      });
    }
    input.value = values[filter.name] !== undefined ? values[filter.name] : filter.initial || "";
    input.addEventListener("change", () => filtersChanged());
    form.append(el("div", { className: "field" }, el("label", { for: id }, filter.label), input));
  }
  form.append(el("datalist", { id: "partner-ids" }, state.partners.map((p) => el("option", { value: p.partner_id }, p.name || p.partner_id))));
  form.append(el("button", { type: "submit", className: "secondary" }, "Apply"));
  if (state.tab === "dead") {
    const partner = values.partner || "";
    form.append(
      el("div", { className: "replay-all" },
        el("button", {
          type: "button",
          id: "replay-all",
          disabled: !partner,
          title: partner ? "Replay every dead letter of partner " + partner : "Filter by a partner first",
          onclick: () => replayAll(),
        }, "Replay all"),
        el("span", { className: "muted small" }, partner ? "every dead letter of partner " + partner : "filter by a partner to replay all of its dead letters")));
  }
}

function filtersChanged() {
  const values = {};
  for (const field of $("filters").elements) {
    if (field.name) values[field.name] = field.value.trim();
  }
  const before = state.values[state.tab].partner;
  state.values[state.tab] = values;
  state.page[state.tab] = 1;
  if (state.tab === "dead" && before !== values.partner) buildFilters();
  loadTable();
}

function buildHead() {
  const head = clear($("rows").tHead);
  head.append(el("tr", {}, TABS[state.tab].columns.map(([title]) => el("th", { scope: "col" }, title))));
}

async function loadTable() {
  const tabName = state.tab;
  const tab = TABS[tabName];
  const values = state.values[tabName];
  const params = { page: state.page[tabName] };
  for (const filter of tab.filters) {
    const value = values[filter.name] !== undefined ? values[filter.name] : filter.initial || "";
    if (value) params[filter.name] = value;
  }
  state.loading = true;
  const seq = ++state.seq;
  try {
    const data = await api(tab.path, { params });
    // The person moved on meanwhile (another tab, filter or page): a late answer to an
    // older question must not overwrite the newer one.
    if (tabName !== state.tab || seq !== state.seq) return;
    $("table-error").textContent = "";
    renderRows(tab, data[tab.list] || []);
    renderPager(data);
    $("last-refresh").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (error) {
    if (tabName === state.tab && seq === state.seq) failed(error, $("table-error"));
  } finally {
    state.loading = false;
  }
}

function rowKey(row) {
  return String(row.id || row.log_id || "");
}

function renderRows(tab, rows) {
  // A refresh rebuilds the rows: keep the keyboard focus on the row it was on.
  const focused = document.activeElement;
  const focusKey = focused && focused.closest && focused.closest("tbody tr") ? focused.closest("tbody tr").dataset.key : null;
  const body = clear($("rows").tBodies[0]);
  for (const row of rows) {
    const tr = el("tr", { tabindex: "0", className: "clickable", title: "Open the whole story", "data-key": rowKey(row) });
    for (const [, cell] of tab.columns) {
      const value = cell(row);
      tr.append(el("td", {}, value));
    }
    tr.addEventListener("click", () => tab.open(row));
    tr.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && event.target === tr) {
        event.preventDefault();
        tab.open(row);
      }
    });
    body.append(tr);
    if (focusKey !== null && tr.dataset.key === focusKey) tr.focus();
  }
  $("empty").hidden = rows.length > 0;
}

function renderPager(data) {
  const pages = Math.max(1, data.pages || 0);
  const page = data.page || 1;
  const more = data.truncated ? " (only the newest entries counted)" : "";
  $("page-info").textContent = "Page " + page + " of " + pages + " · " + (data.total || 0) + " rows" + more;
  $("prev").disabled = page <= 1;
  $("next").disabled = page >= pages;
}

function turnPage(delta) {
  state.page[state.tab] = Math.max(1, state.page[state.tab] + delta);
  loadTable();
}

async function loadPartners() {
  try {
    const data = await api("/api/admin/partners");
    state.partners = data.partners || [];
    const list = $("partner-ids");
    if (list) list.replaceChildren(...state.partners.map((p) => el("option", { value: p.partner_id }, p.name || p.partner_id)));
  } catch (error) {
    refused(error);
  }
}

// -- refreshing -----------------------------------------------------------------------------
function refreshAll() {
  if (!token()) return;
  if (!state.loading) loadTable();
  refreshLag();
}

function syncTimer() {
  stopTimer();
  if ($("auto-refresh").checked) {
    state.timer = setInterval(() => {
      if (!document.hidden) refreshAll();
    }, REFRESH_MS);
  }
}

function stopTimer() {
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
}

// -- replay ---------------------------------------------------------------------------------
async function replayOne(id) {
  try {
    const result = await api("/api/admin/dead-letters/replay", { method: "POST", body: { ids: [id] } });
    say(result.replayed ? "Replayed dead letter " + id + "." : "Dead letter " + id + " was already replayed.");
    if ($("detail").open) $("detail").close();
    loadTable();
    refreshLag();
  } catch (error) {
    failed(error, $("status"));
  }
}

async function replayAll() {
  const partner = state.values.dead.partner;
  if (!partner) return;
  try {
    const result = await api("/api/admin/dead-letters/replay", { method: "POST", body: { partner } });
    say("Replayed " + result.replayed + " dead letter(s) of partner " + partner + ".");
    loadTable();
    refreshLag();
  } catch (error) {
    failed(error, $("status"));
  }
}

function say(text) {
  $("status").textContent = text;
}

// -- wiring ---------------------------------------------------------------------------------
onRefused((reason) => signOut(reason));

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => signOut(""));
  $("refresh").addEventListener("click", refreshAll);
  $("auto-refresh").addEventListener("change", () => {
    sessionStorage.setItem(AUTO_KEY, $("auto-refresh").checked ? "on" : "off");
    syncTimer();
  });
  $("tabs").addEventListener("keydown", onTabKey);
  for (const button of tabButtons()) button.addEventListener("click", () => selectTab(button.dataset.tab));
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    filtersChanged();
  });
  $("prev").addEventListener("click", () => turnPage(-1));
  $("next").addEventListener("click", () => turnPage(1));
  $("find-form").addEventListener("submit", find);
  $("detail-close").addEventListener("click", closeDialog);
  $("detail").addEventListener("close", () => {
    if (opener && document.contains(opener)) opener.focus();
  });
  if (token()) {
    start();
  } else {
    signOut("");
  }
});


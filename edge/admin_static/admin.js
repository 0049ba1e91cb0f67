// postback-relay admin page. Plain JavaScript, no build step, no libraries.
// Every value from the API is put into the page as text (textContent or text nodes),
// never as markup; the token travels only as an Authorization header.
"use strict";

const TOKEN_KEY = "postback-relay.admin-token";
const AUTO_KEY = "postback-relay.auto-refresh";
const REFRESH_MS = 5000;
const LAG_WINDOW_MS = 10 * 60 * 1000;
const LAG_GAP_MS = 4 * REFRESH_MS;
const PER_PAGE = 50;

const POSTBACK_STATUSES = ["approved", "pending", "rejected", "test"];
const OUTCOMES = ["matched", "unmatched", "duplicate", "test", "dead-lettered"];

// -- small DOM helpers (text only) -------------------------------------------------------
function $(id) {
  return document.getElementById(id);
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = String(value);
    else if (name === "className") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  return node;
}

function clear(node) {
  node.replaceChildren();
  return node;
}

function show(text) {
  return text === null || text === undefined || text === "" ? "—" : String(text);
}

// Local time for people, UTC on hover.
const LOCAL = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

function timeCell(ms) {
  if (!ms) return el("span", { text: "—" });
  const when = new Date(Number(ms));
  const utc = when.toISOString();
  return el("time", { datetime: utc, title: "UTC " + utc.replace("T", " ").replace("Z", "") }, LOCAL.format(when));
}

function pretty(value) {
  return el("pre", { className: "json" }, JSON.stringify(value, null, 2));
}

function badge(text, kind) {
  return el("span", { className: "badge " + (kind || "") }, show(text));
}

function partnerLabel(id, name) {
  return name && name !== id ? show(id) + " (" + name + ")" : show(id);
}

function outcomeKind(outcome) {
  return { matched: "ok", duplicate: "warn", test: "info", unmatched: "bad", "dead-lettered": "bad" }[outcome] || "";
}

function resultKind(row) {
  if (row.success) return "ok";
  return row.result === "retry" ? "warn" : "bad";
}

// -- the API ------------------------------------------------------------------------------
class Refused extends Error {}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

async function api(path, { method = "GET", params = null, body = undefined, bearer = token() } = {}) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== "" && value !== null && value !== undefined) url.searchParams.set(name, value);
  }
  const headers = { Accept: "application/json", Authorization: "Bearer " + (bearer || "") };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
    credentials: "omit",
  });
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    data = null;
  }
  if (response.status === 401 || response.status === 403) {
    const error = new Refused(refusal(response.status));
    error.status = response.status;
    throw error;
  }
  if (!response.ok) {
    const error = new Error((data && data.error) || "HTTP " + response.status);
    error.status = response.status;
    throw error;
  }
  return data;
}

function refusal(status) {
  if (status === 403) {
    return "The admin API is off on this server: set POSTBACK_ADMIN_TOKEN for the edge and restart it.";
  }
  return "The admin token was refused. Check it (it is the edge's POSTBACK_ADMIN_TOKEN) and try again.";
}

// Any refused call (token changed on the server, say) ends the session with the reason.
function failed(error, where) {
  if (error instanceof Refused) {
    signOut(error.message);
    return;
  }
  where.textContent = error.message || String(error);
}

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
    open: (row) => openDeadLetter(row),
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
    if (error instanceof Refused) signOut(error.message);
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

// -- lag panel ------------------------------------------------------------------------------
// The edge keeps a sample every 5 s while anyone watches (``history``), so the chart shows
// the last minutes as soon as the page opens; this page's own reading is the newest point.
async function refreshLag() {
  let report;
  try {
    report = await api("/api/admin/lag");
  } catch (error) {
    if (error instanceof Refused) signOut(error.message);
    else $("lag-facts").replaceChildren(el("dt", {}, "Lag"), el("dd", { className: "error" }, error.message));
    return;
  }
  const now = report.time_ms || Date.now();
  const asPoint = (time, groups) => ({
    t: time,
    g: Object.fromEntries(Object.entries(groups || {}).map(([name, v]) => [name, [v.lag, v.pending]])),
  });
  const samples = (report.history || [])
    .filter((s) => s.time_ms > now - LAG_WINDOW_MS && s.time_ms < now)
    .map((s) => asPoint(s.time_ms, s.groups));
  samples.push(asPoint(now, report.totals));
  const totals = report.totals || {};
  renderLagCharts(totals, samples, now);
  renderLagFacts(report);
}

function renderLagCharts(groups, samples, now) {
  const box = clear($("lag-charts"));
  for (const [name, sum] of Object.entries(groups)) {
    const card = el("figure", { className: "card chart", "data-group": name });
    card.append(
      el("figcaption", {},
        el("strong", {}, name),
        el("span", { className: "legend lag" }, "lag " + sum.lag),
        el("span", { className: "legend pending" }, "pending " + sum.pending)));
    card.append(chart(name, samples, now));
    box.append(card);
  }
}

function chart(group, samples, now) {
  const width = 300;
  const height = 64;
  const points = samples.filter((s) => s.g && s.g[group]);
  // The span grows from one minute to the whole window as samples come in.
  const first = points.length ? points[0].t : now;
  const span = Math.min(LAG_WINDOW_MS, Math.max(60 * 1000, now - first));
  const top = Math.max(1, ...points.map((s) => Math.max(s.g[group][0], s.g[group][1])));
  const x = (t) => ((t - (now - span)) / span) * (width - 4) + 2;
  const y = (v) => height - 3 - (v / top) * (height - 8);
  const last = points.length ? points[points.length - 1].g[group] : [0, 0];
  const drawing = svg("svg", {
    viewBox: "0 0 " + width + " " + height,
    preserveAspectRatio: "none",
    role: "img",
    "aria-label": group + ": lag " + last[0] + ", pending " + last[1] + "; peak " + top +
      " over the last " + Math.round(span / 60000) + " min",
  });
  drawing.append(svg("line", { x1: 0, y1: height - 3, x2: width, y2: height - 3, class: "axis" }));
  // Minutes nobody watched have no samples: the line breaks there instead of inventing a slope.
  const segments = [];
  for (const point of points) {
    const current = segments[segments.length - 1];
    if (current && point.t - current[current.length - 1].t <= LAG_GAP_MS) current.push(point);
    else segments.push([point]);
  }
  for (const [index, cls] of [[1, "pending"], [0, "lag"]]) {
    for (const segment of segments) {
      if (segment.length === 1) {
        drawing.append(svg("rect", {
          x: x(segment[0].t) - 1.5, y: y(segment[0].g[group][index]) - 1.5, width: 3, height: 3, class: "dot " + cls,
        }));
      } else {
        const line = segment.map((s) => x(s.t).toFixed(1) + "," + y(s.g[group][index]).toFixed(1)).join(" ");
        drawing.append(svg("polyline", { points: line, class: "series " + cls, "vector-effect": "non-scaling-stroke" }));
      }
    }
  }
  return el("div", { className: "chart-body" },
    el("div", { className: "chart-top muted small" }, "max " + top),
    drawing,
    el("div", { className: "chart-axis muted small" },
      el("span", {}, "−" + Math.round(span / 60000) + " min"), el("span", {}, "now")));
}

function renderLagFacts(report) {
  const facts = clear($("lag-facts"));
  const partitions = (report.groups || []).filter((g) => g.group === "matcher").length;
  for (const [name, value] of [
    ["Retry queue", report.retry_queue],
    ["Dead letters", report.dead_letters],
    ["Partitions", partitions],
  ]) {
    facts.append(el("dt", {}, name), el("dd", {}, show(value)));
  }
  const paused = clear($("paused-partners"));
  const list = report.paused_partners || [];
  if (!list.length) paused.append(el("li", { className: "muted" }, "none"));
  for (const p of list) {
    paused.append(
      el("li", {},
        el("strong", {}, show(p.partner_id)),
        " · " + show(p.failures) + " failures in a row · " + show(p.last_error) + " · since ",
        timeCell(p.paused_since)));
  }
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

// -- detail ---------------------------------------------------------------------------------
let opener = null;

function openDialog(title) {
  opener = document.activeElement;
  $("detail-title").textContent = title;
  const body = clear($("detail-body"));
  body.append(el("p", { className: "muted" }, "Loading…"));
  if (!$("detail").open) $("detail").showModal();
  $("detail-close").focus();
  return body;
}

function section(title, ...content) {
  return el("section", { className: "detail-section" }, el("h3", {}, title), ...content);
}

function facts(pairs) {
  const list = el("dl", { className: "facts" });
  for (const [name, value] of pairs) {
    list.append(el("dt", {}, name), el("dd", {}, value instanceof Node ? value : show(value)));
  }
  return list;
}

function splitParams(params) {
  const own = Object.assign({}, params || {});
  const custom = own.custom;
  delete own.custom;
  return [own, custom];
}

function postbackSections(postback) {
  if (!postback) return [section("Postback", el("p", { className: "muted" }, "Not in the received log yet (the matcher has not taken it)."))];
  const [own, custom] = splitParams(postback.params);
  return [
    section("Postback", facts([
      ["Log ID", postback.log_id],
      ["Received", timeCell(postback.time_ms)],
      ["Source", postback.source],
      ["Method", postback.method],
      ["IP", postback.ip],
      ["Status", postback.status],
    ])),
    section("Parameters", pretty(own)),
    section("Custom data", custom && Object.keys(custom).length ? pretty(custom) : el("p", { className: "muted" }, "none")),
    section("Matcher outcome", facts([
      ["Outcome", badge(postback.outcome, outcomeKind(postback.outcome))],
      ["Reason", postback.reason],
      ["Matched by", postback.matched_by],
      ["Warning", postback.warning],
      ["Conversion", postback.conversion_id],
      ["Click", postback.click_id],
      ["Offer", postback.offer_id],
      ["Partner", postback.partner_id],
      ["User", postback.user_id],
    ])),
  ];
}

function conversionSection(conversion) {
  if (!conversion) return section("Conversion", el("p", { className: "muted" }, "none"));
  const history = (conversion.history || []).map((h) =>
    el("li", {}, timeCell(h.at), " · " + show(h.status) + (h.effect ? " · " + h.effect : "") + (h.reason ? " · " + h.reason : "")));
  return section("Conversion", facts([
    ["Conversion ID", conversion.conversion_id],
    ["Status", conversion.status],
    ["Source", conversion.source],
    ["Upstream payout", (conversion.payout || "") + " " + (conversion.currency || "")],
    ["Partner payout", conversion.partner_payout],
    ["Points credited", conversion.credited],
    ["Points held", conversion.held],
    ["Created", timeCell(conversion.created)],
    ["Updated", timeCell(conversion.updated)],
  ]), el("h4", {}, "Status history"), history.length ? el("ol", { className: "history" }, history) : el("p", { className: "muted" }, "none"));
}

function attemptItem(attempt) {
  return el("li", { className: "attempt" },
    el("div", { className: "attempt-head" },
      el("strong", {}, "Attempt " + show(attempt.attempt)),
      badge(attempt.result || (attempt.success ? "delivered" : "failed"), resultKind(attempt)),
      " HTTP " + show(attempt.status_code) + " · " + show(attempt.response_ms) + " ms · ",
      timeCell(attempt.time_ms)),
    facts([
      ["Partner", partnerLabel(attempt.partner_id, attempt.partner_name)],
      ["Method", attempt.method],
      ["URL", el("code", { className: "wrap" }, show(attempt.url))],
      ["Error", attempt.error],
    ]),
    el("h4", {}, "Payload sent"), pretty(attempt.payload || {}),
    el("h4", {}, "Response body"), el("pre", { className: "json" }, attempt.response_body || "(empty)"));
}

function deliveriesSection(title, deliveries) {
  if (!deliveries.length) return section(title, el("p", { className: "muted" }, "No delivery attempts recorded."));
  const byPartner = new Map();
  for (const d of deliveries) {
    const key = d.partner_id + " · " + (d.payload && d.payload.status ? d.payload.status : "");
    if (!byPartner.has(key)) byPartner.set(key, []);
    byPartner.get(key).push(d);
  }
  const parts = [];
  for (const [key, attempts] of byPartner) {
    parts.push(el("h4", { className: "partner-head" }, key + " — " + attempts.length + " attempt(s)"));
    parts.push(el("ol", { className: "attempts plain" }, attempts.map(attemptItem)));
  }
  return section(title, ...parts);
}

async function story(logId) {
  try {
    return await api("/api/admin/postbacks/" + encodeURIComponent(logId));
  } catch (error) {
    if (error.status === 404) return null;
    throw error;
  }
}

// One line per partner and event: did it get there, and what did it answer?
function summarySection(deliveries) {
  if (!deliveries.length) return section("Forwarded to", el("p", { className: "muted" }, "No partner was sent this postback (yet)."));
  const latest = new Map();
  for (const d of deliveries) latest.set(d.partner_id + " " + ((d.payload || {}).status || ""), d);
  const items = [];
  for (const d of latest.values()) {
    items.push(el("li", {},
      el("strong", {}, partnerLabel(d.partner_id, d.partner_name)),
      " ", badge(d.result || (d.success ? "delivered" : "failed"), resultKind(d)),
      " " + show((d.payload || {}).status) + " · HTTP " + show(d.status_code) + " · attempt " + show(d.attempt) + " · ",
      timeCell(d.time_ms)));
  }
  return section("Forwarded to", el("ul", { className: "summary plain" }, items));
}

async function openPostback(logId, row) {
  const body = openDialog("Postback " + logId);
  try {
    const data = (await story(logId)) || { postback: row || null, conversion: null, deliveries: [] };
    body.replaceChildren(summarySection(data.deliveries), ...postbackSections(data.postback), conversionSection(data.conversion), deliveriesSection("Deliveries", data.deliveries));
  } catch (error) {
    failed(error, body);
  }
}

async function openDelivery(row) {
  const body = openDialog("Delivery to " + row.partner_id);
  try {
    const data = row.log_id ? await story(row.log_id) : null;
    const all = data ? data.deliveries : [row];
    const same = all.filter((d) => d.partner_id === row.partner_id && d.conversion_id === row.conversion_id &&
      ((d.payload || {}).status === (row.payload || {}).status));
    body.replaceChildren(
      deliveriesSection("This delivery, every attempt", same.length ? same : [row]),
      ...(data ? postbackSections(data.postback) : [section("Postback", el("p", { className: "muted" }, "No received postback behind this delivery (a test distribution)."))]),
      conversionSection(data && data.conversion));
  } catch (error) {
    failed(error, body);
  }
}

async function openDeadLetter(row) {
  const body = openDialog("Dead letter " + row.id);
  const head = section("Dead letter", facts([
    ["ID", row.id],
    ["Kind", row.kind],
    ["Died", timeCell(row.time_ms)],
    ["Partner", partnerLabel(row.partner_id, row.partner_name)],
    ["Error", row.error],
    ["Attempts made", row.attempt],
    ["Conversion", row.conversion_id],
    ["Log ID", row.log_id],
  ]), el("button", { type: "button", onclick: () => replayOne(row.id) }, "Replay"));
  const parts = [head];
  if (row.kind === "delivery") parts.push(section("Payload to send", pretty(row.payload || {})));
  else parts.push(section("Postback as received", pretty(row.data)));
  try {
    const data = row.log_id ? await story(row.log_id) : null;
    if (data) {
      const attempts = data.deliveries.filter((d) => !row.partner_id || d.partner_id === row.partner_id);
      parts.push(deliveriesSection("Attempts", attempts), ...postbackSections(data.postback), conversionSection(data.conversion));
    }
    body.replaceChildren(...parts);
  } catch (error) {
    body.replaceChildren(...parts);
    failed(error, $("status"));
  }
}

async function find(event) {
  event.preventDefault();
  const wanted = $("find").value.trim();
  if (!wanted) return;
  if (/^\d+(-\d+)?$/.test(wanted)) {
    openPostback(wanted, null);
    return;
  }
  const body = openDialog("Conversion " + wanted);
  try {
    const data = await api("/api/admin/conversions/" + encodeURIComponent(wanted) + "/deliveries");
    body.replaceChildren(summarySection(data.deliveries), conversionSection(data.conversion), deliveriesSection("Deliveries", data.deliveries));
  } catch (error) {
    failed(error, body);
  }
}

function closeDialog() {
  $("detail").close();
}

// -- wiring ---------------------------------------------------------------------------------
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

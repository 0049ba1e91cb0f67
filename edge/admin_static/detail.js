// A row's whole story in a dialog: the postback, the matcher's outcome, the conversion and
// every delivery attempt. Escape (the dialog's own) or "Close" closes it.
import { api, failed } from "./api.js";
import { $, badge, clear, el, outcomeKind, partnerLabel, pretty, resultKind, show, timeCell } from "./dom.js";

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

export async function openPostback(logId, row) {
  const body = openDialog("Postback " + logId);
  try {
    const data = (await story(logId)) || { postback: row || null, conversion: null, deliveries: [] };
    body.replaceChildren(summarySection(data.deliveries), ...postbackSections(data.postback), conversionSection(data.conversion), deliveriesSection("Deliveries", data.deliveries));
  } catch (error) {
    failed(error, body);
  }
}

export async function openDelivery(row) {
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

export async function openDeadLetter(row, replay) {
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
  ]), el("button", { type: "button", onclick: () => replay(row.id) }, "Replay"));
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

export async function find(event) {
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

export function closeDialog() {
  $("detail").close();
}

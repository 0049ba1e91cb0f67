// Small DOM helpers for the admin page. Values always go in as text (textContent or text
// nodes), never as markup: this is the only place elements are made.
export function $(id) {
  return document.getElementById(id);
}

export function el(tag, attrs, ...children) {
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

export function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  return node;
}

export function clear(node) {
  node.replaceChildren();
  return node;
}

export function show(text) {
  return text === null || text === undefined || text === "" ? "—" : String(text);
}

// Local time for people, UTC on hover.
const LOCAL = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

export function timeCell(ms) {
  if (!ms) return el("span", { text: "—" });
  const when = new Date(Number(ms));
  const utc = when.toISOString();
  return el("time", { datetime: utc, title: "UTC " + utc.replace("T", " ").replace("Z", "") }, LOCAL.format(when));
}

export function pretty(value) {
  return el("pre", { className: "json" }, JSON.stringify(value, null, 2));
}

export function badge(text, kind) {
  return el("span", { className: "badge " + (kind || "") }, show(text));
}

export function partnerLabel(id, name) {
  return name && name !== id ? show(id) + " (" + name + ")" : show(id);
}

export function outcomeKind(outcome) {
  return { matched: "ok", duplicate: "warn", test: "info", unmatched: "bad", "dead-lettered": "bad" }[outcome] || "";
}

export function resultKind(row) {
  if (row.success) return "ok";
  return row.result === "retry" ? "warn" : "bad";
}

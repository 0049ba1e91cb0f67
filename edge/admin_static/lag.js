// The lag panel: each consumer group's lag and pending over the last minutes, as SVG.
import { REFRESH_MS, api, refused } from "./api.js";
import { $, clear, el, show, svg, timeCell } from "./dom.js";

const LAG_WINDOW_MS = 10 * 60 * 1000;
const LAG_GAP_MS = 4 * REFRESH_MS;

// The edge keeps a sample every 5 s while anyone watches (``history``), so the chart shows
// the last minutes as soon as the page opens; this page's own reading is the newest point.
export async function refreshLag() {
  let report;
  try {
    report = await api("/api/admin/lag");
  } catch (error) {
    if (!refused(error)) $("lag-facts").replaceChildren(el("dt", {}, "Lag"), el("dd", { className: "error" }, error.message));
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

// The evaluation report page: `shortlist evaluate --json`'s report (GET /v1/reports/evaluation)
// as two inline SVG charts drawn here (MAP@k per method and window; candidate recall by depth)
// and a table. No chart library.
import { ApiFailure, api, clear, el, fmtInt, svg } from "./common.js";

const $ = (id) => document.getElementById(id);
const PALETTE = ["#2f5fb3", "#d9822b", "#3c8d40", "#9c4fb0", "#c9404f", "#1f8a8a", "#8a6d3b",
  "#5c6bc0", "#e0679a", "#6d8f1f"];
const UNION = "#1d1f24";

function niceStep(max, ticks = 4) {
  if (!(max > 0)) return 1;
  const raw = max / ticks;
  const pow = 10 ** Math.floor(Math.log10(raw));
  const f = raw / pow;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * pow;
}

function fmt(v, digits = 4) {
  return typeof v === "number" ? v.toFixed(digits) : "–";
}

function width(node) {
  return Math.max(260, Math.floor(node.clientWidth || node.getBoundingClientRect().width || 600));
}

// -- MAP@k per method and window -------------------------------------------------------------------

function mapChart(report) {
  const k = report.protocol.k;
  const key = `map@${k}`;
  const methods = Object.entries(report.methods)
    .filter(([, m]) => typeof m[key] === "number")
    .sort((a, b) => b[1][key] - a[1][key]);
  const cutoffs = report.protocol.cutoffs || [];
  const windows = Math.max(1, ...methods.map(([, m]) => (m.per_window || []).length));
  const box = $("map-chart");
  const W = width(box);
  const left = 8;
  const right = 64;
  const barH = windows > 3 ? 10 : 14;
  const labelH = 18;
  const groupGap = 12;
  const axisH = 22;
  const groupH = labelH + windows * (barH + 3) + groupGap;
  const H = axisH + methods.length * groupH + 4;
  let max = 0;
  for (const [, m] of methods) {
    for (const w of m.per_window || []) max = Math.max(max, w[key] || 0);
    max = Math.max(max, (m[key] || 0) + (m[`${key}_se`] || 0));
  }
  const step = niceStep(max || 0.01);
  const top = Math.ceil((max || 0.01) / step) * step;
  const x = (v) => left + ((W - left - right) * Math.max(0, v)) / top;
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H,
    "aria-label": `MAP@${k} of ${methods.length} methods over ${windows} window(s)` });
  const grid = svg("g", { class: "grid" });
  const axis = svg("g", { class: "axis" });
  for (let v = 0; v <= top + 1e-12; v += step) {
    grid.append(svg("line", { x1: x(v), x2: x(v), y1: axisH - 4, y2: H - 4 }));
    axis.append(svg("text", { x: x(v), y: 12, "text-anchor": "middle", text: v.toFixed(step < 0.01 ? 3 : 2) }));
  }
  chart.append(grid, axis);
  methods.forEach(([name, m], i) => {
    const y0 = axisH + i * groupH;
    const g = svg("g", { class: "method", "data-method": name });
    g.append(svg("text", { x: left, y: y0 + 13, class: "label", text: name }));
    const rows = m.per_window && m.per_window.length ? m.per_window : [{ [key]: m[key] }];
    rows.forEach((w, j) => {
      const y = y0 + labelH + j * (barH + 3);
      const v = w[key] || 0;
      const when = w.cutoff ? `window from ${w.cutoff.slice(0, 10)}` : "all windows";
      g.append(svg("rect", {
        class: "bar", x: left, y, width: Math.max(1, x(v) - left), height: barH, rx: 2,
        fill: PALETTE[j % PALETTE.length], "data-window": j, "data-value": v,
      }, svg("title", { text: `${name}, ${when}: MAP@${k} ${fmt(v, 5)}` })));
      g.append(svg("text", { class: "value", x: x(v) + 5, y: y + barH - 2, text: fmt(v) }));
    });
    // the mean over windows, with its standard error over users
    const mean = m[key];
    const se = m[`${key}_se`] || 0;
    const yA = y0 + labelH - 2;
    const yB = y0 + labelH + rows.length * (barH + 3) - 1;
    g.append(svg("line", { class: "mean", x1: x(mean), x2: x(mean), y1: yA, y2: yB,
      stroke: UNION, "stroke-width": 2 }, svg("title", { text: `mean ${fmt(mean, 5)} ± ${fmt(se, 5)}` })));
    if (se > 0) {
      const ym = (yA + yB) / 2;
      g.append(svg("line", { class: "se", x1: x(mean - se), x2: x(mean + se), y1: ym, y2: ym,
        stroke: UNION, "stroke-width": 1.5 }));
    }
    g.append(...g.querySelectorAll(".value")); // the values over the mean's marks
    chart.append(g);
  });
  clear(box, chart);
  clear(
    $("map-legend"),
    Array.from({ length: windows }, (_, j) => {
      const key2 = el("span", { class: "key" });
      key2.style.background = PALETTE[j % PALETTE.length];
      const cutoff = cutoffs[j] ? `window from ${cutoffs[j].slice(0, 10)}` : `window ${j + 1}`;
      return el("li", {}, key2, cutoff);
    }),
    el("li", {}, (() => { const s = el("span", { class: "key" }); s.style.background = UNION; s.style.width = "3px"; return s; })(),
      "mean over windows ± standard error over users"),
  );
  $("map-title").textContent = `MAP@${k} per method and window`;
  $("map-note").textContent = `${methods.length} methods, ${windows} window(s) of ` +
    `${report.protocol.holdout_days} days; best first.`;
}

// -- candidate recall by depth ---------------------------------------------------------------------

function recallChart(report) {
  const cands = report.candidates;
  const box = $("recall-chart");
  const sources = Object.entries(cands);
  const depths = [...new Set(sources.flatMap(([, s]) => Object.keys(s)
    .filter((k) => /^recall@\d+$/.test(k)).map((k) => Number(k.split("@")[1]))))].sort((a, b) => a - b);
  const W = width(box);
  const H = Math.round(Math.min(380, Math.max(220, W * 0.55)));
  const m = { left: 40, right: 16, top: 12, bottom: 34 };
  let max = 0;
  for (const [, s] of sources) for (const d of depths) max = Math.max(max, s[`recall@${d}`] || 0);
  const step = niceStep(max || 0.1, 5);
  const top = Math.min(1, Math.ceil((max || 0.1) / step) * step) || 1;
  const x = (i) => m.left + (depths.length > 1 ? ((W - m.left - m.right) * i) / (depths.length - 1) : (W - m.left - m.right) / 2);
  const y = (v) => m.top + (H - m.top - m.bottom) * (1 - Math.max(0, v) / top);
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H,
    "aria-label": `recall of ${sources.length} sources at ${depths.join(", ")} candidates` });
  const grid = svg("g", { class: "grid" });
  const axis = svg("g", { class: "axis" });
  for (let v = 0; v <= top + 1e-9; v += step) {
    grid.append(svg("line", { x1: m.left, x2: W - m.right, y1: y(v), y2: y(v) }));
    axis.append(svg("text", { x: m.left - 6, y: y(v) + 4, "text-anchor": "end", text: v.toFixed(step < 0.1 ? 2 : 1) }));
  }
  depths.forEach((d, i) => {
    axis.append(svg("text", { x: x(i), y: H - m.bottom + 16, "text-anchor": "middle", text: String(d) }));
  });
  axis.append(svg("text", { x: (m.left + W - m.right) / 2, y: H - 4, "text-anchor": "middle",
    text: "candidates per user (depth)" }));
  axis.append(svg("line", { x1: m.left, x2: W - m.right, y1: y(0), y2: y(0) }));
  chart.append(grid, axis);
  const legend = [];
  sources.forEach(([name, s], j) => {
    const colour = name === "union" ? UNION : PALETTE[j % PALETTE.length];
    const pts = depths.map((d, i) => [x(i), y(s[`recall@${d}`] || 0), d, s[`recall@${d}`]]);
    const g = svg("g", { class: "series", "data-source": name });
    g.append(svg("path", {
      class: `line${name === "union" ? " union" : ""}`, "data-source": name, stroke: colour,
      d: pts.map(([px, py], i) => `${i ? "L" : "M"}${px.toFixed(1)},${py.toFixed(1)}`).join(" "),
    }));
    for (const [px, py, d, v] of pts) {
      g.append(svg("circle", { cx: px, cy: py, r: name === "union" ? 4 : 3, fill: colour },
        svg("title", { text: `${name}: recall@${d} ${fmt(v)}` })));
    }
    chart.append(g);
    const key = el("span", { class: "key" });
    key.style.background = colour;
    const last = s[`recall@${depths[depths.length - 1]}`];
    legend.push(el("li", { "data-source": name }, key, `${name} (${fmt(last, 3)} at ${depths[depths.length - 1]})`));
  });
  clear(box, chart);
  clear($("recall-legend"), legend);
}

// -- the table -------------------------------------------------------------------------------------

function compared(c, name, reference) {
  if (name === reference) return "reference";
  if (c === undefined || c === null) return "";
  if (typeof c.ratio !== "number") return "–";
  const [lo, hi] = c.ci95 || [];
  const ci = typeof lo === "number" && typeof hi === "number" ? ` [${lo.toFixed(2)}–${hi.toFixed(2)}]` : "";
  return `${c.ratio.toFixed(2)}x${ci}`;
}

function methodsTable(report) {
  const k = report.protocol.k;
  const first = Object.values(report.methods)[0] || {};
  const deep = Object.keys(first).find((c) => /^recall@\d+$/.test(c) && c !== `recall@${k}`);
  const reference = Object.values(report.methods).map((m) => m.compared && m.compared.reference)
    .find(Boolean);
  const cols = [
    [`MAP@${k}`, (m) => `${fmt(m[`map@${k}`], 5)} ± ${fmt(m[`map@${k}_se`], 5)}`],
    [`recall@${k}`, (m) => fmt(m[`recall@${k}`])],
    ...(deep ? [[deep, (m) => fmt(m[deep])]] : []),
    [`NDCG@${k}`, (m) => fmt(m[`ndcg@${k}`])],
    [`coverage@${k}`, (m) => fmt(m[`coverage@${k}`])],
    ...(reference ? [[`vs ${reference}`, (m, name) => compared(m.compared, name, reference)]] : []),
    ["users", (m) => fmtInt(m.users_scored)],
    ["seconds", (m) => (typeof m.seconds === "number" ? m.seconds.toFixed(1) : "")],
  ];
  const rows = Object.entries(report.methods).sort((a, b) => (b[1][`map@${k}`] || 0) - (a[1][`map@${k}`] || 0));
  clear(
    $("methods-table"),
    el("thead", {}, el("tr", {}, el("th", { text: "method" }), cols.map(([h]) => el("th", { text: h })))),
    el("tbody", {}, rows.map(([name, m]) =>
      el("tr", { "data-method": name }, el("td", { text: name }), cols.map(([, f]) => el("td", { text: f(m, name) }))))),
  );
  const filters = Object.entries(report.methods).find(([, m]) => m.filters && Object.keys(m.filters).length);
  $("filters-note").textContent = filters
    ? `Filters of ${filters[0]}: ${Object.entries(filters[1].filters).map(([f, s]) => `${f} ${s}`).join("; ")}. The baselines apply no business rules.`
    : "";
}

function facts(report) {
  const d = report.dataset || {};
  const p = report.protocol;
  const items = [
    ["users", fmtInt(d.users)], ["items", fmtInt(d.items)], ["interactions", fmtInt(d.interactions)],
    ["data", d.start ? `${d.start.slice(0, 10)} … ${(d.end || "").slice(0, 10)}` : ""],
    ["protocol", `${p.windows} window(s) of ${p.holdout_days} days, k = ${p.k}`],
    ["written", report.file ? report.file.modified.slice(0, 16).replace("T", " ") + " UTC" : ""],
  ].filter(([, v]) => v);
  clear($("facts"), items.map(([t, v]) => el("div", {}, el("dt", { text: t }), el("dd", { text: v }))));
}

// -- start ---------------------------------------------------------------------------------------

let report = null;

function draw() {
  if (!report) return;
  mapChart(report);
  if (report.candidates && Object.keys(report.candidates).length) recallChart(report);
}

async function main() {
  const status = $("report-status");
  try {
    ({ data: report } = await api("/v1/reports/evaluation"));
  } catch (err) {
    status.classList.add(err instanceof ApiFailure && err.status === 404 ? "muted" : "error");
    status.textContent = err instanceof ApiFailure && err.status === 404
      ? `No evaluation report yet. ${err.message}`
      : `The report cannot be shown: ${err.message}`;
    return;
  }
  status.textContent = report.file ? `From ${report.file.path}` : "";
  facts(report);
  $("map-panel").hidden = false;
  $("table-panel").hidden = false;
  const hasCandidates = report.candidates && Object.keys(report.candidates).length;
  $("recall-panel").hidden = false;
  if (!hasCandidates) {
    clear($("recall-chart"), el("p", { class: "muted", text:
      "This report has no candidate recall: run `shortlist evaluate --candidates --json " +
      `${report.file ? report.file.path : "WORKSPACE/evaluation.json"}\` to add it.` }));
  }
  methodsTable(report);
  draw();
  let last = window.innerWidth;
  new ResizeObserver(() => {
    if (Math.abs(window.innerWidth - last) < 8) return;
    last = window.innerWidth;
    draw();
  }).observe(document.body);
}

main();

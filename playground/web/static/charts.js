// Small SVG line charts: one metric, stable and canary, over the last few minutes.
"use strict";

const COLORS = { stable: "#1d6fd6", canary: "#e8730c" };

function fmt(value, unit) {
  if (value === null || value === undefined) return "—";
  if (unit === "%") return `${(value * 100).toFixed(value < 0.01 ? 2 : 1)} %`;
  if (unit === "ms") return `${value.toFixed(0)} ms`;
  return `${value.toFixed(1)}/s`;
}

function ago(seconds) {
  return seconds >= 90 ? `${Math.round(seconds / 60)} min` : `${Math.round(seconds)} s`;
}

function lastValue(points) {
  for (let i = points.length - 1; i >= 0; i--) if (points[i][1] !== null) return points[i][1];
  return null;
}

function chart(title, unit, perSubset, start, end) {
  const w = 300, h = 60, padL = 2, padR = 2, padT = 4, padB = 2;
  let max = unit === "%" ? 0.05 : 1;
  for (const pts of Object.values(perSubset)) {
    for (const [, v] of pts) if (v !== null && v > max) max = v;
  }
  max *= 1.1;
  const x = (t) => padL + ((t - start) / (end - start)) * (w - padL - padR);
  const y = (v) => padT + (1 - v / max) * (h - padT - padB);
  const lines = [];
  const legend = [];
  for (const subset of ["stable", "canary"]) {
    const pts = perSubset[subset] || [];
    let d = "";
    let pen = false;
    for (const [t, v] of pts) {
      if (v === null) { pen = false; continue; }
      d += `${pen ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    }
    if (d) lines.push(`<path d="${d}" fill="none" stroke="${COLORS[subset]}" stroke-width="1.8" vector-effect="non-scaling-stroke"/>`);
    legend.push(`<span class="lg" style="color:${COLORS[subset]}">■</span> ${subset} ` +
      `<b data-metric-value="${subset}">${fmt(lastValue(pts), unit)}</b>`);
  }
  const axis = `<line x1="${padL}" y1="${h - padB}" x2="${w - padR}" y2="${h - padB}" ` +
    'class="axis-line"/>';
  const scale = `<div class="chart-axis"><span>−${ago(end - start)}</span>` +
    `<span>max ${fmt(max, unit)}</span><span>now</span></div>`;
  return `<div class="chart"><div class="chart-title">${title}<span class="chart-legend">` +
    `${legend.join(" ")}</span></div><svg viewBox="0 0 ${w} ${h}" preserveAspectRatio="none" ` +
    `role="img" aria-label="${title}">${axis}${lines.join("")}</svg>${scale}</div>`;
}

function charts(data) {
  if (!data || !data.series) return '<div class="muted">waiting for Prometheus …</div>';
  const s = data.series;
  return chart("requests", "/s", s.rps || {}, data.start, data.end) +
    chart("error ratio (5xx)", "%", s.error_ratio || {}, data.start, data.end) +
    chart("p99 latency", "ms", s.p99_ms || {}, data.start, data.end);
}

window.Charts = { charts };

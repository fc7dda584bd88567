/* A tiny hand-written SVG chart (lines and bars): no library, nothing fetched from the internet. */
"use strict";
window.RmChart = (function () {
  const NS = "http://www.w3.org/2000/svg";
  function el(name, attrs, text) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function frame(target, title, series) {
    target.replaceChildren();
    const legend = document.createElement("div");
    legend.className = "legend";
    for (const s of series) {
      const item = document.createElement("span");
      item.innerHTML = `<i style="background:${s.color}"></i>`;
      item.append(s.name);
      legend.append(item);
    }
    const svg = el("svg", { viewBox: "0 0 600 200", role: "img", "aria-label": title, preserveAspectRatio: "none" });
    target.append(legend, svg);
    return svg;
  }
  function axes(svg, max, labels) {
    const pad = { l: 46, r: 8, t: 8, b: 22 };
    for (let i = 0; i <= 4; i++) {
      const y = pad.t + (200 - pad.t - pad.b) * (1 - i / 4);
      svg.append(el("line", { x1: pad.l, x2: 600 - pad.r, y1: y, y2: y, stroke: "#e3e8ee" }));
      svg.append(el("text", { x: pad.l - 4, y: y + 4, "text-anchor": "end", "font-size": 10, fill: "#5a6a7a" },
        String(Number((max * i / 4).toPrecision(3)))));
    }
    if (labels.length) {
      svg.append(el("text", { x: pad.l, y: 196, "font-size": 10, fill: "#5a6a7a" }, labels[0]));
      svg.append(el("text", { x: 600 - pad.r, y: 196, "font-size": 10, fill: "#5a6a7a", "text-anchor": "end" }, labels[labels.length - 1]));
    }
    return pad;
  }
  /* series: [{name, color, values: [numbers]}], labels: [strings], same length as values */
  function lines(target, title, labels, series) {
    const svg = frame(target, title, series);
    const max = Math.max(1, ...series.flatMap(s => s.values));
    const pad = axes(svg, max, labels);
    const n = Math.max(2, labels.length);
    const x = i => pad.l + (600 - pad.l - pad.r) * i / (n - 1);
    const y = v => pad.t + (200 - pad.t - pad.b) * (1 - v / max);
    for (const s of series) {
      if (!s.values.length) continue;
      const d = s.values.map((v, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join("");
      svg.append(el("path", { d, fill: "none", stroke: s.color, "stroke-width": 2, "vector-effect": "non-scaling-stroke" }));
    }
  }
  function bars(target, title, labels, values, color) {
    const svg = frame(target, title, [{ name: title, color }]);
    const max = Math.max(0.01, ...values);
    const pad = axes(svg, max, labels);
    const w = (600 - pad.l - pad.r) / Math.max(1, values.length);
    values.forEach((v, i) => {
      const h = (200 - pad.t - pad.b) * v / max;
      const bar = el("rect", { x: pad.l + i * w + 1, y: 200 - pad.b - h, width: Math.max(1, w - 2), height: h, fill: color });
      bar.append(el("title", {}, `${labels[i]}: ${v}`));
      svg.append(bar);
    });
  }
  return { lines, bars };
})();

// Live progress for `atlaspipe serve`: polls the JSON status endpoints, no manual reload needed.
// While a run runs, its status carries live.json, drawn here as a stacked m4l histogram (SVG).
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";

  function svg(name, attrs, parent) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
    if (parent) parent.appendChild(node);
    return node;
  }

  function label(parent, x, y, value, anchor) {
    const node = svg("text", { x: x, y: y, "text-anchor": anchor || "middle" }, parent);
    node.textContent = value;
    return node;
  }

  function round(value) { return Math.round(value * 1000) / 1000; }

  // The partial histogram: MC groups stacked (bottom first, as live.json lists them) and data
  // points with sqrt(N) bars. It is redrawn whole at each poll; the final plots replace it.
  function drawLive(box, live, s) {
    let figure = document.getElementById("live-plot");
    if (!figure) {
      figure = document.createElement("figure");
      figure.id = "live-plot";
      figure.className = "live";
      box.after(figure);
    }
    const edges = live.bin_edges.map(Number);
    const bins = edges.length - 1;
    const stack = new Array(bins).fill(0);
    for (const group of live.groups) group.values.forEach((v, i) => { stack[i] += Number(v); });
    const data = live.data ? live.data.map(Number) : null;
    let top = Math.max(...stack, 0);
    if (data) data.forEach((n) => { top = Math.max(top, n + Math.sqrt(n)); });
    top = top > 0 ? top * 1.1 : 1;
    const width = 640, height = 300, left = 52, right = 12, upper = 12, lower = 38;
    const plotW = width - left - right, plotH = height - upper - lower;
    const x = (e) => left + (e - edges[0]) / (edges[bins] - edges[0]) * plotW;
    const y = (v) => upper + plotH - v / top * plotH;
    const dataEntries = data ? data.reduce((a, b) => a + b, 0) : 0;
    const expected = stack.reduce((a, b) => a + b, 0);
    const chart = svg("svg", {
      viewBox: "0 0 " + width + " " + height, role: "img", class: "live-histogram",
      "data-chunks": live.chunks_done, "data-entries": round(dataEntries), "data-expected": round(expected),
    });
    svg("title", {}, chart).textContent = "m4l so far: partial, " + live.chunks_done + " of " +
      live.chunks_total + " chunks";
    const base = new Array(bins).fill(0);
    for (const group of live.groups) {
      group.values.forEach((raw, i) => {
        const v = Number(raw);
        if (v <= 0) return;
        svg("rect", {
          class: "bar", "data-group": group.id, x: x(edges[i]), width: Math.max(0, x(edges[i + 1]) - x(edges[i])),
          y: y(base[i] + v), height: y(base[i]) - y(base[i] + v), fill: group.color,
        }, chart);
        base[i] += v;
      });
    }
    if (data) {
      data.forEach((n, i) => {
        if (n <= 0) return;
        const cx = (x(edges[i]) + x(edges[i + 1])) / 2;
        svg("line", { x1: cx, x2: cx, y1: y(n + Math.sqrt(n)), y2: y(Math.max(0, n - Math.sqrt(n))),
                      stroke: "#000" }, chart);
        svg("circle", { class: "point", cx: cx, cy: y(n), r: 3, fill: "#000" }, chart);
      });
    }
    svg("line", { x1: left, x2: left + plotW, y1: upper + plotH, y2: upper + plotH, stroke: "#333" }, chart);
    svg("line", { x1: left, x2: left, y1: upper, y2: upper + plotH, stroke: "#333" }, chart);
    const step = Math.max(1, Math.ceil(bins / 6));
    for (let i = 0; i <= bins; i += step) label(chart, x(edges[i]), upper + plotH + 15, String(edges[i]));
    label(chart, left + plotW, upper + plotH + 32, "m4l [GeV]", "end");
    label(chart, left - 6, upper + 10, String(Math.round(top)), "end");
    label(chart, left - 6, upper + plotH, "0", "end");
    let legendY = upper + 14;
    for (const group of [...live.groups].reverse()) {
      svg("rect", { x: left + plotW - 150, y: legendY - 9, width: 10, height: 10, fill: group.color }, chart);
      label(chart, left + plotW - 135, legendY, group.label, "start");
      legendY += 15;
    }
    if (data) {
      svg("circle", { cx: left + plotW - 145, cy: legendY - 4, r: 3, fill: "#000" }, chart);
      label(chart, left + plotW - 135, legendY, "Data", "start");
    }
    const caption = document.createElement("figcaption");
    caption.innerHTML = "<b>Partial</b>: m4l of the <span class=\"live-chunks\"></span> chunks done so far " +
      "(final plots replace it when the run ends)<span class=\"live-eta\"></span>";
    caption.querySelector(".live-chunks").textContent = live.chunks_done + " of " + live.chunks_total;
    caption.querySelector(".live-eta").textContent = s.eta_text ? " · " + s.eta_text : "";
    figure.replaceChildren(chart, caption);
  }
  function text(root, selector, value) {
    const el = root.querySelector(selector);
    if (el) el.textContent = value;
  }

  function showStatus(root, s) {
    const total = Number(s.chunks_total || 0);
    const done = Number(s.chunks_done || 0);
    const badge = root.querySelector(".badge");
    if (badge) { badge.textContent = s.state; badge.className = "badge " + s.state; }
    const bar = root.querySelector("progress");
    if (bar) { bar.max = Math.max(total, 1); bar.value = done; }
    text(root, ".chunks-done", String(done));
    text(root, ".chunks-total", String(total));
    text(root, ".chunks-failed", String(s.chunks_failed || 0));
    text(root, ".events-read", Number(s.events_read || 0).toLocaleString("en-US"));
    text(root, ".events-total", s.events_total ? " of " + Number(s.events_total).toLocaleString("en-US") : "");
    text(root, ".percent", s.percent_text || "");
    text(root, ".eta", s.eta_text || "");
    text(root, ".message", s.message || "");
    text(root, ".updated", s.updated_text || "");
  }

  function pollRun(box) {
    const interval = Number(box.dataset.interval || 1000);
    const url = "/api/runs/" + encodeURIComponent(box.dataset.run) + "/status";
    async function tick() {
      try {
        const response = await fetch(url, { cache: "no-store" });
        if (response.ok) {
          const s = await response.json();
          showStatus(box, s);
          if (s.live && !s.terminal) drawLive(box, s.live, s);
          // The page header carries the state too.
          for (const badge of document.querySelectorAll("#run-facts .badge")) {
            badge.textContent = s.state; badge.className = "badge " + s.state;
          }
          box.dataset.polls = String(Number(box.dataset.polls || 0) + 1);
          // The server says when the run has ended: reload to show its results or why it failed.
          if (s.terminal) { window.location.reload(); return; }
        }
      } catch (e) { /* server restarting: try again on the next tick */ }
      window.setTimeout(tick, interval);
    }
    window.setTimeout(tick, interval);
  }

  function pollList(table) {
    const interval = Number(table.dataset.interval || 2000);
    const known = new Set(Array.from(table.querySelectorAll("tr[data-run]"), (r) => r.dataset.run));
    async function tick() {
      try {
        const response = await fetch("/api/runs", { cache: "no-store" });
        if (response.ok) {
          const runs = (await response.json()).runs;
          if (runs.length !== known.size || runs.some((r) => !known.has(r.run_id))) {
            window.location.reload();
            return;
          }
          for (const run of runs) {
            const row = table.querySelector('tr[data-run="' + CSS.escape(run.run_id) + '"]');
            if (!row || !run.status) continue;
            // A run that has just ended has new headline numbers: show the page afresh.
            if (run.status.terminal && row.dataset.terminal !== "true") { window.location.reload(); return; }
            showStatus(row, run.status);
          }
        }
      } catch (e) { /* keep polling */ }
      window.setTimeout(tick, interval);
    }
    window.setTimeout(tick, interval);
  }

  const box = document.getElementById("progress");
  if (box) pollRun(box);
  const table = document.getElementById("runs");
  if (table) pollList(table);
})();

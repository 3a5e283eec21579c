// Live progress for `atlaspipe serve`: polls the JSON status endpoints, no manual reload needed.
"use strict";
(function () {
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

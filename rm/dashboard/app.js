/* hybrid-rm dashboard: polls the JSON API every POLL_MS and renders it; no framework, no CDN.
   Every request carries X-Requested-With, which the API asks of cookie-authenticated changes (CSRF). */
"use strict";
(function () {
  const POLL_MS = 2000;
  const $ = sel => document.querySelector(sel);
  let me = null;

  async function api(path, options = {}) {
    const init = { credentials: "same-origin", headers: { "X-Requested-With": "hybrid-rm", "Accept": "application/json" }, ...options };
    if (options.body !== undefined) {
      init.body = JSON.stringify(options.body);
      init.headers["Content-Type"] = "application/json";
    }
    const response = await fetch(path, init);
    const body = response.headers.get("content-type")?.includes("json") ? await response.json() : await response.text();
    if (!response.ok) throw Object.assign(new Error(describeError(response.status, body)), { status: response.status, body });
    return body;
  }

  function describeError(status, body) {
    const detail = body && body.detail;
    if (Array.isArray(detail)) return `HTTP ${status}: ` + detail.map(d => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
    return `HTTP ${status}: ${detail || body}`;
  }

  function notice(text, error = false) {
    const box = $("#notice");
    box.textContent = text;
    box.className = error ? "error" : "";
  }

  function h(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
    }
    for (const child of children.flat()) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  /* Re-rendering every poll must not steal keyboard focus: put it back on the element with the same id. */
  function keepFocus(render) {
    const id = document.activeElement && document.activeElement.id;
    render();
    if (id && document.activeElement?.id !== id) document.getElementById(id)?.focus();
  }

  function age(iso) {
    const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (s < 120) return `${Math.round(s)} s`;
    if (s < 7200) return `${Math.round(s / 60)} min`;
    return `${(s / 3600).toFixed(1)} h`;
  }
  const clock = iso => iso ? new Date(iso).toLocaleTimeString([], { hour12: false }) : "";

  // -- pools -------------------------------------------------------------------------------
  function renderPools(pools) {
    const box = $("#pools");
    for (const pool of pools) {
      let card = document.getElementById(`pool-${pool.name}`);
      if (!card) {
        card = h("article", { class: "card", id: `pool-${pool.name}`, "data-pool": pool.name, "aria-labelledby": `pool-${pool.name}-title` },
          h("h3", { id: `pool-${pool.name}-title` }, pool.name),
          h("div", { class: "meta" }), h("div", { class: "states" }));
        if (me && me.role === "admin") card.append(boundsForm(pool));
        box.append(card);
      }
      card.querySelector(".meta").textContent =
        `${pool.provider} · priority ${pool.priority} · ${pool.slots} slot(s)/node · min ${pool.min_nodes} · max ${pool.max_nodes} · target ${pool.target_nodes ?? "–"}`;
      const states = Object.entries(pool.nodes).sort();
      card.querySelector(".states").replaceChildren(...(states.length ? states.map(([state, n]) =>
        h("span", { class: `pill ${state}`, "data-state": state }, `${state} ${n}`)) : [h("span", { class: "muted" }, "no nodes")]));
    }
  }

  function boundsForm(pool) {
    const id = `bounds-${pool.name}`;
    const form = h("form", { class: "bounds admin-only", id, "aria-label": `edit bounds of pool ${pool.name}` },
      h("label", {}, "min_nodes", h("input", { type: "number", min: 0, name: "min_nodes", id: `${id}-min`, value: pool.min_nodes })),
      h("label", {}, "max_nodes", h("input", { type: "number", min: 0, name: "max_nodes", id: `${id}-max`, value: pool.max_nodes })),
      h("button", { type: "submit", id: `${id}-save` }, "Apply"));
    form.addEventListener("submit", async event => {
      event.preventDefault();
      const body = { pools: { [pool.name]: { min_nodes: Number(form.min_nodes.value), max_nodes: Number(form.max_nodes.value) } } };
      try {
        const result = await api("/api/v1/policy", { method: "PUT", body });
        notice(result.changes.length ? `policy version ${result.version} applied: ` +
          result.changes.map(c => `${c.path} ${c.from} → ${c.to}`).join(", ") + "; the controller uses it from its next tick"
          : "nothing changed");
        refresh();
      } catch (error) { notice(error.message, true); }
    });
    return form;
  }

  // -- nodes -------------------------------------------------------------------------------
  function renderNodes(nodes, currency) {
    const admin = me && me.role === "admin";
    keepFocus(() => $("#nodes tbody").replaceChildren(...nodes.map(node => h("tr", { "data-node": node.id, "data-pool": node.pool, "data-state": node.state },
      h("td", {}, node.id), h("td", {}, node.pool), h("td", {}, h("span", { class: `pill ${node.state}` }, node.state)),
      h("td", { class: "num" }, age(node.created_at)), h("td", { class: "num" }, String(node.running_tasks)),
      h("td", { class: "num" }, node.cost_so_far === null ? "–" : `${node.cost_so_far} ${currency}`),
      admin ? h("td", { class: "admin-only" }, ["idle", "busy"].includes(node.state) ?
        h("button", { type: "button", class: "secondary", id: `drain-${node.id}`, onclick: () => drain(node.id) }, "Drain") : "") : null))));
    if (!nodes.length) $("#nodes tbody").replaceChildren(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "no live nodes")));
  }

  async function drain(nodeId) {
    try {
      await api(`/api/v1/nodes/${encodeURIComponent(nodeId)}/drain`, { method: "POST" });
      notice(`drain of ${nodeId} requested; its running tasks finish first`);
      refresh();
    } catch (error) { notice(error.message, true); }
  }

  // -- events, jobs ------------------------------------------------------------------------
  function renderEvents(events) {
    $("#events").replaceChildren(...events.slice().reverse().map(e => h("li", { "data-kind": e.kind, "data-cause": e.cause },
      h("time", { datetime: e.at }, clock(e.at)), h("span", { class: "kind" }, e.kind), " ",
      h("span", { class: "cause" }, `(${e.cause})`), h("div", {}, e.message))));
  }

  function renderJobs(jobs) {
    const box = $("#jobs");
    if (!jobs.length) { box.replaceChildren(h("p", { class: "muted" }, "no jobs yet")); return; }
    box.replaceChildren(...jobs.slice(0, 10).map(job => {
      const p = job.progress, total = Math.max(1, p.total);
      const done = p.succeeded || 0, failed = (p.failed || 0) + (p.cancelled || 0), running = p.running || 0;
      const segment = (cls, n) => h("span", { class: cls, style: `width:${(100 * n / total).toFixed(2)}%` });
      return h("div", { class: "job", "data-job": job.id },
        h("div", {}, h("strong", {}, job.name), ` ${job.state} · ${done}/${p.total} succeeded` + (failed ? ` · ${failed} failed` : "") + (running ? ` · ${running} running` : "")),
        h("div", { class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": p.total, "aria-valuenow": done, "aria-label": `job ${job.name} progress` },
          segment("succeeded", done), segment("failed", failed), segment("running", running)));
    }));
  }

  // -- money -------------------------------------------------------------------------------
  function renderBudgets(status) {
    const box = $("#budgets");
    if (!status.budgets.length) { box.replaceChildren(h("p", { class: "muted" }, `no budget configured (${status.currency})`)); return; }
    box.replaceChildren(...status.budgets.map(b => {
      const amount = b.amount === null ? null : Number(b.amount);
      const pct = v => amount ? Math.min(100, 100 * Number(v) / amount).toFixed(1) : 0;
      return h("div", { class: "gauge", "data-scope": b.scope },
        h("div", {}, h("strong", {}, b.scope), ` ${b.period}: spent ${b.spent} · committed ${b.committed}` +
          (amount === null ? " · no amount" : ` of ${b.amount} ${status.currency} · remaining ${b.remaining}`) +
          ` · burn ${b.burn_per_hour}/h` + (b.capped ? " · CAPPED" : "")),
        amount === null ? null : h("div", { class: "bar", role: "meter", "aria-valuemin": 0, "aria-valuemax": amount, "aria-valuenow": Number(b.committed), "aria-label": `${b.scope} budget committed` },
          h("span", { class: "spent", style: `width:${pct(b.spent)}%` }),
          h("span", { class: "committed", style: `width:${Math.max(0, pct(b.committed) - pct(b.spent))}%` })));
    }));
  }

  async function renderSpend() {
    const target = $("#chart-spend");
    if (!me || me.role !== "admin") { target.replaceChildren(h("p", { class: "muted" }, "Spend over time: cost reports are for admins.")); return; }
    const report = await api("/api/v1/costs?group_by=day");
    if (!report.rows.length) { target.replaceChildren(h("p", { class: "muted" }, `Spend over time: nothing billed this month (${report.currency}).`)); return; }
    RmChart.bars(target, `spend per day (${report.currency}) this month`, report.rows.map(r => r.day), report.rows.map(r => Number(r.cost)), "#7b3fa0");
  }

  function renderTimeline(ticks) {
    RmChart.lines($("#chart-demand"), "demand vs. capacity", ticks.map(t => clock(t.at)), [
      { name: "demand (tasks)", color: "#b00020", values: ticks.map(t => t.demand_tasks) },
      { name: "needed slots", color: "#b26a00", values: ticks.map(t => t.needed_slots) },
      { name: "capacity (slots)", color: "#1f5fa8", values: ticks.map(t => t.capacity_slots) }]);
  }

  // -- costs view --------------------------------------------------------------------------
  function costQuery(format) {
    const params = new URLSearchParams({ group_by: $("#cost-group").value, format });
    if ($("#cost-from").value) params.set("from", $("#cost-from").value);
    if ($("#cost-to").value) params.set("to", $("#cost-to").value);
    return `/api/v1/costs?${params}`;
  }

  async function loadCosts() {
    const table = $("#costs");
    if (!me || me.role !== "admin") { table.tBodies[0].replaceChildren(h("tr", {}, h("td", {}, "Cost reports are for admins."))); $("#cost-csv").hidden = true; return; }
    $("#cost-csv").href = costQuery("csv");
    try {
      const report = await api(costQuery("json"));
      const columns = report.rows.length ? Object.keys(report.rows[0]) : [report.group_by, "cost"];
      table.tHead.replaceChildren(h("tr", {}, columns.map(c => h("th", { scope: "col", class: c === "cost" ? "num" : "" }, c))));
      table.tBodies[0].replaceChildren(...report.rows.map(r => h("tr", {}, columns.map(c => h("td", { class: c === "cost" ? "num" : "" }, r[c] ?? "")))));
      table.tFoot.replaceChildren(h("tr", {}, h("th", { colspan: columns.length - 1 }, `total ${report.from} → ${report.to}`), h("th", { class: "num" }, `${report.total} ${report.currency}`)));
      notice("");
    } catch (error) { notice(error.message, true); }
  }

  // -- routing and polling -----------------------------------------------------------------
  function route() {
    const costs = location.hash === "#costs";
    $("#view-overview").hidden = costs;
    $("#view-costs").hidden = !costs;
    $("#nav-overview").toggleAttribute("aria-current", !costs);
    $("#nav-costs").toggleAttribute("aria-current", costs);
    if (costs) { $("#nav-costs").setAttribute("aria-current", "page"); loadCosts(); } else $("#nav-overview").setAttribute("aria-current", "page");
  }

  let spendAt = 0;
  async function refresh() {
    if (location.hash === "#costs") return;
    try {
      const [pools, nodes, events, jobs, timeline, budget] = await Promise.all([
        api("/api/v1/pools"), api("/api/v1/nodes"), api("/api/v1/events?limit=40"), api("/api/v1/jobs?limit=10"),
        api("/api/v1/timeline"), api("/api/v1/budget")]);
      renderPools(pools);
      renderNodes(nodes, budget.currency);
      renderEvents(events);
      renderJobs(jobs);
      renderTimeline(timeline);
      renderBudgets(budget);
      if (Date.now() - spendAt > 30000) { spendAt = Date.now(); await renderSpend(); }
      document.body.dataset.refreshed = String(Date.now());
    } catch (error) {
      if (error.status === 401) { location.reload(); return; }
      notice(error.message, true);
    }
  }

  async function start() {
    me = await api("/api/v1/whoami");
    $("#whoami").textContent = `${me.name} (${me.role})`;
    document.body.classList.toggle("is-admin", me.role === "admin");
    $("#cost-form").addEventListener("submit", event => { event.preventDefault(); loadCosts(); });
    window.addEventListener("hashchange", route);
    route();
    await refresh();
    setInterval(refresh, POLL_MS);
  }

  start().catch(error => notice(error.message, true));
})();

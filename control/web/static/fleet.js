// The fleet page: one row per node from GET /api/nodes, polled; sortable; alarms first.
"use strict";

(() => {
  const POLL_MS = 5000;
  const ALARM_FIRST = "alarm"; // the default order: raised and unacknowledged alarms on top
  let nodes = [];
  let sortKey = ALARM_FIRST;
  let ascending = true;

  /** Lower ranks first in the default order: what an operator must look at now. */
  function urgency(n) {
    if (n.alarm.state === "alarm" && !n.alarm.acked_by) return 0;
    if (n.alarm.state === "alarm") return 1;
    if (n.stale && n.status === "online") return 2;
    if (n.stale) return 3;
    return 4;
  }

  function ageValue(n) {
    if (n.source === "replay") return typeof n.offset_s === "number" ? -n.offset_s : 0;
    return typeof n.age_s === "number" ? n.age_s : Infinity;
  }

  const KEYS = {
    node: (n) => n.node,
    status: (n) => n.status || "",
    alarm: urgency,
    verdict: (n) => n.verdict || "",
    score: (n) => (typeof n.score === "number" ? n.score : -1),
    mod_db: (n) => (typeof n.mod_db === "number" ? n.mod_db : -Infinity),
    age: ageValue,
    capture: (n) => (n.health ? n.capture || "" : "~"),
    outbox_depth: (n) => (typeof n.outbox_depth === "number" ? n.outbox_depth : -1),
    gaps: (n) => n.gaps,
    stale: (n) => (n.stale ? 0 : 1),
  };

  function compare(a, b) {
    const ka = KEYS[sortKey](a);
    const kb = KEYS[sortKey](b);
    let order = 0;
    if (typeof ka === "number" && typeof kb === "number") order = ka - kb;
    else order = String(ka).localeCompare(String(kb));
    if (order === 0 || Number.isNaN(order)) order = a.node < b.node ? -1 : a.node > b.node ? 1 : 0;
    return ascending ? order : -order;
  }

  function ageCell(n) {
    if (n.source === "replay") {
      const where = n.file || "replay";
      const at = typeof n.offset_s === "number" ? "@" + n.offset_s.toFixed(1) + "s" : "";
      return CC.el("td", { class: "text", text: where + at, title: "replay: times are positions in the file" });
    }
    return CC.el("td", { text: CC.duration(n.age_s), title: CC.utc(n.window_end) });
  }

  function alarmCell(n) {
    const a = n.alarm;
    if (a.state === "alarm") {
      const parts = [CC.el("span", { class: "alarm", text: "ALARM" })];
      if (a.acked_by) parts.push(" ", CC.el("span", { class: "small", text: "acked by " + a.acked_by }));
      return CC.el("td", { title: "since " + (a.since || "-") }, parts);
    }
    if (a.state === "clear") return CC.el("td", { class: "clear", text: "clear" });
    return CC.el("td", { class: "dim", text: "-" });
  }

  /** running is well, starting on its way; anything else (fault, silent, ...) wants a look. */
  function captureClass(n) {
    if (!n.health) return "dim";
    return n.capture === "running" || n.capture === "starting" ? null : "warn";
  }

  function flags(n) {
    const out = [];
    if (n.stale) out.push("STALE");
    if (n.clock_ahead) out.push("CLOCK?");
    return out.join(",");
  }

  function row(n) {
    const classes = [];
    if (n.alarm.state === "alarm") classes.push(n.alarm.acked_by ? "acked" : "in-alarm");
    if (n.stale) classes.push("stale");
    const link = CC.el("a", { href: CC.nodeHref(n.node), class: "node-name", title: n.label, text: n.label });
    const num = (value, digits) => CC.el("td", { class: "num", text: CC.fixed(value, digits) });
    return CC.el("tr", { class: classes.join(" "), "data-node": n.node }, [
      CC.el("td", {}, [link]),
      CC.el("td", { class: "text" + (n.status === "offline" ? " bad" : ""), title: n.status, text: n.status || "-" }),
      alarmCell(n),
      CC.el("td", { class: n.verdict === "anomalous" ? "anomalous" : null, text: n.verdict || "-" }),
      num(n.score, 3),
      num(n.mod_db, 1),
      ageCell(n),
      CC.el("td", { class: captureClass(n), text: n.health ? n.capture : "no health" }),
      CC.el("td", { class: "num", text: n.outbox_depth === null ? "-" : String(n.outbox_depth) }),
      CC.el("td", { class: "num" + (n.gaps > 0 ? " warn" : ""), text: String(n.gaps) }),
      CC.el("td", { class: "flag", text: flags(n) }),
    ]);
  }

  function renderHeader() {
    for (const th of document.querySelectorAll("#fleet thead th")) {
      if (th.dataset.key === sortKey) th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    }
  }

  function renderSummary() {
    const alarms = nodes.filter((n) => n.alarm.state === "alarm").length;
    const unacked = nodes.filter((n) => n.alarm.state === "alarm" && !n.alarm.acked_by).length;
    const stale = nodes.filter((n) => n.stale).length;
    const gaps = nodes.reduce((sum, n) => sum + n.gaps, 0);
    const summary = document.getElementById("summary");
    summary.replaceChildren(
      CC.el("span", { text: nodes.length + " nodes" }),
      CC.el("span", { class: alarms ? "count-alarm" : null, text: alarms + " in alarm" + (alarms ? " (" + unacked + " new)" : "") }),
      CC.el("span", { class: stale ? "count-stale" : null, text: stale + " stale" }),
      CC.el("span", { text: gaps + " missing" }),
    );
  }

  function render() {
    const sorted = nodes.slice().sort(compare);
    document.getElementById("rows").replaceChildren(...sorted.map(row));
    document.getElementById("empty").hidden = nodes.length > 0;
    renderHeader();
    renderSummary();
  }

  async function poll() {
    try {
      nodes = await CC.api("/api/nodes");
      CC.showError(null);
      CC.setText("updated", "updated " + CC.utc(Date.now() / 1000));
      render();
    } catch (err) {
      CC.showError("Cannot update: " + err.message + " (shown: the last known state)");
    }
  }

  function onSort(event) {
    const th = event.target.closest("th");
    if (!th || !th.dataset.key) return;
    if (sortKey === th.dataset.key) ascending = !ascending;
    else {
      sortKey = th.dataset.key;
      ascending = true;
    }
    render();
  }

  async function start() {
    document.querySelector("#fleet thead").addEventListener("click", onSort);
    try {
      const me = await CC.loadMe();
      if (me.auth === "login" && !me.user) return;
    } catch (err) {
      CC.showError("Cannot reach the server: " + err.message);
    }
    await poll();
    setInterval(poll, POLL_MS);
  }

  start();
})();

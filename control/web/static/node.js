// The node page: its state, a plot of score, level and physics over time (drawn on a canvas
// here, no library), its alarm history with acknowledgements, and its gaps.
"use strict";

(() => {
  const POLL_MS = 15000;
  const RANGES_S = { day: 86400, week: 7 * 86400, month: 30 * 86400 };
  const PX_PER_POINT = 2; // one bucket per two pixels: as fine as a line can show
  const MAX_POINTS = 2000;
  const COLORS = {
    score: "#ff7b72",
    mean: "#ffa198",
    level: "#79c0ff",
    mod_db: "#d2a8ff",
    hum_db: "#56d364",
    crackle_db: "#e3b341",
    grid: "#2a3541",
    text: "#8b98a5",
    alarm: "#f85149",
    threshold: "#e6edf3",
    cursor: "#e6edf3",
  };
  const TIME_STEPS_S = [
    60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400, 14 * 86400, 30 * 86400,
  ];

  const name = nodeFromPath();
  let node = null;
  let range = null;
  let series = null; // {from, to, step_s, points}
  let hoverX = null;
  const drafts = new Map(); // alarm id -> the note being typed, kept across redraws

  function nodeFromPath() {
    try {
      return decodeURIComponent(location.pathname.slice("/nodes/".length));
    } catch (_err) {
      return null;
    }
  }

  // -- the facts at the top -------------------------------------------------------------

  function fact(label, value, cls, detail) {
    const parts = [CC.el("dt", { text: label }), CC.el("dd", { text: value, title: value })];
    if (detail) parts.push(CC.el("dd", { class: "detail", text: detail, title: detail }));
    return CC.el("div", { class: cls || null }, parts);
  }

  function ageText(n) {
    if (n.source === "replay") {
      const at = typeof n.offset_s === "number" ? "@" + n.offset_s.toFixed(1) + "s" : "";
      return (n.file || "replay") + at;
    }
    return CC.duration(n.age_s);
  }

  /** A node's ISO-8601 UTC stamp as the page shows times: 2026-11-25 12:00:05Z. */
  function stamp(text) {
    return String(text).replace("T", " ").replace(/\.\d+/, "").replace("+00:00", "Z");
  }

  function alarmDetail(a) {
    if (!a.state) return null;
    const since = "since " + stamp(a.since);
    if (a.state !== "alarm") return since;
    return since + (a.acked_by ? ", acked by " + a.acked_by : ", not acknowledged");
  }

  function renderFacts() {
    const n = node;
    document.title = n.label + " · corona-control";
    CC.setText("node-name", n.label);
    const flags = [n.stale ? "STALE" : null, n.clock_ahead ? "CLOCK?" : null].filter(Boolean).join(", ");
    document.getElementById("facts").replaceChildren(
      fact("status", n.status || "-", n.status === "offline" ? "bad" : null),
      fact("alarm", n.alarm.state === "alarm" ? "ALARM" : n.alarm.state || "-", n.alarm.state === "alarm" ? "in-alarm" : null, alarmDetail(n.alarm)),
      fact("verdict", n.verdict || "-"),
      fact("score", CC.fixed(n.score, 3)),
      fact("mod 2f", typeof n.mod_db === "number" ? n.mod_db.toFixed(1) + " dB" + (n.line_hz ? " @" + n.line_hz + " Hz" : "") : "-"),
      fact(n.source === "replay" ? "position" : "age", ageText(n)),
      fact("source", n.source || "-"),
      fact("capture", n.health ? n.capture : "no health", null, n.health ? "reported " + CC.duration(n.health_age_s) + " ago" : null),
      fact("outbox", n.outbox_depth === null ? "-" : String(n.outbox_depth)),
      fact("missing seqs", String(n.gaps), n.gaps > 0 ? "warn" : null),
      fact("last seq", n.seq === null ? "-" : String(n.seq)),
      fact("flags", flags || "-"),
    );
  }

  // -- the time range --------------------------------------------------------------------

  function bounds() {
    const span = node.span;
    const replay = node.source === "replay";
    // A replay's windows are positions in a file, from 1970: its ranges end at its last window.
    const end = replay && span ? span.last + 0.001 : Date.now() / 1000;
    if (range === "all") {
      if (!span) return [end - RANGES_S.day, end];
      return [span.first, Math.max(span.last + 0.001, span.first + 1)];
    }
    return [end - RANGES_S[range], end];
  }

  function setRange(which) {
    range = which;
    for (const button of document.querySelectorAll("[data-range]")) {
      button.setAttribute("aria-pressed", button.dataset.range === range ? "true" : "false");
    }
    loadSeries();
  }

  // -- the plot ---------------------------------------------------------------------------

  function extent(points, keys) {
    let lo = Infinity;
    let hi = -Infinity;
    for (const p of points) {
      for (const key of keys) {
        const v = p[key];
        if (typeof v === "number" && isFinite(v)) {
          lo = Math.min(lo, v);
          hi = Math.max(hi, v);
        }
      }
    }
    if (!isFinite(lo)) return [0, 1];
    if (hi - lo < 1e-9) return [lo - 1, hi + 1];
    const pad = (hi - lo) * 0.08;
    return [lo - pad, hi + pad];
  }

  function timeStep(spanS, widthPx) {
    const wanted = spanS / Math.max(widthPx / 110, 2);
    return TIME_STEPS_S.find((s) => s >= wanted) || TIME_STEPS_S[TIME_STEPS_S.length - 1];
  }

  function timeLabel(t, spanS) {
    const iso = new Date(t * 1000).toISOString();
    if (spanS <= 2 * 86400) return iso.slice(11, 16) === "00:00" ? iso.slice(5, 10) : iso.slice(11, 16);
    return iso.slice(5, 10);
  }

  function line(ctx, points, key, x, y, color, maxGapS) {
    ctx.strokeStyle = color;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    let previous = null;
    for (const p of points) {
      const v = p[key];
      if (typeof v !== "number" || !isFinite(v)) {
        previous = null;
        continue;
      }
      const px = x((p.start + p.end) / 2);
      const py = y(v);
      // No line across a stretch without verdicts: a gap must look like one.
      if (previous === null || p.start - previous.end > maxGapS) ctx.moveTo(px, py);
      else ctx.lineTo(px, py);
      if (previous === null) ctx.lineTo(px + 0.5, py);
      previous = p;
    }
    ctx.stroke();
  }

  function panelFrame(ctx, box, yRange, title, format) {
    ctx.strokeStyle = COLORS.grid;
    ctx.fillStyle = COLORS.text;
    ctx.lineWidth = 1;
    ctx.font = "11px ui-monospace, monospace";
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const v = yRange[0] + ((yRange[1] - yRange[0]) * i) / 4;
      const py = box.y + box.h - (box.h * i) / 4;
      ctx.beginPath();
      ctx.moveTo(box.x, Math.round(py) + 0.5);
      ctx.lineTo(box.x + box.w, Math.round(py) + 0.5);
      ctx.stroke();
      ctx.fillText(format(v), box.x - 6, py);
    }
    ctx.textAlign = "left";
    ctx.textBaseline = "top";
    ctx.fillText(title, box.x + 6, box.y + 3);
  }

  function draw() {
    const canvas = document.getElementById("plot");
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    if (!series) return;

    const left = 58;
    const right = 14;
    const top = 8;
    const bottom = 24;
    const gap = 12;
    const plotW = width - left - right;
    const usable = height - top - bottom - 2 * gap;
    const boxes = [0.42, 0.23, 0.35].reduce((acc, share) => {
      const y = acc.length ? acc[acc.length - 1].y + acc[acc.length - 1].h + gap : top;
      acc.push({ x: left, y, w: plotW, h: usable * share });
      return acc;
    }, []);
    const from = series.from;
    const to = series.to;
    const x = (t) => left + ((t - from) / (to - from)) * plotW;
    const points = series.points;
    const maxGapS = Math.max(series.step_s * 2.5, 90);

    const scoreBox = boxes[0];
    const yScore = (v) => scoreBox.y + scoreBox.h - v * scoreBox.h;
    panelFrame(ctx, scoreBox, [0, 1], "score", (v) => v.toFixed(2));
    // Buckets with anomalous windows: a red band under the score, as tall as their share.
    ctx.fillStyle = COLORS.alarm;
    const barW = Math.max((series.step_s / (to - from)) * plotW, 1.5);
    for (const p of points) {
      if (p.anomalous > 0) {
        const share = p.anomalous / p.count;
        ctx.globalAlpha = 0.25 + 0.5 * share;
        ctx.fillRect(x(p.start), scoreBox.y + scoreBox.h - 6, barW, 6);
      }
    }
    ctx.globalAlpha = 1;
    const threshold = node && node.last_verdict ? node.last_verdict.threshold : null;
    if (typeof threshold === "number") {
      ctx.strokeStyle = COLORS.threshold;
      ctx.setLineDash([4, 4]);
      ctx.beginPath();
      ctx.moveTo(left, Math.round(yScore(threshold)) + 0.5);
      ctx.lineTo(left + plotW, Math.round(yScore(threshold)) + 0.5);
      ctx.stroke();
      ctx.setLineDash([]);
    }
    line(ctx, points, "score_mean", x, yScore, COLORS.mean, maxGapS);
    line(ctx, points, "score_max", x, yScore, COLORS.score, maxGapS);

    const levelBox = boxes[1];
    const levelRange = extent(points, ["level_dbfs"]);
    const yLevel = (v) => levelBox.y + levelBox.h - ((v - levelRange[0]) / (levelRange[1] - levelRange[0])) * levelBox.h;
    panelFrame(ctx, levelBox, levelRange, "level dBFS", (v) => v.toFixed(0));
    line(ctx, points, "level_dbfs", x, yLevel, COLORS.level, maxGapS);

    const physicsBox = boxes[2];
    const keys = ["mod_db", "hum_db", "crackle_db"];
    const physicsRange = extent(points, keys);
    const yPhysics = (v) =>
      physicsBox.y + physicsBox.h - ((v - physicsRange[0]) / (physicsRange[1] - physicsRange[0])) * physicsBox.h;
    panelFrame(ctx, physicsBox, physicsRange, "physics dB (mod 2f, hum, crackle)", (v) => v.toFixed(1));
    for (const key of keys) line(ctx, points, key, x, yPhysics, COLORS[key], maxGapS);

    // The time axis, shared by the three panels.
    const spanS = to - from;
    const step = timeStep(spanS, plotW);
    ctx.fillStyle = COLORS.text;
    ctx.strokeStyle = COLORS.grid;
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const axisY = physicsBox.y + physicsBox.h;
    for (let t = Math.ceil(from / step) * step; t <= to; t += step) {
      const px = Math.round(x(t)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(px, top);
      ctx.lineTo(px, axisY + 4);
      ctx.globalAlpha = 0.35;
      ctx.stroke();
      ctx.globalAlpha = 1;
      ctx.fillText(timeLabel(t, spanS), px, axisY + 6);
    }

    if (points.length === 0) {
      ctx.fillStyle = COLORS.text;
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.font = "15px system-ui, sans-serif";
      ctx.fillText("no verdicts in this range", left + plotW / 2, top + usable / 2);
    }

    if (hoverX !== null && hoverX >= left && hoverX <= left + plotW) {
      ctx.strokeStyle = COLORS.cursor;
      ctx.globalAlpha = 0.5;
      ctx.beginPath();
      ctx.moveTo(Math.round(hoverX) + 0.5, top);
      ctx.lineTo(Math.round(hoverX) + 0.5, axisY);
      ctx.stroke();
      ctx.globalAlpha = 1;
    }
    canvas.dataset.points = String(points.length); // for tests and for a person's curiosity
  }

  function readout(event) {
    const canvas = document.getElementById("plot");
    const rect = canvas.getBoundingClientRect();
    hoverX = event.clientX - rect.left;
    draw();
    if (!series || series.points.length === 0) return;
    const left = 58;
    const plotW = canvas.clientWidth - left - 14;
    const t = series.from + ((hoverX - left) / plotW) * (series.to - series.from);
    let best = null;
    for (const p of series.points) {
      if (best === null || Math.abs((p.start + p.end) / 2 - t) < Math.abs((best.start + best.end) / 2 - t)) best = p;
    }
    if (best === null) return;
    CC.setText(
      "readout",
      CC.utc(best.start) + " … " + CC.utc(best.end) + "  windows " + best.count + "  anomalous " + best.anomalous +
        "  score max " + CC.fixed(best.score_max, 3) + " mean " + CC.fixed(best.score_mean, 3) +
        "  level " + CC.fixed(best.level_dbfs, 1) + " dBFS  mod " + CC.fixed(best.mod_db, 1) +
        "  hum " + CC.fixed(best.hum_db, 1) + "  crackle " + CC.fixed(best.crackle_db, 1),
    );
  }

  async function loadSeries() {
    if (!node || !range) return;
    const [from, to] = bounds();
    const canvas = document.getElementById("plot");
    const points = Math.min(Math.max(Math.floor(canvas.clientWidth / PX_PER_POINT), 50), MAX_POINTS);
    const query = "?from=" + encodeURIComponent(CC.iso(from)) + "&to=" + encodeURIComponent(CC.iso(to)) + "&points=" + points;
    try {
      series = await CC.api(CC.apiNode(name, "/series") + query);
      CC.setText("range-label", CC.utc(from) + " … " + CC.utc(to) + (node.source === "replay" ? " (file positions)" : ""));
      const csv = document.getElementById("csv");
      csv.href = "/api/export.csv?node=" + encodeURIComponent(name) + "&from=" + encodeURIComponent(CC.iso(from)) + "&to=" + encodeURIComponent(CC.iso(to));
      draw();
    } catch (err) {
      CC.showError("Cannot load the plot: " + err.message);
    }
  }

  // -- alarms and acknowledgements --------------------------------------------------------

  function ackForm(alarm) {
    const input = CC.el("input", {
      type: "text",
      maxlength: "2000",
      placeholder: "note (what was done, who was called)",
      "aria-label": "acknowledgement note",
      "data-alarm": String(alarm.id),
    });
    input.value = drafts.get(alarm.id) || "";
    input.addEventListener("input", () => drafts.set(alarm.id, input.value));
    const button = CC.el("button", { type: "submit", text: "Acknowledge" });
    const form = CC.el("form", { class: "ack-form", "data-alarm": String(alarm.id) }, [input, button]);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      button.disabled = true;
      try {
        await CC.api("/api/alarms/" + encodeURIComponent(String(alarm.id)) + "/ack", { method: "POST", body: { note: input.value } });
        drafts.delete(alarm.id);
        CC.showError(null);
        await Promise.all([loadAlarms(), loadNode()]);
      } catch (err) {
        CC.showError("Not acknowledged: " + err.message);
        button.disabled = false;
      }
    });
    return form;
  }

  function alarmRow(a, readOnly) {
    const raised = a.state === "alarm";
    // Red is for the node's alarm now; an older raised change is history (still acknowledgeable).
    const current = node && node.alarm.id === a.id && raised;
    const acked = a.acked_by ? [a.acked_by, CC.el("br"), CC.el("span", { class: "small", text: CC.utc(a.acked_at) })] : ["-"];
    let action = "";
    if (raised && !a.acked_by && !readOnly) action = ackForm(a);
    const rowClass = current ? (a.acked_by ? "acked" : "in-alarm") : null;
    return CC.el("tr", { class: rowClass, "data-alarm": String(a.id) }, [
      CC.el("td", { text: stamp(a.since) }),
      CC.el("td", { class: raised ? "alarm" : "clear", text: raised ? (current ? "ALARM" : "alarm") : "clear" }),
      CC.el("td", { text: CC.utc(a.received_at) + (a.replayed ? " (replayed)" : "") }),
      CC.el("td", {}, acked),
      CC.el("td", { class: "note", text: a.ack_note || "" }),
      CC.el("td", {}, [action]),
    ]);
  }

  async function loadAlarms() {
    const alarms = await CC.api(CC.apiNode(name, "/alarms"));
    const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.alarm : null;
    const me = CC.user();
    const readOnly = !me || me.read_only;
    document.getElementById("alarm-rows").replaceChildren(...alarms.map((a) => alarmRow(a, readOnly)));
    document.getElementById("no-alarms").hidden = alarms.length > 0;
    document.getElementById("alarms").hidden = alarms.length === 0;
    if (focused) {
      const input = document.querySelector('input[data-alarm="' + CSS.escape(focused) + '"]');
      if (input) input.focus();
    }
  }

  // -- evidence: clips and labels ---------------------------------------------------------

  let windowsShown = null; // the JSON last drawn: rows are rebuilt only when it changes

  function clipPath(clip, tail) {
    return CC.apiNode(name, "/clips/" + encodeURIComponent(clip) + (tail || ""));
  }

  function clipCell(w, readOnly) {
    const state = w.clip_state ? w.clip_state.state : null;
    if (state === "stored") {
      return CC.el("audio", { controls: true, preload: "none", src: clipPath(w.clip, "/audio"), "data-clip": w.clip });
    }
    if (state === "pending") return CC.el("span", { class: "dim", text: "asked the node…" });
    const refused = state === "refused" ? CC.el("span", { class: "warn", text: "refused: " + (w.clip_state.error || "") }) : "";
    if (readOnly) return CC.el("span", {}, [refused || CC.el("span", { class: "dim", text: "on the node" })]);
    const button = CC.el("button", { type: "button", text: state === "refused" ? "Ask again" : "Fetch", "data-fetch": w.clip });
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await CC.api(clipPath(w.clip, "/request"), { method: "POST" });
        CC.showError(null);
        await loadWindows();
      } catch (err) {
        CC.showError("Clip not requested: " + err.message);
        button.disabled = false;
      }
    });
    return CC.el("span", {}, [refused, refused ? " " : "", button]);
  }

  function labelCell(w, readOnly) {
    const given = w.person ? CC.el("span", { class: w.person.label === "anomalous" ? "alarm" : "clear", text: w.person.label }) : null;
    const by = w.person ? CC.el("span", { class: "small dim", text: " by " + w.person.labelled_by + (w.person.note ? ": " + w.person.note : "") }) : null;
    if (readOnly) return CC.el("span", {}, [given || "-", by || ""]);
    const note = CC.el("input", { type: "text", maxlength: "2000", placeholder: "note", "aria-label": "label note", "data-note": String(w.seq) });
    const buttons = ["normal", "anomalous"].map((label) => {
      const button = CC.el("button", { type: "button", text: label, "data-label": label, "data-seq": String(w.seq) });
      button.addEventListener("click", async () => {
        try {
          await CC.api(CC.apiNode(name, "/verdicts/" + encodeURIComponent(String(w.seq)) + "/label"), {
            method: "POST",
            body: { label, note: note.value },
          });
          CC.showError(null);
          await loadWindows();
        } catch (err) {
          CC.showError("Not labelled: " + err.message);
        }
      });
      return button;
    });
    return CC.el("span", { class: "label-cell" }, [given || "", by || "", given ? " " : "", note, ...buttons]);
  }

  async function loadWindows() {
    const windows = await CC.api(CC.apiNode(name, "/windows?limit=20"));
    const text = JSON.stringify(windows);
    const playing = [...document.querySelectorAll("#window-rows audio")].some((a) => !a.paused);
    const typing = document.activeElement && document.activeElement.dataset && document.activeElement.dataset.note;
    if (text === windowsShown || playing || typing) return; // never cut off a clip being heard
    windowsShown = text;
    const me = CC.user();
    const readOnly = !me || me.read_only;
    document.getElementById("window-rows").replaceChildren(
      ...windows.map((w) =>
        CC.el("tr", { "data-seq": String(w.seq) }, [
          CC.el("td", { text: CC.utc(w.window_end) }),
          CC.el("td", { class: w.label === "anomalous" ? "alarm" : "clear", text: w.label }),
          CC.el("td", { class: "num", text: CC.fixed(w.score, 3) }),
          CC.el("td", {}, [clipCell(w, readOnly)]),
          CC.el("td", {}, [labelCell(w, readOnly)]),
        ]),
      ),
    );
    document.getElementById("no-windows").hidden = windows.length > 0;
    document.getElementById("windows").hidden = windows.length === 0;
  }

  // -- gaps ----------------------------------------------------------------------------------

  async function loadGaps() {
    const gaps = await CC.api(CC.apiNode(name, "/gaps"));
    const reason = (g) => (g.reason === "new_outbox" ? "new outbox on the node (its old file is lost)" : "missing");
    document.getElementById("gap-rows").replaceChildren(
      ...gaps.map((g) =>
        CC.el("tr", { class: g.reason === "missing" ? "warn" : "dim" }, [
          CC.el("td", { class: "num", text: String(g.from_seq) }),
          CC.el("td", { class: "num", text: String(g.to_seq) }),
          CC.el("td", { class: "num", text: String(g.count) }),
          CC.el("td", { text: reason(g) }),
        ]),
      ),
    );
    document.getElementById("no-gaps").hidden = gaps.length > 0;
    document.getElementById("gaps").hidden = gaps.length === 0;
  }

  // -- polling -------------------------------------------------------------------------------

  async function loadNode() {
    node = await CC.api(CC.apiNode(name));
    renderFacts();
  }

  async function refresh() {
    try {
      await loadNode();
      await Promise.all([loadSeries(), loadAlarms(), loadGaps(), loadWindows()]);
      CC.setText("updated", "updated " + CC.utc(Date.now() / 1000));
    } catch (err) {
      CC.showError(err.status === 404 ? "No node of that name has published." : "Cannot update: " + err.message);
    }
  }

  async function start() {
    if (name === null || name === "") {
      CC.showError("Not a node's address.");
      return;
    }
    try {
      const me = await CC.loadMe();
      if (me.auth === "login" && !me.user) return;
      await loadNode();
    } catch (err) {
      CC.showError(err.status === 404 ? "No node of that name has published." : "Cannot load the node: " + err.message);
      return;
    }
    for (const button of document.querySelectorAll("[data-range]")) {
      button.addEventListener("click", () => setRange(button.dataset.range));
    }
    const canvas = document.getElementById("plot");
    canvas.addEventListener("mousemove", readout);
    canvas.addEventListener("mouseleave", () => {
      hoverX = null;
      draw();
    });
    window.addEventListener("resize", draw);
    setRange(node.source === "replay" ? "all" : "day");
    await Promise.all([loadAlarms(), loadGaps(), loadWindows()]).catch((err) => CC.showError("Cannot update: " + err.message));
    CC.setText("updated", "updated " + CC.utc(Date.now() / 1000));
    setInterval(refresh, POLL_MS);
  }

  start();
})();

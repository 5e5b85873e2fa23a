// The animated replay of a raftkv cluster trace (docs/trace-json.md). Everything is drawn on
// three canvases from the trace embedded in the page: the servers on a circle with their
// messages in flight, each server's log, and a timeline of the whole run. Large traces stay
// smooth: the state at any time is rebuilt from the nearest checkpoint, only messages in flight
// around the current time are drawn, and the timeline is drawn per pixel column, not per event.
"use strict";
(function () {
  const started = performance.now();
  const body = document.body;
  let errors = 0;
  window.addEventListener("error", function () {
    errors += 1;
    body.dataset.errors = String(errors);
  });

  const T = JSON.parse(document.getElementById("trace-data").textContent);
  const EV = T.events;
  const $ = (id) => document.getElementById(id);

  // ---- nodes ----
  const ids = T.nodes.slice();
  for (const e of EV) if (e.node && ids.indexOf(e.node) < 0) ids.push(e.node);
  ids.sort((a, b) => a - b);
  const slot = new Map(ids.map((id, k) => [id, k]));
  const N = ids.length;

  const END = EV.length ? EV[EV.length - 1].t_us : 0;
  const START = EV.length ? EV[0].t_us : 0;

  // ---- messages: pair each send with its receive (same sender, receiver and content) ----
  const FAULTS = new Set(["crash", "restart", "pause", "resume", "partition", "block", "unblock",
    "heal", "unreliable", "reliable", "node_added", "node_removed"]);
  const MSGS = []; // {t0, t1, from, to, m, st: "ok" | "drop" | "lost", reason}
  (function pairMessages() {
    const pending = new Map();
    for (const e of EV) {
      if (e.type === "send") {
        const key = e.node + ">" + e.to + JSON.stringify(e.msg);
        const rec = { t0: e.t_us, t1: null, from: e.node, to: e.to, m: e.msg, st: "lost", reason: "never received" };
        MSGS.push(rec);
        let q = pending.get(key);
        if (!q) pending.set(key, (q = []));
        q.push(rec);
      } else if (e.type === "recv" || e.type === "drop") {
        const from = e.type === "recv" ? e.from : e.node;
        const to = e.type === "recv" ? e.node : e.to;
        const q = pending.get(from + ">" + to + JSON.stringify(e.msg));
        if (!q || !q.length) continue;
        const rec = e.type === "recv" ? q.shift() : q.pop();
        if (e.type === "recv") { rec.t1 = e.t_us; rec.st = "ok"; rec.reason = ""; }
        else { rec.st = "drop"; rec.reason = e.reason; const i = q.indexOf(rec); if (i >= 0) q.splice(i, 1); }
      }
    }
    MSGS.sort((a, b) => a.t0 - b.t0);
  })();
  const FREQUENT = new Set(["send", "recv", "drop", "append", "commit", "apply"]);
  let DETAIL_FROM = START;
  for (const e of EV) if (FREQUENT.has(e.type)) { DETAIL_FROM = e.t_us; break; }
  let flightMax = 0;
  for (const m of MSGS) if (m.t1 !== null) flightMax = Math.max(flightMax, Math.min(m.t1 - m.t0, 2e6));

  // ---- state at a time: replayed from checkpoints ----
  const LOG_KEEP = 400; // entries kept per log tail (older ones are not drawn)
  function emptyNode() {
    return { alive: false, live: 0, paused: false, role: "follower", term: 0, leader: null, commit: 0, applied: 0,
      snap: 0, base: 1, terms: [], kinds: [], timerAt: 0, timeout: 450, votedFor: null, voters: null,
      learners: [], joint: false, timeoutMin: 300, timeoutMax: 600 };
  }
  function freshState() {
    const nodes = {};
    for (const id of ids) nodes[id] = emptyNode();
    return { k: 0, nodes, blocked: [], groups: null, unreliable: null };
  }
  function cloneState(s) {
    const nodes = {};
    for (const id of ids) {
      const n = Object.assign({}, s.nodes[id]);
      n.terms = n.terms.slice(); n.kinds = n.kinds.slice();
      nodes[id] = n;
    }
    return { k: s.k, nodes, blocked: s.blocked.slice(), groups: s.groups, unreliable: s.unreliable };
  }
  function lastIndex(n) { return n.base + n.terms.length - 1; }
  function truncate(n, last) {
    if (last < n.base - 1) { n.base = last + 1; n.terms = []; n.kinds = []; return; }
    n.terms.length = last - n.base + 1; n.kinds.length = last - n.base + 1;
  }
  function blockAll(s, groups) {
    const b = [];
    const groupOf = (id) => groups.findIndex((g) => g.indexOf(id) >= 0);
    for (const a of ids) for (const c of ids) {
      if (a === c) continue;
      const x = groupOf(a), y = groupOf(c);
      if (x < 0 || y < 0 || x !== y) b.push(a + ">" + c);
    }
    s.blocked = b;
  }
  function apply(s, e) {
    const n = s.nodes[e.node];
    switch (e.type) {
      case "start":
        n.live += 1; n.alive = true; n.paused = false; n.role = "follower"; n.term = e.term; n.leader = null;
        n.commit = e.commit; n.applied = Math.min(n.applied, e.commit); n.snap = e.snapshot_index;
        truncate(n, e.last_index);
        if (lastIndex(n) < e.last_index) { n.base = e.last_index + 1; n.terms = []; n.kinds = []; }
        n.timeoutMin = e.election_timeout_ms_min; n.timeoutMax = e.election_timeout_ms_max;
        n.timerAt = e.t_us; break;
      case "stop":
        // A crashed run's loop may report its stop after the restarted one started.
        n.live -= 1;
        if (n.live <= 0) { n.alive = false; n.role = "follower"; n.leader = null; }
        break;
      case "crash":
        n.alive = false; n.role = "follower"; n.leader = null; break;
      case "role":
        if (n.role !== e.role || n.term !== e.term) n.timerAt = e.t_us;
        n.role = e.role; n.term = e.term; n.leader = e.leader; n.timeout = e.election_timeout_ms || n.timeout; break;
      case "vote":
        if (e.granted) { n.timerAt = e.t_us; if (!e.pre) n.votedFor = e.candidate; } break;
      case "append": {
        truncate(n, e.first - 1);
        if (e.first > lastIndex(n) + 1) { n.base = e.first; n.terms = []; n.kinds = []; }
        for (let i = 0; i < e.terms.length; i++) { n.terms.push(e.terms[i]); n.kinds.push(e.kinds[i] || "c"); }
        if (n.terms.length > LOG_KEEP * 1.5) {
          const cut = n.terms.length - LOG_KEEP;
          n.terms.splice(0, cut); n.kinds.splice(0, cut); n.base += cut;
        }
        break;
      }
      case "commit": n.commit = e.index; break;
      case "apply": n.applied = e.last; break;
      case "snapshot":
        n.snap = Math.max(n.snap, e.index);
        if (e.how === "installed" && lastIndex(n) < e.index) { n.base = e.index + 1; n.terms = []; n.kinds = []; }
        n.applied = Math.max(n.applied, e.how === "installed" ? e.index : n.applied);
        break;
      case "membership": n.voters = e.voters; n.learners = e.learners; n.joint = e.joint; break;
      case "recv":
        if ((e.msg.kind === "append" || e.msg.kind === "heartbeat" || e.msg.kind === "install_snapshot") &&
            e.msg.term >= n.term) n.timerAt = e.t_us;
        break;
      case "restart": break;
      case "pause": n.paused = true; break;
      case "resume": n.paused = false; break;
      case "partition": s.groups = e.groups; blockAll(s, e.groups); break;
      case "heal": s.groups = null; s.blocked = []; break;
      case "block": if (s.blocked.indexOf(e.node + ">" + e.to) < 0) s.blocked = s.blocked.concat([e.node + ">" + e.to]); break;
      case "unblock": s.blocked = s.blocked.filter((x) => x !== e.node + ">" + e.to); break;
      case "unreliable": s.unreliable = e; break;
      case "reliable": s.unreliable = null; break;
      default: break;
    }
  }
  const CHECKPOINT_EVERY = 2000;
  const CHECKPOINTS = [];
  (function buildCheckpoints() {
    const s = freshState();
    for (let k = 0; k < EV.length; k++) {
      if (k % CHECKPOINT_EVERY === 0) { s.k = k; CHECKPOINTS.push(cloneState(s)); }
      if (s.nodes[EV[k].node] || !EV[k].node) apply(s, EV[k]);
    }
  })();
  if (!CHECKPOINTS.length) CHECKPOINTS.push(freshState());

  // The first event after time t.
  function eventAfter(t) {
    let lo = 0, hi = EV.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (EV[mid].t_us <= t) lo = mid + 1; else hi = mid; }
    return lo;
  }
  let cur = cloneState(CHECKPOINTS[0]);
  function seekState(t) {
    const k = eventAfter(t);
    const c = Math.min(Math.floor(k / CHECKPOINT_EVERY), CHECKPOINTS.length - 1);
    if (cur.k > k || cur.k < CHECKPOINTS[c].k) cur = cloneState(CHECKPOINTS[c]);
    while (cur.k < k) { const e = EV[cur.k]; if (cur.nodes[e.node] || !e.node) apply(cur, e); cur.k += 1; }
    return cur;
  }

  // ---- colours and layout ----
  function termColor(term, light) {
    const h = (term * 67) % 360;
    return light ? "hsl(" + h + ",65%,88%)" : "hsl(" + h + ",60%,55%)";
  }
  const KIND_COLOR = { pre_vote: "#8e6cc9", vote: "#6a3fbf", append: "#1f6fd1", heartbeat: "#2a9d8f",
    install_snapshot: "#d17a1f", timeout_now: "#c2185b" };
  function msgColor(kind) {
    return KIND_COLOR[kind] || KIND_COLOR[kind.replace("_response", "")] || "#555";
  }
  const cv = $("cluster"), lcv = $("logs"), tcv = $("timeline");
  const ctx = cv.getContext("2d"), lctx = lcv.getContext("2d"), tctx = tcv.getContext("2d");
  const DPR = window.devicePixelRatio || 1;
  function fit(c, w, h) {
    c.style.width = w + "px"; c.style.height = h + "px";
    c.width = Math.round(w * DPR); c.height = Math.round(h * DPR);
    c.getContext("2d").setTransform(DPR, 0, 0, DPR, 0, 0);
  }
  let W = 460, H = 460, LW = 600, LH = 200, TW = 1000, TH = 120;
  function layout() {
    W = H = Math.max(320, Math.min(520, window.innerHeight - 290, window.innerWidth * 0.45));
    fit(cv, W, H);
    LW = Math.max(280, $("side").clientWidth); LH = 26 + N * 30;
    fit(lcv, LW, LH);
    TW = Math.max(300, $("timeline-wrap").clientWidth - 32); TH = 34 + N * 14;
    fit(tcv, TW, TH);
    timelineCache = null;
  }
  function pos(id) {
    const k = slot.get(id);
    const a = -Math.PI / 2 + (2 * Math.PI * k) / Math.max(N, 1);
    const r = W * 0.36;
    return [W / 2 + r * Math.cos(a), H / 2 + r * Math.sin(a)];
  }

  // ---- playback ----
  let t = START, playing = false, speed = 0.1, lastFrame = null, dirty = true;
  const MIN_VISIBLE_S = 0.6; // a message stays on screen at least this long (real seconds)
  function visibleUs() { return MIN_VISIBLE_S * 1e6 * speed; }

  let hits = [], logHits = [], selected = null;

  function drawCluster(s) {
    ctx.clearRect(0, 0, W, H);
    hits = [];
    const R = Math.max(18, W * 0.075);
    // blocked links
    ctx.save(); ctx.setLineDash([5, 5]); ctx.strokeStyle = "rgba(198,40,40,0.55)"; ctx.lineWidth = 1.5;
    for (const b of s.blocked) {
      const [a, c] = b.split(">").map(Number);
      if (!slot.has(a) || !slot.has(c)) continue;
      const [x1, y1] = pos(a), [x2, y2] = pos(c);
      ctx.beginPath(); ctx.moveTo(x1, y1); ctx.lineTo(x2, y2); ctx.stroke();
    }
    ctx.restore();
    // messages in flight
    const vis = visibleUs();
    const from = t - Math.max(vis, flightMax) - 1;
    let lo = 0, hi = MSGS.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (MSGS[mid].t0 < from) lo = mid + 1; else hi = mid; }
    let drawn = 0;
    for (let i = lo; i < MSGS.length && MSGS[i].t0 <= t && drawn < 400; i++) {
      const m = MSGS[i];
      if (!slot.has(m.from) || !slot.has(m.to)) continue;
      const dur = Math.max(vis, m.t1 === null ? 0 : m.t1 - m.t0);
      let p = (t - m.t0) / dur;
      if (p > 1 || p < 0) continue;
      const lostAt = 0.55;
      if (m.st !== "ok" && p > lostAt) { if (p > lostAt + 0.35) continue; }
      const [x1, y1] = pos(m.from), [x2, y2] = pos(m.to);
      const dx = x2 - x1, dy = y2 - y1, len = Math.hypot(dx, dy) || 1;
      const ox = (-dy / len) * 7, oy = (dx / len) * 7; // each direction on its own side
      const q = m.st !== "ok" ? Math.min(p, lostAt) : p;
      const sx = x1 + (dx * R) / len, sy = y1 + (dy * R) / len;
      const ex = x2 - (dx * R) / len, ey = y2 - (dy * R) / len;
      const x = sx + (ex - sx) * q + ox, y = sy + (ey - sy) * q + oy;
      const big = m.m.kind === "append" && m.m.entries > 0;
      const r = big ? 7 : 5;
      const col = msgColor(m.m.kind);
      ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI);
      if (m.m.kind.endsWith("_response")) {
        ctx.fillStyle = "#fff"; ctx.fill(); ctx.lineWidth = 2; ctx.strokeStyle = col; ctx.stroke();
        if (m.m.ok === false) { ctx.fillStyle = col; ctx.font = "bold 9px sans-serif"; ctx.textAlign = "center"; ctx.fillText("-", x, y + 3); }
      } else { ctx.fillStyle = col; ctx.fill(); }
      if (m.st !== "ok" && p >= lostAt) {
        ctx.strokeStyle = m.st === "drop" ? "#c62828" : "#e07b00"; ctx.lineWidth = 2.5;
        ctx.beginPath(); ctx.moveTo(x - 7, y - 7); ctx.lineTo(x + 7, y + 7); ctx.moveTo(x + 7, y - 7); ctx.lineTo(x - 7, y + 7); ctx.stroke();
      }
      if (selected && selected.msg === m) { ctx.strokeStyle = "#000"; ctx.lineWidth = 1; ctx.beginPath(); ctx.arc(x, y, r + 4, 0, 2 * Math.PI); ctx.stroke(); }
      hits.push({ x, y, r: r + 4, msg: m });
      drawn += 1;
    }
    body.dataset.drawnMsgs = String(drawn);
    // servers
    for (const id of ids) {
      const n = s.nodes[id];
      const [x, y] = pos(id);
      // election timer: time since the last reset over this round's timeout (Raft §5.2)
      if (n.alive && n.role !== "leader") {
        const frac = Math.max(0, Math.min(1, (t - n.timerAt) / 1000 / Math.max(n.timeout, 1)));
        ctx.beginPath(); ctx.lineWidth = 4; ctx.strokeStyle = "#d0d4da";
        ctx.arc(x, y, R + 7, 0, 2 * Math.PI); ctx.stroke();
        ctx.beginPath(); ctx.strokeStyle = frac >= 1 ? "#c62828" : "#5b6270";
        ctx.arc(x, y, R + 7, -Math.PI / 2, -Math.PI / 2 + 2 * Math.PI * frac); ctx.stroke();
      }
      ctx.beginPath(); ctx.arc(x, y, R, 0, 2 * Math.PI);
      ctx.fillStyle = n.alive ? termColor(n.term, n.role !== "leader") : "#e3e5e8"; ctx.fill();
      ctx.lineWidth = n.role === "leader" ? 5 : n.role === "candidate" ? 3 : 1.5;
      ctx.setLineDash(n.role === "pre_candidate" ? [4, 3] : []);
      ctx.strokeStyle = n.alive ? (n.role === "leader" ? "#1d2129" : termColor(n.term, false)) : "#9aa0a8";
      ctx.stroke(); ctx.setLineDash([]);
      ctx.fillStyle = n.alive ? "#1d2129" : "#7a808a"; ctx.textAlign = "center";
      ctx.font = "bold " + Math.round(R * 0.55) + "px system-ui, sans-serif";
      ctx.fillText("n" + id, x, y - R * 0.08);
      ctx.font = Math.round(R * 0.36) + "px system-ui, sans-serif";
      const label = !n.alive ? "crashed" : n.paused ? "paused" : n.role.replace("_", "-");
      ctx.fillText(label, x, y + R * 0.38);
      ctx.fillText("term " + n.term, x, y + R * 0.72);
      if (!n.alive) {
        ctx.strokeStyle = "#c62828"; ctx.lineWidth = 3;
        ctx.beginPath(); ctx.moveTo(x - R * 0.7, y - R * 0.7); ctx.lineTo(x + R * 0.7, y + R * 0.7); ctx.stroke();
      }
      hits.push({ x, y, r: R, node: id });
    }
    // banner
    ctx.textAlign = "left"; ctx.font = "12px system-ui, sans-serif"; ctx.fillStyle = "#5b6270";
    let line = "";
    if (s.groups) line = "partition: " + s.groups.map((g) => "{" + g.map((i) => "n" + i).join(",") + "}").join(" | ");
    else if (s.blocked.length) line = "blocked: " + s.blocked.map((b) => { const [a, c] = b.split(">"); return "n" + a + "\u2192n" + c; }).join(", ");
    if (s.unreliable) line += (line ? "  \u00b7  " : "") + "unreliable: drop " + s.unreliable.drop + ", delay " + s.unreliable.delay_ms_min + "\u2013" + s.unreliable.delay_ms_max + " ms";
    if (line) ctx.fillText(line, 8, H - 10);
  }

  function drawLogs(s) {
    lctx.clearRect(0, 0, LW, LH);
    logHits = [];
    let maxLast = 0;
    for (const id of ids) maxLast = Math.max(maxLast, lastIndex(s.nodes[id]));
    const left = 44, box = 22;
    const cols = Math.max(1, Math.floor((LW - left - 6) / box));
    const first = Math.max(1, maxLast - cols + 1);
    lctx.font = "10px ui-monospace, monospace"; lctx.textAlign = "center"; lctx.fillStyle = "#5b6270";
    for (let c = 0; c < cols; c++) {
      const idx = first + c;
      if (idx > maxLast) break;
      if (idx % 5 === 0 || c === 0) lctx.fillText(String(idx), left + c * box + box / 2, 14);
    }
    ids.forEach((id, row) => {
      const n = s.nodes[id];
      const y = 20 + row * 30;
      lctx.textAlign = "left"; lctx.font = "bold 12px system-ui, sans-serif";
      lctx.fillStyle = n.alive ? "#1d2129" : "#9aa0a8";
      lctx.fillText("n" + id + (n.role === "leader" ? " \u2605" : ""), 4, y + 16);
      const last = lastIndex(n);
      for (let c = 0; c < cols; c++) {
        const idx = first + c;
        if (idx > last) break;
        const x = left + c * box;
        if (idx <= n.snap && idx < n.base) {
          lctx.fillStyle = "#eceef1"; lctx.fillRect(x + 1, y + 2, box - 2, 22);
          continue;
        }
        if (idx < n.base) continue;
        const term = n.terms[idx - n.base], kind = n.kinds[idx - n.base];
        const committed = idx <= n.commit;
        lctx.fillStyle = termColor(term, !committed);
        lctx.fillRect(x + 1, y + 2, box - 2, 22);
        lctx.lineWidth = committed ? 1.5 : 1; lctx.strokeStyle = committed ? "#1d2129" : "#9aa0a8";
        lctx.setLineDash(committed ? [] : [3, 2]);
        lctx.strokeRect(x + 1.5, y + 2.5, box - 3, 21); lctx.setLineDash([]);
        lctx.fillStyle = "#1d2129"; lctx.textAlign = "center"; lctx.font = "10px ui-monospace, monospace";
        lctx.fillText(kind === "n" ? "\u00b7" + term : kind === "m" ? "M" + term : String(term), x + box / 2, y + 17);
        if (selected && selected.entry && selected.entry.node === id && selected.entry.index === idx) {
          lctx.strokeStyle = "#000"; lctx.lineWidth = 2; lctx.strokeRect(x, y + 1, box, 24);
        }
        logHits.push({ x, y: y + 2, w: box, h: 22, entry: { node: id, index: idx, term, kind } });
      }
      // commit index marker
      if (n.commit >= first && n.commit < first + cols) {
        const x = left + (n.commit - first + 1) * box;
        lctx.strokeStyle = "#c62828"; lctx.lineWidth = 2;
        lctx.beginPath(); lctx.moveTo(x, y); lctx.lineTo(x, y + 27); lctx.stroke();
      }
    });
  }

  // The timeline: per node a band coloured by role and term, faults as marks, event density.
  let timelineCache = null;
  function buildTimeline() {
    const c = document.createElement("canvas");
    c.width = Math.round(TW * DPR); c.height = Math.round(TH * DPR);
    const g = c.getContext("2d");
    g.setTransform(DPR, 0, 0, DPR, 0, 0);
    const span = Math.max(END - START, 1);
    const X = (tt) => ((tt - START) / span) * (TW - 10) + 5;
    // density, one bucket per pixel column
    const buckets = new Float64Array(Math.ceil(TW));
    for (const e of EV) buckets[Math.min(buckets.length - 1, Math.floor(X(e.t_us)))] += 1;
    let max = 1; for (const b of buckets) max = Math.max(max, b);
    g.fillStyle = "#cfd6e0";
    for (let i = 0; i < buckets.length; i++) {
      const h = (buckets[i] / max) * 14;
      g.fillRect(i, 16 - h, 1, h);
    }
    // roles per node (segments between role/crash/start events)
    const state = {};
    for (const id of ids) state[id] = { t0: START, color: null };
    const y0 = 22;
    function close(id, tEnd) {
      const st = state[id];
      if (st.color) { g.fillStyle = st.color; g.fillRect(X(st.t0), y0 + slot.get(id) * 14, Math.max(1, X(tEnd) - X(st.t0)), 10); }
    }
    const live = {};
    for (const e of EV) {
      if (!state[e.node]) continue;
      if (e.type === "start") live[e.node] = (live[e.node] || 0) + 1;
      if (e.type === "stop" && (live[e.node] = (live[e.node] || 0) - 1) > 0) continue;
      let color;
      if (e.type === "role") color = e.role === "leader" ? termColor(e.term, false) : termColor(e.term, true);
      else if (e.type === "start") color = termColor(e.term, true);
      else if (e.type === "crash" || e.type === "stop") color = "#c9ccd1";
      else continue;
      close(e.node, e.t_us); state[e.node] = { t0: e.t_us, color };
    }
    for (const id of ids) close(id, END);
    g.font = "9px system-ui, sans-serif"; g.fillStyle = "#5b6270"; g.textAlign = "left";
    ids.forEach((id) => g.fillText("n" + id, 1, y0 + slot.get(id) * 14 + 9));
    // before the first frequent event kept, the trace has no messages or log entries
    if (T.dropped > 0 && DETAIL_FROM > START) {
      g.fillStyle = "rgba(120,126,136,0.18)";
      g.fillRect(0, 0, X(DETAIL_FROM), TH);
      g.fillStyle = "#5b6270"; g.font = "9px system-ui, sans-serif"; g.textAlign = "left";
      g.fillText("no message detail kept", 18, 9);
    }
    // faults
    let lastLabel = -100;
    for (const e of EV) {
      if (!FAULTS.has(e.type)) continue;
      const x = X(e.t_us);
      g.fillStyle = e.type === "heal" || e.type === "restart" || e.type === "resume" || e.type === "reliable" ? "#2e8b45" : "#c62828";
      g.fillRect(x - 1, 0, 2, TH);
      if (x - lastLabel > 40) {
        g.fillText(e.type.replace("_", " ") + (e.node ? " n" + e.node : ""), x + 3, TH - 3);
        lastLabel = x;
      }
    }
    return { canvas: c, X };
  }
  function drawTimeline() {
    if (!timelineCache) timelineCache = buildTimeline();
    tctx.clearRect(0, 0, TW, TH);
    tctx.drawImage(timelineCache.canvas, 0, 0, TW, TH);
    const x = timelineCache.X(t);
    tctx.strokeStyle = "#1d2129"; tctx.lineWidth = 2;
    tctx.beginPath(); tctx.moveTo(x, 0); tctx.lineTo(x, TH); tctx.stroke();
  }

  function describe(e) {
    const parts = [];
    for (const [k, v] of Object.entries(e)) {
      if (k === "t_us" || k === "type" || k === "node") continue;
      parts.push(k + "=" + (typeof v === "object" && v !== null ? JSON.stringify(v) : v));
    }
    return fmt(e.t_us) + "  " + (e.node ? "n" + e.node + " " : "") + e.type + " " + parts.join(" ");
  }
  function fmt(us) { return ((us - START) / 1e6).toFixed(4) + " s"; }
  function drawRecent() {
    const k = eventAfter(t);
    const lines = [];
    for (let i = k - 1; i >= 0 && lines.length < 10; i--) lines.push(describe(EV[i]));
    $("recent").textContent = lines.length ? "latest events (newest first):\n" + lines.join("\n") : "no events yet";
  }
  function showDetails() {
    const d = $("details");
    if (!selected) { d.textContent = "Click a server, a message or a log entry for its details."; return; }
    if (selected.msg) {
      const m = selected.msg;
      const lines = ["message n" + m.from + " \u2192 n" + m.to + ": " + m.m.kind, "sent at " + fmt(m.t0) +
        (m.t1 !== null ? ", received at " + fmt(m.t1) + " (" + ((m.t1 - m.t0) / 1000).toFixed(3) + " ms)" : ""),
        m.st === "ok" ? "delivered" : (m.st === "drop" ? "dropped: " : "lost: ") + m.reason];
      for (const [k, v] of Object.entries(m.m)) if (k !== "kind") lines.push("  " + k + ": " + v);
      d.textContent = lines.join("\n");
    } else if (selected.entry) {
      const en = selected.entry, n = cur.nodes[en.node];
      d.textContent = ["log entry " + en.index + " on n" + en.node, "  term: " + en.term,
        "  kind: " + ({ c: "command", n: "no-op (a new leader's first entry)", m: "membership" })[en.kind],
        "  committed here: " + (en.index <= n.commit ? "yes" : "not yet"),
        "  applied here: " + (en.index <= n.applied ? "yes" : "not yet")].join("\n");
    } else if (selected.node) {
      const n = cur.nodes[selected.node];
      d.textContent = ["server n" + selected.node + (n.alive ? "" : " (crashed)"), "  role: " + n.role, "  term: " + n.term,
        "  leader: " + (n.leader ? "n" + n.leader : "unknown"), "  last index: " + lastIndex(n), "  commit index: " + n.commit,
        "  applied: " + n.applied, "  snapshot at: " + n.snap,
        "  voters: " + (n.voters ? n.voters.join(",") : "?") + (n.learners.length ? "  learners: " + n.learners.join(",") : "") + (n.joint ? " (joint)" : ""),
        "  election timeout: " + n.timeout + " ms"].join("\n");
    }
  }

  function draw() {
    const s = seekState(t);
    drawCluster(s); drawLogs(s); drawTimeline(); drawRecent(); showDetails();
    $("clock").textContent = fmt(t) + " / " + fmt(END);
    $("scrub").value = String(END > START ? Math.round(((t - START) / (END - START)) * 10000) : 0);
    body.dataset.t = String(t);
    dirty = false;
  }
  function frame(now) {
    if (playing) {
      if (lastFrame !== null) t = Math.min(END, t + (now - lastFrame) * 1000 * speed);
      lastFrame = now;
      if (t >= END) setPlaying(false);
      dirty = true;
    }
    if (dirty) draw();
    requestAnimationFrame(frame);
  }
  function setPlaying(p) {
    playing = p; lastFrame = null;
    if (p && t >= END) t = START;
    $("play").textContent = p ? "pause" : "play";
    body.dataset.playing = p ? "yes" : "no";
  }
  function seek(tt) { t = Math.max(START, Math.min(END, tt)); dirty = true; }
  const NOTABLE = (e) => e.type !== "send" && e.type !== "recv" && e.type !== "drop" && e.type !== "apply" && e.type !== "commit";
  function step(dir) {
    setPlaying(false);
    if (dir > 0) {
      for (let i = eventAfter(t); i < EV.length; i++) if (NOTABLE(EV[i]) && EV[i].t_us > t) { seek(EV[i].t_us); return; }
      seek(END);
    } else {
      for (let i = eventAfter(t) - 1; i >= 0; i--) if (NOTABLE(EV[i]) && EV[i].t_us < t) { seek(EV[i].t_us); return; }
      seek(START);
    }
  }

  $("play").addEventListener("click", () => setPlaying(!playing));
  $("back").addEventListener("click", () => step(-1));
  $("fwd").addEventListener("click", () => step(1));
  $("speed").addEventListener("change", () => { speed = Number($("speed").value) || 0.1; dirty = true; });
  $("scrub").addEventListener("input", () => { seek(START + (Number($("scrub").value) / 10000) * (END - START)); });
  tcv.addEventListener("click", (ev) => {
    const r = tcv.getBoundingClientRect();
    seek(START + ((ev.clientX - r.left - 5) / (TW - 10)) * (END - START));
  });
  cv.addEventListener("click", (ev) => {
    const r = cv.getBoundingClientRect(), x = ev.clientX - r.left, y = ev.clientY - r.top;
    selected = null;
    for (let i = hits.length - 1; i >= 0; i--) {
      const h = hits[i];
      if (Math.hypot(h.x - x, h.y - y) <= h.r) { selected = h.msg ? { msg: h.msg } : { node: h.node }; break; }
    }
    dirty = true;
  });
  lcv.addEventListener("click", (ev) => {
    const r = lcv.getBoundingClientRect(), x = ev.clientX - r.left, y = ev.clientY - r.top;
    selected = null;
    for (const h of logHits) if (x >= h.x && x < h.x + h.w && y >= h.y && y < h.y + h.h) { selected = { entry: h.entry }; break; }
    dirty = true;
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.target && ev.target.tagName === "SELECT") return;
    if (ev.key === " ") { ev.preventDefault(); setPlaying(!playing); }
    else if (ev.key === "ArrowRight") step(1);
    else if (ev.key === "ArrowLeft") step(-1);
  });
  window.addEventListener("resize", () => { layout(); dirty = true; });

  // Options in the address's fragment (#t=SECONDS&speed=X&play&scrub=FRACTION&select=n1):
  // a link to a moment, and the hooks the browser tests drive the controls with.
  const opts = new URLSearchParams(location.hash.replace(/^#/, ""));
  layout();
  if (opts.has("speed")) { $("speed").value = opts.get("speed"); speed = Number(opts.get("speed")) || speed; }
  if (opts.has("t")) seek(START + Number(opts.get("t")) * 1e6);
  draw();
  if (opts.has("scrub")) {
    $("scrub").value = String(Math.round(Number(opts.get("scrub")) * 10000));
    $("scrub").dispatchEvent(new Event("input"));
  }
  if (opts.has("select")) { const id = Number(String(opts.get("select")).replace("n", "")); if (slot.has(id)) selected = { node: id }; }
  if (opts.has("play")) $("play").click();
  draw();
  body.dataset.events = String(EV.length);
  body.dataset.messages = String(MSGS.length);
  body.dataset.loadMs = String(Math.round(performance.now() - started));
  body.dataset.ready = "yes";
  requestAnimationFrame(frame);
})();

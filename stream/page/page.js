// LatScope's live page: reads the worker's own JSON views and draws them as plain SVG.
// Everything comes from the worker that served the page: it works with no network beyond it.
"use strict";

const COLORS = JSON.parse(document.getElementById("layer-colors").textContent);
const SVGNS = "http://www.w3.org/2000/svg";   // a namespace name, never fetched
const $ = (sel) => document.querySelector(sel);
const state = { flow: null, seg: "end_to_end", everyMs: 1000, ok: 0,
  ctx: new Map(),     // "flow|host" -> Map(interval start ns -> bit/s): the sparklines
  socks: new Map() };  // "flow|host" -> the newest interval that had sockets
const SPARK_KEEP = 60;   // intervals per sparkline

async function get(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

// µs to 0.1, thousands set apart by a thin space: 169 876.4
const fmt = (v) => (v == null ? "–" : v.toFixed(1).replace(/\B(?=(\d{3})+(?!\d))/g, "\u2009"));
const hms = (ms) => new Date(ms).toTimeString().slice(0, 8);
const stat = (seg) => seg.total || seg.open || seg.last_window || null;
// µs as ms to 3 digits: a loopback RTT of 34 µs is 0.034, not 0.0
const ms = (us) => (us == null ? "–" : us >= 10000 ? (us / 1000).toFixed(1) : us >= 1000 ? (us / 1000).toFixed(2) : (us / 1000).toFixed(3));
// bit/s in the unit that keeps 3 digits: 2.00 Mbit/s, 950 kbit/s
function rate(bps) {
  if (bps == null) return "–";
  if (bps === 0) return "0";
  const [d, u] = bps >= 1e9 ? [1e9, "Gbit/s"] : bps >= 1e6 ? [1e6, "Mbit/s"] : bps >= 1e3 ? [1e3, "kbit/s"] : [1, "bit/s"];
  const v = bps / d;
  return `${v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${u}`;
}

function h(tag, attrs = {}, text = null) {
  const svg = ["svg", "rect", "line", "text", "polyline", "title", "g"].includes(tag);
  const e = svg ? document.createElementNS(SVGNS, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text != null) e.textContent = text;
  return e;
}

function hostsOf(name) {
  const [a, b] = name.split("→").map((p) => p.split(":")[0]);
  return a === b ? a : `${a} → ${b}`;
}

// -- flows table ------------------------------------------------------------------------
function drawFlows(flows) {
  const body = $("#flows tbody");
  body.replaceChildren();
  if (!flows.length) {
    body.append(h("tr", {}, null));
    body.lastChild.append(h("td", { colspan: 8, class: "empty" }, "no flow on this worker's partitions yet"));
  }
  for (const f of flows) {
    const tot = f.end_to_end.total || {};
    const last = f.end_to_end.last_window || {};
    const tr = h("tr", { "data-flow": f.flow });
    tr.append(h("td", { class: "flow" }, f.flow), h("td", {}, `${f.src_host} → ${f.dst_host}`),
      h("td", { class: "n samples" }, tot.count == null ? "–" : String(tot.count)),
      h("td", { class: "n p50" }, fmt(tot.p50_us)), h("td", { class: "n p99" }, fmt(tot.p99_us)),
      h("td", { class: "n newest" }, last.start_ns ? hms(last.start_ns / 1e6) : "–"),
      h("td", { class: "n last-p50" }, fmt(last.p50_us)),
      h("td", { class: "n last-p99" }, fmt(last.p99_us)));
    body.append(tr);
  }
}

// -- totals' start and the reset button ---------------------------------------------
function drawSince(fl, sum, fresh = false) {
  const el = $("#since");
  const since = fl.totals_since;
  const startedAt = Date.now() / 1000 - sum.uptime_s;
  const why = fresh ? "reset just now" : Math.abs(since - startedAt) < 2 ? "worker start" : "last reset";
  el.textContent = `totals since ${hms(since * 1000)} (${why})`;
  el.dataset.since = String(since);
  el.className = fresh ? "fresh" : el.className;
}

async function resetTotals() {
  const btn = $("#reset");
  btn.disabled = true;
  try {
    const r = await fetch("/latscope/flows/reset", { method: "POST", cache: "no-store" });
    if (!r.ok) throw new Error(`reset: HTTP ${r.status}`);
    const done = await r.json();
    const sum = await get("/latscope/summary");
    drawSince(done, sum, true);
    setTimeout(() => { $("#since").className = ""; }, 4000);
    await refresh(true);
  } catch (e) {
    $("#since").textContent = `reset failed: ${e.message}`;
  } finally {
    btn.disabled = false;
  }
}

// -- flow context: throughput, resends, TCP state, process ------------------------------
// hosts in path order (from the main path's segments), then any other host
function hostOrder(f) {
  const seen = [];
  for (const n of f.main_path) for (const p of n.split("→")) {
    const host = p.split(":")[0];
    if (!seen.includes(host)) seen.push(host);
  }
  return [...seen.filter((x) => x in f.context), ...Object.keys(f.context).filter((x) => !seen.includes(x)).sort()];
}

function spark(points) {
  const W = 100, H = 22;
  const svg = h("svg", { width: W, height: H, class: "spark" });
  if (points.length < 2) return svg;
  const hi = Math.max(...points.map((p) => p[1]), 1);
  const t0 = points[0][0], t1 = points[points.length - 1][0];
  const pts = points.map(([t, v]) => `${(2 + ((t - t0) / (t1 - t0)) * (W - 4)).toFixed(1)},${(H - 2 - (v / hi) * (H - 4)).toFixed(1)}`);
  svg.append(h("polyline", { points: pts.join(" ") }));
  svg.append(h("title", {}, `${points.length} intervals since this page opened: ${rate(Math.min(...points.map((p) => p[1])))} – ${rate(hi)}`));
  return svg;
}

function drawContext(flows) {
  const body = $("#context tbody");
  body.replaceChildren();
  let rows = 0;
  for (const f of flows) {
    hostOrder(f).forEach((host, i) => {
      const c = f.context[host];
      const secs = c.duration_ns / 1e9;
      const dev = [c.dev_bytes_tx * 8 / secs, c.dev_bytes_rx * 8 / secs];
      const key = `${f.flow}|${host}`;
      const hist = state.ctx.get(key) || new Map();
      hist.set(c.interval_start_ns, Math.max(c.app_tx_bps, c.app_rx_bps, ...dev));
      while (hist.size > SPARK_KEEP) hist.delete(hist.keys().next().value);
      state.ctx.set(key, hist);
      // A closed socket is gone from the newest interval: its last state, marked as such,
      // tells more than dashes.
      if ((c.sockets || []).length) state.socks.set(key, c);
      const had = state.socks.get(key);
      const socks = had ? had.sockets : [];
      const old = had && had !== c ? `as of ${hms(had.interval_start_ns / 1e6)}: no socket in the newest interval (closed)` : null;
      const each = (cls, fn) => {   // one line per socket, so the lines of a row align
        const td = h("td", old ? { class: `${cls} stale`, title: old } : { class: cls });
        if (!socks.length) td.textContent = "–";
        for (const k of socks) td.append(h("div", {}, fn(k)));
        return td;
      };
      const tr = h("tr", { "data-flow": f.flow, "data-host": host, class: i ? "" : "first" });
      tr.append(h("td", {}, i ? "" : f.flow), h("td", { class: "host" }, host),
        h("td", { class: "n interval" }, hms(c.interval_start_ns / 1e6)),
        h("td", { class: "n app-tx" }, rate(c.app_tx_bps)), h("td", { class: "n app-rx" }, rate(c.app_rx_bps)),
        h("td", { class: "n dev-tx" }, rate(dev[0])), h("td", { class: "n dev-rx" }, rate(dev[1])),
        h("td", { class: "n retrans" }, c.dev_segs_tx ? `${(100 * c.retrans_rate).toFixed(2)} %` : "–"),
        each("n rtt", (k) => ms(k.srtt_us)), each("n cwnd", (k) => String(k.cwnd)),
        each("proc", (k) => `${k.command || "?"} [${k.pid ?? "?"}] ${k.side}`),
        each("n cpu", (k) => (k.cpu_percent == null ? "–" : k.cpu_percent.toFixed(1))),
        each("n rss", (k) => (k.rss_bytes == null ? "–" : (k.rss_bytes / 2 ** 20).toFixed(1))));
      const sp = h("td", { class: "spark" });
      sp.append(spark([...hist.entries()].sort((a, b) => a[0] - b[0])));
      tr.append(sp);
      body.append(tr);
      rows += 1;
    });
  }
  if (!rows) {
    body.append(h("tr", {}, null));
    body.lastChild.append(h("td", { colspan: 14, class: "empty" }, "no flow statistics from the agents yet"));
  }
}

// -- stacked bars -----------------------------------------------------------------------
function tip(evt, lines) {
  const t = $("#tip");
  if (!lines) { t.hidden = true; return; }
  t.replaceChildren(...lines.map((l, i) => h(i ? "div" : "b", {}, l)));
  t.hidden = false;
  t.style.left = `${Math.min(evt.clientX + 14, window.innerWidth - 470)}px`;
  t.style.top = `${evt.clientY + 14}px`;
}

function drawBars(flows) {
  const box = $("#bars");
  box.replaceChildren();
  const width = Math.max(400, box.clientWidth - 10), barH = 30;
  for (const f of flows) {
    const segs = Object.fromEntries(f.segments.map((s) => [s.segment, s]));
    const steps = f.main_path.map((n) => segs[n]).filter((s) => s && stat(s));
    const sum = steps.reduce((a, s) => a + Math.max(0, stat(s).p50_us || 0), 0);
    const row = h("div", { class: "flowrow", "data-flow": f.flow });
    row.append(h("div", { class: "label" }, f.flow));
    row.lastChild.append(h("span", {}, `${f.src_host} → ${f.dst_host}: ${steps.length} steps, ` +
      `p50s add up to ${fmt(sum)} µs`));
    const svg = h("svg", { width, height: barH + 18, class: "bar" });
    let x = 0, prevHost = null, labelX = -1e9;
    for (const s of steps) {
      const st = stat(s);
      // at least 4 px, so every step can be seen and hovered
      const w = sum > 0 ? Math.max(4, (Math.max(0, st.p50_us || 0) / sum) * (width - 4 * steps.length)) : 4;
      const host = s.segment.split("→")[0].split(":")[0];
      if (host !== prevHost) {   // where the path enters a host; names never overlap
        svg.append(h("line", { x1: x, x2: x, y1: barH, y2: barH + 6, stroke: "#333" }));
        const lx = Math.max(x + 2, labelX);
        svg.append(h("text", { x: lx, y: barH + 15 }, host));
        labelX = lx + 8 * host.length + 8;
        prevHost = host;
      }
      const r = h("rect", { x, y: 0, width: w, height: barH, class: "seg",
        fill: COLORS[s.layer] || "#999", stroke: "#fff", "stroke-width": 1,
        "data-segment": s.segment, "data-layer": s.layer });
      const lines = [s.segment, `layer ${s.layer} · host ${hostsOf(s.segment)}` +
        (s.device ? ` · device ${s.device}` : ""),
        `count ${st.count} · p50 ${fmt(st.p50_us)} µs · p99 ${fmt(st.p99_us)} µs`];
      if (s.last_window) lines.push(`newest window: p50 ${fmt(s.last_window.p50_us)} µs, ` +
        `p99 ${fmt(s.last_window.p99_us)} µs`);
      r.append(h("title", {}, lines.join("\n")));
      r.addEventListener("mousemove", (e) => tip(e, lines));
      r.addEventListener("mouseleave", (e) => tip(e, null));
      r.addEventListener("click", () => { state.flow = f.flow; state.picked = true; state.seg = s.segment; refresh(); });
      svg.append(r);
      if (w > 70) svg.append(h("text", { x: x + 4, y: 19, style: "fill:#fff", "pointer-events": "none" },
        `${s.layer} ${fmt(st.p50_us)}`));
      x += w;
    }
    row.append(svg);
    box.append(row);
  }
  if (!flows.length) box.append(h("div", { class: "empty" }, "nothing yet"));
}

// -- p99 over time ----------------------------------------------------------------------
function pickers(flows) {
  const fp = $("#flow-pick"), sp = $("#seg-pick");
  if (!state.picked || !flows.some((f) => f.flow === state.flow)) {   // until one is picked: the flow seen last
    const newest = (f) => (f.end_to_end.last_window || {}).start_ns || 0;
    state.flow = flows.length ? flows.reduce((a, f) => (newest(f) > newest(a) ? f : a)).flow : null;
  }
  fp.replaceChildren(...flows.map((f) => h("option", { value: f.flow }, f.flow)));
  fp.value = state.flow || "";
  const f = flows.find((x) => x.flow === state.flow);
  const names = f ? ["end_to_end", ...f.main_path,
    ...f.segments.map((s) => s.segment).filter((n) => !f.main_path.includes(n))] : [];
  if (!names.includes(state.seg)) state.seg = "end_to_end";
  sp.replaceChildren(...names.map((n) => h("option", { value: n },
    n === "end_to_end" ? "end to end" : n)));
  sp.value = state.seg;
}

function niceStep(span, n) {
  const raw = span / n, mag = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
}

function drawChart(rows) {
  const box = $("#chart");
  box.replaceChildren();
  if (!rows || !rows.length) { box.append(h("div", { class: "empty" }, "no closed window yet")); return; }
  const W = Math.max(400, box.clientWidth - 10), H = 250, L = 80, R = 40, T = 26, B = 30;
  const t0 = rows[0][0], t1 = Math.max(rows[rows.length - 1][0], t0 + 1000);
  const vals = rows.flatMap((r) => [r[2], r[3]]).filter((v) => v != null);
  let lo = Math.min(0, ...vals), hi = Math.max(...vals, 1);
  const ys = niceStep(hi - lo, 5);
  lo = Math.floor(lo / ys) * ys; hi = Math.ceil(hi / ys) * ys;
  const X = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const Y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  const svg = h("svg", { width: W, height: H });
  for (let v = lo; v <= hi + ys / 2; v += ys) {
    svg.append(h("line", { x1: L, x2: W - R, y1: Y(v), y2: Y(v), stroke: "#eee" }));
    svg.append(h("text", { x: L - 6, y: Y(v) + 4, "text-anchor": "end" },
      ys >= 10 ? fmt(v).slice(0, -2) : fmt(v)));
  }
  svg.append(h("text", { x: 4, y: 14 }, "µs"));
  const xs = Math.max(1, niceStep((t1 - t0) / 1000, 6)) * 1000;   // whole seconds: HH:MM:SS
  for (let t = Math.ceil(t0 / xs) * xs; t <= t1; t += xs) {
    svg.append(h("line", { x1: X(t), x2: X(t), y1: H - B, y2: H - B + 5, stroke: "#333" }));
    svg.append(h("text", { x: X(t), y: H - B + 17, "text-anchor": "middle" }, hms(t)));
  }
  svg.append(h("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, stroke: "#333" }));
  const line = (i, color, label, dash) => {
    const pts = rows.filter((r) => r[i] != null).map((r) => `${X(r[0]).toFixed(1)},${Y(r[i]).toFixed(1)}`);
    svg.append(h("polyline", { points: pts.join(" "), fill: "none", stroke: color, "stroke-width": 1.8,
      "stroke-dasharray": dash || "", class: `series-${label}` }));
  };
  line(2, "#9bb4cc", "p50", "4 3");
  line(3, "#c0392b", "p99");
  svg.append(h("text", { x: W - R - 110, y: 14, style: "fill:#c0392b" }, "— p99"));
  svg.append(h("text", { x: W - R - 60, y: 14, style: "fill:#6d8aa6" }, "- - p50"));
  box.append(svg);
}

// -- clocks and counters ----------------------------------------------------------------
const COUNTERS = [["records", "records read"], ["complete", "complete samples"],
  ["incomplete", "incomplete samples"], ["join_late", "late for the join"],
  ["window_late", "late for statistics"], ["dead_lettered", "dead-lettered"],
  ["window_closed", "windows closed"], ["open_windows", "open windows"], ["pending", "pending samples"],
  ["influx_lines_written", "InfluxDB lines written"], ["influx_lines_failed", "InfluxDB lines failed"]];

function drawSide(sum, flows) {
  const ck = $("#clocks tbody");
  ck.replaceChildren();
  for (const [host, m] of Object.entries(sum.clock).sort()) {
    const tr = h("tr", { "data-host": host });
    tr.append(h("td", {}, host), h("td", { class: "n" }, fmt(m.offset_ns / 1000)),
      h("td", { class: "n" }, m.drift_ppm.toFixed(2)), h("td", { class: "n" }, fmt(m.error_bound_ns / 1000)));
    ck.append(tr);
  }
  if (!Object.keys(sum.clock).length) ck.append(h("tr", {}, null)), ck.lastChild.append(h("td", { colspan: 4, class: "empty" }, "no clock model yet"));
  const ct = $("#counters tbody");
  ct.replaceChildren();
  const c = sum.counters;
  const add = (label, v, key) => { const tr = h("tr", key ? { "data-counter": key } : {}); tr.append(h("td", {}, label), h("td", { class: "n" }, v)); ct.append(tr); };
  for (const [k, label] of COUNTERS) if (k in c) add(label, String(c[k]), k);
  const newest = Math.max(0, ...flows.map((f) => (f.end_to_end.last_window || {}).start_ns || 0));
  if (newest) add("newest closed window ends", `${((Date.now() - newest / 1e6) / 1000 - sum.interval_s).toFixed(1)} s ago`);
  if (sum.influx) add("sample → InfluxDB p50 / p99", `${sum.influx.freshness_p50_s ?? "–"} / ${sum.influx.freshness_p99_s ?? "–"} s`);
}

// -- refresh loop -----------------------------------------------------------------------
async function refresh(afterReset = false) {
  const status = $("#status");
  try {
    const [sum, fl] = await Promise.all([get("/latscope/summary"), get("/latscope/flows")]);
    const flows = fl.flows.slice().sort((a, b) => a.flow.localeCompare(b.flow));
    state.everyMs = Math.max(1000, sum.interval_s * 1000);
    drawSince(fl, sum, afterReset || $("#since").className === "fresh");
    drawFlows(flows);
    drawContext(flows);
    drawBars(flows);
    pickers(flows);
    drawSide(sum, flows);
    const hist = state.flow ? await get(`/latscope/history?flow=${encodeURIComponent(state.flow)}`) : null;
    drawChart(hist && hist.series[state.seg]);
    const parts = sum.partitions.length ? sum.partitions.join(", ") : "none yet";
    status.textContent = `worker ${sum.app_id} · shows partitions ${parts} (flows on other ` +
      `partitions are on their workers' pages) · updated ${hms(Date.now())} · every ${state.everyMs / 1000} s`;
    status.className = "";
    state.ok = Date.now();
    document.body.dataset.updated = String(state.ok);
  } catch (e) {
    status.textContent = `not updated since ${state.ok ? hms(state.ok) : "the start"}: ${e.message}`;
    status.className = "stale";
  }
}

async function loop() {
  await refresh();
  setTimeout(loop, state.everyMs);
}

$("#reset").addEventListener("click", resetTotals);
$("#flow-pick").addEventListener("change", (e) => { state.flow = e.target.value; state.picked = true; state.seg = "end_to_end"; refresh(); });
$("#seg-pick").addEventListener("change", (e) => { state.seg = e.target.value; state.picked = true; refresh(); });
loop();

// TinyMQ dashboard. Figures arrive on /api/v1/stats/stream (one "stats"
// event a second); the client list is fetched on demand from
// /api/v1/clients. Credentials: an API key (Bearer) or a password-file user
// (Basic), kept in sessionStorage for this tab only; ?token= in the page's
// address is taken as the API key. Every value from the broker is written
// with textContent, never as HTML: client ids and topics come from clients.
"use strict";

const $ = (id) => document.getElementById(id);
const HISTORY = 120; // points per chart: two minutes
const PAGE = 50;     // clients per page

const state = {
  auth: sessionStorage.getItem("tinymq.auth") || "",
  write: false,
  updates: 0,
  offset: 0,
  total: 0,
  series: { msgsIn: [], msgsOut: [], bytesIn: [], bytesOut: [], clients: [], connects: [] },
};

(function takeToken() {
  const u = new URL(location.href);
  const tok = u.searchParams.get("token");
  if (tok) {
    state.auth = "Bearer " + tok;
    sessionStorage.setItem("tinymq.auth", state.auth);
    u.searchParams.delete("token");
    history.replaceState(null, "", u.pathname + u.search + u.hash);
  }
})();

function headers() {
  return state.auth ? { Authorization: state.auth } : {};
}

function setState(s, text) {
  document.body.dataset.state = s;
  $("status").textContent = text;
}

// ---- formatting ----
function num(v) {
  if (v === undefined || v === null) return "–";
  if (Math.abs(v) >= 1e9) return (v / 1e9).toFixed(2) + " G";
  if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(2) + " M";
  if (Math.abs(v) >= 1e4) return (v / 1e3).toFixed(1) + " k";
  return Number.isInteger(v) ? String(v) : v.toFixed(v < 10 ? 1 : 0);
}
function bytes(v) {
  if (v === undefined || v === null) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(v) >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return (i === 0 ? Math.round(v) : v.toFixed(1)) + " " + u[i];
}
function duration(s) {
  s = Math.floor(s);
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${s % 60}s`;
}
function text(id, v) { $(id).textContent = v; }

// ---- charts: our own canvas drawing ----
function push(arr, v) { arr.push(v); if (arr.length > HISTORY) arr.shift(); }

function draw(canvas, a, b, fmt) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || canvas.width, h = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(w * dpr)) { canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr); }
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const css = getComputedStyle(document.documentElement);
  const top = Math.max(1, ...a, ...b) * 1.1;
  const left = 52, bottom = h - 14;
  g.font = "11px system-ui, sans-serif";
  g.fillStyle = css.getPropertyValue("--muted");
  g.strokeStyle = css.getPropertyValue("--line");
  g.lineWidth = 1;
  for (let i = 0; i <= 3; i++) {
    const y = 4 + (bottom - 4) * i / 3;
    g.beginPath(); g.moveTo(left, y); g.lineTo(w, y); g.stroke();
    g.fillText(fmt(top * (3 - i) / 3), 2, y + 4);
  }
  g.fillText("-2 min", left, h - 2);
  g.fillText("now", w - 22, h - 2);
  const line = (arr, color) => {
    if (arr.length < 2) return;
    g.strokeStyle = color; g.lineWidth = 1.6; g.beginPath();
    arr.forEach((v, i) => {
      const x = left + (w - left) * (i + HISTORY - arr.length) / (HISTORY - 1);
      const y = bottom - (bottom - 4) * v / top;
      i ? g.lineTo(x, y) : g.moveTo(x, y);
    });
    g.stroke();
  };
  line(a, css.getPropertyValue("--in"));
  line(b, css.getPropertyValue("--out"));
}

function drawAll() {
  const s = state.series;
  draw($("chart-msgs"), s.msgsIn, s.msgsOut, num);
  draw($("chart-bytes"), s.bytesIn, s.bytesOut, bytes);
  draw($("chart-clients"), s.clients, s.connects, num);
}

// ---- tables ----
function row(tbody, cells) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement("td");
    if (c instanceof Node) td.appendChild(c);
    else td.textContent = c;
    tr.appendChild(td);
  }
  tbody.appendChild(tr);
  return tr;
}

function fill(tableId, items, cells) {
  const tb = $(tableId).tBodies[0];
  tb.replaceChildren();
  for (const it of items) row(tb, cells(it));
  return tb;
}

// ---- the stats event ----
function onStats(ev) {
  state.updates++;
  document.body.dataset.updates = String(state.updates);
  text("version", ev.version);
  text("uptime", "up " + duration(ev.uptime_seconds));
  text("clients", num(ev.clients));
  text("connect-rate", num(ev.connect_rate));
  text("connections-max", num(ev.connections_max));
  text("msgs-in-rate", num(ev.msgs_in_rate));
  text("msgs-out-rate", num(ev.msgs_out_rate));
  text("msgs-in", String(ev.msgs_in));
  text("msgs-out", String(ev.msgs_out));
  text("bytes-in-rate", bytes(ev.bytes_in_rate));
  text("bytes-out-rate", bytes(ev.bytes_out_rate));
  text("bytes-in", bytes(ev.bytes_in));
  text("bytes-out", bytes(ev.bytes_out));
  text("subscriptions", num(ev.subscriptions));
  text("sessions-offline", num(ev.sessions_offline));
  text("retained", num(ev.retained));
  text("queued", num(ev.queued));
  text("inflight", num(ev.inflight));
  text("dropped", num(ev.dropped_total));
  $("dropped").classList.toggle("zero", ev.dropped_total === 0);
  text("drop-rate", num(ev.drop_rate));
  text("dropped-detail", Object.entries(ev.dropped).map(([k, v]) => `${k.replace("_", " ")} ${v}`).join(", "));
  text("slow-consumers", num(ev.slow_consumers));
  $("slow-consumers").classList.toggle("zero", ev.slow_consumers === 0);
  text("tls-connections", num(ev.tls_connections));
  text("loop-busy", ev.loop_busy.map((f) => Math.round(f * 100) + "%").join(" "));
  text("memory", bytes(ev.memory_bytes));

  fill("transports", ev.transports, (t) => [t.name, t.addrs.join(", ") || "off", String(t.connections),
    num(t.msgs_in_rate), num(t.msgs_out_rate), bytes(t.bytes_in_rate), bytes(t.bytes_out_rate)]);

  fill("bridges", ev.bridges, (b) => [b.name, b.remote, b.state, String(b.messages_in), String(b.messages_out),
    String(b.queued), String(b.dropped + b.queue_dropped)]);
  $("no-bridges").hidden = ev.bridges.length > 0;
  $("bridges").hidden = ev.bridges.length === 0;

  const top = ev.top_topics.length ? ev.top_topics[0].rate : 1;
  const tb = fill("topics", ev.top_topics, (t) => {
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = Math.max(2, Math.round(120 * t.rate / top)) + "px";
    return [t.topic, num(t.rate), bar];
  });
  for (const tr of tb.rows) tr.cells[0].className = "topic";
  $("no-topics").hidden = ev.top_topics.length > 0;
  $("topics").hidden = ev.top_topics.length === 0;

  const s = state.series;
  push(s.msgsIn, ev.msgs_in_rate); push(s.msgsOut, ev.msgs_out_rate);
  push(s.bytesIn, ev.bytes_in_rate); push(s.bytesOut, ev.bytes_out_rate);
  push(s.clients, ev.clients); push(s.connects, ev.connect_rate);
  drawAll();
}

// ---- the stream: fetch, so that credentials go in a header ----
let retry = null;
async function openStream() {
  clearTimeout(retry);
  let res;
  try {
    res = await fetch("/api/v1/stats/stream", { headers: headers(), cache: "no-store" });
  } catch (e) {
    return reconnect("broker unreachable");
  }
  if (res.status === 401 || res.status === 403) {
    const body = await res.json().catch(() => ({}));
    return showLogin(body.error || "credentials needed");
  }
  if (!res.ok) return reconnect("HTTP " + res.status);
  setState("live", "live");
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        handleBlock(buf.slice(0, i));
        buf = buf.slice(i + 2);
      }
    }
  } catch (e) { /* the connection dropped */ }
  reconnect("reconnecting…");
}

function handleBlock(block) {
  let event = "message", data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event: ")) event = line.slice(7);
    else if (line.startsWith("data: ")) data += line.slice(6);
  }
  if (!data) return;
  const ev = JSON.parse(data);
  if (event === "hello") {
    state.write = ev.write;
    loadClients();
  } else if (event === "stats") {
    onStats(ev);
  }
}

function reconnect(why) {
  setState("error", why);
  retry = setTimeout(openStream, 2000);
}

function showLogin(reason) {
  setState("login", "credentials needed");
  text("login-reason", reason);
  $("login").hidden = false;
  $("main").hidden = true;
}

$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  const user = $("login-user").value, secret = $("login-secret").value;
  state.auth = user ? "Basic " + btoa(unescape(encodeURIComponent(user + ":" + secret))) : "Bearer " + secret;
  sessionStorage.setItem("tinymq.auth", state.auth);
  $("login").hidden = true;
  $("main").hidden = false;
  openStream();
});

// ---- the client list ----
let searchTimer = null;
async function loadClients() {
  const q = $("search").value.trim();
  const url = `/api/v1/clients?limit=${PAGE}&offset=${state.offset}` + (q ? "&q=" + encodeURIComponent(q) : "");
  let list;
  try {
    const res = await fetch(url, { headers: headers(), cache: "no-store" });
    list = await res.json();
    if (!res.ok) throw new Error(list.error || "HTTP " + res.status);
  } catch (e) {
    $("client-error").hidden = false;
    text("client-error", "client list: " + e.message);
    return;
  }
  $("client-error").hidden = true;
  state.total = list.total;
  text("clients-total", `${list.total} session${list.total === 1 ? "" : "s"}` + (q ? " matching" : ""));
  text("page", list.total ? `${state.offset + 1}–${Math.min(state.offset + PAGE, list.total)}` : "");
  const tb = fill("client-list", list.clients, (c) => {
    let action = "";
    if (c.connected && state.write) {
      action = document.createElement("button");
      action.className = "kick";
      action.type = "button";
      action.textContent = "disconnect";
      action.addEventListener("click", () => kick(c.client_id));
    }
    return [c.client_id, c.connected ? c.remote_addr : "offline", `${c.protocol}${c.transport && c.transport !== "mqtt" ? " / " + c.transport : ""}`,
      c.keep_alive ? c.keep_alive + " s" : "none", String(c.subscriptions), String(c.queued),
      c.connected_since ? new Date(c.connected_since * 1000).toLocaleString() : "–", action];
  });
  for (const tr of tb.rows) tr.cells[0].className = "id";
}

async function kick(id) {
  if (!confirm(`Disconnect ${id}? Its will is published.`)) return;
  const res = await fetch("/api/v1/clients/" + encodeURIComponent(id), { method: "DELETE", headers: headers() });
  if (!res.ok) {
    const body = await res.json().catch(() => ({}));
    $("client-error").hidden = false;
    text("client-error", `disconnect ${id}: ${body.error || res.status}`);
  }
  setTimeout(loadClients, 300);
}

$("search").addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => { state.offset = 0; loadClients(); }, 250);
});
$("refresh").addEventListener("click", loadClients);
$("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE); loadClients(); });
$("next").addEventListener("click", () => { if (state.offset + PAGE < state.total) { state.offset += PAGE; loadClients(); } });
window.addEventListener("resize", drawAll);

openStream();

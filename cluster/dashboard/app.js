// The Tessera dashboard: reads the node's /v1/ API only. The cluster state
// arrives over server-sent events (/v1/cluster/watch), read with fetch so
// that a bearer token can go with it (EventSource cannot send headers).
'use strict';

const KEEP = 300;          // chart points kept: five minutes at one a second
const RECENT_MOVE = 10e3;  // a fragment moved this recently is highlighted (ms)
const PALETTE = ['#2563eb', '#059669', '#9333ea', '#db2777', '#0891b2', '#65a30d', '#c2410c', '#4f46e5', '#0d9488', '#a21caf'];

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'style') e.style.cssText = v;
    else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
};
const fmt = (x, digits = 0) => (x == null || Number.isNaN(x)) ? '–' :
  Number(x).toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: 0 });
const bytes = (b) => b >= 1 << 30 ? fmt(b / (1 << 30), 1) + ' GiB' : b >= 1 << 20 ? fmt(b / (1 << 20), 1) + ' MiB' : b >= 1 << 10 ? fmt(b / 1024, 1) + ' KiB' : fmt(b) + ' B';
const clock = (t) => new Date(t).toLocaleTimeString('en-GB', { hour12: false });
const show = (v) => typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v);

// keyText is an entry's key as a table shows it. An answer gives a key
// that is not valid UTF-8 with its bytes (key_base64): it is shown
// Go-quoted, its characters as they are and every other byte as \xNN.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
function keyText(e) {
  if (e.key_base64 == null) return e.key;
  const b = Uint8Array.from(atob(e.key_base64), (c) => c.charCodeAt(0));
  const esc = { '"': '\\"', '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t' };
  const hex = (x) => '\\x' + x.toString(16).padStart(2, '0');
  let s = '';
  for (let i = 0; i < b.length;) {
    let n = 0, ch = null;
    while (ch === null && n < 4 && i + n < b.length) {
      n++;
      try { ch = utf8.decode(b.subarray(i, i + n)); } catch (_) { /* no character of n bytes at i */ }
    }
    if (ch === null) { s += hex(b[i++]); continue; }
    s += esc[ch] || (ch < ' ' || ch === '\x7f' ? hex(ch.charCodeAt(0)) : ch);
    i += n;
  }
  return `"${s}"`;
}

// afterParam is the parameter that asks for the page after answer a's:
// the key's bytes if the answer gives them.
const afterParam = (a) => a.next_after_base64 != null ? `after_base64=${encodeURIComponent(a.next_after_base64)}` : `after=${encodeURIComponent(a.next_after)}`;

// keyURL asks view base for one key by its UTF-8 bytes (key_base64): a
// path cannot carry every key, as a browser resolves the keys . and .. in
// it (and their %2E forms) before it sends the request.
const keyURL = (base, key) => `${base}/keys?key_base64=${encodeURIComponent(btoa(Array.from(new TextEncoder().encode(key), (b) => String.fromCharCode(b)).join('')))}`;

// num picks the number to chart from a view value: the value itself, or a
// count-like field of an object ({"trips": N, "subscribers": M} → N).
function num(v) {
  if (typeof v === 'number') return v;
  if (v && typeof v === 'object') {
    for (const k of ['count', 'trips', 'sum', 'value', 'total', 'n']) if (typeof v[k] === 'number') return v[k];
    for (const x of Object.values(v)) if (typeof x === 'number') return x;
  }
  return null;
}

// --- the API, with a bearer token when the node asks for one -----------

class AuthError extends Error {}
let token = sessionStorage.getItem('tessera-token') || '';

async function api(path, opts = {}) {
  const headers = {};
  if (token) headers.Authorization = 'Bearer ' + token;
  const resp = await fetch(path, { ...opts, headers });
  if (resp.status === 401 || resp.status === 403) {
    let msg = '';
    try { msg = (await resp.json()).error; } catch (_) { /* not JSON */ }
    needToken(resp.status, msg);
    throw new AuthError(msg || resp.statusText);
  }
  return resp;
}

async function getJSON(path) {
  const resp = await api(path);
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(body.error || resp.statusText);
  return body;
}

function needToken(status, msg) {
  $('auth').hidden = false;
  $('auth-why').textContent = status === 403
    ? `The token given cannot read this node's API (${msg}). Paste a token with the read role. `
    : `Every /v1/ route of this node needs a bearer token with the read role (the node runs with -auth-token-file${token ? '; the token given is unknown' : ''}). Paste one: it is kept in this tab only (session storage) and sent as Authorization: Bearer …. `;
  setLive(false, 'needs a token');
  $('summary').textContent = 'this node needs a bearer token';
}

$('auth-form').addEventListener('submit', (e) => {
  e.preventDefault();
  token = $('auth-token').value.trim();
  sessionStorage.setItem('tessera-token', token);
  $('auth').hidden = true;
  start();
});

// sse reads a server-sent event stream with fetch, calling on(event, data)
// for each event, until the stream ends or signal aborts.
async function sse(path, on, signal) {
  const resp = await api(path, { signal });
  if (!resp.ok) {
    const body = await resp.json().catch(() => ({}));
    throw new Error(body.error || resp.statusText);
  }
  const reader = resp.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let ev = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) ev = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (data.length) on(ev, data.join('\n'));
    }
  }
}

// stream keeps an SSE stream open, reconnecting a second after it breaks.
function stream(path, on, signal, onState = () => {}) {
  (async () => {
    while (!signal.aborted) {
      try {
        await sse(path, on, signal);
      } catch (e) {
        if (e instanceof AuthError) return;
      }
      if (signal.aborted) return;
      onState(false);
      await new Promise((r) => setTimeout(r, 1000));
    }
  })();
}

function setLive(on, why = '') {
  const l = $('live');
  l.className = 'live ' + (on ? 'on' : 'off');
  l.title = on ? 'live over server-sent events' : 'not live: ' + (why || 'reconnecting');
}

// --- charts (uPlot) ---------------------------------------------------------

const charts = {};

function chart(id, opts, data) {
  const box = $(id);
  if (charts[id]) { charts[id].destroy(); box.textContent = ''; }
  const u = new uPlot({ width: Math.max(300, box.clientWidth), height: opts.height || 220, ...opts }, data, box);
  charts[id] = u;
  return u;
}

new ResizeObserver(() => {
  for (const [id, u] of Object.entries(charts)) {
    const w = Math.max(300, $(id).clientWidth);
    if (Math.abs(u.width - w) > 4) u.setSize({ width: w, height: u.height });
  }
}).observe(document.body);

const color = (i) => PALETTE[i % PALETTE.length];
const line = (label, i, extra = {}) => ({ label, stroke: color(i), width: 1.5, spanGaps: false, ...extra });
// yAxis labels counts in full, with room for them.
const yAxis = (extra = {}) => ({ size: 80, values: (u, vs) => vs.map((v) => fmt(v)), ...extra });
const bars = () => uPlot.paths.bars({ size: [0.7, 40] });
// padded keeps the outer bars of a bar chart whole.
const padded = (u, min, max) => [min - 0.5, max + 0.5];

// --- the cluster ------------------------------------------------------------

const series = { t: [], read: [], applied: [], lag: [] };
let partitions = null; // source/partition names, the lag chart's series
let throughput, lagChart;
const memberColor = new Map();
const colorOf = (name) => {
  if (!memberColor.has(name)) memberColor.set(name, color(memberColor.size));
  return memberColor.get(name);
};
let updates = 0;

function initSeriesCharts() {
  throughput = chart('chart-throughput', {
    series: [{}, line('read', 0, { value: (u, v) => fmt(v) }), line('applied', 1, { value: (u, v) => fmt(v) })],
    axes: [{}, yAxis()],
  }, [series.t, series.read, series.applied]);
  const parts = partitions || [];
  lagChart = chart('chart-lag', {
    legend: { show: parts.length <= 16 },
    series: [{}, ...parts.map((p, i) => line(p, i, { value: (u, v) => fmt(v) }))],
    axes: [{}, yAxis()],
  }, [series.t, ...series.lag]);
}

function push(t, read, applied, lags) {
  if (series.t.length && t <= series.t.at(-1)) return; // uPlot needs increasing times
  series.t.push(t); series.read.push(read); series.applied.push(applied);
  lags.forEach((v, i) => series.lag[i].push(v));
  if (series.t.length > KEEP) {
    for (const a of [series.t, series.read, series.applied, ...series.lag]) a.splice(0, a.length - KEEP);
  }
}

async function loadHistory() {
  try {
    const h = await getJSON('/v1/cluster/history');
    partitions = h.partitions;
    series.lag = partitions.map(() => []);
    for (const s of h.samples) {
      push(s.t / 1000, s.read, s.applied, s.lag.map((v) => v < 0 ? null : v));
    }
  } catch (e) {
    if (e instanceof AuthError) throw e;
    partitions = null;
  }
}

function onState(data) {
  updates++;
  document.body.dataset.updates = updates;
  setLive(true);
  const c = data.cluster;
  const timeline = data.timeline || [];
  const read = (c.readers || []).reduce((s, r) => s + r.events_per_sec, 0);
  const applied = (c.fragments || []).reduce((s, f) => s + f.events_per_sec, 0);
  $('summary').textContent = `node ${c.node} · flow ${c.flow.name} v${c.flow.version} · ${c.flow.fragments} fragments · ` +
    `${fmt(read)} events/s · ${fmt(c.dead_letters)} dead letters` + (c.complete ? ' · input complete' : '') +
    (c.error ? ` · FAILED: ${c.error}` : '');
  $('epoch').textContent = c.placement && c.placement.epoch ? `placement epoch ${c.placement.epoch}` : 'a single node';

  if (!partitions) {
    partitions = (c.readers || []).map((r) => `${r.source}/${r.partition}`).sort();
    series.lag = partitions.map(() => new Array(series.t.length).fill(null));
    initSeriesCharts();
  }
  const lagOf = new Map((c.readers || []).map((r) => [`${r.source}/${r.partition}`, Math.max(0, r.position - Math.max(0, r.committed))]));
  push(Date.now() / 1000, read, applied, partitions.map((p) => lagOf.has(p) ? lagOf.get(p) : null));
  throughput.setData([series.t, series.read, series.applied]);
  lagChart.setData([series.t, ...series.lag]);
  $('chart-throughput').dataset.points = series.t.length;

  renderMembers(c, timeline);
  renderCheckpoints(c);
  renderTimeline(timeline);
  $('dl-total').textContent = `${fmt(c.dead_letters)} in the cluster; the latest of them:`;
}

function renderMembers(c, timeline) {
  const placed = (c.placement && c.placement.fragments && c.placement.fragments.length) ? c.placement.fragments : null;
  const standbys = (c.placement && c.placement.standbys) || [];
  const running = new Map(); // fragment → nodes that report it
  for (const f of c.fragments || []) {
    if (!running.has(f.fragment)) running.set(f.fragment, []);
    running.get(f.fragment).push(f.owner);
  }
  const members = (c.members || []).map((m) => ({ ...m }));
  for (const g of c.gone || []) {
    if (!members.some((m) => m.name === g.name)) members.push({ name: g.name, http: g.http, status: g.how, at: g.at });
  }
  const status = new Map(members.map((m) => [m.name, m.status]));
  const recent = new Set();
  const now = Date.now();
  for (const ev of timeline) {
    if ((ev.kind === 'failover' || ev.kind === 'handoff') && now - Date.parse(ev.at) < RECENT_MOVE) (ev.fragments || []).forEach((f) => recent.add(f));
  }
  const G = c.flow.fragments;
  const ownerOf = (f) => placed ? placed[f] : (running.get(f) || [])[0];
  const moving = (f) => {
    const owner = ownerOf(f);
    const r = running.get(f) || [];
    return recent.has(f) || !owner || status.get(owner) !== 'alive' || r.length !== 1 || r[0] !== owner;
  };
  const box = $('members');
  box.textContent = '';
  let movingCount = 0;
  for (let f = 0; f < G; f++) if (moving(f)) movingCount++;
  box.dataset.moving = movingCount;
  for (const m of members) {
    const own = [], stand = [];
    for (let f = 0; f < G; f++) {
      if (ownerOf(f) === m.name) own.push(f);
      if (standbys[f] === m.name) stand.push(f);
    }
    const frs = (c.fragments || []).filter((f) => f.owner === m.name);
    const rate = frs.reduce((s, f) => s + f.events_per_sec, 0);
    const readers = (c.readers || []).filter((r) => r.owner === m.name).length;
    let st = m.status;
    if (st === 'alive' && placed && !m.running) st = 'starting';
    const card = el('div', { class: 'member ' + m.status, 'data-name': m.name, style: `--c:${colorOf(m.name)}` },
      el('div', {}, el('span', { class: 'name', text: m.name }), el('span', { class: 'status ' + st, text: st })),
      el('div', { class: 'facts', text: m.status === 'alive'
        ? `${m.http} · ${own.length} fragments, ${stand.length} standby copies, ${readers} source partitions · ${fmt(rate)} events/s applied`
        : m.at ? `${m.status} at ${clock(m.at)}` : `${m.http || ''} · does not answer` }));
    const chips = (list, cls) => el('div', { class: 'chips' }, ...list.map((f) =>
      el('span', { class: `chip ${cls}${moving(f) && cls === 'own' ? ' moving' : ''}`, text: f, title: `fragment ${f}` })));
    if (own.length) card.append(chips(own, 'own'));
    if (stand.length) card.append(chips(stand, 'standby'));
    box.append(card);
  }
}

function renderCheckpoints(c) {
  const frs = (c.fragments || []).slice().sort((a, b) => a.fragment - b.fragment);
  const xs = frs.map((f) => f.fragment);
  const age = frs.map((f) => f.checkpoint_at ? f.checkpoint_age_sec : null);
  const took = frs.map((f) => f.checkpoint_at ? f.checkpoint_duration_sec * 1000 : null);
  const data = [xs, age, took];
  if (!charts['chart-ckpt']) {
    chart('chart-ckpt', {
      height: 180,
      scales: { x: { time: false, range: padded }, ms: {} },
      series: [{ label: 'fragment' },
        { label: 'age s', fill: color(0) + '99', stroke: color(0), paths: bars(), points: { show: false }, value: (u, v) => fmt(v, 1) },
        { label: 'duration ms', stroke: color(3), scale: 'ms', width: 0, points: { show: true, size: 5, fill: color(3) }, value: (u, v) => fmt(v, 1) }],
      axes: [{ label: 'fragment', incrs: [1, 2, 4, 8, 16, 32, 64, 128] }, { label: 's' }, { side: 1, scale: 'ms', label: 'ms', grid: { show: false } }],
    }, data);
  } else {
    charts['chart-ckpt'].setData(data);
  }
  const tb = $('fragments').tBodies[0];
  tb.textContent = '';
  for (const f of frs) {
    tb.append(el('tr', {},
      el('td', { class: 'num', text: f.fragment }), el('td', { text: f.owner }), el('td', { text: f.standby || '' }),
      el('td', { class: 'num', text: f.epoch }), el('td', { class: 'num', text: f.checkpoint_at ? fmt(f.checkpoint_age_sec, 1) : '–' }),
      el('td', { class: 'num', text: f.checkpoint_at ? fmt(f.checkpoint_duration_sec * 1000, 1) : '–' }),
      el('td', { class: 'num', text: bytes(f.checkpoint_bytes) }), el('td', { class: 'num', text: fmt(f.events_per_sec) }),
      el('td', { class: 'num', text: fmt(f.lag) })));
  }
}

function describe(ev) {
  const frs = (ev.fragments || []);
  const list = frs.length > 12 ? frs.slice(0, 12).join(', ') + ` … (${frs.length})` : frs.join(', ');
  switch (ev.kind) {
    case 'started': return `${ev.node} started` + (ev.epoch ? ` at placement epoch ${ev.epoch}` : '');
    case 'joined': return `${ev.node} joined`;
    case 'left': return `${ev.node} left (handing off)`;
    case 'died': return `${ev.node} died`;
    case 'failover': return `failover of ${frs.length} fragments ${ev.from} → ${ev.to} (epoch ${ev.epoch}): ${list}`;
    case 'handoff': return `hand-off of ${frs.length} fragments ${ev.from} → ${ev.to} (epoch ${ev.epoch}): ${list}`;
  }
  return ev.kind;
}

let lastTimeline = '';
function renderTimeline(timeline) {
  const key = JSON.stringify(timeline);
  if (key === lastTimeline) return;
  lastTimeline = key;
  const ol = $('timeline');
  ol.textContent = '';
  for (const ev of timeline.slice().reverse()) {
    const seen = (ev.seen_by || []).length ? ` · seen by ${ev.seen_by.join(', ')}` : '';
    ol.append(el('li', { class: ev.kind }, el('time', { text: clock(ev.at) }), describe(ev) + seen));
  }
  if (!timeline.length) ol.append(el('li', { class: 'muted', text: 'nothing yet' }));
}

// --- alerts and dead letters ----------------------------------------------

function alertLine(rec) {
  const r = typeof rec === 'string' ? JSON.parse(rec) : rec;
  return el('li', { class: 'alert' }, el('time', { text: clock(r.raised) }),
    `${r.alert} on ${r.view}, window ${clock(r.start)}–${clock(r.end)}: ${show(r.previous)} → ${show(r.value)}`);
}

async function loadAlerts(signal) {
  const a = await getJSON('/v1/alerts?limit=50');
  const decl = $('alerts-declared');
  decl.textContent = '';
  if (!a.alerts.length) decl.append(el('li', { text: 'This flow declares no alerts.' }));
  for (const d of a.alerts) decl.append(el('li', { text: `${d.name} on view ${d.view}` }));
  $('alerts-total').textContent = `${fmt(a.total)} raised` + (a.owner ? ` · evaluated on ${a.owner}` : '');
  const ol = $('alerts');
  ol.textContent = '';
  for (const r of a.records.slice().reverse()) ol.append(alertLine(r));
  let total = a.total;
  stream(`/v1/alerts/watch?since=${a.total}`, (ev, data) => {
    if (ev !== 'alert') return;
    ol.prepend(alertLine(data));
    while (ol.children.length > 50) ol.lastChild.remove();
    total++;
    $('alerts-total').textContent = `${fmt(total)} raised` + (a.owner ? ` · evaluated on ${a.owner}` : '');
  }, signal);
}

async function loadDeadLetters() {
  const d = await getJSON('/v1/deadletters?scope=cluster');
  const tb = $('deadletters').tBodies[0];
  tb.textContent = '';
  const last = (d.last || []).slice(-50).reverse();
  for (const x of last) {
    const value = x.value || (x.raw ? `(${x.size} bytes, not UTF-8)` : '');
    tb.append(el('tr', {}, el('td', { class: 'num', text: x.fragment }), el('td', { text: `${x.source}/${x.partition}@${x.offset}` }),
      el('td', { class: 'error', text: x.error }), el('td', { text: value + (x.truncated ? ` … (${x.size} bytes)` : '') })));
  }
  if (!last.length) tb.append(el('tr', {}, el('td', { colspan: 4, class: 'muted', text: 'none' })));
}

// --- the view explorer --------------------------------------------------------

let explorer = null; // { view, abort, timer }

async function loadViews() {
  const vs = (await getJSON('/v1/views')).views || [];
  const tb = $('views').tBodies[0];
  tb.textContent = '';
  for (const v of vs) {
    tb.append(el('tr', { 'data-view': v.name }, el('td', {}, el('a', { href: v.url, text: v.name })), el('td', { text: v.kind }),
      el('td', { text: v.algebra || '' }), el('td', {}, el('button', { text: 'explore', onclick: () => explore(v) }))));
  }
  if (!vs.length) tb.append(el('tr', {}, el('td', { colspan: 4, class: 'muted', text: 'this flow declares no views' })));
  const first = vs.find((v) => v.kind === 'keyed') || vs[0];
  if (first && !explorer) explore(first);
}

function closeExplorer() {
  if (!explorer) return;
  explorer.abort.abort();
  clearInterval(explorer.timer);
  if (charts['ex-chart']) { charts['ex-chart'].destroy(); delete charts['ex-chart']; }
  $('ex-chart').textContent = '';
  explorer = null;
}

function table(head, rows) {
  const t = $('ex-table');
  t.tHead.textContent = '';
  t.tHead.append(el('tr', {}, ...head.map((h, i) => el('th', { class: i ? 'num' : '', text: h }))));
  const tb = t.tBodies[0];
  tb.textContent = '';
  for (const r of rows) tb.append(el('tr', {}, ...r.map((c, i) => el('td', { class: i ? 'num' : '', text: c }))));
  if (!rows.length) tb.append(el('tr', {}, el('td', { colspan: head.length, class: 'muted', text: 'nothing' })));
}

function status(text, isError = false) {
  const p = $('ex-status');
  p.textContent = text;
  p.className = isError ? 'error' : 'muted';
}

function explore(v) {
  closeExplorer();
  explorer = { view: v, abort: new AbortController(), timer: 0 };
  $('explorer').hidden = false;
  $('explorer').dataset.view = v.name;
  $('ex-title').textContent = `${v.name} · ${v.kind}${v.algebra ? ' · ' + v.algebra : ''}`;
  $('ex-controls').textContent = '';
  $('ex-paging').textContent = '';
  table([], []);
  ({ keyed: exploreKeyed, 'windowed-keyed': exploreWindowedKeyed, windowed: exploreWindowed, aggregate: exploreAggregate }[v.kind] || exploreAggregate)(v);
}

function every(ms, f) {
  f();
  explorer.timer = setInterval(f, ms);
}

async function query(path) {
  const resp = await api(path, { signal: explorer.abort.signal });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const e = new Error(body.error || resp.statusText);
    e.status = resp.status;
    throw e;
  }
  return body;
}

const freshness = (a) => (a.complete ? 'complete (the input was fully applied) · ' : '') + (a.stale ? 'stale: a fragment answered from a standby copy · ' : '') +
  `updated ${clock(Date.now())}`;

function exploreKeyed(v) {
  const state = { mode: 'top', n: 10, prefix: '', key: '', pages: [null] };
  const topN = el('input', { type: 'number', min: 1, max: 1000, value: 10, style: 'width:5em' });
  const search = el('input', { type: 'search', placeholder: 'key or prefix', size: 24 });
  $('ex-controls').append('top', topN, el('button', { text: 'show top', onclick: () => { state.mode = 'top'; state.n = +topN.value || 10; run(); } }),
    search, el('button', { text: 'find key', onclick: () => { state.mode = 'key'; state.key = search.value; run(); } }),
    el('button', { text: 'search prefix', onclick: () => { state.mode = 'prefix'; state.prefix = search.value; state.pages = [null]; run(); } }));
  const u = chart('ex-chart', {
    height: 160, scales: { x: { time: false, range: padded } },
    series: [{ label: 'rank' }, { label: 'value', fill: color(0) + '99', stroke: color(0), paths: bars(), points: { show: false }, value: (u, x) => fmt(x, 2) }],
    axes: [{ label: 'rank', incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500] }, yAxis()],
  }, [[], []]);
  const base = `${v.url}`;
  async function run() {
    $('ex-paging').textContent = '';
    try {
      if (state.mode === 'key') {
        const a = await query(keyURL(base, state.key));
        table(['key', 'value'], [[keyText(a), show(a.value)]]);
        u.setData([[1], [num(a.value)]]);
        status(freshness(a));
        return;
      }
      const q = state.mode === 'top' ? `top=${state.n}`
        : `limit=20&prefix=${encodeURIComponent(state.prefix)}` + (state.pages.at(-1) !== null ? `&${state.pages.at(-1)}` : '');
      const a = await query(`${base}?${q}`);
      const es = a.entries || [];
      table(['key', 'value'], es.map((e) => [keyText(e), show(e.value)]));
      u.setData([es.map((_, i) => i + 1), es.map((e) => num(e.value))]);
      status(`${es.length} entries · ` + freshness(a));
      if (state.mode === 'prefix') {
        const pg = $('ex-paging');
        pg.append(`page ${state.pages.length}`);
        if (state.pages.length > 1) pg.append(el('button', { text: '← previous', onclick: () => { state.pages.pop(); run(); } }));
        if (a.more) pg.append(el('button', { text: 'next →', onclick: () => { state.pages.push(afterParam(a)); run(); } }));
      }
    } catch (e) {
      if (e.name === 'AbortError' || e instanceof AuthError) return;
      status(e.status === 404 ? `not found: ${e.message}` : e.message, true);
      if (e.status === 404) { table(['key', 'value'], []); u.setData([[], []]); }
    }
  }
  every(2000, run);
}

function exploreWindowedKeyed(v) {
  const state = { n: 10, key: '', pick: '', windows: [] };
  const topN = el('input', { type: 'number', min: 1, max: 1000, value: 10, style: 'width:5em' });
  const keyIn = el('input', { type: 'search', placeholder: 'key: its value per window', size: 28 });
  const pick = el('select', { id: 'ex-window', title: 'the window the table shows' });
  pick.addEventListener('change', () => { state.pick = pick.value; showWindow(); });
  $('ex-controls').append('top', topN, 'per window', el('button', { text: 'show', onclick: () => { state.n = +topN.value || 10; state.key = ''; run(); } }),
    'window', pick, keyIn, el('button', { text: 'chart key', onclick: () => { state.key = keyIn.value; run(); } }));
  // showWindow fills the table with the chosen window: by default the
  // latest that holds entries (the newest may hold none yet, or none
  // published).
  function showWindow() {
    const ws = state.windows;
    let w = ws.find((x) => x.start === state.pick);
    if (!w) w = ws.slice().reverse().find((x) => x.entries.length) || ws.at(-1);
    pick.textContent = '';
    for (const x of ws.slice().reverse()) {
      pick.append(el('option', { value: x.start, text: `${clock(x.start)}–${clock(x.end)} · ${fmt(x.keys)} keys${x.complete ? '' : ' (open)'}` }));
    }
    if (w) pick.value = w.start;
    table(['key', 'value'], w ? w.entries.map((e) => [keyText(e), show(e.value)]) : []);
    return w;
  }
  async function run() {
    try {
      if (state.key) {
        const a = await query(keyURL(v.url, state.key));
        const ws = a.windows || (a.window ? [a.window] : []);
        chart('ex-chart', { height: 200, series: [{}, line(state.key, 0, { value: (u, x) => fmt(x, 2) })], axes: [{}, yAxis()] },
          [ws.map((w) => Date.parse(w.start) / 1000), ws.map((w) => num(w.value))]);
        table(['window', 'value'], ws.slice().reverse().map((w) => [`${clock(w.start)}–${clock(w.end)}${w.complete ? '' : ' (open)'}`, show(w.value)]));
        status(`${ws.length} windows hold ${state.key} · ` + freshness(a));
        return;
      }
      const a = await query(`${v.url}?top=${state.n}`);
      const ws = a.windows || (a.window ? [a.window] : []);
      chart('ex-chart', {
        height: 200,
        series: [{}, line('keys in window', 0, { value: (u, x) => fmt(x) }), line('top value', 1, { scale: 'v', value: (u, x) => fmt(x, 2) })],
        axes: [{}, yAxis(), yAxis({ side: 1, scale: 'v', grid: { show: false } })],
        scales: { v: {} },
      }, [ws.map((w) => Date.parse(w.start) / 1000), ws.map((w) => w.keys), ws.map((w) => w.entries.length ? num(w.entries[0].value) : null)]);
      state.windows = ws;
      const w = showWindow();
      status(`${ws.length} windows; the table shows the top ${state.n} of the window chosen` + (w ? ` (${clock(w.start)}–${clock(w.end)}${w.complete ? '' : ', open'})` : '') + ' · ' + freshness(a));
    } catch (e) {
      if (e.name === 'AbortError' || e instanceof AuthError) return;
      status(e.message, true);
    }
  }
  every(2000, run);
}

function exploreWindowed(v) {
  async function run() {
    try {
      const a = await query(`${v.url}?limit=500`);
      const ws = a.windows || (a.window ? [a.window] : []);
      chart('ex-chart', { height: 200, series: [{}, line(v.name, 0, { value: (u, x) => fmt(x, 2) })], axes: [{}, yAxis()] },
        [ws.map((w) => Date.parse(w.start) / 1000), ws.map((w) => num(w.value))]);
      table(['window', 'value'], ws.slice(-20).reverse().map((w) => [`${clock(w.start)}–${clock(w.end)}${w.complete ? '' : ' (open)'}`, show(w.value)]));
      status(`${ws.length} windows · ` + freshness(a));
    } catch (e) {
      if (e.name === 'AbortError' || e instanceof AuthError) return;
      status(e.message, true);
    }
  }
  every(2000, run);
}

// An aggregate's value over time, as its watch stream pushes it.
function exploreAggregate(v) {
  const pts = { t: [], v: [] };
  const u = chart('ex-chart', { height: 200, series: [{}, line(v.name, 0, { value: (u, x) => fmt(x, 2) })], axes: [{}, yAxis()] }, [[], []]);
  const ex = explorer;
  const onValue = (a) => {
    pts.t.push(Date.now() / 1000);
    pts.v.push(num(a.value));
    if (pts.t.length > KEEP) { pts.t.shift(); pts.v.shift(); }
    u.setData([pts.t, pts.v]);
    const val = a.value;
    table(['field', 'value'], val && typeof val === 'object' && !Array.isArray(val)
      ? Object.entries(val).map(([k, x]) => [k, show(x)]) : [['value', show(val)]]);
    status(freshness(a));
  };
  stream(`${v.url}/watch`, (ev, data) => {
    if (ex !== explorer) return;
    const a = JSON.parse(data);
    if (ev === 'snapshot' || ev === 'value') onValue(a);
    else if (ev === 'unavailable') status(`fragments moving (${(a.fragments || []).join(', ')}); retrying`, true);
    else if (ev === 'error') status(a.error, true);
  }, ex.abort.signal);
  // A value that does not change sends nothing: keep the line going.
  explorer.timer = setInterval(() => {
    if (pts.t.length) { pts.t.push(Date.now() / 1000); pts.v.push(pts.v.at(-1)); u.setData([pts.t, pts.v]); }
  }, 2000);
}

// --- start ---------------------------------------------------------------------

let running = null;

async function start() {
  if (running) running.abort();
  running = new AbortController();
  const signal = running.signal;
  try {
    await loadHistory();
    initSeriesCharts();
    stream('/v1/cluster/watch', (ev, data) => { if (ev === 'state') onState(JSON.parse(data)); }, signal, setLive);
    await loadViews();
    await loadAlerts(signal);
    await loadDeadLetters();
    const t = setInterval(() => loadDeadLetters().catch(() => {}), 3000);
    signal.addEventListener('abort', () => clearInterval(t));
  } catch (e) {
    if (!(e instanceof AuthError)) console.error(e);
  }
}

start();

// Ringway's stats dashboard: reads /stats.json every few seconds and updates
// the page in place (no reload), keeps a few minutes of history per upstream
// for its charts, and sends drain / maint / ready orders to the admin API.
// Served by the admin listener itself; it loads nothing from anywhere else.
'use strict';

const REFRESH_MS = Number(document.body.dataset.refreshMs) || 2000;
const HISTORY_POINTS = 150; // five minutes at the default period
const TOKEN_KEY = 'ringway-admin-token';
const ACTIONS = [
  ['drain', 'No new requests; open tunnels end after drain_timeout'],
  ['maint', 'No traffic; open tunnels end now'],
  ['ready', 'Back in service'],
];

const $ = (id) => document.getElementById(id);
const cards = new Map(); // upstream name -> { root, canvas, rows: Map(addr -> row), body, foot, meta }
const history = new Map(); // upstream name -> { rps: [], ws: [], lastRequests, lastAt }
let timer = null;
let refreshes = 0;
let tokenRequired = false;

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function num(n) {
  if (n === null || n === undefined) return '–';
  return Number(n).toLocaleString('en-US');
}

function bytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

function ago(secs) {
  if (secs === null || secs === undefined) return '–';
  const s = Number(secs);
  if (s < 90) return `${s}s`;
  if (s < 5400) return `${Math.round(s / 60)}m`;
  if (s < 172800) return `${(s / 3600).toFixed(1)}h`;
  return `${Math.round(s / 86400)}d`;
}

function ms(v) {
  if (v === null || v === undefined) return '–';
  return v < 1 ? `${v.toFixed(2)}` : `${Math.round(v * 10) / 10}`;
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

function toast(text, bad) {
  const t = $('toast');
  t.textContent = text;
  t.className = bad ? 'toast bad' : 'toast';
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 5000);
}

function canAct() {
  return !tokenRequired || token() !== '';
}

// ---- drawing -------------------------------------------------------------

function drawChart(canvas, h) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const ht = canvas.clientHeight;
  if (w === 0 || ht === 0) return;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(ht * dpr);
  const g = canvas.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, ht);
  const css = getComputedStyle(document.documentElement);
  const line = css.getPropertyValue('--line').trim();
  const muted = css.getPropertyValue('--muted').trim();
  const pad = { l: 40, r: 40, t: 8, b: 16 };
  const pw = w - pad.l - pad.r;
  const ph = ht - pad.t - pad.b;
  const top = (xs) => {
    const m = Math.max(1, ...xs.filter((x) => x !== null));
    const p = 10 ** Math.floor(Math.log10(m));
    return Math.ceil(m / p) * p;
  };
  const rpsTop = top(h.rps);
  const wsTop = top(h.ws);
  g.strokeStyle = line;
  g.lineWidth = 1;
  g.font = '11px system-ui, sans-serif';
  g.fillStyle = muted;
  for (let i = 0; i <= 4; i += 1) {
    const y = pad.t + (ph * i) / 4;
    g.beginPath(); g.moveTo(pad.l, y); g.lineTo(pad.l + pw, y); g.stroke();
  }
  g.textAlign = 'right';
  g.fillText(num(rpsTop), pad.l - 4, pad.t + 8);
  g.fillText('0', pad.l - 4, pad.t + ph);
  g.textAlign = 'left';
  g.fillText(num(wsTop), pad.l + pw + 4, pad.t + 8);
  g.fillText('0', pad.l + pw + 4, pad.t + ph);
  g.textAlign = 'center';
  const span = Math.round((HISTORY_POINTS * REFRESH_MS) / 60000);
  g.fillText(`last ${span} min`, pad.l + pw / 2, ht - 3);
  const plot = (xs, max, colour) => {
    g.strokeStyle = colour;
    g.lineWidth = 2;
    g.beginPath();
    let pen = false;
    xs.forEach((v, i) => {
      if (v === null) { pen = false; return; }
      const x = pad.l + pw - ((xs.length - 1 - i) * pw) / (HISTORY_POINTS - 1);
      const y = pad.t + ph - (v / max) * ph;
      if (pen) g.lineTo(x, y); else g.moveTo(x, y);
      pen = true;
    });
    g.stroke();
  };
  plot(h.rps, rpsTop, css.getPropertyValue('--accent').trim());
  plot(h.ws, wsTop, css.getPropertyValue('--ws').trim());
}

function remember(name, totals) {
  const now = performance.now();
  let h = history.get(name);
  if (!h) {
    h = { rps: [], ws: [], lastRequests: null, lastAt: null };
    history.set(name, h);
  }
  let rate = null;
  if (h.lastRequests !== null && now > h.lastAt && totals.requests_total >= h.lastRequests) {
    rate = ((totals.requests_total - h.lastRequests) * 1000) / (now - h.lastAt);
  }
  h.lastRequests = totals.requests_total;
  h.lastAt = now;
  h.rps.push(rate === null ? null : Math.round(rate * 10) / 10);
  h.ws.push(totals.active_websockets);
  for (const xs of [h.rps, h.ws]) while (xs.length > HISTORY_POINTS) xs.shift();
  return h;
}

// ---- upstream cards ------------------------------------------------------

// [group, header, key]: grouped two-row header, as HAProxy's stats page.
const COLUMNS = [
  [null, 'Server', 'server'], [null, 'State', 'state'], [null, 'Weight', 'weight'],
  ['Sessions', 'cur', 'cur'], ['Sessions', 'max', 'max'], ['Sessions', 'total', 'total'],
  ['WebSockets', 'open', 'ws'],
  ['Bytes', 'in', 'bin'], ['Bytes', 'out', 'bout'],
  ['Errors', 'conn', 'econ'], ['Errors', 'fail', 'efail'], ['Errors', '5xx', 'e5xx'], ['Errors', 'retry', 'retries'],
  ['Health', 'check', 'check'], ['Health', 'changed', 'change'],
  ['Latency ms', 'p50', 'p50'], ['Latency ms', 'p99', 'p99'],
];

function cell(group, header, key) {
  return el('td', { dataset: { key, label: group ? `${group} ${header}` : header } });
}

function cells(into) {
  const out = {};
  for (const [group, header, key] of COLUMNS) {
    out[key] = cell(group, header, key);
    into.append(out[key]);
  }
  return out;
}

function header() {
  const top = el('tr');
  const sub = el('tr');
  let last = null;
  for (const [group, h] of COLUMNS) {
    if (group === null) {
      top.append(el('th', { rowspan: '2', text: h }));
    } else if (group === last) {
      top.lastChild.colSpan += 1;
      sub.append(el('th', { text: h }));
    } else {
      top.append(el('th', { class: 'group', colspan: '1', text: group }));
      sub.append(el('th', { text: h }));
    }
    last = group;
  }
  top.append(el('th', { rowspan: '2', text: '' }));
  return el('thead', {}, top, sub);
}

function newCard(name) {
  const canvas = el('canvas', { class: 'chart', dataset: { upstream: name } });
  const body = el('tbody');
  const foot = el('tfoot');
  const meta = el('span', { class: 'meta' });
  const root = el('section', { class: 'card upstream', dataset: { upstream: name } },
    el('div', { class: 'card-head' }, el('h2', { text: name }), meta),
    el('div', { class: 'legend' },
      el('span', {}, el('i', { class: 'rps' }), 'requests/s (left)'),
      el('span', {}, el('i', { class: 'ws' }), 'open WebSockets (right)')),
    canvas,
    el('div', { class: 'scroll' }, el('table', { class: 'servers' }, header(), body, foot)));
  $('upstreams').append(root);
  const card = { root, canvas, body, foot, meta, rows: new Map() };
  cards.set(name, card);
  return card;
}

function newRow(upstream, addr) {
  const tr = el('tr', { dataset: { server: addr, upstream } });
  const row = cells(tr);
  const actions = el('td', { class: 'actions' });
  const buttons = {};
  for (const [action, title] of ACTIONS) {
    buttons[action] = el('button', {
      type: 'button', title, text: action, dataset: { action },
      onclick: () => act(upstream, addr, action),
    });
    actions.append(buttons[action]);
  }
  tr.append(actions);
  return { tr, cells: row, buttons };
}

function fillTraffic(cells, t) {
  cells.cur.textContent = num(t.active_connections);
  cells.total.textContent = num(t.requests_total);
  cells.ws.textContent = num(t.active_websockets);
  cells.ws.title = `${num(t.websockets_total)} opened`;
  cells.bin.textContent = bytes(t.bytes_in);
  cells.bout.textContent = bytes(t.bytes_out);
  cells.econ.textContent = num(t.connect_errors);
  cells.efail.textContent = num(t.failures);
  cells.e5xx.textContent = num(t.responses['5xx']);
  cells.retries.textContent = num(t.retries);
  cells.p50.textContent = ms(t.latency_ms.p50);
  cells.p99.textContent = ms(t.latency_ms.p99);
  cells.p99.title = `p90 ${ms(t.latency_ms.p90)} ms; connect p50 ${ms(t.connect_ms.p50)} / p99 ${ms(t.connect_ms.p99)} ms`;
  for (const k of ['econ', 'efail', 'e5xx']) {
    cells[k].className = cells[k].textContent !== '0' ? 'warn' : '';
  }
}

function updateRow(row, s, check) {
  row.tr.className = s.state;
  row.cells.server.replaceChildren(s.addr, ...(s.backup ? [el('span', { class: 'tag', text: 'backup' })] : []));
  const badge = el('span', { class: `badge ${s.state}`, text: s.state });
  badge.title = `healthy: ${s.healthy}${s.ejected ? ', passively ejected' : ''}`;
  row.cells.state.replaceChildren(badge);
  row.cells.weight.textContent = s.weight;
  row.cells.max.textContent = num(s.max_connections);
  fillTraffic(row.cells, s);
  if (check) {
    const verdict = s.healthy ? 'ok' : 'failing';
    row.cells.check.textContent = `${check} ${verdict}`;
    row.cells.check.className = s.healthy ? '' : 'bad';
  } else {
    row.cells.check.textContent = 'none';
    row.cells.check.className = 'dim';
  }
  row.cells.check.title = `${num(s.check_failures)} failed checks`;
  row.cells.change.textContent = ago(s.last_change_secs);
  const allowed = canAct();
  const current = { draining: 'drain', maint: 'maint', up: 'ready', down: 'ready' }[s.state];
  for (const [action, b] of Object.entries(row.buttons)) {
    b.disabled = !allowed || action === current;
    b.hidden = !allowed;
  }
}

function renderUpstream(name, u) {
  const card = cards.get(name) || newCard(name);
  card.meta.textContent = `${u.balance} · ${u.servers_up}/${u.servers.length} up · drain ${u.drain_timeout_secs}s`;
  const seen = new Set();
  u.servers.forEach((s) => {
    seen.add(s.addr);
    let row = card.rows.get(s.addr);
    if (!row) {
      row = newRow(name, s.addr);
      card.rows.set(s.addr, row);
    }
    card.body.append(row.tr); // keeps config order
    updateRow(row, s, u.health_check);
  });
  for (const [addr, row] of card.rows) {
    if (!seen.has(addr)) { row.tr.remove(); card.rows.delete(addr); }
  }
  const tr = el('tr', { class: 'totals' });
  const totals = cells(tr);
  tr.append(el('td'));
  totals.server.textContent = 'Total';
  totals.max.textContent = '';
  fillTraffic(totals, u.totals);
  card.foot.replaceChildren(tr);
  drawChart(card.canvas, remember(name, u.totals));
}

// ---- the rest of the page ------------------------------------------------

function tile(value, label) {
  return el('div', { class: 'tile' }, el('b', { text: value }), el('span', { text: label }));
}

function renderProcess(doc) {
  const p = doc.process;
  $('version').textContent = `v${p.version} · pid ${p.pid}`;
  const last = doc.last_reload;
  const reload = last ? `${last.result} ${ago(Math.max(0, Math.round(Date.now() / 1000) - last.time))} ago` : 'none yet';
  $('process').replaceChildren(
    tile(ago(p.uptime_secs), 'uptime'),
    tile(`${num(p.open_connections)} / ${num(p.max_connections)}`, 'client connections'),
    tile(num(p.open_fds), 'open files'),
    tile(bytes(p.rss_bytes), 'resident memory'),
    tile(`${num(doc.reloads.ok)} ok · ${num(doc.reloads.failed)} failed`, `reloads; last ${reload}`),
    tile(num(doc.access_log.written), `log lines; ${num(doc.access_log.dropped)} dropped, ${num(doc.access_log.errors)} errors`),
    tile(num(doc.tunnels_drained), 'tunnels drained'),
  );
}

function renderAlerts(doc) {
  const alerts = [];
  const last = doc.last_reload;
  if (last && last.result !== 'ok') {
    alerts.push([true, `Last reload failed: ${last.errors.join('; ')}`]);
  }
  if (doc.access_log.dropped > 0) {
    alerts.push([false, `${num(doc.access_log.dropped)} access log lines dropped (the writer could not keep up)`]);
  }
  for (const l of doc.listeners) {
    for (const c of l.certificates) {
      if (c.expiring) {
        const when = c.days_left < 0 ? 'has expired' : `expires in ${c.days_left} days`;
        alerts.push([c.days_left < 0, `Certificate ${c.file} (${c.at}) ${when}`]);
      }
    }
  }
  for (const [name, u] of Object.entries(doc.upstreams)) {
    if (u.servers_up === 0) alerts.push([true, `Upstream ${name} has no server in service`]);
  }
  $('alerts').replaceChildren(...alerts.map(([bad, text]) => el('p', { class: bad ? 'alert bad' : 'alert', text })));
}

function table(headers, rows) {
  return el('table', {},
    el('thead', {}, el('tr', {}, ...headers.map((h) => el('th', { text: h })))),
    el('tbody', {}, ...rows.map((cells) => el('tr', {}, ...cells.map((c) => (c instanceof Node ? el('td', {}, c) : el('td', { text: c })))))));
}

function renderListeners(doc) {
  const reasons = (r) => Object.entries(r).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${num(n)}`).join(', ') || '0';
  $('listeners').replaceChildren(table(
    ['Listener', 'TLS', 'Open', 'Accepted', 'Requests', 'Handshakes', 'TLS failures', 'Refused'],
    doc.listeners.map((l) => [l.listen, l.tls ? 'yes' : 'no', num(l.connections_open), num(l.connections_total),
      num(l.requests), l.tls ? num(l.tls_handshakes) : '–', l.tls ? num(l.tls_failures) : '–', reasons(l.refused)]),
  ));
  const certs = doc.listeners.flatMap((l) => l.certificates.map((c) => [l.listen, c]));
  $('certificates').replaceChildren(certs.length === 0
    ? el('p', { class: 'dim', text: 'No TLS listener.' })
    : table(['Listener', 'At', 'File', 'Names', 'Not after', 'Days left'],
      certs.map(([listen, c]) => [listen, c.at, c.file, c.names.join(', '), c.not_after,
        el('span', { class: c.expiring ? 'bad' : '', text: String(c.days_left) })])));
}

function renderControl(doc) {
  tokenRequired = doc.admin.token_required;
  $('control').hidden = !tokenRequired;
  $('control-note').textContent = token()
    ? 'Token kept for this tab only (sessionStorage).'
    : 'Without the token the page is read-only.';
}

function render(doc) {
  renderControl(doc);
  renderProcess(doc);
  renderAlerts(doc);
  const names = Object.keys(doc.upstreams);
  for (const name of names) renderUpstream(name, doc.upstreams[name]);
  for (const [name, card] of cards) {
    if (!names.includes(name)) { card.root.remove(); cards.delete(name); history.delete(name); }
  }
  renderListeners(doc);
}

async function refresh() {
  clearTimeout(timer);
  try {
    const r = await fetch('/stats.json', { cache: 'no-store' });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    render(await r.json());
    refreshes += 1;
    document.body.dataset.refreshes = String(refreshes);
    $('status').textContent = `updated ${new Date().toLocaleTimeString()}`;
    $('status').className = 'status';
  } catch (e) {
    $('status').textContent = `cannot read /stats.json: ${e.message}`;
    $('status').className = 'status bad';
  } finally {
    timer = setTimeout(refresh, REFRESH_MS);
  }
}

async function act(upstream, server, action) {
  const headers = {};
  if (token()) headers.Authorization = `Bearer ${token()}`;
  const url = `/api/upstreams/${encodeURIComponent(upstream)}/servers/${encodeURIComponent(server)}/${action}`;
  try {
    const r = await fetch(url, { method: 'POST', headers });
    const body = await r.json().catch(() => ({}));
    if (r.ok) {
      toast(`${server}: ${body.previous_state} → ${body.state}`, false);
    } else {
      if (r.status === 401) sessionStorage.removeItem(TOKEN_KEY);
      toast(`${action} ${server}: ${r.status} ${body.error || ''}`, true);
    }
  } catch (e) {
    toast(`${action} ${server}: ${e.message}`, true);
  }
  refresh();
}

$('token-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const t = $('token').value.trim();
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  $('token').value = '';
  refresh();
});
$('forget').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  refresh();
});
$('period').textContent = `${REFRESH_MS / 1000} s`;
refresh();

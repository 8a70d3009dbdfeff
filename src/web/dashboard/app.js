// vigil dashboard: live charts from the WebSocket feed, status from the JSON
// API, history on demand. Plain JavaScript, no build step; memory is bounded
// (a fixed number of points per series) so the page can stay open for weeks.
'use strict';

(() => {
  const MAX_POINTS = 600;            // per live series
  const LIVE_WINDOW_MS = 5 * 60 * 1000;
  const HISTORY_POINTS = 500;
  const POLL_MS = 5000;
  const RECONNECT_MAX_MS = 30000;

  const $ = (id) => document.getElementById(id);
  const state = {
    sensors: [],
    cards: new Map(),     // sensor name -> card elements
    series: new Map(),    // "sensor/metric" -> Ring
    dirty: new Set(),     // series keys whose charts need drawing
    latest: new Map(),    // "sensor/metric" -> latest value
    healthDirty: false,
    ws: null,
    attempt: 0,
    reconnectTimer: null,
    refreshTimer: null,
    version: '',
    prefilled: false,
  };

  // ---- small helpers -------------------------------------------------------

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of children) {
      if (c !== null && c !== undefined) e.append(c);
    }
    return e;
  }

  function fmt(v, unit) {
    if (typeof v !== 'number' || !isFinite(v)) return '–';
    const a = Math.abs(v);
    const digits = a >= 1000 ? 0 : a >= 100 ? 1 : 2;
    const text = v.toFixed(digits);
    if (!unit) return text;
    return unit === '%' ? text + ' %' : text + ' ' + unit;
  }

  function ago(iso) {
    if (!iso) return 'never';
    const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.round(s / 60) + ' min ago';
    return Math.round(s / 3600) + ' h ago';
  }

  const seriesKey = (sensor, metric) => sensor + '/' + metric;

  // A fixed-size ring of (time, value) points.
  class Ring {
    constructor(cap) {
      this.t = new Float64Array(cap);
      this.v = new Float64Array(cap);
      this.cap = cap;
      this.start = 0;
      this.len = 0;
    }
    push(t, v) {
      const i = (this.start + this.len) % this.cap;
      this.t[i] = t;
      this.v[i] = v;
      if (this.len < this.cap) this.len++;
      else this.start = (this.start + 1) % this.cap;
    }
    forEach(fn) {
      for (let k = 0; k < this.len; k++) {
        const i = (this.start + k) % this.cap;
        fn(this.t[i], this.v[i]);
      }
    }
  }

  function ring(key) {
    let r = state.series.get(key);
    if (!r) {
      r = new Ring(MAX_POINTS);
      state.series.set(key, r);
    }
    return r;
  }

  // ---- API -----------------------------------------------------------------

  async function api(path, options) {
    const res = await fetch(path, options);
    let body = null;
    try {
      body = await res.json();
    } catch (_) {
      body = null;
    }
    if (!res.ok) {
      const msg = body && body.error ? body.error.message : res.statusText;
      const err = new Error(msg);
      err.status = res.status;
      throw err;
    }
    return body;
  }

  // Admin calls carry the token kept for this browser session only; a 401
  // asks for it and tries once more.
  async function admin(path) {
    for (let attempt = 0; attempt < 2; attempt++) {
      const token = sessionStorage.getItem('vigil-admin-token');
      const headers = token ? { Authorization: 'Bearer ' + token } : {};
      try {
        return await api(path, { method: 'POST', headers });
      } catch (e) {
        if (e.status !== 401 || attempt > 0) throw e;
        const entered = window.prompt('Admin token for this appliance:');
        if (!entered) throw e;
        sessionStorage.setItem('vigil-admin-token', entered.trim());
      }
    }
    return null;
  }

  // ---- sensors -------------------------------------------------------------

  function card(sensor) {
    let c = state.cards.get(sensor.name);
    if (c) return c;
    const badge = el('span', { class: 'badge' });
    const meta = el('div', { class: 'meta' });
    const error = el('div', { class: 'error' });
    const metrics = el('div');
    const root = el('article', { class: 'card', 'data-sensor': sensor.name },
      el('div', { class: 'card-head' }, el('h3', {}, sensor.name), badge),
      meta, error, metrics);
    c = { root, badge, meta, error, metrics, rows: new Map() };
    state.cards.set(sensor.name, c);
    $('sensors').append(root);
    return c;
  }

  function metricRow(c, sensor, metric) {
    let row = c.rows.get(metric);
    if (row) return row;
    const value = el('span', { class: 'metric-value' }, '–');
    const canvas = el('canvas', { height: '60', 'data-series': seriesKey(sensor, metric) });
    const root = el('div', { class: 'metric' },
      el('div', { class: 'metric-head' }, el('span', {}, metric), value),
      el('div', { class: 'chart-box' }, canvas));
    c.metrics.append(root);
    row = { value, canvas, unit: '' };
    c.rows.set(metric, row);
    return row;
  }

  function renderSensors() {
    for (const s of state.sensors) {
      const c = card(s);
      c.badge.textContent = s.status;
      c.badge.className = 'badge s-' + s.status;
      const interval = s.effective_interval_ms !== s.interval_ms
        ? `${s.interval_ms} ms (now ${s.effective_interval_ms} ms)`
        : `${s.interval_ms} ms`;
      c.meta.textContent = `${s.kind} · every ${interval} · ${s.restarts} restarts · read ${ago(s.last_read_at)}`;
      const problem = s.status === 'unavailable' ? s.unavailable_reason
        : s.status === 'suspended' ? 'circuit breaker open: ' + (s.last_error || 'too many failed or slow reads')
        : (s.status === 'failed' || s.status === 'restarting') ? s.last_error : null;
      const revive = s.status === 'failed' && s.next_revive_at
        ? ' · tried again at ' + new Date(s.next_revive_at).toLocaleTimeString() : '';
      c.error.textContent = (problem || '') + revive;
      for (const v of s.last_values || []) {
        const key = seriesKey(s.name, v.metric);
        const row = metricRow(c, s.name, v.metric);
        row.unit = v.unit;
        const r = state.series.get(key);
        if (!r || r.len === 0) {
          row.value.textContent = fmt(v.value, v.unit);
          state.latest.set(key, v.value);
        }
      }
    }
  }

  function lastValue(sensor, metric) {
    return state.latest.get(seriesKey(sensor, metric));
  }

  function renderHealth() {
    const parts = [];
    const cpu = lastValue('system', 'cpu');
    const mem = lastValue('system', 'memory');
    const load = lastValue('system', 'load1');
    const temp = lastValue('cpu_temp', 'temperature');
    if (cpu !== undefined) parts.push(`CPU ${fmt(cpu, '%')}`);
    if (mem !== undefined) parts.push(`memory ${fmt(mem, '%')}`);
    if (load !== undefined) parts.push(`load ${fmt(load, '')}`);
    parts.push(temp !== undefined ? `${fmt(temp, '°C')}` : 'temperature n/a');
    $('health').replaceChildren(...parts.map((p) => el('span', {}, p)));
  }

  // At first paint the sparklines start from history: the last
  // LIVE_WINDOW_MS of each sensor from /api/readings (which includes
  // readings not committed yet), merged with whatever the live feed has
  // already delivered; the live feed keeps them moving from there.
  async function prefill() {
    state.prefilled = true;
    const from = Date.now() - LIVE_WINDOW_MS;
    await Promise.all(state.sensors.map(async (s) => {
      if (!(s.last_values || []).length) return;
      let body;
      try {
        body = await api(`/api/readings?sensor=${encodeURIComponent(s.name)}&from=${from}` +
          '&order=desc&limit=1000&fields=metric,value,ts_ms');
      } catch (_) {
        return;
      }
      const byKey = new Map();
      for (const r of body.readings) {
        const key = seriesKey(s.name, r.metric);
        if (!byKey.has(key)) byKey.set(key, []);
        byKey.get(key).push([r.ts_ms, r.value]);
      }
      for (const [key, points] of byKey) {
        const r = ring(key);
        const seen = new Set();
        r.forEach((t, v) => points.push([t, v]));
        points.sort((a, b) => a[0] - b[0]);
        const merged = points.filter(([t]) => !seen.has(t) && seen.add(t));
        const fresh = new Ring(MAX_POINTS);
        for (const [t, v] of merged.slice(-MAX_POINTS)) fresh.push(t, v);
        state.series.set(key, fresh);
        state.dirty.add(key);
      }
    }));
  }

  async function refreshSensors() {
    try {
      const body = await api('/api/sensors');
      state.sensors = body.sensors;
      renderSensors();
      renderHealth();
      fillHistorySeries();
      if (!state.prefilled) prefill();
    } catch (e) {
      $('footer-text').textContent = 'API unavailable: ' + e.message;
    }
  }

  // ---- supervision ---------------------------------------------------------

  function treeNode(n) {
    const detail = [];
    if (n.restarts) detail.push(`${n.restarts} restarts`);
    if (n.next_retry_in_ms !== null && n.next_retry_in_ms !== undefined) {
      detail.push(`retry in ${Math.round(n.next_retry_in_ms / 100) / 10} s`);
    }
    if (n.next_revive_in_ms !== null && n.next_revive_in_ms !== undefined) {
      detail.push(`revive in ${Math.round(n.next_revive_in_ms / 1000)} s`);
    }
    if (n.reviving) detail.push('revive attempt running');
    if (n.last_error) detail.push(n.last_error);
    const restart = n.kind === 'supervisor' ? null
      : el('button', { type: 'button', title: 'restart ' + n.name, onclick: () => restartChild(n.name) }, 'restart');
    const li = el('li', {},
      el('div', { class: 'node' },
        el('span', { class: 'name' }, n.name),
        el('span', { class: 'badge s-' + n.state }, n.state),
        el('span', { class: 'detail' }, n.kind + (detail.length ? ' · ' + detail.join(' · ') : '')),
        restart));
    if (n.children && n.children.length) li.append(el('ul', {}, ...n.children.map(treeNode)));
    return li;
  }

  async function restartChild(name) {
    try {
      await admin('/api/admin/restart/' + encodeURIComponent(name));
      scheduleRefresh();
    } catch (e) {
      window.alert('Restart of ' + name + ' failed: ' + e.message);
    }
  }

  async function refreshTree() {
    try {
      const body = await api('/api/supervisor');
      $('tree').replaceChildren(el('ul', {}, treeNode(body.tree)));
      const events = body.events.slice(-20).reverse().map((e) =>
        el('li', {}, `${new Date(e.at_ms).toLocaleTimeString()} ${e.supervisor}/${e.child} ${e.event}` +
          (e.detail ? ` (${e.detail})` : '')));
      $('events').replaceChildren(...events);
    } catch (e) {
      $('tree').textContent = 'supervisor unavailable: ' + e.message;
    }
  }

  function scheduleRefresh() {
    if (state.refreshTimer) return;
    state.refreshTimer = setTimeout(() => {
      state.refreshTimer = null;
      refreshSensors();
      refreshTree();
    }, 300);
  }

  // ---- live feed -----------------------------------------------------------

  function setConn(kind, text) {
    $('conn').className = 'conn conn-' + kind;
    $('conn-text').textContent = text;
  }

  function connect() {
    clearTimeout(state.reconnectTimer);
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    let ws;
    try {
      ws = new WebSocket(`${proto}://${location.host}/ws`);
    } catch (e) {
      reconnectLater();
      return;
    }
    state.ws = ws;
    setConn('connecting', 'connecting');
    ws.onopen = () => {
      state.attempt = 0;
      setConn('live', 'live');
      ws.send(JSON.stringify({ type: 'subscribe' }));
      scheduleRefresh();
    };
    ws.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (_) {
        return;
      }
      onMessage(msg);
    };
    ws.onclose = () => {
      if (state.ws === ws) {
        state.ws = null;
        reconnectLater();
      }
    };
  }

  // Exponential backoff with jitter, so a restarted appliance is not hit by
  // every open page at once.
  function reconnectLater() {
    const base = Math.min(RECONNECT_MAX_MS, 1000 * Math.pow(2, state.attempt));
    const delay = Math.round(base * (0.5 + Math.random() / 2));
    state.attempt++;
    setConn('offline', `offline, retrying in ${Math.ceil(delay / 1000)} s`);
    state.reconnectTimer = setTimeout(connect, delay);
  }

  function onMessage(msg) {
    switch (msg.type) {
      case 'readings':
        for (const r of msg.readings) {
          const key = seriesKey(r.sensor, r.metric);
          ring(key).push(r.ts_ms, r.value);
          state.dirty.add(key);
          state.latest.set(key, r.value);
          if (r.sensor === 'system' || r.sensor === 'cpu_temp') state.healthDirty = true;
          const c = state.cards.get(r.sensor);
          if (c) {
            const row = metricRow(c, r.sensor, r.metric);
            row.unit = r.unit;
            row.value.textContent = fmt(r.value, r.unit);
          }
        }
        break;
      case 'status':
        scheduleRefresh();
        if (msg.event && msg.event.kind === 'pacing') refreshPacing();
        if (msg.event && (msg.event.kind === 'breaker' || msg.event.kind === 'memory')) refreshGuards();
        break;
      case 'alert':
        refreshAlerts();
        break;
      case 'hello':
        state.version = msg.version;
        $('footer-text').textContent = `vigil ${msg.version} · live feed session ${msg.session}`;
        break;
      default:
        break;
    }
  }

  // ---- charts --------------------------------------------------------------

  function fitCanvas(canvas) {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(canvas.clientWidth * dpr));
    const h = Math.max(1, Math.round(canvas.clientHeight * dpr));
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
    }
    const ctx = canvas.getContext('2d');
    ctx.clearRect(0, 0, w, h);
    return { ctx, w, h, dpr };
  }

  function chartColour() {
    return getComputedStyle(document.documentElement).getPropertyValue('--chart').trim() || '#0b5cad';
  }

  // The last LIVE_WINDOW_MS, or less while less has been received, so a
  // freshly opened page shows a full-width line at once.
  function drawSpark(canvas, r) {
    const { ctx, w, h, dpr } = fitCanvas(canvas);
    const now = Date.now();
    let oldest = now;
    r.forEach((t) => {
      oldest = Math.min(oldest, t);
    });
    const from = Math.max(now - LIVE_WINDOW_MS, oldest);
    const span = Math.max(1, now - from);
    let lo = Infinity;
    let hi = -Infinity;
    r.forEach((t, v) => {
      if (t >= from) {
        lo = Math.min(lo, v);
        hi = Math.max(hi, v);
      }
    });
    if (!isFinite(lo)) return;
    if (hi - lo < 1e-9) {
      hi += 0.5;
      lo -= 0.5;
    }
    const pad = 3 * dpr;
    const x = (t) => ((t - from) / span) * w;
    const y = (v) => h - pad - ((v - lo) / (hi - lo)) * (h - 2 * pad);
    ctx.strokeStyle = chartColour();
    ctx.lineWidth = 1.5 * dpr;
    ctx.beginPath();
    let started = false;
    r.forEach((t, v) => {
      if (t < from) return;
      if (started) ctx.lineTo(x(t), y(v));
      else {
        ctx.moveTo(x(t), y(v));
        started = true;
      }
    });
    ctx.stroke();
    let lastT = 0;
    let lastV = 0;
    r.forEach((t, v) => {
      lastT = t;
      lastV = v;
    });
    ctx.fillStyle = ctx.strokeStyle;
    ctx.beginPath();
    ctx.arc(Math.min(x(lastT), w - 2 * dpr), y(lastV), 2 * dpr, 0, 2 * Math.PI);
    ctx.fill();
    canvas.dataset.points = String(r.len);
  }

  function frame() {
    if (state.healthDirty) {
      state.healthDirty = false;
      renderHealth();
    }
    if (state.dirty.size) {
      for (const key of state.dirty) {
        const canvas = document.querySelector(`canvas[data-series="${CSS.escape(key)}"]`);
        const r = state.series.get(key);
        if (canvas && r) drawSpark(canvas, r);
      }
      state.dirty.clear();
    }
    requestAnimationFrame(frame);
  }

  // ---- history -------------------------------------------------------------

  function fillHistorySeries() {
    const select = $('history-series');
    const wanted = [];
    for (const s of state.sensors) {
      for (const v of s.last_values || []) wanted.push(seriesKey(s.name, v.metric));
    }
    const have = Array.from(select.options).map((o) => o.value);
    if (wanted.length === have.length && wanted.every((k, i) => k === have[i])) return;
    const current = select.value;
    select.replaceChildren(...wanted.map((k) => el('option', { value: k }, k)));
    if (wanted.includes(current)) select.value = current;
    if (!current && wanted.length) loadHistory();
  }

  // Buckets of {t, min, max, mean} for the chosen range, from the tier of
  // storage the server picks for the resolution asked.
  async function fetchHistory(sensor, metric, from, to) {
    const q = `sensor=${encodeURIComponent(sensor)}&metric=${encodeURIComponent(metric)}` +
      `&from=${from}&to=${to}&points=${HISTORY_POINTS}`;
    const body = await api(`/api/series?${q}`);
    const s = body.series[0];
    if (!s) return { source: '/api/series', buckets: [] };
    return {
      source: `/api/series (${s.tier}, ${Math.round(s.bucket_ms / 1000)} s buckets)`,
      buckets: s.buckets.map((b) => ({ t: b.ts_ms, min: b.min, max: b.max, mean: b.mean })),
    };
  }

  function drawHistory(canvas, buckets, from, to, unit) {
    const { ctx, w, h, dpr } = fitCanvas(canvas);
    canvas.dataset.points = String(buckets.length);
    if (!buckets.length) return;
    let lo = Math.min(...buckets.map((b) => b.min));
    let hi = Math.max(...buckets.map((b) => b.max));
    if (hi - lo < 1e-9) {
      hi += 0.5;
      lo -= 0.5;
    }
    const left = 48 * dpr;
    const pad = 8 * dpr;
    const x = (t) => left + ((t - from) / (to - from)) * (w - left - pad);
    const y = (v) => h - pad - ((v - lo) / (hi - lo)) * (h - 2 * pad);
    const colour = chartColour();
    ctx.fillStyle = colour + '33';
    ctx.beginPath();
    buckets.forEach((b, i) => (i ? ctx.lineTo(x(b.t), y(b.max)) : ctx.moveTo(x(b.t), y(b.max))));
    for (let i = buckets.length - 1; i >= 0; i--) ctx.lineTo(x(buckets[i].t), y(buckets[i].min));
    ctx.closePath();
    ctx.fill();
    ctx.strokeStyle = colour;
    ctx.lineWidth = 1.5 * dpr;
    ctx.beginPath();
    buckets.forEach((b, i) => (i ? ctx.lineTo(x(b.t), y(b.mean)) : ctx.moveTo(x(b.t), y(b.mean))));
    ctx.stroke();
    ctx.fillStyle = '#4d5965';
    ctx.font = `${11 * dpr}px system-ui, sans-serif`;
    ctx.fillText(fmt(hi, unit), 2 * dpr, y(hi) + 10 * dpr);
    ctx.fillText(fmt(lo, unit), 2 * dpr, y(lo));
  }

  async function loadHistory() {
    const key = $('history-series').value;
    if (!key) return;
    const cut = key.indexOf('/');
    const sensor = key.slice(0, cut);
    const metric = key.slice(cut + 1);
    const to = Date.now();
    const from = to - Number($('history-range').value);
    const note = $('history-note');
    note.textContent = 'loading…';
    try {
      const { source, buckets } = await fetchHistory(sensor, metric, from, to);
      const s = state.sensors.find((x) => x.name === sensor);
      const v = s && (s.last_values || []).find((x) => x.metric === metric);
      drawHistory($('history-chart'), buckets, from, to, v ? v.unit : '');
      note.textContent = `${buckets.length} points of ${key} from ${source}`;
    } catch (e) {
      note.textContent = 'history unavailable: ' + e.message;
    }
  }

  // ---- pacing --------------------------------------------------------------

  async function refreshPacing() {
    let p;
    try {
      p = await api('/api/pacing');
    } catch (e) {
      $('pacing').textContent = 'pacing unavailable: ' + e.message;
      return;
    }
    const level = p.enabled ? p.level : 'disabled';
    const parts = [
      el('span', { class: 'badge s-' + (level === 'normal' ? 'running' : level === 'critical' ? 'failed' : 'restarting') }, level),
      el('span', {}, `intervals ×${p.multiplier}`),
      el('span', { class: 'detail' }, p.why.summary),
    ];
    if (p.thermal.available) parts.push(el('span', {}, `${fmt(p.thermal.temperature_c, '°C')} (${p.thermal.source})`));
    if (p.paused_sensors.length) parts.push(el('span', { class: 'error' }, 'paused: ' + p.paused_sensors.join(', ')));
    $('pacing').replaceChildren(el('div', { class: 'node' }, ...parts));
  }

  // ---- guards --------------------------------------------------------------

  function pct(v) {
    return v === null || v === undefined ? '–' : `${Math.round(v)} %`;
  }

  async function refreshGuards() {
    let g;
    try {
      g = await api('/api/guards');
    } catch (e) {
      $('guards').textContent = 'guards unavailable: ' + e.message;
      return;
    }
    const rows = g.breakers.map((b) => {
      const detail = [`${b.calls_in_window} calls: ${pct(b.failure_rate)} failed, ${pct(b.slow_rate)} slow`];
      if (b.trips) detail.push(`${b.trips} trips`);
      if (b.next_trial_in_ms !== null) detail.push(`trial in ${Math.ceil(b.next_trial_in_ms / 1000)} s`);
      if (b.state !== 'closed' && b.last_reason) detail.push(b.last_reason);
      return el('div', { class: 'node', 'data-breaker': b.name },
        el('span', { class: 'name' }, b.name),
        el('span', { class: 'badge s-' + b.state }, b.state.replace('_', '-')),
        el('span', { class: 'detail' }, detail.join(' · ')));
    });
    const m = g.memory;
    const mib = (b) => `${(b / 1048576).toFixed(1)} MiB`;
    rows.push(el('div', { class: 'node' },
      el('span', { class: 'name' }, 'memory'),
      el('span', { class: 'badge s-' + (!m.enabled ? 'disabled' : m.above_soft_limit ? 'open' : 'closed') },
        !m.enabled ? 'off' : m.above_soft_limit ? 'above limit' : 'ok'),
      el('span', { class: 'detail' },
        (m.rss_bytes ? `RSS ${mib(m.rss_bytes)} of ${mib(m.soft_limit_bytes)}` : 'RSS not measured yet') +
        (m.sheds ? ` · shed ${m.sheds} times` : ''))));
    const h = g.http;
    rows.push(el('div', { class: 'node' },
      el('span', { class: 'name' }, 'rate limits'),
      el('span', { class: 'detail' },
        (h.enabled ? `${h.requests_per_sec}/s per client (${h.clients} clients, ${h.rejected} refused)` : 'HTTP: off') +
        ` · admin ${g.admin.ops_per_minute}/min (${g.admin.rejected} refused)`)));
    $('guards').replaceChildren(...rows);
  }

  // ---- alerts --------------------------------------------------------------

  async function refreshAlerts() {
    let body;
    try {
      body = await api('/api/alerts?state=firing');
    } catch (_) {
      return;
    }
    const items = body.alerts.map((a) => el('div', { class: 'alert ' + a.severity, 'data-alert': String(a.id) },
      el('strong', {}, a.severity),
      el('span', {}, a.message),
      el('span', { class: 'detail' }, 'since ' + new Date(a.fired_at_ms).toLocaleTimeString()),
      a.acknowledged ? el('span', { class: 'detail' }, 'acknowledged')
        : el('button', { type: 'button', onclick: () => ackAlert(a.id) }, 'acknowledge')));
    const box = $('alerts');
    box.replaceChildren(...items);
    box.hidden = items.length === 0;
  }

  async function ackAlert(id) {
    try {
      await admin(`/api/alerts/${encodeURIComponent(id)}/ack`);
      refreshAlerts();
    } catch (e) {
      window.alert('Acknowledge failed: ' + e.message);
    }
  }

  // ---- start ---------------------------------------------------------------

  $('history-form').addEventListener('submit', (e) => {
    e.preventDefault();
    loadHistory();
  });
  window.addEventListener('resize', () => {
    for (const key of state.series.keys()) state.dirty.add(key);
  });
  refreshSensors();
  refreshTree();
  refreshAlerts();
  refreshPacing();
  refreshGuards();
  connect();
  setInterval(refreshSensors, POLL_MS);
  setInterval(refreshTree, POLL_MS);
  setInterval(refreshAlerts, POLL_MS);
  setInterval(refreshPacing, POLL_MS);
  setInterval(refreshGuards, POLL_MS);
  requestAnimationFrame(frame);
})();

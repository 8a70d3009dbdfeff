// vigil dashboard: compact sensor cards with charts that have data at first
// paint (from /api/series, which includes readings not committed yet) and
// move with the live feed; a history chart over 5 minutes to a year that
// zooms into finer storage tiers; times in a zone the user picks; and the
// sensors and alert rules edited through the admin API. Plain JavaScript
// on the vendored uPlot, no build step; memory is bounded (a fixed number
// of points per chart) so the page can stay open for weeks.
'use strict';

(() => {
  const MAX_POINTS = 600;            // per card chart
  const CARD_WINDOW_MS = 15 * 60 * 1000;
  const HISTORY_POINTS = 600;
  const POLL_MS = 5000;
  const RECONNECT_MAX_MS = 30000;
  const MIN_ZOOM_MS = 10000;
  const SPARK_HEIGHT = 72;
  // Okabe-Ito: distinguishable with every common colour-vision deficiency.
  const COLOURS = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#000000'];

  const $ = (id) => document.getElementById(id);
  const state = {
    sensors: [],
    cards: new Map(),     // sensor name -> card
    latest: new Map(),    // "sensor/metric" -> latest value
    healthDirty: false,
    ws: null,
    attempt: 0,
    reconnectTimer: null,
    refreshTimer: null,
    appliance: { zone: null, offsetMin: 0 },
    history: { sensor: '', range: 3600000, from: 0, to: 0, chart: null, seq: 0 },
    config: null,
    editingSensor: null,
    editingRule: null,
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

  // ---- times ---------------------------------------------------------------

  const prefs = {
    tz: localStorage.getItem('vigil-tz') || 'browser',
    clock: localStorage.getItem('vigil-clock') || '24',
  };
  const formatters = new Map();

  function zoneValid(zone) {
    try {
      new Intl.DateTimeFormat('en', { timeZone: zone });
      return true;
    } catch (_) {
      return false;
    }
  }

  // The zone times are shown in, and how to get there: an IANA name Intl
  // knows, or (an appliance zone without one) a fixed offset from UTC.
  function zone() {
    if (prefs.tz === 'utc') return { name: 'UTC', intl: 'UTC', shift: 0 };
    if (prefs.tz === 'appliance') {
      const a = state.appliance;
      if (a.zone && zoneValid(a.zone)) return { name: a.zone, intl: a.zone, shift: 0 };
      const m = a.offsetMin;
      const sign = m < 0 ? '-' : '+';
      const hh = String(Math.floor(Math.abs(m) / 60)).padStart(2, '0');
      const mm = String(Math.abs(m) % 60).padStart(2, '0');
      return { name: `UTC${sign}${hh}:${mm}`, intl: 'UTC', shift: m * 60000 };
    }
    const local = Intl.DateTimeFormat().resolvedOptions().timeZone || 'local';
    return { name: local, intl: undefined, shift: 0 };
  }

  function formatter(kind) {
    const z = zone();
    const key = kind + '|' + z.name + '|' + prefs.clock;
    let f = formatters.get(key);
    if (f) return f;
    const opts = { timeZone: z.intl };
    if (prefs.clock === '24') opts.hourCycle = 'h23';
    if (kind === 'time' || kind === 'datetime' || kind === 'seconds') {
      opts.hour = '2-digit';
      opts.minute = '2-digit';
    }
    if (kind === 'seconds' || kind === 'datetime') opts.second = '2-digit';
    if (kind === 'date' || kind === 'datetime' || kind === 'daytime') {
      opts.month = 'short';
      opts.day = 'numeric';
    }
    if (kind === 'daytime') {
      opts.hour = '2-digit';
      opts.minute = '2-digit';
    }
    if (kind === 'year') {
      opts.year = 'numeric';
      opts.month = 'short';
    }
    // 24-hour: a locale-neutral English layout; otherwise the locale's.
    const f2 = new Intl.DateTimeFormat(prefs.clock === '24' ? 'en-GB' : undefined, opts);
    f = (ms) => f2.format(new Date(ms + z.shift));
    formatters.set(key, f);
    return f;
  }

  const fmtTime = (ms) => formatter('seconds')(ms);
  const fmtDateTime = (ms) => formatter('datetime')(ms);

  // Axis labels fitting the span shown.
  function axisValues(span) {
    const kind = span <= 120000 ? 'seconds' : span <= 2 * 86400000 ? 'time'
      : span <= 60 * 86400000 ? 'daytime' : 'date';
    const f = formatter(span > 400 * 86400000 ? 'year' : kind);
    return (u, splits) => splits.map((t) => f(t));
  }

  function showZone() {
    const z = zone();
    $('tz-name').textContent = z.name + (prefs.clock === '24' ? ', 24-hour' : '');
    $('tz').value = prefs.tz;
    $('clock').value = prefs.clock;
  }

  function onTimePrefs() {
    prefs.tz = $('tz').value;
    prefs.clock = $('clock').value;
    localStorage.setItem('vigil-tz', prefs.tz);
    localStorage.setItem('vigil-clock', prefs.clock);
    formatters.clear();
    showZone();
    for (const c of state.cards.values()) if (c.chart) c.chart.redraw(false, true);
    if (state.history.chart) state.history.chart.redraw(false, true);
    refreshTree();
    refreshAlerts();
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
    if (res.status === 401 && state.access && state.access.login_required && !options) {
      // The session expired or was logged out: the reads need a login again.
      window.location.assign('/login');
    }
    if (!res.ok) {
      const msg = body && body.error ? body.error.message : res.statusText;
      const err = new Error(msg);
      err.status = res.status;
      err.body = body;
      throw err;
    }
    return body;
  }

  // Admin calls carry the token kept for this browser session only; a 401
  // asks for it and tries once more.
  async function admin(path, method, body, ask = true) {
    for (let attempt = 0; attempt < 2; attempt++) {
      const token = sessionStorage.getItem('vigil-admin-token');
      const headers = token ? { Authorization: 'Bearer ' + token } : {};
      const options = { method: method || 'POST', headers };
      if (body !== undefined) {
        headers['Content-Type'] = 'application/json';
        options.body = JSON.stringify(body);
      }
      try {
        return await api(path, options);
      } catch (e) {
        if (e.status !== 401 || attempt > 0 || !ask) throw e;
        const entered = window.prompt('Admin token for this appliance:');
        if (!entered) throw e;
        sessionStorage.setItem('vigil-admin-token', entered.trim());
      }
    }
    return null;
  }

  // Buckets of every metric of `sensor` over [from, to) at most `points`
  // wide, aligned on shared timestamps for one chart: [xs, ys...].
  async function fetchSeries(sensor, from, to, points) {
    const q = `sensor=${encodeURIComponent(sensor)}&from=${Math.round(from)}&to=${Math.round(to)}&points=${points}`;
    const body = await api(`/api/series?${q}`);
    const times = new Set();
    for (const s of body.series) for (const b of s.buckets) times.add(b.ts_ms);
    const xs = Array.from(times).sort((a, b) => a - b);
    const at = new Map(xs.map((t, i) => [t, i]));
    const columns = body.series.map((s) => {
      const ys = new Array(xs.length).fill(null);
      for (const b of s.buckets) ys[at.get(b.ts_ms)] = b.mean;
      return ys;
    });
    return {
      metrics: body.series.map((s) => ({ metric: s.metric, unit: s.unit })),
      data: [xs, ...columns],
      tier: body.series.length ? body.series[0].tier : 'none',
      bucketMs: body.series.length ? body.series[0].bucket_ms : 0,
      buckets: xs.length,
    };
  }

  // ---- charts --------------------------------------------------------------

  // uPlot options for `metrics` (one series each); one y scale per unit,
  // the first two with an axis (left, right).
  function chartOptions(metrics, width, height, compact) {
    const units = [];
    for (const m of metrics) if (!units.includes(m.unit)) units.push(m.unit);
    const scales = { x: { time: true } };
    for (const u of units) scales['u:' + u] = { auto: true };
    const axes = [{
      stroke: '#4d5965',
      grid: { stroke: '#e3e7eb', width: 1 },
      ticks: { stroke: '#d5dbe1', width: 1 },
      values: (u, splits) => axisValues((u.scales.x.max || 0) - (u.scales.x.min || 0))(u, splits),
      size: compact ? 24 : 36,
      font: compact ? '10px system-ui' : '12px system-ui',
      space: compact ? 70 : 90,
    }];
    units.slice(0, 2).forEach((unit, i) => axes.push({
      scale: 'u:' + unit,
      side: i === 0 ? 3 : 1,
      stroke: '#4d5965',
      grid: { show: i === 0, stroke: '#eef1f4', width: 1 },
      ticks: { show: false },
      values: (u, splits) => splits.map((v) => fmt(v, unit)),
      size: compact ? 52 : 66,
      font: compact ? '10px system-ui' : '12px system-ui',
    }));
    return {
      width,
      height,
      ms: 1,
      scales,
      axes,
      legend: { show: !compact, live: true },
      cursor: compact ? { show: true, drag: { x: false, y: false }, points: { size: 5 } }
        : { drag: { x: true, y: false, setScale: false }, points: { size: 7 } },
      series: [
        { label: 'time', value: (u, v) => (v === null || v === undefined ? '–' : fmtDateTime(v)) },
        ...metrics.map((m, i) => ({
          label: m.unit ? `${m.metric} (${m.unit})` : m.metric,
          scale: 'u:' + m.unit,
          stroke: COLOURS[i % COLOURS.length],
          width: 1.5,
          spanGaps: true,
          points: { show: false },
          value: (u, v) => fmt(v, m.unit),
        })),
      ],
    };
  }

  function widthOf(node, fallback) {
    return Math.max(120, Math.floor(node.clientWidth || fallback));
  }

  // ---- sensor cards --------------------------------------------------------

  function card(sensor) {
    let c = state.cards.get(sensor.name);
    if (c) return c;
    const badge = el('span', { class: 'badge' });
    const meta = el('div', { class: 'meta' });
    const error = el('div', { class: 'error' });
    const at = el('span', { class: 'metric-name' });
    const values = el('div', { class: 'values' }, at);
    const spark = el('div', { class: 'spark', 'data-points': '0' });
    const root = el('article', { class: 'card', 'data-sensor': sensor.name },
      el('div', { class: 'card-head' }, el('h3', {}, sensor.name), badge),
      meta, values, spark, error);
    c = {
      root, badge, meta, error, values, spark, at,
      rows: new Map(),     // metric -> value element
      metrics: [],         // [{metric, unit}] in chart order
      points: new Map(),   // ts -> Map(metric -> value), bounded
      chart: null,
      dirty: false,
      loaded: false,
    };
    state.cards.set(sensor.name, c);
    $('sensors').append(root);
    return c;
  }

  function valueRow(c, metric, unit) {
    let row = c.rows.get(metric);
    if (!row) {
      row = el('span', { class: 'metric-value' }, '–');
      c.at.before(el('span', {}, el('span', { class: 'metric-name' }, metric + ' '), row));
      c.rows.set(metric, row);
    }
    if (!c.metrics.some((m) => m.metric === metric)) {
      c.metrics.push({ metric, unit: unit || '' });
      c.chart = rebuild(c.chart);
    }
    return row;
  }

  function rebuild(chart) {
    if (chart) chart.destroy();
    return null;
  }

  function addPoint(c, ts, metric, value) {
    let p = c.points.get(ts);
    if (!p) {
      p = new Map();
      c.points.set(ts, p);
      if (c.points.size > MAX_POINTS) {
        const oldest = Math.min(...c.points.keys());
        c.points.delete(oldest);
      }
    }
    p.set(metric, value);
    c.dirty = true;
  }

  function cardData(c) {
    const cut = Date.now() - CARD_WINDOW_MS;
    const xs = Array.from(c.points.keys()).filter((t) => t >= cut).sort((a, b) => a - b);
    return [xs, ...c.metrics.map((m) => xs.map((t) => {
      const v = c.points.get(t).get(m.metric);
      return v === undefined ? null : v;
    }))];
  }

  function drawCard(c) {
    c.dirty = false;
    if (!c.metrics.length || typeof uPlot === 'undefined') return;
    const data = cardData(c);
    if (!c.chart) {
      c.spark.replaceChildren();
      const opts = chartOptions(c.metrics, widthOf(c.spark, 280), SPARK_HEIGHT, true);
      opts.hooks = { setCursor: [(u) => hover(c, u)] };
      c.chart = new uPlot(opts, data, c.spark);
    } else {
      c.chart.setData(data);
    }
    c.spark.dataset.points = String(data[0].length);
  }

  // Under the pointer, the card's values are those of the moment pointed
  // at (and say when); away from the chart, the latest again.
  function hover(c, u) {
    const i = u.cursor.idx;
    const name = c.root.dataset.sensor;
    c.metrics.forEach((m, k) => {
      const row = c.rows.get(m.metric);
      if (!row) return;
      const v = i === null || i === undefined ? state.latest.get(seriesKey(name, m.metric)) : u.data[k + 1][i];
      row.textContent = fmt(v === null ? undefined : v, m.unit);
    });
    c.at.textContent = i === null || i === undefined ? '' : 'at ' + fmtTime(u.data[0][i]);
  }

  // At first paint each card's chart starts from the last CARD_WINDOW_MS
  // of its sensor; the live feed keeps it moving from there.
  async function loadCard(s) {
    const c = card(s);
    if (c.loaded) return;
    c.loaded = true;
    const to = Date.now();
    try {
      // One-second buckets: as fine as the live feed for most sensors.
      const r = await fetchSeries(s.name, to - CARD_WINDOW_MS, to + 1000, CARD_WINDOW_MS / 1000);
      r.metrics.forEach((m) => valueRow(c, m.metric, m.unit));
      r.data[0].forEach((t, i) => {
        r.metrics.forEach((m, k) => {
          const v = r.data[k + 1][i];
          if (v !== null) addPoint(c, t, m.metric, v);
        });
      });
      drawCard(c);
      // What the chart was first drawn with from the API, before (and
      // whatever) the live feed adds.
      c.spark.dataset.firstPoints = String(r.data[0].length);
    } catch (_) {
      c.loaded = false;
    }
  }

  function renderSensors() {
    const names = new Set(state.sensors.map((s) => s.name));
    for (const [name, c] of state.cards) {
      if (!names.has(name)) {
        if (c.chart) c.chart.destroy();
        c.root.remove();
        state.cards.delete(name);
      }
    }
    for (const s of state.sensors) {
      const c = card(s);
      c.badge.textContent = s.status;
      c.badge.className = 'badge s-' + s.status;
      const interval = s.effective_interval_ms !== s.interval_ms
        ? `${s.interval_ms} ms (now ${s.effective_interval_ms} ms)`
        : `${s.interval_ms} ms`;
      c.meta.textContent = `${s.kind} · every ${interval} · ${s.restarts} restarts · read ${ago(s.last_read_at)}`;
      c.meta.title = c.meta.textContent;
      const problem = s.status === 'unavailable' ? s.unavailable_reason
        : s.status === 'suspended' ? 'circuit breaker open: ' + (s.last_error || 'too many failed or slow reads')
        : (s.status === 'failed' || s.status === 'restarting') ? s.last_error : null;
      const revive = s.status === 'failed' && s.next_revive_at
        ? ' · tried again at ' + fmtTime(Date.parse(s.next_revive_at)) : '';
      c.error.textContent = (problem || '') + revive;
      for (const v of s.last_values || []) {
        const row = valueRow(c, v.metric, v.unit);
        const key = seriesKey(s.name, v.metric);
        if (!state.latest.has(key)) {
          row.textContent = fmt(v.value, v.unit);
          state.latest.set(key, v.value);
        }
      }
      if (s.enabled) loadCard(s);
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

  async function refreshSensors() {
    try {
      const body = await api('/api/sensors');
      state.sensors = body.sensors;
      renderSensors();
      renderHealth();
      fillHistorySensors();
      fillRuleSensors();
    } catch (e) {
      $('footer-text').textContent = 'API unavailable: ' + e.message;
    }
  }

  // ---- history -------------------------------------------------------------

  function fillHistorySensors() {
    const select = $('history-sensor');
    const wanted = state.sensors.filter((s) => (s.last_values || []).length || s.enabled).map((s) => s.name);
    const have = Array.from(select.options).map((o) => o.value);
    if (wanted.length === have.length && wanted.every((k, i) => k === have[i])) return;
    const current = select.value;
    select.replaceChildren(...wanted.map((k) => el('option', { value: k }, k)));
    if (wanted.includes(current)) select.value = current;
    if (!state.history.sensor && wanted.length) {
      state.history.sensor = select.value;
      showRange(state.history.range);
    }
  }

  // The chosen range, ending now.
  function showRange(range) {
    state.history.range = range;
    for (const b of document.querySelectorAll('[data-range]')) {
      b.setAttribute('aria-pressed', String(Number(b.dataset.range) === range));
    }
    const to = Date.now();
    loadHistory(to - range, to);
  }

  // Reads [from, to) at the resolution the chart can show; the server
  // answers from the coarsest tier that still has it.
  async function loadHistory(from, to) {
    const h = state.history;
    const sensor = $('history-sensor').value;
    if (!sensor) return;
    h.sensor = sensor;
    const seq = ++h.seq;
    const box = $('history-chart');
    const note = $('history-note');
    note.textContent = 'loading…';
    let r;
    try {
      r = await fetchSeries(sensor, from, to, HISTORY_POINTS);
    } catch (e) {
      note.textContent = 'history unavailable: ' + e.message;
      return;
    }
    if (seq !== h.seq) return;
    h.from = from;
    h.to = to;
    if (h.chart) h.chart.destroy();
    box.replaceChildren();
    h.chart = null;
    box.dataset.from = String(Math.round(from));
    box.dataset.to = String(Math.round(to));
    box.dataset.tier = r.tier;
    box.dataset.points = String(r.buckets);
    if (!r.metrics.length) {
      note.textContent = `no readings of ${sensor} in this range`;
      return;
    }
    const opts = chartOptions(r.metrics, widthOf(box, 900), 260, false);
    opts.scales.x.range = () => [from, to];
    opts.hooks = {
      setSelect: [(u) => {
        if (u.select.width > 4) {
          const a = u.posToVal(u.select.left, 'x');
          const b = u.posToVal(u.select.left + u.select.width, 'x');
          zoomTo(a, b);
        }
        u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
      }],
    };
    h.chart = new uPlot(opts, r.data, box);
    h.chart.over.addEventListener('dblclick', () => showRange(h.range));
    const bucket = r.bucketMs >= 86400000 ? `${Math.round(r.bucketMs / 86400000)} d`
      : r.bucketMs >= 3600000 ? `${Math.round(r.bucketMs / 3600000)} h`
      : r.bucketMs >= 60000 ? `${Math.round(r.bucketMs / 60000)} min`
      : `${Math.max(1, Math.round(r.bucketMs / 1000))} s`;
    note.textContent = `${sensor}: ${r.buckets} points from the ${r.tier} tier (${bucket} buckets), ` +
      `${fmtDateTime(from)} to ${fmtDateTime(to)} (${zone().name}). Drag to zoom, double-click to reset.`;
  }

  function zoomTo(a, b) {
    let from = Math.min(a, b);
    let to = Math.max(a, b);
    if (to - from < MIN_ZOOM_MS) {
      const mid = (from + to) / 2;
      from = mid - MIN_ZOOM_MS / 2;
      to = mid + MIN_ZOOM_MS / 2;
    }
    loadHistory(from, to);
  }

  // A range that ends now keeps ending now; another keeps its middle.
  function zoomBy(factor) {
    const h = state.history;
    if (!h.to) return;
    const span = (h.to - h.from) * factor;
    const now = Date.now();
    if (h.to >= now - 5000) {
      zoomTo(h.to - span, h.to);
      return;
    }
    const mid = (h.from + h.to) / 2;
    zoomTo(mid - span / 2, Math.min(now, mid + span / 2));
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
    const restart = n.kind === 'supervisor' || n.state === 'disabled' ? null
      : el('button', { type: 'button', title: 'restart ' + n.name, onclick: () => restartChild(n.name) }, 'restart');
    const li = el('li', { 'data-node': n.name },
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
        el('li', {}, `${fmtTime(e.at_ms)} ${e.supervisor}/${e.child} ${e.event}` +
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
          state.latest.set(key, r.value);
          if (r.sensor === 'system' || r.sensor === 'cpu_temp') state.healthDirty = true;
          const c = state.cards.get(r.sensor);
          if (c) {
            valueRow(c, r.metric, r.unit).textContent = fmt(r.value, r.unit);
            addPoint(c, r.ts_ms, r.metric, r.value);
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
        state.appliance = { zone: msg.time_zone || null, offsetMin: msg.utc_offset_min || 0 };
        formatters.clear();
        showZone();
        $('footer-text').textContent = `vigil ${msg.version} · live feed session ${msg.session}`;
        break;
      default:
        break;
    }
  }

  // Charts are redrawn at most once a second each, whatever the feed's rate.
  function redrawCards() {
    if (state.healthDirty) {
      state.healthDirty = false;
      renderHealth();
    }
    for (const c of state.cards.values()) if (c.dirty) drawCard(c);
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
      el('span', { class: 'badge s-' + level }, level),
      el('span', {}, `intervals ×${p.multiplier}`),
      el('span', { class: 'detail' }, p.why.summary),
    ];
    if (p.thermal.available) parts.push(el('span', {}, `${fmt(p.thermal.temperature_c, '°C')} (${p.thermal.source})`));
    if (p.paused_sensors.length) parts.push(el('span', { class: 'error' }, 'paused: ' + p.paused_sensors.join(', ')));
    $('pacing').replaceChildren(el('div', { class: 'node' }, ...parts));
  }

  // ---- MQTT broker ---------------------------------------------------------

  // /health answers 503 with the same body when the appliance is degraded.
  async function refreshMqtt() {
    let m;
    try {
      const res = await fetch('/health');
      m = (await res.json()).mqtt;
      if (!m) throw new Error('no mqtt in /health (HTTP ' + res.status + ')');
    } catch (e) {
      $('mqtt').textContent = 'broker state unavailable: ' + e.message;
      return;
    }
    const badge = { connected: 'closed', connecting: 'half_open', disabled: 'disabled' }[m.state] || 'disabled';
    const detail = [];
    if (m.enabled) {
      detail.push(`${m.published} published, ${m.replayed} replayed`);
      detail.push(`backlog ${m.backlog} readings` + (m.alert_backlog ? `, ${m.alert_backlog} alert states` : ''));
      if (m.replaying) detail.push('replaying');
      if (m.connection_failures) detail.push(`${m.connection_failures} connection failures`);
    } else {
      detail.push('[mqtt] enabled = false');
    }
    const row = el('div', { class: 'node', 'data-mqtt': m.state },
      el('span', { class: 'name' }, m.enabled ? m.broker : 'mqtt'),
      el('span', { class: 'badge s-' + badge }, m.state),
      el('span', { class: 'detail' }, detail.join(' · ')));
    const rows = [row];
    if (m.enabled && m.state !== 'connected' && m.last_error) {
      rows.push(el('div', { class: 'node' }, el('span', { class: 'error' }, 'last error: ' + m.last_error)));
    }
    $('mqtt').replaceChildren(...rows);
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
      el('span', { class: 'detail' }, 'since ' + fmtTime(a.fired_at_ms)),
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

  // ---- configuration -------------------------------------------------------

  function configStatus(text, ok) {
    const s = $('config-status');
    s.textContent = text;
    s.className = 'status ' + (ok ? 'ok' : 'bad');
  }

  async function loadConfig(ask) {
    try {
      state.config = await admin('/api/admin/config', 'GET', undefined, ask === true);
    } catch (e) {
      const box = $('config-path');
      if (e.status === 401) {
        box.replaceChildren('Editing needs the admin token. ',
          el('button', { type: 'button', onclick: () => loadConfig(true) }, 'enter the admin token'));
      } else {
        box.textContent = 'configuration unavailable: ' + e.message;
      }
      return;
    }
    const cfg = state.config;
    $('config-path').textContent = cfg.exists
      ? `Edits are written to ${cfg.path}.`
      : `vigil runs on its built-in defaults; the first edit creates ${cfg.path}.`;
    const kind = document.querySelector('#sensor-form [name="kind"]');
    if (!kind.options.length) kind.replaceChildren(...cfg.kinds.map((k) => el('option', {}, k)));
    $('config-sensors').replaceChildren(...cfg.sensors.map((s) => {
      const enabled = s.enabled !== false;
      return el('li', { 'data-config-sensor': s.name },
        el('span', { class: 'name' }, s.name),
        el('span', { class: 'detail' }, `${s.kind} · every ${s.interval_ms || 5000} ms`),
        el('span', { class: 'badge ' + (enabled ? 's-running' : 's-disabled') }, enabled ? 'enabled' : 'disabled'),
        el('button', { type: 'button', onclick: () => editSensor(s) }, 'edit'),
        el('button', { type: 'button', onclick: () => saveSensor({ ...s, enabled: !enabled }) }, enabled ? 'disable' : 'enable'),
        el('button', { type: 'button', onclick: () => removeEntry('sensors', s.name) }, 'remove'));
    }));
    $('config-rules').replaceChildren(...cfg.rules.map((r) => el('li', { 'data-config-rule': r.name },
      el('span', { class: 'name' }, r.name),
      el('span', { class: 'detail' }, `${r.sensor}/${r.metric || 'value'} ${r.condition} ${r.threshold ?? ''}`),
      el('button', { type: 'button', onclick: () => editRule(r) }, 'edit'),
      el('button', { type: 'button', onclick: () => removeEntry('rules', r.name) }, 'remove'))));
    fillRuleSensors();
  }

  function fillRuleSensors() {
    const select = document.querySelector('#rule-form [name="sensor"]');
    const names = state.sensors.map((s) => s.name);
    const have = Array.from(select.options).map((o) => o.value);
    if (names.length === have.length && names.every((k, i) => k === have[i])) return;
    const current = select.value;
    select.replaceChildren(...names.map((n) => el('option', {}, n)));
    if (names.includes(current)) select.value = current;
  }

  // `key = value` lines to an object: numbers, true/false, quoted or bare
  // strings; a [name] line opens a nested table.
  function parseOptions(text) {
    const out = {};
    let into = out;
    text.split('\n').forEach((raw, i) => {
      const line = raw.replace(/\s+#.*$/, '').trim();
      if (!line || line.startsWith('#')) return;
      const table = line.match(/^\[([A-Za-z0-9_.-]+)\]$/);
      if (table) {
        into = out;
        for (const part of table[1].split('.')) into = into[part] = into[part] || {};
        return;
      }
      const m = line.match(/^([A-Za-z0-9_-]+)\s*=\s*(.*)$/);
      if (!m) throw new Error(`line ${i + 1}: expected key = value`);
      const v = m[2];
      if (/^".*"$/.test(v)) into[m[1]] = JSON.parse(v);
      else if (v === 'true' || v === 'false') into[m[1]] = v === 'true';
      else if (/^0x[0-9a-fA-F]+$/.test(v)) into[m[1]] = parseInt(v, 16);
      else if (v !== '' && !isNaN(Number(v))) into[m[1]] = Number(v);
      else into[m[1]] = v;
    });
    return out;
  }

  function showOptions(obj, prefix) {
    const lines = [];
    const nested = [];
    for (const [k, v] of Object.entries(obj || {})) {
      if (v && typeof v === 'object' && !Array.isArray(v)) nested.push([k, v]);
      else lines.push(`${k} = ${typeof v === 'string' ? JSON.stringify(v) : v}`);
    }
    for (const [k, v] of nested) {
      const name = prefix ? `${prefix}.${k}` : k;
      lines.push(`[${name}]`, showOptions(v, name));
    }
    return lines.join('\n');
  }

  function clearErrors(form) {
    for (const p of form.querySelectorAll('.field-error')) p.textContent = '';
    for (const i of form.querySelectorAll('[aria-invalid]')) i.removeAttribute('aria-invalid');
  }

  // The error's key (`sensors[tank].interval_ms`) names the form field.
  function showError(form, e) {
    const key = (e.body && e.body.error && e.body.error.parameter) || '';
    const field = key.replace(/^.*\]\.?/, '').split('.')[0] || key;
    const slot = form.querySelector(`[data-error="${CSS.escape(field)}"]`) || form.querySelector('[data-error="other"]');
    slot.textContent = e.message;
    const input = form.querySelector(`[name="${CSS.escape(field)}"]`);
    if (input) {
      input.setAttribute('aria-invalid', 'true');
      input.focus();
    }
    configStatus('Not saved: ' + e.message, false);
  }

  // Saves through a dry run first: a change that would need a restart is
  // said so, and saved only if the user agrees.
  async function save(form, path, body) {
    clearErrors(form);
    try {
      const check = await admin(path + '?dry_run=true', 'POST', body);
      let query = '';
      if (check.needs_restart.length) {
        const ok = window.confirm(`${check.message}. Save anyway?`);
        if (!ok) {
          configStatus('Not saved: ' + check.message, false);
          return false;
        }
        query = '?accept_restart=true';
      }
      const report = await admin(path + query, 'POST', body);
      configStatus(report.message, true);
      await loadConfig();
      scheduleRefresh();
      return true;
    } catch (e) {
      showError(form, e);
      return false;
    }
  }

  function editSensor(s) {
    const f = $('sensor-form');
    state.editingSensor = s;
    clearErrors(f);
    $('sensor-form-title').textContent = 'Edit sensor ' + s.name;
    f.name.value = s.name;
    f.name.readOnly = true;
    f.kind.value = s.kind;
    f.interval_ms.value = s.interval_ms ?? 5000;
    f.timeout_ms.value = s.timeout_ms ?? 2000;
    f.priority.value = s.priority || 'essential';
    f.enabled.checked = s.enabled !== false;
    f.options.value = showOptions(s.options);
    f.interval_ms.focus();
  }

  function newSensor() {
    const f = $('sensor-form');
    state.editingSensor = null;
    f.reset();
    f.name.readOnly = false;
    clearErrors(f);
    $('sensor-form-title').textContent = 'Add a sensor';
  }

  function number(v) {
    const t = String(v).trim();
    if (t === '') return null;
    const n = Number(t);
    return isNaN(n) ? t : n;
  }

  function saveSensor(entry) {
    return save($('sensor-form'), '/api/admin/config/sensors', entry);
  }

  async function submitSensor(ev) {
    ev.preventDefault();
    const f = $('sensor-form');
    clearErrors(f);
    let options;
    try {
      options = parseOptions(f.options.value);
    } catch (e) {
      f.querySelector('[data-error="options"]').textContent = e.message;
      return;
    }
    // Keys the form does not show (adaptive, ...) are kept as they were.
    const entry = { ...(state.editingSensor || {}) };
    Object.assign(entry, {
      name: f.name.value.trim(),
      kind: f.kind.value,
      interval_ms: number(f.interval_ms.value),
      timeout_ms: number(f.timeout_ms.value),
      priority: f.priority.value,
      enabled: f.enabled.checked,
      options,
    });
    if (await saveSensor(entry)) newSensor();
  }

  function editRule(r) {
    const f = $('rule-form');
    state.editingRule = r;
    clearErrors(f);
    $('rule-form-title').textContent = 'Edit rule ' + r.name;
    f.name.value = r.name;
    f.name.readOnly = true;
    fillRuleSensors();
    f.sensor.value = r.sensor;
    f.metric.value = r.metric || 'value';
    f.condition.value = r.condition;
    f.threshold.value = r.threshold ?? '';
    f.clear.value = r.clear ?? '';
    f.for_ms.value = r.for_ms ?? 0;
    f.silence_ms.value = r.silence_ms ?? '';
    f.severity.value = r.severity || 'warning';
    f.message.value = r.message || '';
    f.threshold.focus();
  }

  function newRule() {
    const f = $('rule-form');
    state.editingRule = null;
    f.reset();
    f.name.readOnly = false;
    clearErrors(f);
    $('rule-form-title').textContent = 'Add an alert rule';
  }

  async function submitRule(ev) {
    ev.preventDefault();
    const f = $('rule-form');
    const entry = { ...(state.editingRule || {}) };
    Object.assign(entry, {
      name: f.name.value.trim(),
      sensor: f.sensor.value,
      metric: f.metric.value.trim() || 'value',
      condition: f.condition.value,
      threshold: number(f.threshold.value),
      clear: number(f.clear.value),
      for_ms: number(f.for_ms.value),
      silence_ms: number(f.silence_ms.value),
      severity: f.severity.value,
      message: f.message.value.trim() || null,
    });
    if (await save(f, '/api/admin/config/rules', entry)) newRule();
  }

  async function removeEntry(what, name) {
    if (!window.confirm(`Remove ${what === 'sensors' ? 'sensor' : 'rule'} ${name} from the config file?`)) return;
    try {
      const report = await admin(`/api/admin/config/${what}/${encodeURIComponent(name)}/remove`);
      configStatus(report.message, true);
      await loadConfig();
      scheduleRefresh();
    } catch (e) {
      configStatus('Not removed: ' + e.message, false);
    }
  }

  // ---- access --------------------------------------------------------------

  // Whether this page is logged in, and whether the data is open to the
  // network (a banner says so).
  async function loadAccess() {
    try {
      state.access = await api('/api/session');
    } catch (_) {
      return;
    }
    const a = state.access;
    $('open-banner').hidden = !(a.open_to_network && !a.login_required);
    $('logout').hidden = !a.session;
  }

  // ---- start ---------------------------------------------------------------

  $('history-sensor').addEventListener('change', () => showRange(state.history.range));
  for (const b of document.querySelectorAll('[data-range]')) {
    b.addEventListener('click', () => showRange(Number(b.dataset.range)));
  }
  $('zoom-in').addEventListener('click', () => zoomBy(0.5));
  $('zoom-out').addEventListener('click', () => zoomBy(2));
  $('zoom-reset').addEventListener('click', () => showRange(state.history.range));
  $('history-form').addEventListener('submit', (e) => e.preventDefault());
  $('tz').addEventListener('change', onTimePrefs);
  $('clock').addEventListener('change', onTimePrefs);
  $('sensor-form').addEventListener('submit', submitSensor);
  $('sensor-form').querySelector('[data-action="cancel"]').addEventListener('click', newSensor);
  $('rule-form').addEventListener('submit', submitRule);
  $('rule-form').querySelector('[data-action="cancel"]').addEventListener('click', newRule);
  let resizeTimer = null;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      for (const c of state.cards.values()) {
        if (c.chart) c.chart.setSize({ width: widthOf(c.spark, 280), height: SPARK_HEIGHT });
      }
      const h = state.history;
      if (h.chart) h.chart.setSize({ width: widthOf($('history-chart'), 900), height: 260 });
    }, 150);
  });
  showZone();
  loadAccess();
  refreshSensors();
  refreshTree();
  refreshAlerts();
  refreshPacing();
  refreshGuards();
  refreshMqtt();
  loadConfig();
  connect();
  setInterval(refreshSensors, POLL_MS);
  setInterval(refreshTree, POLL_MS);
  setInterval(refreshAlerts, POLL_MS);
  setInterval(refreshPacing, POLL_MS);
  setInterval(refreshGuards, POLL_MS);
  setInterval(refreshMqtt, POLL_MS);
  setInterval(redrawCards, 1000);
})();

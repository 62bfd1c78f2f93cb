// Flotilla web UI: plain JavaScript, no build step. Every page polls the coordinator's
// /ui/api endpoints (the cluster's data, from any coordinator) and re-renders.
'use strict';

const $ = (selector, root = document) => root.querySelector(selector);
const REFRESH_MS = 1000;
const USER = document.body.dataset.user || '';

function esc(value) {
  return String(value ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: 'same-origin', headers: { Accept: 'application/json' }, ...options });
  if (response.status === 401) {
    location.href = '/ui/login.html?redirect=' + encodeURIComponent(location.pathname + location.search);
    throw new Error('not logged in');
  }
  const type = response.headers.get('content-type') || '';
  const body = type.includes('json') ? await response.json() : await response.text();
  if (!response.ok) throw new Error(typeof body === 'string' ? body : JSON.stringify(body));
  return body;
}

function bytes(n) {
  if (n === null || n === undefined) return '';
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let value = Number(n);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return unit === 0 ? `${value}B` : `${value.toFixed(1)}${units[unit]}`;
}

function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '';
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)}s`;
  if (ms < 3600000) return `${(ms / 60000).toFixed(1)}m`;
  return `${(ms / 3600000).toFixed(1)}h`;
}

function badge(state) {
  const name = String(state ?? '').toUpperCase();
  return `<span class="state ${esc(name)}">${esc(name)}</span>`;
}

function elapsed(query) {
  const stats = query.queryStats || {};
  if (stats.elapsedTimeMillis !== undefined) return stats.elapsedTimeMillis;
  const start = Date.parse(stats.createTime);
  const end = stats.endTime ? Date.parse(stats.endTime) : Date.now();
  return Number.isNaN(start) ? null : end - start;
}

const KEYWORDS = new Set(('select from where group by order having limit offset join left right full inner outer cross on using as and or not ' +
  'in is null like between case when then else end with union all distinct insert into values create table view drop alter ' +
  'explain analyze show describe set session call over partition rows range asc desc exists cast interval date timestamp true false').split(' '));

/** The SQL text as HTML with keywords, strings, numbers and comments marked. */
function highlight(sql) {
  const token = /(--[^\n]*|\/\*[\s\S]*?\*\/)|('(?:[^']|'')*')|("(?:[^"]|"")*")|(\b\d+(?:\.\d+)?\b)|([A-Za-z_][A-Za-z0-9_]*)|([\s\S])/g;
  let out = '';
  for (const m of String(sql || '').matchAll(token)) {
    if (m[1]) out += `<span class="cmt">${esc(m[1])}</span>`;
    else if (m[2]) out += `<span class="str">${esc(m[2])}</span>`;
    else if (m[3]) out += esc(m[3]);
    else if (m[4]) out += `<span class="numlit">${esc(m[4])}</span>`;
    else if (m[5]) out += KEYWORDS.has(m[5].toLowerCase()) ? `<span class="kw">${esc(m[5])}</span>` : esc(m[5]);
    else out += esc(m[6]);
  }
  return out;
}

/** Runs `render` now and every REFRESH_MS; shows its failure without stopping. */
function live(render) {
  const status = $('#refresh-status');
  const tick = async () => {
    try {
      await render();
      if (status) status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      if (status) status.textContent = `refresh failed: ${error.message}`;
    }
    setTimeout(tick, REFRESH_MS);
  };
  tick();
}

async function kill(queryId) {
  const message = `Killed from the web UI by ${USER}`;
  try {
    await api(`/ui/api/query/${encodeURIComponent(queryId)}/killed`, { method: 'PUT', body: message });
  } catch (error) {
    alert(`Could not kill ${queryId}: ${error.message}`);
  }
}

const running = (state) => state === 'RUNNING' || state === 'PLANNING' || state === 'QUEUED';

// ---- overview ----------------------------------------------------------------------
const history = [];

function drawChart(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const g = canvas.getContext('2d');
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  const series = [['runningQueries', '#1f6feb'], ['queuedQueries', '#d4a72c'], ['queriesPerMinute', '#1a7f37']];
  const max = Math.max(1, ...history.flatMap((h) => series.map(([key]) => h[key] || 0)));
  g.font = '11px system-ui';
  series.forEach(([key, color], i) => {
    g.strokeStyle = color;
    g.lineWidth = 2;
    g.beginPath();
    history.forEach((h, x) => {
      const px = (x / Math.max(1, history.length - 1)) * (width - 4) + 2;
      const py = height - 14 - ((h[key] || 0) / max) * (height - 24);
      if (x === 0) g.moveTo(px, py); else g.lineTo(px, py);
    });
    g.stroke();
    g.fillStyle = color;
    g.fillText(key.replace('Queries', '').replace('queriesPerMinute', 'per minute'), 4 + i * 90, height - 2);
  });
  g.fillStyle = '#6b7280';
  g.fillText(`max ${max}`, width - 60, 10);
}

async function renderOverview() {
  const [stats, cluster] = await Promise.all([api('/ui/api/stats'), api('/ui/api/cluster')]);
  history.push(stats);
  if (history.length > 120) history.shift();
  const card = (label, value) => `<div class="card"><div class="label">${esc(label)}</div><div class="value">${esc(value)}</div></div>`;
  $('#cards').innerHTML = [
    card('Running queries', stats.runningQueries),
    card('Queued queries', stats.queuedQueries),
    card('Blocked queries', stats.blockedQueries),
    card('Finished (history)', stats.finishedQueries),
    card('Queries / minute', stats.queriesPerMinute),
    card('Coordinators', stats.activeCoordinators),
    card('Resource managers', stats.activeResourceManagers),
    card('Workers', stats.activeWorkers),
    card('Running tasks', stats.runningDrivers),
    card('Memory reserved', `${bytes(stats.reservedMemory)} / ${bytes(stats.totalMemory)}`),
    card('Worker CPU', `${Math.round((stats.workerCpuLoad || 0) * 100)}% of ${stats.totalAvailableProcessors}`),
    card('View age', duration(stats.viewAgeMillis)),
  ].join('');
  drawChart($('#chart'));
  $('#nodes').innerHTML = `<table><thead><tr><th>Node</th><th>Roles</th><th>State</th><th class="hide-narrow">Address</th><th class="hide-narrow">Version</th></tr></thead><tbody>${
    cluster.nodes.map((n) => `<tr><td>${esc(n.nodeId)}</td><td>${esc(n.roles.join(', '))}</td><td>${badge(n.state)}</td><td class="hide-narrow">${esc(n.uri)}</td><td class="hide-narrow">${esc((n.nodeVersion || {}).version)}</td></tr>`).join('')
  }</tbody></table>`;
}

// ---- query list ---------------------------------------------------------------------
async function renderQueries() {
  const queries = await api('/ui/api/query');
  const state = $('#f-state').value;
  const user = $('#f-user').value.trim().toLowerCase();
  const source = $('#f-source').value.trim().toLowerCase();
  const warehouse = $('#f-warehouse').value.trim().toLowerCase();
  const text = $('#f-text').value.trim().toLowerCase();
  const sort = $('#f-sort').value;
  const shown = queries.filter((q) => {
    const session = q.session || {};
    if (state === 'RUNNING' && !running(q.state)) return false;
    if (state && state !== 'RUNNING' && q.state !== state) return false;
    if (user && !String(session.user || '').toLowerCase().includes(user)) return false;
    if (source && !String(session.source || '').toLowerCase().includes(source)) return false;
    if (warehouse && !String(q.warehouse || '').toLowerCase().includes(warehouse)) return false;
    if (text && !(`${q.queryId} ${q.query}`.toLowerCase().includes(text))) return false;
    return true;
  });
  const key = {
    created: (q) => -Date.parse((q.queryStats || {}).createTime || 0),
    elapsed: (q) => -(elapsed(q) || 0),
    memory: (q) => -((q.queryStats || {}).peakMemoryBytes || 0),
    cpu: (q) => -((q.queryStats || {}).cpuTimeMillis || 0),
  }[sort];
  shown.sort((a, b) => key(a) - key(b));
  $('#count').textContent = `${shown.length} of ${queries.length} queries`;
  $('#queries').innerHTML = `<table><thead><tr><th>Query</th><th>State</th><th>User</th><th class="hide-narrow">Source</th><th class="hide-narrow">Group</th><th class="hide-narrow">Coordinator</th><th class="num">Elapsed</th><th class="num hide-narrow">Peak memory</th><th>SQL</th><th></th></tr></thead><tbody>${
    shown.map((q) => {
      const session = q.session || {};
      const stats = q.queryStats || {};
      const error = q.errorCode ? ` <span class="muted">${esc(q.errorCode.name)}</span>` : '';
      return `<tr data-query-id="${esc(q.queryId)}"><td><a href="/ui/query.html?${esc(q.queryId)}">${esc(q.queryId)}</a></td>` +
        `<td>${badge(q.state)}${error}</td><td>${esc(session.user)}</td><td class="hide-narrow">${esc(session.source)}</td>` +
        `<td class="hide-narrow">${esc((q.resourceGroupId || []).join('.'))}</td><td class="hide-narrow">${esc(q.coordinator)}</td>` +
        `<td class="num">${duration(elapsed(q))}</td><td class="num hide-narrow">${bytes(stats.peakMemoryBytes)}</td>` +
        `<td><div class="sql-short" title="${esc(q.query)}">${esc(q.query)}</div></td>` +
        `<td>${running(q.state) ? `<button class="danger kill" data-query-id="${esc(q.queryId)}">Kill</button>` : ''}</td></tr>`;
    }).join('')
  }</tbody></table>`;
}

function setUpQueries() {
  for (const id of ['#f-state', '#f-user', '#f-source', '#f-warehouse', '#f-text', '#f-sort']) {
    $(id).addEventListener('input', () => renderQueries().catch(() => {}));
  }
  $('#queries').addEventListener('click', (event) => {
    const button = event.target.closest('button.kill');
    if (button) kill(button.dataset.queryId).then(() => renderQueries());
  });
  live(renderQueries);
}

// ---- query detail -------------------------------------------------------------------
async function renderQuery() {
  const queryId = decodeURIComponent(location.search.replace(/^\?/, '').split('&')[0]);
  if (!queryId) {
    $('#detail').innerHTML = '<p class="error">No query id in the address (query.html?QUERY_ID).</p>';
    return;
  }
  const q = await api(`/ui/api/query/${encodeURIComponent(queryId)}`);
  const s = q.queryStats || {};
  const session = q.session || {};
  const created = Date.parse(s.createTime);
  const started = s.executionStartTime ? Date.parse(s.executionStartTime) : null;
  const ended = s.endTime ? Date.parse(s.endTime) : Date.now();
  const queued = s.queuedTimeMillis || 0;
  const total = Math.max(1, ended - created);
  const planning = started ? Math.max(0, started - created - queued) : Math.max(0, ended - created - queued);
  const runningMs = started ? Math.max(0, ended - started) : 0;
  const pct = (ms) => `${(100 * ms / total).toFixed(1)}%`;
  const kv = (pairs) => `<div class="kv">${pairs.map(([k, v]) => `<div>${esc(k)}</div><div>${v}</div>`).join('')}</div>`;
  const error = q.failureInfo ? `<div class="panel"><h2>Error</h2><div class="error" id="query-error">${esc(q.errorCode && q.errorCode.name)}: ${esc(q.failureInfo.message)}</div></div>` : '';
  const stages = (q.stages || []).map((stage) => {
    const tasks = (stage.tasks || []).map((t) =>
      `<tr><td>${esc(stage.stageId)}.${esc(t.taskId)}</td><td class="num">${esc(t.processedRows)}</td><td class="num">${duration(t.cpuTimeMillis)}</td></tr>`).join('');
    return `<h2>Stage ${esc(stage.stageId)} ${badge(stage.state)} <span class="muted">${esc(stage.processedRows)} rows, CPU ${duration(stage.cpuTimeMillis)}</span></h2>` +
      `<table><thead><tr><th>Task</th><th class="num">Rows</th><th class="num">CPU</th></tr></thead><tbody>${tasks}</tbody></table>`;
  }).join('');
  // The scheduler records placements in the order it routed the stages, which is not the
  // planner's stage numbering: shown as they are.
  const placements = (q.tasks || []).length === 0 ? '' :
    `<h2>Workers the tasks ran on <span class="muted">(stages in the order they were routed)</span></h2>` +
    `<table id="placements"><thead><tr><th>Routed stage</th><th>Task</th><th>Worker</th></tr></thead><tbody>${
      q.tasks.map((t) => `<tr><td>${esc(t.stage)}</td><td>${esc(t.task)}</td><td>${esc(t.nodeId)}</td></tr>`).join('')
    }</tbody></table>`;
  $('#detail').innerHTML =
    `<h1>${esc(q.queryId)} ${badge(q.state)} ${running(q.state) ? `<button class="danger" id="kill">Kill</button>` : ''}</h1>` +
    error +
    `<div class="panel"><h2>SQL</h2><pre class="sql" id="query-sql">${highlight(q.query)}</pre></div>` +
    `<div class="panel"><h2>Timeline</h2><div class="timeline"><span class="queued" style="width:${pct(queued)}"></span><span class="planning" style="width:${pct(planning)}"></span><span class="running" style="width:${pct(runningMs)}"></span></div>` +
    `<p class="muted">queued ${duration(queued)} · planning ${duration(planning)} · running ${duration(runningMs)} · elapsed ${duration(ended - created)}</p></div>` +
    `<div class="panel"><h2>Session and placement</h2>${kv([
      ['User', esc(session.user)], ['Source', esc(session.source)], ['Catalog.schema', esc([session.catalog, session.schema].filter(Boolean).join('.'))],
      ['Resource group', esc((q.resourceGroupId || []).join('.'))], ['Warehouse', esc(q.warehouse)], ['Owner coordinator', esc(q.coordinator)],
      ['Session properties', esc(JSON.stringify(session.systemProperties || {}))],
    ])}</div>` +
    `<div class="panel"><h2>Stats</h2>${kv([
      ['Created', esc(s.createTime)], ['Ended', esc(s.endTime || '')], ['CPU time', duration(s.cpuTimeMillis)],
      ['Peak memory', bytes(s.peakMemoryBytes)], ['Processed rows', esc(s.processedRows)], ['Output rows', esc(s.outputRows)],
      ['Splits', `${esc(s.completedSplits)} / ${esc(s.totalSplits)}`],
    ])}</div>` +
    `<div class="panel"><h2>Plan</h2><pre class="sql">${esc(q.plan || 'The plan is shown once the query has been planned.')}</pre></div>` +
    `<div class="panel" id="stages">${stages || '<p class="muted">No distributed stages (the query ran on its coordinator).</p>'}${placements}</div>`;
  const button = $('#kill');
  if (button) button.addEventListener('click', () => kill(q.queryId).then(() => renderQuery()));
}

// ---- workers ------------------------------------------------------------------------
async function renderWorkers() {
  const cluster = await api('/ui/api/cluster');
  const workers = cluster.nodes.filter((n) => n.load);
  const bar = (used, total) => `<div class="bar"><span style="width:${total ? Math.min(100, 100 * used / total) : 0}%"></span></div>`;
  $('#workers').innerHTML = `<table><thead><tr><th>Worker</th><th>State</th><th class="hide-narrow">Warehouse / group</th><th>Memory</th><th class="num">Reserved</th><th class="num">CPU</th><th class="num">Tasks</th><th class="num hide-narrow">Blocked</th></tr></thead><tbody>${
    workers.map((n) => {
      const w = n.load;
      return `<tr><td>${esc(n.nodeId)}</td><td>${badge(n.state)}</td><td class="hide-narrow">${esc(n.warehouse)} / ${esc(n.workerGroup)}</td>` +
        `<td>${bar(w.memoryReservedBytes, w.memoryPoolBytes)}</td><td class="num">${bytes(w.memoryReservedBytes)} / ${bytes(w.memoryPoolBytes)}</td>` +
        `<td class="num">${Math.round(w.processCpuLoad * 100)}%</td><td class="num">${esc(w.runningTasks)}</td><td class="num hide-narrow">${duration(w.memoryBlockedMs)}</td></tr>`;
    }).join('')
  }</tbody></table>`;
  // Physical groups (the workers' labels, and defined groups without workers), then the
  // shared groups of the definitions, each reporting the load of the group it references.
  const groups = new Map();
  const group = (key, kind, from) => {
    if (!groups.has(key)) groups.set(key, { kind, from, workers: 0, reserved: 0, pool: 0, tasks: 0, cpu: 0 });
    return groups.get(key);
  };
  for (const n of workers) {
    const g = group(`${n.warehouse} / ${n.workerGroup}`, 'physical', '');
    g.workers += 1; g.reserved += n.load.memoryReservedBytes; g.pool += n.load.memoryPoolBytes;
    g.tasks += n.load.runningTasks; g.cpu += n.load.processCpuLoad;
  }
  for (const w of cluster.warehouses || []) {
    for (const wg of w.workerGroups) {
      if (!wg.sharedFrom) group(`${w.name} / ${wg.name}`, 'physical', '');
    }
  }
  for (const w of cluster.warehouses || []) {
    for (const wg of w.workerGroups) {
      if (!wg.sharedFrom) continue;
      const from = `${wg.sharedFrom.warehouse} / ${wg.sharedFrom.workerGroup}`;
      groups.set(`${w.name} / ${wg.name}`, { ...(groups.get(from) || group(from, 'physical', '')), kind: wg.lent ? 'lent' : 'shared', from });
    }
  }
  $('#groups').innerHTML = `<table><thead><tr><th>Warehouse / group</th><th>Kind</th><th class="num">Workers</th><th class="num">Memory</th><th class="num">CPU</th><th class="num">Tasks</th></tr></thead><tbody>${
    [...groups].sort(([a], [b]) => a.localeCompare(b)).map(([key, g]) => `<tr><td>${esc(key)}</td><td>${g.kind === 'physical' ? 'physical' : `${g.kind} from ${esc(g.from)}`}</td><td class="num">${g.workers}</td><td class="num">${bytes(g.reserved)} / ${bytes(g.pool)}</td><td class="num">${g.workers ? Math.round(100 * g.cpu / g.workers) : 0}%</td><td class="num">${g.tasks}</td></tr>`).join('')
  }</tbody></table>`;
}

// ---- resource groups ----------------------------------------------------------------
async function renderGroups() {
  const groups = await api('/ui/api/resourceGroups');
  $('#resource-groups').innerHTML = groups.length === 0 ? '<p class="muted">No queries in any resource group.</p>' :
    `<table><thead><tr><th>Group</th><th>State</th><th class="num">Running</th><th class="num">Queued</th><th class="num">Hard concurrency</th><th class="num">Max queued</th></tr></thead><tbody>${
      groups.map((g) => `<tr><td>${esc(g.id.join('.'))}</td><td>${badge(g.state)}</td><td class="num">${esc(g.numRunningQueries)}</td><td class="num">${esc(g.numQueuedQueries)}</td><td class="num">${esc(g.hardConcurrencyLimit ?? '∞')}</td><td class="num">${esc(g.maxQueuedQueries ?? '∞')}</td></tr>`).join('')
    }</tbody></table>`;
}

const PAGES = {
  overview: () => live(renderOverview),
  queries: setUpQueries,
  query: () => live(renderQuery),
  workers: () => live(renderWorkers),
  groups: () => live(renderGroups),
};

const page = PAGES[document.body.dataset.page];
if (page) page();

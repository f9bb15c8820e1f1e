/* global document, window, sessionStorage, AbortSignal, URLSearchParams */
// The pubgate admin console: one page on the admin port, no framework, no build step.
// Server text is only ever written with textContent. The token lives in sessionStorage
// and travels in the Authorization header, never in a URL.

const TOKEN_KEY = 'pubgate-admin-token';
const POLL_MS = 2000;
const MAX_BACKOFF_MS = 30000;
const REQUEST_TIMEOUT_MS = 10000;
/** Longest JSON shown for one message (the rest is cut, the page stays small). */
const MAX_SHOWN = 2000;

const $ = (id) => document.getElementById(id);
const el = (tag, text, cls) => {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
};

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
  toString() {
    return `${this.code}: ${this.message} (HTTP ${this.status})`;
  }
}

let token = sessionStorage.getItem(TOKEN_KEY) || '';
/** The last busiest-channels answer rendered (JSON), to skip re-rendering an unchanged list. */
let lastChannels = '';

/** Calls the admin API; resolves with the parsed body, or throws ApiError (the standard error body). */
async function api(path, body) {
  const headers = { authorization: `Bearer ${token}` };
  const init = { headers, cache: 'no-store', credentials: 'omit', signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) };
  if (body !== undefined) {
    init.method = 'POST';
    headers['content-type'] = 'application/json';
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
  }
  let res;
  try {
    res = await window.fetch(`api/${path}`, init);
  } catch (e) {
    throw new ApiError(0, 'network', e && e.name === 'TimeoutError' ? 'no answer in time' : 'the node did not answer');
  }
  const text = await res.text();
  let parsed;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  if (!res.ok) {
    const err = parsed && typeof parsed === 'object' && parsed.error ? parsed.error : {};
    const e = new ApiError(res.status, String(err.code || 'http_error'), String(err.message || res.statusText || 'request failed'));
    if (res.status === 401) signOut(`The token was refused: ${e.message}`);
    throw e;
  }
  return parsed;
}

// ---- sign in / out ----

function showApp(on) {
  $('login').hidden = on;
  $('app').hidden = !on;
  $('signout').hidden = !on;
}

function signOut(message) {
  token = '';
  lastChannels = '';
  sessionStorage.removeItem(TOKEN_KEY);
  stopPolling();
  const wasIn = !$('app').hidden;
  showApp(false);
  setLive(wasIn ? 'Signed out' : '');
  $('login-error').textContent = message || '';
  $('token').value = '';
  $('token').focus();
}

$('login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const value = $('token').value.trim();
  if (!value) return;
  $('login-error').textContent = '';
  token = value;
  $('login-fields').disabled = true;
  try {
    const overview = await api('overview');
    sessionStorage.setItem(TOKEN_KEY, token);
    $('token').value = '';
    showApp(true);
    renderOverview(overview);
    $('cluster-h').focus();
    startPolling();
  } catch (e) {
    token = '';
    // 401 already went through signOut (which set the message); say the others here.
    if (!(e instanceof ApiError && e.status === 401)) $('login-error').textContent = `Could not sign in: ${e}`;
  } finally {
    $('login-fields').disabled = false;
  }
  if (!$('login').hidden) $('token').focus(); // could not while the fieldset was disabled
});

$('signout').addEventListener('click', () => signOut(''));

// ---- polling: overview + busiest channels every 2 s while visible; one round at a time ----

let timer;
let inFlight = false;
let failures = 0;
let polling = false;

function startPolling() {
  polling = true;
  failures = 0;
  schedule(0);
}

function stopPolling() {
  polling = false;
  window.clearTimeout(timer);
  timer = undefined;
}

function schedule(ms) {
  window.clearTimeout(timer);
  timer = undefined;
  if (!polling || document.hidden) return;
  timer = window.setTimeout(poll, ms);
}

async function poll() {
  timer = undefined;
  if (!polling || document.hidden || inFlight) return;
  inFlight = true;
  try {
    const [overview, channels] = await Promise.all([api('overview'), api(`channels?${channelQuery()}`)]);
    if (!polling) return;
    renderOverview(overview);
    renderChannels(channels);
    failures = 0;
    if (!document.hidden) setLive('Live');
  } catch (e) {
    if (!polling) return;
    failures++;
    if (!document.hidden) setLive(`Update failed: ${e}. Retrying in ${Math.round(delay() / 1000)} s`, true);
  } finally {
    inFlight = false;
  }
  schedule(delay());
}

/** The status line (a live region): written only when it changes, so screen readers hear changes only. */
function setLive(text, bad = false) {
  const live = $('live');
  if (live.textContent !== text) live.textContent = text;
  live.className = bad ? 'live bad' : 'live';
}

function delay() {
  return failures === 0 ? POLL_MS : Math.min(MAX_BACKOFF_MS, POLL_MS * 2 ** failures);
}

document.addEventListener('visibilitychange', () => {
  if (!polling) return;
  if (document.hidden) {
    window.clearTimeout(timer);
    timer = undefined;
    setLive('Paused (tab hidden)');
  } else {
    schedule(0);
  }
});

function channelQuery() {
  const q = new URLSearchParams({ limit: $('limit').value });
  const prefix = $('prefix').value.trim();
  if (prefix) q.set('prefix', prefix);
  return q.toString();
}

$('prefix-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  if (polling && !inFlight) schedule(0);
});
$('limit').addEventListener('change', () => {
  if (polling && !inFlight) schedule(0);
});

// ---- rendering ----

function uptime(s) {
  s = Math.max(0, Math.floor(Number(s) || 0));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

function cell(text, cls) {
  return el('td', text, cls);
}

function renderOverview(o) {
  if (!o || typeof o !== 'object') return;
  const t = o.totals || {};
  $('totals').textContent = `${t.nodes ?? 0} nodes · ${t.connections ?? 0} connections · ${t.subscriptions ?? 0} subscriptions · broker: ${o.broker ?? '?'}`;
  const rows = (Array.isArray(o.nodes) ? o.nodes : []).map((n) => {
    const c = n.connections || {};
    const tr = el('tr');
    tr.dataset.node = String(n.id);
    const name = el('th', n.id);
    name.scope = 'row';
    if (n.self) name.append(el('span', ' (this node)', 'tag'));
    name.title = `instance ${n.instance}, started ${n.startedAt}`;
    const broker = cell(n.broker, n.broker === 'ready' ? 'ok' : 'bad');
    broker.dataset.col = 'broker';
    tr.append(name, cell(n.version), cell(uptime(n.uptimeSeconds)));
    for (const [key, v] of [['total', c.total], ['websocket', c.websocket], ['sse', c.sse], ['pusher', c.pusher], ['subscriptions', n.subscriptions]]) {
      const td = cell(v ?? 0, 'num');
      td.dataset.col = key;
      tr.append(td);
    }
    tr.append(broker, cell(n.draining ? 'yes' : 'no', n.draining ? 'bad' : ''));
    return tr;
  });
  // Each cell carries its column's name: at narrow widths the rows are shown as cards (console.css).
  const heads = [...$('nodes').tHead.rows[0].cells].map((h) => h.textContent);
  for (const tr of rows) for (const [i, c] of [...tr.cells].entries()) if (i > 0) c.dataset.label = heads[i];
  $('nodes').tBodies[0].replaceChildren(...rows);
  $('updated').textContent = `Updated ${new Date(o.generatedAt || Date.now()).toLocaleTimeString()}`;
}

function renderChannels(r) {
  const list = Array.isArray(r && r.channels) ? r.channels : [];
  const key = JSON.stringify(r);
  if (key === lastChannels) return; // unchanged: keep the buttons (and the keyboard focus)
  lastChannels = key;
  const focused = $('channels').contains(document.activeElement) ? document.activeElement.dataset.channel : undefined;
  const items = list.map((c) => {
    const li = el('li');
    const b = el('button', c.channel, 'link');
    b.type = 'button';
    b.dataset.channel = c.channel;
    b.setAttribute('aria-label', `Inspect ${c.channel}`);
    b.addEventListener('click', () => {
      $('inspect-channel').value = c.channel;
      inspect();
    });
    li.append(b, el('span', `${c.subscribers} subscriber${c.subscribers === 1 ? '' : 's'}`, 'count'));
    return li;
  });
  if (items.length === 0) items.push(el('li', 'No channel with subscribers', 'help'));
  $('channels').replaceChildren(...items);
  if (focused !== undefined) for (const b of $('channels').querySelectorAll('button')) if (b.dataset.channel === focused) b.focus();
  $('channels-more').textContent = r && r.more ? 'More channels exist: raise the limit or filter by prefix.' : '';
}

function shown(data) {
  const s = JSON.stringify(data);
  return s === undefined ? 'undefined' : s.length > MAX_SHOWN ? `${s.slice(0, MAX_SHOWN)}… (${s.length} characters)` : s;
}

// ---- channel inspector ----

async function inspect() {
  const channel = $('inspect-channel').value.trim();
  if (!channel) return;
  const q = new URLSearchParams({ channel, messages: $('inspect-messages').value || '20' });
  $('inspect-status').textContent = `Inspecting ${channel}…`;
  try {
    const r = await api(`channel?${q}`);
    renderInspector(r);
    $('inspect-status').textContent = `Inspected ${r.channel} at ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    $('inspect-result').hidden = true;
    $('inspect-status').textContent = `Error: ${e}`;
  }
}

function renderInspector(r) {
  $('inspect-summary').textContent = `${r.channel}: ${r.subscribers} subscriber${r.subscribers === 1 ? '' : 's'} in the cluster`;
  const nodes = (r.nodes || []).map((n) => el('li', `${n.id}: ${n.subscribers}`));
  if (nodes.length === 0) nodes.push(el('li', 'No node has a subscriber', 'help'));
  $('inspect-nodes').replaceChildren(...nodes);
  const p = r.presence;
  $('inspect-presence').textContent = p
    ? `${p.users} user${p.users === 1 ? '' : 's'}, ${p.connections} connection${p.connections === 1 ? '' : 's'}${p.truncated ? ' (list cut)' : ''}`
    : 'No presence on this channel';
  $('inspect-members').replaceChildren(
    ...(p && Array.isArray(p.members) ? p.members : []).map((m) => el('li', `${m.user} (${m.conns})${m.info !== undefined ? ` ${shown(m.info)}` : ''}`)),
  );
  const h = r.history;
  $('inspect-history').textContent = h ? `epoch ${h.epoch}, head offset ${h.offset}` : 'No history on this channel';
  $('inspect-msgs').replaceChildren(
    ...(h && Array.isArray(h.messages) ? h.messages : []).map((m) => {
      const li = el('li');
      li.append(el('span', `#${m.offset}`, 'count'), el('code', shown(m.data)));
      return li;
    }),
  );
  $('inspect-result').hidden = false;
}

$('inspect-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  inspect();
});

// ---- publish ----

let publishing = false;

$('publish-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const out = $('publish-out');
  // One publish at a time (a flag, not `disabled`: a disabled button would lose the keyboard focus).
  if (publishing) return;
  const channel = $('publish-channel').value.trim();
  let data;
  try {
    data = JSON.parse($('publish-data').value);
  } catch (e) {
    out.className = 'out bad';
    out.textContent = `Data is not valid JSON: ${e.message}`;
    return;
  }
  out.className = 'out';
  out.textContent = 'Publishing…';
  publishing = true;
  try {
    const r = await api('publish', { channel, data });
    out.textContent = `Published: ${JSON.stringify(r)}`;
  } catch (e) {
    out.className = 'out bad';
    out.textContent = `Error: ${e}`;
  } finally {
    publishing = false;
  }
});

// ---- user actions ----

let acting = false;

async function userAction(action, needsChannel) {
  const out = $('user-out');
  if (acting) return; // one action at a time
  const user = $('user').value.trim();
  const channel = $('user-channel').value.trim();
  out.className = 'out';
  if (!user || (needsChannel && !channel)) {
    out.className = 'out bad';
    out.textContent = needsChannel ? 'Enter a user and a channel.' : 'Enter a user.';
    (user ? $('user-channel') : $('user')).focus();
    return;
  }
  out.textContent = `${action}…`;
  acting = true;
  $('user-form').setAttribute('aria-busy', 'true');
  try {
    const r = await api(action, needsChannel ? { user, channel } : { user });
    out.textContent = `Done (${action}): ${JSON.stringify(r)}`;
  } catch (e) {
    out.className = 'out bad';
    out.textContent = `Error: ${e}`;
  } finally {
    acting = false;
    $('user-form').removeAttribute('aria-busy');
  }
}

$('user-subscribe').addEventListener('click', () => userAction('subscribe', true));
$('user-unsubscribe').addEventListener('click', () => userAction('unsubscribe', true));
$('user-disconnect').addEventListener('click', () => {
  const user = $('user').value.trim();
  if (!user) {
    userAction('disconnect', false); // says what is missing
    return;
  }
  $('confirm-text').textContent = `Every connection of user "${user}" on every node is closed (code 4501). Their clients may reconnect.`;
  $('confirm').returnValue = '';
  $('confirm').showModal();
});
$('confirm').addEventListener('close', () => {
  if ($('confirm').returnValue === 'ok') userAction('disconnect', false);
  $('user-disconnect').focus();
});

// ---- start ----

$('login-fields').disabled = false;
if (token) {
  showApp(true);
  startPolling();
} else {
  showApp(false);
  $('token').focus();
}

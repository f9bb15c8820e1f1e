/* global document, sessionStorage, window */
// The demo page: a chat on one channel, with who is in the room, through @pubgate/client.
import { connect } from '@pubgate/client';

const $ = (id) => document.getElementById(id);
const config = await (await fetch('/api/config')).json();

const nameInput = $('name');
nameInput.value = sessionStorage.getItem('pubgate-demo-name') || `guest-${Math.random().toString(36).slice(2, 6)}`;
const userName = () => nameInput.value.trim() || 'anonymous';

function log(text) {
  const li = document.createElement('li');
  li.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  $('log').prepend(li);
}

function addMessage(data, message) {
  const li = document.createElement('li');
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = data && typeof data === 'object' && 'user' in data ? String(data.user) : 'server';
  const text = document.createElement('span');
  text.className = 'text';
  text.textContent = data && typeof data === 'object' && 'text' in data ? String(data.text) : JSON.stringify(data);
  const when = document.createElement('span');
  when.className = 'when';
  when.textContent = message.offset !== undefined ? `#${message.offset}` : '';
  li.append(who, text, when);
  $('messages').append(li);
  li.scrollIntoView({ block: 'nearest' });
}

function addNotice(text) {
  const li = document.createElement('li');
  li.className = 'notice';
  li.textContent = text;
  $('messages').append(li);
}

// The token comes from the demo server, which signs it with the gateway's secret.
async function getToken() {
  const res = await fetch(`/api/token?user=${encodeURIComponent(userName())}`);
  if (!res.ok) throw new Error(`token request failed: ${res.status}`);
  return (await res.json()).token;
}

const client = connect({ url: config.wsUrl, getToken });

client.on('state', ({ state }) => {
  $('state').textContent = state;
  $('state').dataset.state = state;
});
client.on('connecting', ({ url, attempt }) => log(`connecting to ${url}${attempt ? ` (attempt ${attempt + 1})` : ''}`));
client.on('connected', ({ welcome }) => {
  $('node').textContent = `node ${welcome.node} · ${welcome.user}`;
  log(`connected to node ${welcome.node} as ${welcome.user}`);
});
client.on('disconnected', ({ code, reason, reconnectInMs }) => log(`disconnected (${code}${reason ? ` ${reason}` : ''}), reconnecting in ${reconnectInMs} ms`));
client.on('closed', ({ code, reason }) => log(`closed (${code}${reason ? ` ${reason}` : ''})`));
client.on('resubscribed', ({ channel, recovered }) =>
  log(`resubscribed to ${channel}${recovered === true ? ', missed messages recovered' : recovered === false ? ', history lost' : ''}`),
);
client.on('refreshed', ({ expiresIn }) => log(`token refreshed, expires in ${expiresIn} s`));
client.on('error', (e) => log(`error: ${e.code} ${e.message}`));

const subscription = client.subscribe(config.channel, addMessage, {
  onResubscribe: ({ recovered }) => {
    if (recovered === false) addNotice('Some messages were missed while offline and could not be recovered.');
  },
});
subscription.ready.then(
  () => {
    log(`subscribed to ${config.channel}`);
    void readPresence();
  },
  (e) => log(`subscribe refused: ${e.message}`),
);

// ---- Who is in the room ------------------------------------------------------
// presence() gives the members when the subscription is confirmed; join and
// leave keep the list current. They are at most once and none arrive while
// disconnected, so the list is read again after every resubscribe. Events that
// arrive while a read is in flight are applied again on top of its answer:
// whichever the server did first, the list ends right.
const members = new Map(); // user -> info (the token's info claim: { name })
const reads = new Set(); // the events seen by each presence read in flight
let truncated = false;

const nameOf = (user, info) => (info && typeof info.name === 'string' && info.name ? info.name : user);

function renderMembers() {
  const me = client.welcome?.user;
  const items = [...members]
    .sort(([a, ai], [b, bi]) => nameOf(a, ai).localeCompare(nameOf(b, bi)))
    .map(([user, info]) => {
      const li = document.createElement('li');
      li.dataset.user = user;
      li.textContent = nameOf(user, info);
      if (user === me) {
        const you = document.createElement('span');
        you.className = 'you';
        you.textContent = '(you)';
        li.append(you);
      }
      return li;
    });
  $('members').replaceChildren(...items);
  $('member-count').textContent = `(${members.size}${truncated ? '+' : ''})`;
}

function applyPresence(type, ev) {
  if (type === 'join') members.set(ev.user, ev.info);
  else members.delete(ev.user);
}

for (const type of ['join', 'leave']) {
  subscription.on(type, (ev) => {
    for (const seen of reads) seen.push([type, ev]);
    log(`${nameOf(ev.user, type === 'join' ? ev.info : members.get(ev.user))} ${type === 'join' ? 'joined' : 'left'}`);
    applyPresence(type, ev);
    renderMembers();
  });
}

async function readPresence() {
  const seen = [];
  reads.add(seen);
  try {
    const r = await subscription.presence();
    members.clear();
    for (const m of r.members) members.set(m.user, m.info);
    for (const [type, ev] of seen) applyPresence(type, ev);
    truncated = r.truncated;
    $('members').dataset.stale = 'false';
    $('presence-note').textContent = '';
    renderMembers();
  } catch (e) {
    if (e.code === 'bad_request') {
      // The channel has no presence on this gateway.
      $('presence-note').replaceChildren('Presence is off for this channel. Start the gateway with ', Object.assign(document.createElement('code'), { textContent: `PUBGATE_NAMESPACES='${config.namespaces}'` }));
    } else if (e.code !== 'disconnected' && e.code !== 'closed' && e.code !== 'unsubscribed') {
      // unavailable, timeout, ...: try again while connected (a reconnect reads again anyway).
      log(`presence: ${e.code} ${e.message}`);
      setTimeout(() => client.state === 'connected' && void readPresence(), 2000);
    }
  } finally {
    reads.delete(seen);
  }
}

subscription.on('resubscribed', () => void readPresence());
client.on('disconnected', () => {
  $('members').dataset.stale = 'true'; // shown greyed until the next read
});

$('send').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const text = $('text').value.trim();
  if (!text) return;
  sessionStorage.setItem('pubgate-demo-name', userName());
  $('error').textContent = '';
  try {
    const res = await fetch('/api/publish', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ channel: config.channel, user: userName(), text }),
    });
    if (!res.ok) throw new Error(`publish failed: ${res.status} ${await res.text()}`);
    $('text').value = '';
  } catch (e) {
    $('error').textContent = e instanceof Error ? e.message : String(e);
  }
});

// For the browser console and the end-to-end test.
window.pubgateDemo = { client, subscription, members };

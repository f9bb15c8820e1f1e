/* global document, sessionStorage, window */
// The demo page: a chat on one channel, through @pubgate/client.
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
  () => log(`subscribed to ${config.channel}`),
  (e) => log(`subscribe refused: ${e.message}`),
);

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
window.pubgateDemo = { client, subscription };

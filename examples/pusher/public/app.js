/* global Pusher, document, location, URLSearchParams */
// The example page: pusher-js against pubgate, with one public, one private and
// one presence channel. Nothing here is pubgate-specific but the connection
// options from /api/config (wsHost, wsPort, forceTLS).
(async () => {
  const $ = (id) => document.getElementById(id);
  const config = await (await fetch('/api/config')).json();
  const user = new URLSearchParams(location.search).get('user') || `guest-${Math.random().toString(36).slice(2, 6)}`;

  // What the page has seen, for people and for the browser test (test/e2e/pusher-example.test.ts).
  const state = { state: 'initialized', socketId: null, channels: {}, events: [], members: [], errors: [] };
  globalThis.pusherExample = state;

  const pusher = new Pusher(config.key, {
    cluster: 'pubgate', // required by pusher-js; unused once wsHost is set
    wsHost: config.wsHost,
    wsPort: config.wsPort,
    wssPort: config.wsPort,
    forceTLS: config.forceTLS,
    enabledTransports: ['ws'],
    // The example server signs private- and presence- subscriptions with the `pusher` library.
    channelAuthorization: { endpoint: '/pusher/auth', transport: 'ajax', params: { user } },
  });

  pusher.connection.bind('state_change', ({ current }) => {
    state.state = current;
    state.socketId = pusher.connection.socket_id ?? null;
    $('state').textContent = current;
    $('state').dataset.state = current;
    $('socket').textContent = state.socketId ? `socket_id ${state.socketId}` : '';
  });
  pusher.connection.bind('error', (e) => {
    const text = JSON.stringify(e?.error?.data ?? e?.data ?? e?.type ?? e);
    state.errors.push(text);
    $('error').textContent = text;
  });

  function showChannel(name, s) {
    state.channels[name] = s;
    let li = document.querySelector(`#channels li[data-name="${name}"]`);
    if (!li) {
      li = document.createElement('li');
      li.dataset.name = name;
      $('channels').append(li);
      const opt = document.createElement('option');
      opt.value = opt.textContent = name;
      $('channel').append(opt);
    }
    li.dataset.state = s.startsWith('error') ? 'error' : s;
    li.textContent = `${name}: ${s}`;
  }

  function showEvent(channel, event, data) {
    state.events.push({ channel, event, data });
    const li = document.createElement('li');
    const c = document.createElement('span');
    c.className = 'channel';
    c.textContent = channel;
    const e = document.createElement('span');
    e.className = 'event';
    e.textContent = event;
    li.append(c, e, document.createTextNode(typeof data === 'string' ? data : JSON.stringify(data)));
    $('events').prepend(li);
  }

  function showMembers(members) {
    const list = [];
    members.each((m) => list.push(m.id));
    state.members = list.sort();
    $('members').replaceChildren(...state.members.map((id) => Object.assign(document.createElement('li'), { textContent: id === members.myID ? `${id} (you)` : id })));
    $('member-count').textContent = `(${members.count})`;
  }

  for (const name of [config.channels.public, config.channels.private, config.channels.presence]) {
    showChannel(name, 'pending');
    const ch = pusher.subscribe(name);
    ch.bind('pusher:subscription_succeeded', (members) => {
      showChannel(name, 'subscribed');
      if (name.startsWith('presence-')) showMembers(members);
    });
    ch.bind('pusher:subscription_error', (e) => showChannel(name, `error ${e?.status ?? ''} ${e?.error ?? ''}`.trim()));
    if (name.startsWith('presence-')) {
      ch.bind('pusher:member_added', () => showMembers(ch.members));
      ch.bind('pusher:member_removed', () => showMembers(ch.members));
    }
    // Every event the app triggers on the channel (pusher:* and pusher_internal:* are the protocol's own).
    ch.bind_global((event, data) => {
      if (!event.startsWith('pusher:') && !event.startsWith('pusher_internal:')) showEvent(name, event, data);
    });
  }

  $('trigger').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    $('error').textContent = '';
    const res = await fetch('/api/trigger', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ channel: $('channel').value, text: $('text').value }),
    });
    if (!res.ok) $('error').textContent = `trigger: ${res.status} ${await res.text()}`;
    else $('text').value = '';
  });
})().catch((e) => {
  globalThis.pusherExampleError = String(e?.stack ?? e);
  document.getElementById('error').textContent = String(e);
});

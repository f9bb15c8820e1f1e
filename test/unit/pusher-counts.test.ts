/**
 * One node's answer to a channel count query (pusher/counts.ts): the app's
 * channels only, by Pusher name, in name order, bounded with `more`; user
 * channels and native names outside Pusher's grammar left out.
 */
import { describe, expect, it } from 'vitest';
import { parsePusherApps, PusherApps } from '../../src/pusher/apps.js';
import { localPusherCounts, type LocalSubscriptions } from '../../src/pusher/counts.js';

const apps = new PusherApps(parsePusherApps(['7:k7:s7-secret', 'other:k8:s8-secret']));

function hub(channels: [string, number][]): LocalSubscriptions {
  const m = new Map(channels);
  return { localSubscribers: (c) => m.get(c) ?? 0, localChannels: () => [...m] };
}

const node = hub([
  ['chat-b', 2],
  ['chat-a', 1],
  ['news', 3],
  ['empty', 0],
  ['chat:1', 4], // native only: not a Pusher name
  ['#7#a,b', 1], // the default app's channel outside the native grammar
  ['#other#chat-a', 5],
  ['#7##server-to-user-42', 1],
]);

describe('localPusherCounts', () => {
  it('lists the app\'s channels with subscribers whose name starts with the prefix, in name order', () => {
    expect(localPusherCounts(apps, node, { kind: 'query', id: 'q', from: 'n', app: '7', prefix: '' })).toEqual({
      counts: [['a,b', 1], ['chat-a', 1], ['chat-b', 2], ['news', 3]],
      more: false,
    });
    expect(localPusherCounts(apps, node, { kind: 'query', id: 'q', from: 'n', app: '7', prefix: 'chat-' }).counts).toEqual([['chat-a', 1], ['chat-b', 2]]);
    expect(localPusherCounts(apps, node, { kind: 'query', id: 'q', from: 'n', app: 'other', prefix: '' }).counts).toEqual([['chat-a', 5]]);
  });

  it('counts the named channels of the app, leaving out those without subscribers', () => {
    expect(localPusherCounts(apps, node, { kind: 'query', id: 'q', from: 'n', app: 'other', channels: ['chat-a', 'chat-b'] }).counts).toEqual([['chat-a', 5]]);
    expect(localPusherCounts(apps, node, { kind: 'query', id: 'q', from: 'n', app: '7', channels: ['news', 'empty', 'a,b', 'news'] }).counts).toEqual([['a,b', 1], ['news', 3]]);
  });

  it('lists at most max channels, the first in name order, and says more', () => {
    expect(localPusherCounts(apps, node, { kind: 'query', id: 'q', from: 'n', app: '7', prefix: '' }, 2)).toEqual({ counts: [['a,b', 1], ['chat-a', 1]], more: true });
  });

  it('answers nothing for an app this node does not have', () => {
    expect(localPusherCounts(apps, node, { kind: 'query', id: 'q', from: 'n', app: 'nope', prefix: '' })).toEqual({ counts: [], more: false });
  });
});

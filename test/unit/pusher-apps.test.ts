import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { parsePusherApps, PusherApps, PusherAppsError } from '../../src/pusher/apps.js';
import {
  channelKind, internalChannel, isValidPusherChannel, nameInApp, pusherChannel, userChannel,
} from '../../src/pusher/channels.js';
import { configProblems } from '../helpers/config-problems.js';

function problemsOf(entries: string[]): string[] {
  try {
    parsePusherApps(entries);
  } catch (e) {
    if (e instanceof PusherAppsError) return [...e.problems];
    throw e;
  }
  return [];
}

describe('parsePusherApps', () => {
  it('reads app_id:key:secret entries; the first is the default app; a secret may hold colons', () => {
    expect(parsePusherApps(['1:key-one:s3cret', 'app-2:key.two:a:b:c'])).toEqual([
      { id: '1', key: 'key-one', secret: 's3cret', isDefault: true },
      { id: 'app-2', key: 'key.two', secret: 'a:b:c', isDefault: false },
    ]);
  });

  it('refuses malformed entries, repeated ids and keys and empty secrets, every one, without quoting a secret', () => {
    const p = problemsOf(['1:k1:topsecret', 'nocolons-secretish', '1:k2:other-secret', '2:k1:third-secret', '3:k3:', 'a#b:k4:x', '4:k/5:x']);
    expect(p).toEqual([
      'entry 2 of 7 is not app_id:key:secret',
      'entry 3 of 7: app_id "1" is given twice',
      'entry 4 of 7: key "k1" is given twice',
      'entry 5 of 7: the secret is empty',
      'entry 6 of 7: the app_id must be 1-64 characters of A-Z a-z 0-9 _ . -',
      'entry 7 of 7: the key must be 1-128 characters of A-Z a-z 0-9 _ . -',
    ]);
    for (const s of ['topsecret', 'nocolons-secretish', 'other-secret', 'third-secret']) expect(p.join('\n')).not.toContain(s);
  });

  it('looks apps up by key and by id', () => {
    const apps = new PusherApps(parsePusherApps(['1:k1:s1', '2:k2:s2']));
    expect(apps.defaultApp?.id).toBe('1');
    expect(apps.byKey('k2')?.id).toBe('2');
    expect(apps.byId('1')?.key).toBe('k1');
    expect(apps.byKey('1')).toBeUndefined();
    expect(new PusherApps([]).defaultApp).toBeUndefined();
  });
});

describe('PUBGATE_PUSHER_APPS', () => {
  it('is taken in order (the first app is the default app); unset means no apps', () => {
    expect(configProblems({ PUBGATE_PUSHER_APPS: '1:k:s' })).toEqual([]);
    expect(loadConfig({ PUBGATE_PUSHER_APPS: '1:k:s, 2:k2:s2' }).pusherApps.map((a) => a.id)).toEqual(['1', '2']);
    expect(loadConfig({}).pusherApps).toEqual([]);
  });

  it('reports entry problems with the variable name, never the secret', () => {
    const p = configProblems({ PUBGATE_PUSHER_APPS: '1:k:hidden-value,1:k2:hidden-value' });
    expect(p).toEqual(['PUBGATE_PUSHER_APPS: entry 2 of 2: app_id "1" is given twice']);
    expect(p.join()).not.toContain('hidden-value');
  });
});

describe('Pusher channel names', () => {
  const apps = new PusherApps(parsePusherApps(['1:k1:s1', '2:k2:s2']));
  const def = apps.byId('1')!;
  const other = apps.byId('2')!;

  it('follows Pusher\'s grammar: [A-Za-z0-9_-=@,.;], 1-164 characters', () => {
    for (const ok of ['a', 'private-x', 'presence-room.1', 'a,b;c=d@e_f-g', 'x'.repeat(164)]) expect(isValidPusherChannel(ok), ok).toBe(true);
    for (const bad of ['', 'a:b', 'a/b', 'a b', '#server-to-user-1', 'x'.repeat(165), 7]) expect(isValidPusherChannel(bad), String(bad)).toBe(false);
  });

  it('tells the kind from the prefix', () => {
    expect(['news', 'private-a', 'private-encrypted-a', 'presence-a'].map(channelKind)).toEqual(['public', 'private', 'private-encrypted', 'presence']);
  });

  it('maps a default-app name valid natively to itself, anything else to #<appId>#<name>', () => {
    expect(internalChannel(def, 'news')).toBe('news');
    expect(internalChannel(def, 'presence-room')).toBe('presence-room');
    expect(internalChannel(def, 'a,b')).toBe('#1#a,b');
    expect(internalChannel(def, 'x'.repeat(164))).toBe('x'.repeat(164));
    expect(internalChannel(other, 'news')).toBe('#2#news');
    expect(userChannel(def, 'u1')).toBe('#1##server-to-user-u1');
    expect(userChannel(other, 'u1')).toBe('#2##server-to-user-u1');
  });

  it('inverts the mapping, and sees nothing a Pusher client cannot name', () => {
    for (const [app, name] of [[def, 'news'], [def, 'a,b'], [other, 'news'], [other, 'private-x;y'], [def, '#server-to-user-u1']] as const) {
      expect(pusherChannel(apps, internalChannel(app, name))).toEqual({ app, name });
    }
    expect(pusherChannel(apps, 'chat:room/1')).toBeUndefined(); // native only
    expect(pusherChannel(apps, '#9#news')).toBeUndefined(); // unknown app
    expect(pusherChannel(apps, '#1#news')).toBeUndefined(); // not the default app's form of "news"
    expect(pusherChannel(apps, '#1')).toBeUndefined();
    expect(pusherChannel(new PusherApps([]), 'news')).toBeUndefined();
  });

  it('gives back the Pusher name of a channel of one app from its internal name alone', () => {
    for (const [app, name] of [[def, 'news'], [def, 'a,b'], [def, 'x'.repeat(164)], [other, 'news'], [other, 'private-x;y'], [def, '#server-to-user-u1'], [other, '#server-to-user-u1']] as const) {
      expect(nameInApp(app, internalChannel(app, name))).toBe(name);
    }
  });
});

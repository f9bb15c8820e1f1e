/**
 * Pusher apps (contract 1.1, "Pusher Channels compatibility"): PUBGATE_PUSHER_APPS
 * lists `app_id:key:secret`, comma-separated. Each app is its own channel space;
 * the first one listed is the default app, whose channels are the native
 * channels of the same name (channels.ts).
 *
 * Messages about a malformed entry name it by position and never quote it:
 * the entry carries the secret.
 */

export interface PusherApp {
  /** `app_id`: the HTTP API's `/apps/{id}` and the internal channel prefix of a non-default app. */
  readonly id: string;
  /** The public key: the WebSocket's `/app/{key}` and the HTTP API's `auth_key`. */
  readonly key: string;
  /** Signs channel auth, user auth and HTTP API requests. Never logged. */
  readonly secret: string;
  /** The first app listed: its channels are the native channels of the same name. */
  readonly isDefault: boolean;
}

/**
 * An app id: it appears in `/apps/{id}` and inside internal channel names
 * (`#<id>#<channel>`), so no `#`, `:`, `/` or `,`. Pusher's ids are numbers;
 * Soketi's are any text; this allows both within a safe alphabet.
 */
const APP_ID_RE = /^[A-Za-z0-9_.-]{1,64}$/;
/** An app key: it appears in the path `/app/{key}` and in `auth_key`. */
const APP_KEY_RE = /^[A-Za-z0-9_.-]{1,128}$/;
/** Secrets are used as HMAC keys; bounded so an absurd value is refused. */
const MAX_SECRET_LENGTH = 1024;

/** Error with one line per problem; `config.ts` prefixes each with the variable name. */
export class PusherAppsError extends Error {
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super(problems.join('\n'));
    this.name = 'PusherAppsError';
    this.problems = problems;
  }
}

/**
 * Parses the entries (already split on commas and trimmed, empty ones dropped).
 * Each is `app_id:key:secret`, split on its first two colons: a secret may hold
 * colons. Ids and keys must be unique; a secret must not be empty.
 * Throws PusherAppsError listing every problem.
 */
export function parsePusherApps(entries: readonly string[]): PusherApp[] {
  const problems: string[] = [];
  const apps: PusherApp[] = [];
  const ids = new Set<string>();
  const keys = new Set<string>();
  entries.forEach((entry, i) => {
    const which = `entry ${i + 1} of ${entries.length}`;
    const a = entry.indexOf(':');
    const b = a < 0 ? -1 : entry.indexOf(':', a + 1);
    if (a < 0 || b < 0) {
      problems.push(`${which} is not app_id:key:secret`);
      return;
    }
    const id = entry.slice(0, a);
    const key = entry.slice(a + 1, b);
    const secret = entry.slice(b + 1);
    let ok = true;
    if (!APP_ID_RE.test(id)) {
      problems.push(`${which}: the app_id must be 1-64 characters of A-Z a-z 0-9 _ . -`);
      ok = false;
    } else if (ids.has(id)) {
      problems.push(`${which}: app_id ${JSON.stringify(id)} is given twice`);
      ok = false;
    }
    if (!APP_KEY_RE.test(key)) {
      problems.push(`${which}: the key must be 1-128 characters of A-Z a-z 0-9 _ . -`);
      ok = false;
    } else if (keys.has(key)) {
      problems.push(`${which}: key ${JSON.stringify(key)} is given twice`);
      ok = false;
    }
    if (secret === '') {
      problems.push(`${which}: the secret is empty`);
      ok = false;
    } else if (secret.length > MAX_SECRET_LENGTH) {
      problems.push(`${which}: the secret is longer than ${MAX_SECRET_LENGTH} characters`);
      ok = false;
    }
    ids.add(id);
    keys.add(key);
    if (ok) apps.push(Object.freeze({ id, key, secret, isDefault: i === 0 }));
  });
  if (problems.length > 0) throw new PusherAppsError(problems);
  return apps;
}

/** The configured apps, looked up by key (WebSocket) or id (HTTP API). */
export class PusherApps {
  readonly list: readonly PusherApp[];
  private readonly keys: ReadonlyMap<string, PusherApp>;
  private readonly ids: ReadonlyMap<string, PusherApp>;

  constructor(list: readonly PusherApp[]) {
    this.list = list;
    this.keys = new Map(list.map((app) => [app.key, app]));
    this.ids = new Map(list.map((app) => [app.id, app]));
  }

  /** The default app (the first listed), or undefined when none is configured. */
  get defaultApp(): PusherApp | undefined {
    return this.list[0];
  }

  byKey(key: string): PusherApp | undefined {
    return this.keys.get(key);
  }

  byId(id: string): PusherApp | undefined {
    return this.ids.get(id);
  }
}

/**
 * Pusher's signatures: channel authorization (`<key>:<hex HMAC-SHA256>` over
 * `socket_id:channel` or `socket_id:channel:channel_data`) and user
 * authentication (over `socket_id::user::user_data`), with the app secret.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export function sign(secret: string, text: string): string {
  return createHmac('sha256', secret).update(text, 'utf8').digest('hex');
}

/** Whether `auth` is `<key>:<signature of text>`; constant time in the signature. */
export function verifyAuth(key: string, secret: string, text: string, auth: unknown): boolean {
  if (typeof auth !== 'string' || !auth.startsWith(`${key}:`)) return false;
  const given = Buffer.from(auth.slice(key.length + 1), 'utf8');
  const want = Buffer.from(sign(secret, text), 'utf8');
  return given.length === want.length && timingSafeEqual(given, want);
}

export function channelAuthText(socketId: string, channel: string, channelData?: string): string {
  return channelData === undefined ? `${socketId}:${channel}` : `${socketId}:${channel}:${channelData}`;
}

export function userAuthText(socketId: string, userData: string): string {
  return `${socketId}::user::${userData}`;
}

/**
 * Request heads up to this size are read whole, so a token of 8192 characters
 * plus ordinary headers and cookies reaches the token check (and gets a 401)
 * instead of being cut off by uWS's 4 KiB default. Larger heads get uWS's 431.
 * Set before uWebSockets.js loads (see uws.ts); an operator's own value wins.
 */
export const MAX_REQUEST_HEAD_BYTES = 24 * 1024;
process.env.UWS_HTTP_MAX_HEADERS_SIZE ??= String(MAX_REQUEST_HEAD_BYTES);

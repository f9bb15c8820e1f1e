/**
 * A node serving wss:// and https:// itself (PUBGATE_TLS_CERT / PUBGATE_TLS_KEY,
 * uWS SSLApp), with a self-signed certificate made by openssl for this test:
 * the handshake, a publish over HTTPS, and the failures clients report for an
 * untrusted or mismatched certificate. The admin port stays plain HTTP.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { token } from '../helpers/client.js';
import { runGateway, startGateway, TEST_API_KEY, type GatewayProcess } from '../helpers/gateway.js';
import { makeCert, removeDir, tempDir, type Cert } from '../helpers/proxies.js';
import { needs } from '../helpers/tools.js';
import { openClient, publishVia, request } from '../helpers/wire.js';

describe('TLS on the node (PUBGATE_TLS_CERT / PUBGATE_TLS_KEY)', needs('openssl'), () => {
  let dir: string;
  let cert: Cert;
  let gw: GatewayProcess;
  let wss: string;

  beforeAll(async () => {
    dir = tempDir('pubgate-tls-');
    cert = makeCert(dir, ['localhost', '127.0.0.1']);
    gw = await startGateway({ PUBGATE_TLS_CERT: cert.cert, PUBGATE_TLS_KEY: cert.key });
    wss = `wss://127.0.0.1:${gw.port}/ws`;
  });

  afterAll(async () => {
    await gw?.stop();
    removeDir(dir);
  });

  it('says tls: true in its listening line and keeps the admin port on plain HTTP', async () => {
    expect((await gw.waitForLog((l) => l.msg === 'listening')).tls).toBe(true);
    expect((await fetch(`${gw.admin}/healthz`)).status).toBe(200);
  });

  it('accepts wss:// with the certificate it was given, and delivers a publish made over https://', async () => {
    const c = await openClient(wss, { token: await token({ sub: 'tls', channels: ['secure'] }), ca: cert.certPem });
    try {
      expect(c.welcome.type).toBe('welcome');
      expect(c.peerFingerprint256).toBe(cert.fingerprint256);
      expect(await c.request({ type: 'subscribe', id: 1, channel: 'secure' })).toEqual({ type: 'reply', id: 1 });
      const res = await publishVia({ tls: true, port: gw.port, ca: cert.certPem }, 'secure', { over: 'https' });
      expect(res.status, res.body).toBe(200);
      expect(await c.next((f) => f.type === 'message')).toEqual({ type: 'message', channel: 'secure', data: { over: 'https' } });
    } finally {
      await c.close();
    }
  });

  it('is refused by a client that does not trust a self-signed certificate', async () => {
    const err = await openClient(wss, { token: await token({ sub: 'tls' }) }).then(
      () => undefined,
      (e: NodeJS.ErrnoException) => e,
    );
    expect(err?.code).toBe('DEPTH_ZERO_SELF_SIGNED_CERT');
  });

  it('is refused for a host name the certificate does not name (browsers: ERR_CERT_COMMON_NAME_INVALID)', async () => {
    const err = await openClient(wss, { token: await token({ sub: 'tls' }), ca: cert.certPem, servername: 'ws.example.com' }).then(
      () => undefined,
      (e: NodeJS.ErrnoException) => e,
    );
    expect(err?.code).toBe('ERR_TLS_CERT_ALTNAME_INVALID');
  });

  it('gives a plain ws:// / http:// client on the TLS port no HTTP answer', async () => {
    await expect(openClient(`ws://127.0.0.1:${gw.port}/ws`, { token: await token({ sub: 'tls' }) })).rejects.toThrow();
    await expect(request({ tls: false, port: gw.port, method: 'POST', path: '/v1/publish', headers: { authorization: `Bearer ${TEST_API_KEY}` } })).rejects.toThrow();
  });

  it('stops at start (exit 1) when the key does not belong to the certificate', async () => {
    const other = makeCert(dir, ['localhost'], 'other');
    const r = await runGateway({ PUBGATE_PORT: '0', PUBGATE_ADMIN_PORT: '0', PUBGATE_HOST: '127.0.0.1', PUBGATE_TLS_CERT: cert.cert, PUBGATE_TLS_KEY: other.key });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/PUBGATE_TLS_CERT \/ PUBGATE_TLS_KEY: /);
  });

  it('stops at start (exit 1) when the certificate file cannot be read', async () => {
    const missing = path.join(dir, 'missing.crt');
    const r = await runGateway({ PUBGATE_PORT: '0', PUBGATE_ADMIN_PORT: '0', PUBGATE_HOST: '127.0.0.1', PUBGATE_TLS_CERT: missing, PUBGATE_TLS_KEY: cert.key });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/PUBGATE_TLS_CERT: cannot read .*missing\.crt/);
  });

  it('stops at start (exit 1) when the certificate file is not PEM', async () => {
    const junk = path.join(dir, 'junk.crt');
    writeFileSync(junk, 'not a certificate\n');
    const r = await runGateway({ PUBGATE_PORT: '0', PUBGATE_ADMIN_PORT: '0', PUBGATE_HOST: '127.0.0.1', PUBGATE_TLS_CERT: junk, PUBGATE_TLS_KEY: cert.key });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/PUBGATE_TLS_CERT \/ PUBGATE_TLS_KEY: /);
  });
});

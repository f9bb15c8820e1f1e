#!/usr/bin/env node
// Entry for `npx pubgate-check`: a committed shim, so npm can link the bin on
// install even before the package is built (`npm run build:client`).
import('../dist/check/cli.js').catch((err) => {
  if (err && err.code === 'ERR_MODULE_NOT_FOUND') {
    process.stderr.write('pubgate-check: the client is not built yet; run `npm run build:client` (or `npm run build`) first\n');
    process.exit(2);
  }
  throw err;
});

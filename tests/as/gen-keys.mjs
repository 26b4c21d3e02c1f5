// Writes a fresh signing key set for the test AS.
//
// Usage: node tests/as/gen-keys.mjs OUT.json [kid-prefix]
// OUT.json gets {"keys": [ES256, PS256, EdDSA private JWKs]}, each with
// kid "<prefix>-es256" / "<prefix>-ps256" / "<prefix>-eddsa", alg and use "sig".
// The public halves are printed as a JWKS on stdout.

import { writeFileSync } from 'node:fs';

import * as jose from 'jose';

const [out, prefix = 'k1'] = process.argv.slice(2);
if (!out) {
  process.stderr.write('usage: node gen-keys.mjs OUT.json [kid-prefix]\n');
  process.exit(2);
}

const keys = [];
const pub = [];
for (const [alg, opts] of [['ES256', {}], ['PS256', { modulusLength: 2048 }], ['EdDSA', { crv: 'Ed25519' }]]) {
  const { privateKey, publicKey } = await jose.generateKeyPair(alg, { ...opts, extractable: true });
  const kid = `${prefix}-${alg.toLowerCase()}`;
  keys.push({ ...(await jose.exportJWK(privateKey)), kid, alg, use: 'sig' });
  pub.push({ ...(await jose.exportJWK(publicKey)), kid, alg, use: 'sig' });
}
writeFileSync(out, `${JSON.stringify({ keys }, null, 2)}\n`, { mode: 0o600 });
process.stdout.write(`${JSON.stringify({ keys: pub })}\n`);

// End-to-end self test of the test AS (not run by CI; a developer aid).
//
// Usage: node tests/as/selftest.mjs
// Needs the openssl CLI (for throwaway X.509 certificates). Starts server.mjs
// twice (plain HTTP, then HTTPS with client certificates on the TLS
// connection), drives it through /__test/ and the real OAuth endpoints, and
// prints "N passed, N failed".

import { execFileSync, spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import * as jose from 'jose';

const here = dirname(fileURLToPath(import.meta.url));
let passed = 0;
let failed = 0;

function check(name, cond, detail) {
  if (cond) {
    passed += 1;
    process.stdout.write(`ok   ${name}\n`);
  } else {
    failed += 1;
    process.stdout.write(`FAIL ${name}${detail !== undefined ? `: ${JSON.stringify(detail)}` : ''}\n`);
  }
}

function request(url, { method = 'GET', headers = {}, body, cert, key } = {}) {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const mod = u.protocol === 'https:' ? https : http;
    const opts = {
      method, hostname: u.hostname, port: u.port, path: u.pathname + u.search, headers: { ...headers }, agent: false,
    };
    if (u.protocol === 'https:') {
      opts.rejectUnauthorized = false;
      if (cert) Object.assign(opts, { cert, key });
    }
    if (body !== undefined) opts.headers['content-length'] = Buffer.byteLength(body);
    const req = mod.request(opts, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let json;
        try { json = JSON.parse(text); } catch { /* not JSON */ }
        resolve({ status: res.statusCode, headers: res.headers, text, json });
      });
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

const postJson = (url, obj) => request(url, {
  method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(obj),
});

const basic = (id, secret) => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;

function opensslCert(dir, name, subj, extra = []) {
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', join(dir, `${name}.key`), '-out', join(dir, `${name}.crt`), '-days', '2', '-subj', subj, ...extra,
  ], { stdio: 'ignore' });
  return { cert: readFileSync(join(dir, `${name}.crt`), 'utf8'), key: readFileSync(join(dir, `${name}.key`), 'utf8') };
}

function startServer(configPath) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(here, 'server.mjs'), '--config', configPath], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stderr.on('data', (c) => { err += c; });
    child.stdout.on('data', (c) => {
      out += c;
      const m = /^READY (\S+)\n/.exec(out);
      if (m) resolve({ child, base: m[1], stdout: () => out, stderr: () => err });
    });
    child.on('exit', (code) => reject(new Error(`server exited ${code}: ${err}`)));
    setTimeout(() => reject(new Error(`no READY within 10s: ${err}`)), 10_000).unref();
  });
}

async function run(tls) {
  const label = tls ? 'https' : 'http';
  const dir = mkdtempSync(join(tmpdir(), `test-as-${label}-`));
  try {
    // Signing keys, the way the Rust tests are expected to provide them.
    execFileSync(process.execPath, [join(here, 'gen-keys.mjs'), join(dir, 'signing.json'), 'k1'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const signing = JSON.parse(readFileSync(join(dir, 'signing.json'), 'utf8'));
    const publicJwks = {
      keys: signing.keys.map(({ d, p, q, dp, dq, qi, ...pub }) => pub),
    };
    const jwks = jose.createLocalJWKSet(publicJwks);

    // private_key_jwt client key
    const pk = await jose.generateKeyPair('PS256', { extractable: true });
    const pkPriv = { ...(await jose.exportJWK(pk.privateKey)), kid: 'pkjwt-1', alg: 'PS256' };
    const pkPub = { ...(await jose.exportJWK(pk.publicKey)), kid: 'pkjwt-1', alg: 'PS256' };

    // mTLS client certs
    const mtls = opensslCert(dir, 'client', '/O=fapigate-test/CN=mtls-client');
    const selfSigned = opensslCert(dir, 'self', '/CN=self-signed-client');
    const selfJwk = {
      ...(await jose.exportJWK(crypto.createPublicKey(selfSigned.cert))),
      x5c: [new crypto.X509Certificate(selfSigned.cert).raw.toString('base64')],
    };
    const x5t = (pem) => crypto.createHash('sha256').update(new crypto.X509Certificate(pem).raw).digest('base64url');

    const config = {
      port: 0,
      signing_keys: join(dir, 'signing.json'),
      audience: 'https://127.0.0.1:8443',
      access_token_format: 'jwt',
      access_token_alg: 'PS256',
      access_token_ttl: 120,
      access_token_format_by_client: { 'app-opaque': 'opaque', 'app-mtls': 'opaque' },
      clients: [
        { client_id: 'gateway', client_secret: 'gw-secret' },
        { client_id: 'gateway-post', client_secret: 'gw-post-secret', token_endpoint_auth_method: 'client_secret_post' },
        { client_id: 'gateway-pkjwt', token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [pkPub] } },
        {
          client_id: 'gateway-tls', token_endpoint_auth_method: 'tls_client_auth', tls_client_auth_subject_dn: 'CN=mtls-client,O=fapigate-test',
        },
        {
          client_id: 'app-dpop', client_secret: 'dpop-secret', dpop_bound_access_tokens: true, authorization_details_types: ['account_information', 'payment_initiation'],
        },
        { client_id: 'app-opaque', client_secret: 'opaque-secret' },
        {
          client_id: 'app-mtls', token_endpoint_auth_method: 'self_signed_tls_client_auth', jwks: { keys: [selfJwk] }, tls_client_certificate_bound_access_tokens: true,
        },
      ],
    };
    if (tls) {
      const as = opensslCert(dir, 'as', '/CN=127.0.0.1', ['-addext', 'subjectAltName=IP:127.0.0.1']);
      config.tls = { cert: join(dir, 'as.crt'), key: join(dir, 'as.key') };
      void as;
    }
    const configPath = join(dir, 'config.json');
    writeFileSync(configPath, JSON.stringify(config, null, 2));

    const srv = await startServer(configPath);
    const B = srv.base;
    const t = (name) => `[${label}] ${name}`;
    try {
      check(t('READY line'), srv.stdout() === `READY ${B}\n` && B.startsWith(`${label}://127.0.0.1:`), srv.stdout());

      const meta = (await request(`${B}/.well-known/oauth-authorization-server`)).json;
      check(t('RFC 8414 metadata alias'), meta?.issuer === B && meta.introspection_endpoint === `${B}/token/introspection`, meta);
      check(t('discovery advertises JWT introspection algs'), meta?.introspection_signing_alg_values_supported?.includes('ES256'), meta?.introspection_signing_alg_values_supported);

      // DPoP-bound JWT access tokens, one per DPoP alg, with RAR.
      const details = [{ type: 'payment_initiation', actions: ['initiate'], instructedAmount: { currency: 'EUR', amount: '12.34' } }];
      for (const alg of ['ES256', 'PS256', 'EdDSA']) {
        const r = await postJson(`${B}/__test/token`, {
          client_id: 'app-dpop', client_secret: 'dpop-secret', auth: 'client_secret_basic', dpop: true, dpop_alg: alg, scope: 'payments accounts', authorization_details: details,
        });
        const tok = r.json;
        let payload;
        let header;
        try {
          ({ payload, protectedHeader: header } = await jose.jwtVerify(tok.access_token, jwks, { typ: 'at+jwt', issuer: B, audience: config.audience }));
        } catch (e) { payload = { verifyError: e.message }; }
        check(t(`DPoP(${alg}) JWT: token_type DPoP, PS256 sig, cnf.jkt, aud, client_id, scope, RAR`),
          r.status === 200 && tok.token_type === 'DPoP' && header?.alg === 'PS256' && header?.kid === 'k1-ps256'
          && payload.cnf?.jkt === tok.jkt && payload.aud === config.audience && payload.client_id === 'app-dpop'
          && payload.scope === 'payments accounts' && JSON.stringify(payload.authorization_details) === JSON.stringify(details),
          { status: r.status, tok, header, payload });

        // proof for a resource request with ath
        const p = await postJson(`${B}/__test/proof`, {
          dpop_key_id: tok.dpop_key_id, htm: 'GET', htu: 'https://127.0.0.1:8443/accounts', access_token: tok.access_token,
        });
        const ph = jose.decodeProtectedHeader(p.json.proof);
        const pc = jose.decodeJwt(p.json.proof);
        const pubKey = await jose.importJWK(ph.jwk, ph.alg);
        let sigOk = false;
        try { await jose.jwtVerify(p.json.proof, pubKey, { typ: 'dpop+jwt' }); sigOk = true; } catch { /* fail below */ }
        const ath = crypto.createHash('sha256').update(tok.access_token).digest('base64url');
        check(t(`/__test/proof (${alg}): signed, jwk thumbprint = jkt, htm/htu/ath/iat/jti`),
          p.status === 200 && sigOk && ph.alg === alg && (await jose.calculateJwkThumbprint(ph.jwk)) === tok.jkt && p.json.jkt === tok.jkt
          && pc.htm === 'GET' && pc.htu === 'https://127.0.0.1:8443/accounts' && pc.ath === ath && pc.jti && pc.iat,
          { ph, pc });
      }

      // dpop_bound_access_tokens client without a proof is refused by the AS.
      const noProof = await postJson(`${B}/__test/token`, { client_id: 'app-dpop', client_secret: 'dpop-secret', dpop: false });
      check(t('dpop_bound client without proof -> 400 invalid_grant'), noProof.status === 400 && noProof.json?.error === 'invalid_grant', noProof.json);

      const badSecret = await postJson(`${B}/__test/token`, { client_id: 'gateway', client_secret: 'nope' });
      check(t('wrong secret -> 401 invalid_client'), badSecret.status === 401 && badSecret.json?.error === 'invalid_client', badSecret.json);

      // private_key_jwt
      const pkTok = await postJson(`${B}/__test/token`, { client_id: 'gateway-pkjwt', auth: 'private_key_jwt', private_jwk: pkPriv });
      check(t('private_key_jwt (PS256) token, Bearer'), pkTok.status === 200 && pkTok.json.token_type === 'Bearer', pkTok.json);

      // Opaque token + introspection.
      const statsBefore = (await request(`${B}/__test/stats`)).json.introspections;
      const op = (await postJson(`${B}/__test/token`, {
        client_id: 'app-opaque', client_secret: 'opaque-secret', scope: 'accounts', authorization_details: [{ type: 'account_information', actions: ['read'] }],
      })).json;
      check(t('opaque token is not a JWT'), typeof op.access_token === 'string' && op.access_token.split('.').length === 1, op);

      const form = (obj) => new URLSearchParams(obj).toString();
      const introspect = (extra = {}, auth = {}) => request(`${B}/token/introspection`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json', ...auth.headers },
        body: form({ token: op.access_token, ...auth.form, ...extra }),
        cert: auth.cert,
        key: auth.key,
      });
      const viaBasic = await introspect({}, { headers: { authorization: basic('gateway', 'gw-secret') } });
      const ij = viaBasic.json;
      check(t('introspection (client_secret_basic): active, aud, client_id, scope, RAR, token_type'),
        viaBasic.status === 200 && ij.active === true && ij.aud === config.audience && ij.client_id === 'app-opaque'
        && ij.scope === 'accounts' && ij.authorization_details?.[0]?.type === 'account_information' && ij.token_type === 'Bearer' && ij.iss === B,
        ij);

      const viaPost = await introspect({}, { form: { client_id: 'gateway-post', client_secret: 'gw-post-secret' } });
      check(t('introspection (client_secret_post)'), viaPost.json?.active === true, viaPost.json);

      const now = Math.floor(Date.now() / 1000);
      const assertion = await new jose.SignJWT({}).setProtectedHeader({ alg: 'PS256', kid: 'pkjwt-1' })
        .setIssuer('gateway-pkjwt').setSubject('gateway-pkjwt').setAudience(B).setJti(crypto.randomUUID())
        .setIssuedAt(now).setExpirationTime(now + 60).sign(await jose.importJWK(pkPriv, 'PS256'));
      const viaPkjwt = await introspect({}, {
        form: { client_id: 'gateway-pkjwt', client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: assertion },
      });
      check(t('introspection (private_key_jwt)'), viaPkjwt.json?.active === true, viaPkjwt.json);

      const mtlsAuth = tls
        ? { form: { client_id: 'gateway-tls' }, cert: mtls.cert, key: mtls.key }
        : { form: { client_id: 'gateway-tls' }, headers: { 'x-test-client-cert': encodeURIComponent(mtls.cert) } };
      const viaTls = await introspect({}, mtlsAuth);
      check(t('introspection (tls_client_auth, subject DN)'), viaTls.json?.active === true, viaTls.json);

      const noCert = await introspect({}, { form: { client_id: 'gateway-tls' } });
      check(t('introspection (tls_client_auth) without cert -> 401'), noCert.status === 401, noCert.json);

      // JWT introspection (RFC 9701)
      const jwtResp = await introspect({}, { headers: { authorization: basic('gateway', 'gw-secret'), accept: 'application/token-introspection+jwt' } });
      let jwtOk = false;
      let jp;
      try {
        const v = await jose.jwtVerify(jwtResp.text, jwks, { typ: 'token-introspection+jwt', issuer: B, audience: 'gateway' });
        jp = v.payload;
        jwtOk = v.protectedHeader.alg === 'PS256' && jp.token_introspection?.active === true && jp.token_introspection.client_id === 'app-opaque';
      } catch (e) { jp = { error: e.message, text: jwtResp.text }; }
      check(t('JWT introspection: content-type, typ, iss, aud=caller, token_introspection claim'),
        jwtOk && /^application\/token-introspection\+jwt/.test(jwtResp.headers['content-type']), jp);

      const statsAfter = (await request(`${B}/__test/stats`)).json.introspections;
      check(t('/__test/stats counts introspection requests'), statsAfter - statsBefore === 6, { statsBefore, statsAfter });

      // Structured (JWT) tokens are not introspectable by oidc-provider.
      const jwtIntro = await request(`${B}/token/introspection`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic('gateway', 'gw-secret') },
        body: form({ token: pkTok.json.access_token }),
      });
      check(t('JWT access token introspection -> 400 unsupported_token_type'), jwtIntro.status === 400 && jwtIntro.json?.error === 'unsupported_token_type', jwtIntro.json);

      // mTLS-bound token (self_signed_tls_client_auth)
      const mt = await postJson(`${B}/__test/token`, {
        client_id: 'app-mtls', auth: 'self_signed_tls_client_auth', client_cert_pem: selfSigned.cert, client_key_pem: selfSigned.key, scope: 'accounts',
      });
      const mtIntro = await request(`${B}/token/introspection`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic('gateway', 'gw-secret') },
        body: form({ token: mt.json?.access_token ?? 'x' }),
      });
      check(t('mTLS-bound token: introspection cnf.x5t#S256 = cert thumbprint'),
        mt.status === 200 && mtIntro.json?.active === true && mtIntro.json.cnf?.['x5t#S256'] === x5t(selfSigned.cert), { mt: mt.json, intro: mtIntro.json });

      const wrongCert = await postJson(`${B}/__test/token`, {
        client_id: 'app-mtls', auth: 'self_signed_tls_client_auth', client_cert_pem: mtls.cert, client_key_pem: mtls.key,
      });
      check(t('self_signed_tls_client_auth with unregistered cert -> 401'), wrongCert.status === 401, wrongCert.json);

      // Revocation then introspection.
      const rv = await postJson(`${B}/__test/revoke`, { token: op.access_token, client_id: 'app-opaque', client_secret: 'opaque-secret' });
      const afterRevoke = await introspect({}, { headers: { authorization: basic('gateway', 'gw-secret') } });
      check(t('revoke -> introspection active:false'), rv.status === 200 && rv.json.revoked === true && afterRevoke.json?.active === false && Object.keys(afterRevoke.json).length === 1, { rv: rv.json, afterRevoke: afterRevoke.json });

      const unknown = await postJson(`${B}/__test/proof`, { dpop_key_id: 'nope', htm: 'GET', htu: 'https://x/' });
      check(t('/__test/proof unknown key -> 404'), unknown.status === 404, unknown.json);

      check(t('stderr request log has no tokens'), srv.stderr().includes('POST /token 200') && !srv.stderr().includes(op.access_token), srv.stderr().slice(-400));
    } finally {
      srv.child.kill('SIGTERM');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

try {
  await run(false);
  await run(true);
} catch (err) {
  failed += 1;
  process.stdout.write(`FAIL crashed: ${err.stack ?? err}\n`);
}
process.stdout.write(`${passed} passed, ${failed} failed\n`);
process.exit(failed ? 1 : 0);

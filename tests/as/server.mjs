// Test authorization server for fapigate's end-to-end tests.
//
// A real oidc-provider instance (client_credentials, resource indicators,
// introspection + JWT introspection, revocation, DPoP, mTLS, RAR) plus a small
// "test client" control API under /__test/ in the same process. The control
// API acts as a real OAuth client: it talks to this AS's token and revocation
// endpoints over HTTP(S), never through provider internals.
//
// Usage: node tests/as/server.mjs --config /path/config.json
// Prints exactly one line "READY <issuer>" on stdout once listening. Everything
// else (request log, oidc-provider notices) goes to stderr. See README.md.

import * as crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import { parseArgs } from 'node:util';

import * as DPoP from 'dpop';
import * as jose from 'jose';
import Provider from 'oidc-provider';

// oidc-provider prints notices with console.info (stdout); stdout is reserved
// for the READY line, so route all console output to stderr.
console.log = console.error;
console.info = console.error;

function die(msg) {
  process.stderr.write(`test-as: ${msg}\n`);
  process.exit(2);
}

// ---------------------------------------------------------------- config ---

const { values: args } = parseArgs({
  options: { config: { type: 'string' } },
  strict: true,
});
if (!args.config) die('usage: node server.mjs --config /path/config.json');

let cfg;
try {
  cfg = JSON.parse(readFileSync(args.config, 'utf8'));
} catch (err) {
  die(`cannot read config ${args.config}: ${err.message}`);
}

const HOST = '127.0.0.1';
const port = cfg.port;
if (!Number.isInteger(port) || port < 0 || port > 65535) die('config.port must be an integer 0..65535');
// A listening socket handed over by the process that started this one (it keeps the port
// bound for the whole test, so no other process can take it between a check and a bind).
const listenFd = cfg.listen_fd;
if (listenFd !== undefined && (!Number.isInteger(listenFd) || listenFd < 3)) die('config.listen_fd must be an integer >= 3');

const tlsCfg = cfg.tls ?? null;
let tlsOptions;
if (tlsCfg) {
  if (!tlsCfg.cert || !tlsCfg.key) die('config.tls needs "cert" and "key" paths');
  tlsOptions = {
    cert: readFileSync(tlsCfg.cert),
    key: readFileSync(tlsCfg.key),
    requestCert: true,
    rejectUnauthorized: false,
  };
}

if (!cfg.signing_keys) die('config.signing_keys (path) is required');
let signingKeys;
try {
  signingKeys = JSON.parse(readFileSync(cfg.signing_keys, 'utf8')).keys;
} catch (err) {
  die(`cannot read signing_keys ${cfg.signing_keys}: ${err.message}`);
}
if (!Array.isArray(signingKeys) || !signingKeys.length) die('signing_keys file must hold {"keys": [...]} with at least one key');

const audience = cfg.audience;
if (typeof audience !== 'string' || !audience) die('config.audience is required');

const accessTokenFormat = cfg.access_token_format ?? 'jwt';
if (!['jwt', 'opaque'].includes(accessTokenFormat)) die('config.access_token_format must be "jwt" or "opaque"');
// Optional per-client override of the token format: {"<client_id>": "opaque"}.
const formatByClient = cfg.access_token_format_by_client ?? {};
for (const f of Object.values(formatByClient)) {
  if (!['jwt', 'opaque'].includes(f)) die('config.access_token_format_by_client values must be "jwt" or "opaque"');
}
const accessTokenAlg = cfg.access_token_alg ?? 'ES256';
const accessTokenTTL = cfg.access_token_ttl ?? 300;
if (!Number.isInteger(accessTokenTTL) || accessTokenTTL <= 0) die('config.access_token_ttl must be a positive integer');

// Optional: PEM bundle of CAs trusted for tls_client_auth. Without it every
// presented certificate counts as "authorized" (the subject still has to match).
const clientCAs = cfg.client_ca
  ? splitPem(readFileSync(cfg.client_ca, 'utf8')).map((pem) => new crypto.X509Certificate(pem))
  : null;

// Optional static claims merged into every access token (JWT payload and
// introspection response) through oidc-provider's extraTokenClaims.
const extraClaims = cfg.extra_token_claims ?? undefined;

// Per-token claims asked for through /__test/token (`claims`), as an ecosystem's AS adds
// them (UK openbanking_intent_id, CDR cdr_arrangement_id): kept for the client until its
// next token is issued. Test token calls of one client run one at a time.
const pendingClaims = new Map();

// `scope_from_request: true`: the resource server accepts whatever scope the client asks
// for, so dynamic consent scopes (Brazil consent:<id>, Berlin Group AIS:<id>) can be issued.
const scopeFromRequest = cfg.scope_from_request === true;

const scheme = tlsOptions ? 'https' : 'http';

// ------------------------------------------------------------- helpers ---

function splitPem(text) {
  return text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
}

function peerCertificatePem(ctx) {
  if (tlsOptions) {
    const socket = ctx.req.socket;
    const cert = typeof socket.getPeerX509Certificate === 'function' ? socket.getPeerX509Certificate() : undefined;
    return cert ? cert.toString() : undefined;
  }
  const header = ctx.get('x-test-client-cert');
  if (!header) return undefined;
  try {
    return decodeURIComponent(header);
  } catch {
    return undefined;
  }
}

// "CN=a, O=b" (RFC 4514, any order) vs node's "O=b\nCN=a" -> compare as multisets.
function normalizeDn(dn) {
  return dn
    .split(/\n|,(?=\s*[A-Za-z0-9.]+\s*=)/)
    .map((rdn) => rdn.trim())
    .filter(Boolean)
    .map((rdn) => {
      const i = rdn.indexOf('=');
      return `${rdn.slice(0, i).trim().toLowerCase()}=${rdn.slice(i + 1).trim()}`;
    })
    .sort()
    .join('\n');
}

function subjectAltNames(cert) {
  const out = { dns: [], ip: [], uri: [], email: [] };
  for (const entry of (cert.subjectAltName ?? '').split(/,\s*/)) {
    const i = entry.indexOf(':');
    if (i === -1) continue;
    const type = entry.slice(0, i);
    const value = entry.slice(i + 1);
    if (type === 'DNS') out.dns.push(value);
    else if (type === 'IP Address') out.ip.push(value);
    else if (type === 'URI') out.uri.push(value);
    else if (type === 'email') out.email.push(value);
  }
  return out;
}

function parseDetails(value) {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return JSON.parse(value);
  return value;
}

// ------------------------------------------------------------ provider ---

const issuer = `${scheme}://${HOST}:${port}`; // finalised after listen when port is 0
let provider;
let introspectionCount = 0;

const clients = (cfg.clients ?? []).map((c) => ({
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  // oidc-provider's own default is [] (no RAR types allowed at all).
  authorization_details_types: ['account_information', 'payment_initiation'],
  ...c,
}));

function buildProvider(issuerUrl) {
  const p = new Provider(issuerUrl, {
    clients,
    jwks: { keys: signingKeys },
    clientDefaults: {
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: accessTokenAlg,
      introspection_signed_response_alg: cfg.introspection_alg ?? accessTokenAlg,
    },
    clientAuthMethods: [
      'client_secret_basic',
      'client_secret_post',
      'client_secret_jwt',
      'private_key_jwt',
      'tls_client_auth',
      'self_signed_tls_client_auth',
      'none',
    ],
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
    enabledJWA: {
      dPoPSigningAlgValues: ['ES256', 'PS256', 'EdDSA', 'Ed25519'],
      clientAuthSigningAlgValues: ['HS256', 'RS256', 'PS256', 'ES256', 'Ed25519', 'EdDSA'],
    },
    extraTokenClaims: async (ctx, token) => {
      const own = pendingClaims.get(token.clientId);
      if (!extraClaims && !own) return undefined;
      return { ...(extraClaims ?? {}), ...(own ?? {}) };
    },
    ttl: {
      AccessToken: accessTokenTTL,
      ClientCredentials: accessTokenTTL,
    },
    features: {
      devInteractions: { enabled: false },
      userinfo: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: {
        enabled: true,
        allowedPolicy: async () => true,
      },
      jwtIntrospection: { enabled: true },
      revocation: {
        enabled: true,
        allowedPolicy: async () => true,
      },
      dPoP: {
        enabled: true,
        requireNonce: () => false,
      },
      mTLS: {
        enabled: true,
        certificateBoundAccessTokens: true,
        selfSignedTlsClientAuth: true,
        tlsClientAuth: true,
        getCertificate: peerCertificatePem,
        certificateAuthorized(ctx) {
          const pem = peerCertificatePem(ctx);
          if (!pem) return false;
          if (!clientCAs) return true;
          const cert = new crypto.X509Certificate(pem);
          return clientCAs.some((ca) => cert.checkIssued(ca) && cert.verify(ca.publicKey));
        },
        certificateSubjectMatches(ctx, property, expected) {
          const pem = peerCertificatePem(ctx);
          if (!pem) return false;
          const cert = new crypto.X509Certificate(pem);
          const san = subjectAltNames(cert);
          switch (property) {
            case 'tls_client_auth_subject_dn':
              return normalizeDn(cert.subject) === normalizeDn(expected);
            case 'tls_client_auth_san_dns':
              return san.dns.includes(expected);
            case 'tls_client_auth_san_ip':
              return san.ip.includes(expected);
            case 'tls_client_auth_san_uri':
              return san.uri.includes(expected);
            case 'tls_client_auth_san_email':
              return san.email.includes(expected);
            default:
              return false;
          }
        },
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => audience,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (ctx, resourceIndicator, client) => {
          const format = formatByClient[client?.clientId] ?? accessTokenFormat;
          const requested = scopeFromRequest ? ctx.oidc.params?.scope : undefined;
          return {
            scope: typeof requested === 'string' && requested ? requested : 'accounts payments',
            audience,
            accessTokenTTL,
            accessTokenFormat: format,
            ...(format === 'jwt' ? { jwt: { sign: { alg: accessTokenAlg } } } : {}),
          };
        },
      },
      richAuthorizationRequests: {
        enabled: true,
        types: {
          account_information: { validate() {} },
          payment_initiation: { validate() {} },
        },
        authorizationDetailsForGrantSource(ctx, source) {
          return parseDetails(ctx.oidc.params?.authorization_details) ?? source?.rar;
        },
        authorizationDetailsForAccessToken(ctx, token, source) {
          return parseDetails(ctx.oidc.params?.authorization_details) ?? source?.rar;
        },
        authorizationDetailsForIntrospection(ctx, token) {
          return token.rar;
        },
      },
    },
  });

  // Count requests served by the introspection endpoint (for coalescing tests).
  p.use(async (ctx, next) => {
    if (ctx.method === 'POST' && ctx.path === '/token/introspection') introspectionCount += 1;
    await next();
  });

  p.on('server_error', (ctx, err) => {
    process.stderr.write(`test-as: server_error on ${ctx.method} ${ctx.path}: ${err.stack ?? err}\n`);
  });

  return p;
}

// ------------------------------------------------ outgoing HTTP (client) ---

// Performs a request against this AS the way an external client would:
// over the network, presenting a client certificate on the TLS connection
// when the AS is HTTPS, or the x-test-client-cert header when it is HTTP.
function clientRequest(url, { method = 'POST', headers = {}, body, certPem, keyPem }) {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const opts = {
      method,
      hostname: u.hostname,
      port: u.port,
      path: `${u.pathname}${u.search}`,
      headers: { ...headers },
      agent: false,
    };
    if (body !== undefined) opts.headers['content-length'] = Buffer.byteLength(body);
    let mod = http;
    if (u.protocol === 'https:') {
      mod = https;
      opts.rejectUnauthorized = false; // the test AS certificate is self-signed
      if (certPem) {
        opts.cert = certPem;
        opts.key = keyPem;
      }
    } else if (certPem) {
      opts.headers['x-test-client-cert'] = encodeURIComponent(certPem);
    }
    const req = mod.request(opts, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json;
        try {
          json = text ? JSON.parse(text) : undefined;
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode, headers: res.headers, text, json });
      });
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

function inferJwsAlg(jwk) {
  if (jwk.alg) return jwk.alg;
  if (jwk.kty === 'EC') return { 'P-256': 'ES256', 'P-384': 'ES384', 'P-521': 'ES512' }[jwk.crv];
  if (jwk.kty === 'OKP') return 'EdDSA';
  if (jwk.kty === 'RSA') return 'PS256';
  return undefined;
}

// Adds client authentication to headers/form for the given method.
async function applyClientAuth(body, form, headers, endpointAudience) {
  const auth = body.auth ?? 'client_secret_basic';
  const clientId = body.client_id;
  if (!clientId) throw new HttpError(400, 'client_id is required');
  switch (auth) {
    case 'client_secret_basic': {
      if (body.client_secret === undefined) throw new HttpError(400, 'client_secret is required');
      const enc = (s) => encodeURIComponent(s).replace(/%20/g, '+');
      headers.authorization = `Basic ${Buffer.from(`${enc(clientId)}:${enc(body.client_secret)}`).toString('base64')}`;
      break;
    }
    case 'client_secret_post':
      if (body.client_secret === undefined) throw new HttpError(400, 'client_secret is required');
      form.set('client_id', clientId);
      form.set('client_secret', body.client_secret);
      break;
    case 'private_key_jwt': {
      const jwk = body.private_jwk;
      if (!jwk) throw new HttpError(400, 'private_jwk is required for private_key_jwt');
      const alg = inferJwsAlg(jwk);
      const key = await jose.importJWK(jwk, alg);
      const now = Math.floor(Date.now() / 1000);
      const assertion = await new jose.SignJWT({})
        .setProtectedHeader({ alg, ...(jwk.kid ? { kid: jwk.kid } : {}) })
        .setIssuer(clientId)
        .setSubject(clientId)
        .setAudience(endpointAudience)
        .setJti(crypto.randomUUID())
        .setIssuedAt(now)
        .setNotBefore(now)
        .setExpirationTime(now + 60)
        .sign(key);
      form.set('client_id', clientId);
      form.set('client_assertion_type', 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
      form.set('client_assertion', assertion);
      break;
    }
    case 'self_signed_tls_client_auth':
    case 'tls_client_auth':
    case 'none':
      form.set('client_id', clientId);
      break;
    default:
      throw new HttpError(400, `unsupported auth ${auth}`);
  }
}

// ------------------------------------------------------------- DPoP keys ---

const dpopKeys = new Map(); // dpop_key_id -> { alg, keyPair, jkt, publicJwk }

async function newDpopKey(requestedAlg = 'ES256') {
  // The dpop library names Ed25519 keys 'Ed25519' (fully specified alg).
  const libAlg = requestedAlg === 'EdDSA' ? 'Ed25519' : requestedAlg;
  if (!['ES256', 'PS256', 'Ed25519', 'RS256'].includes(libAlg)) {
    throw new HttpError(400, `unsupported dpop_alg ${requestedAlg}`);
  }
  const keyPair = await DPoP.generateKeyPair(libAlg);
  const jkt = await DPoP.calculateThumbprint(keyPair.publicKey);
  const id = crypto.randomUUID();
  const entry = { alg: requestedAlg, keyPair, jkt };
  dpopKeys.set(id, entry);
  return { id, entry };
}

// DPoP proofs come from the dpop library. Two cases it cannot express are
// signed with jose instead (same claims, same key): the 'EdDSA' alg header
// (the library always writes 'Ed25519') and an explicit iat override.
async function makeProof(entry, { htm, htu, accessToken, nonce, iat, additional }) {
  if (entry.alg !== 'EdDSA' && iat === undefined) {
    return DPoP.generateProof(entry.keyPair, htu, htm, nonce, accessToken, additional);
  }
  const { kty, crv, x, y, n, e } = await crypto.subtle.exportKey('jwk', entry.keyPair.publicKey);
  const jwk = Object.fromEntries(Object.entries({ kty, crv, x, y, n, e }).filter(([, v]) => v !== undefined));
  const alg = entry.alg === 'EdDSA' ? 'EdDSA' : entry.alg;
  const claims = {
    ...additional,
    iat: iat ?? Math.floor(Date.now() / 1000),
    jti: crypto.randomUUID(),
    htm,
    htu,
    ...(nonce !== undefined ? { nonce } : {}),
    ...(accessToken !== undefined
      ? { ath: crypto.createHash('sha256').update(accessToken).digest('base64url') }
      : {}),
  };
  return new jose.SignJWT(claims)
    .setProtectedHeader({ alg, typ: 'dpop+jwt', jwk })
    .sign(entry.keyPair.privateKey);
}

// ------------------------------------------------------ /__test/ handlers ---

class HttpError extends Error {
  constructor(status, message, extra) {
    super(message);
    this.status = status;
    this.extra = extra;
  }
}

function upstreamError(res) {
  return new HttpError(res.status, res.json?.error ?? `upstream status ${res.status}`, {
    upstream_status: res.status,
    error_description: res.json?.error_description,
  });
}

async function testToken(body) {
  const tokenEndpoint = `${provider.issuer}/token`;
  const form = new URLSearchParams();
  const headers = {
    'content-type': 'application/x-www-form-urlencoded',
    accept: 'application/json',
  };
  form.set('grant_type', 'client_credentials');
  if (body.scope !== undefined) form.set('scope', body.scope);
  if (body.resource !== undefined) {
    for (const r of Array.isArray(body.resource) ? body.resource : [body.resource]) form.append('resource', r);
  }
  if (body.authorization_details !== undefined) {
    form.set(
      'authorization_details',
      typeof body.authorization_details === 'string'
        ? body.authorization_details
        : JSON.stringify(body.authorization_details),
    );
  }
  await applyClientAuth(body, form, headers, provider.issuer);
  if (body.claims !== undefined) {
    if (typeof body.claims !== 'object' || body.claims === null || Array.isArray(body.claims)) {
      throw new HttpError(400, 'claims must be an object');
    }
    pendingClaims.set(body.client_id, body.claims);
  } else {
    pendingClaims.delete(body.client_id);
  }

  let dpopKeyId;
  if (body.dpop) {
    let entry;
    if (body.dpop_key_id) {
      entry = dpopKeys.get(body.dpop_key_id);
      if (!entry) throw new HttpError(404, 'unknown dpop_key_id');
      dpopKeyId = body.dpop_key_id;
    } else {
      ({ id: dpopKeyId, entry } = await newDpopKey(body.dpop_alg ?? 'ES256'));
    }
    headers.dpop = await makeProof(entry, { htm: 'POST', htu: tokenEndpoint });
  }

  const res = await clientRequest(tokenEndpoint, {
    headers,
    body: form.toString(),
    certPem: body.client_cert_pem,
    keyPem: body.client_key_pem,
  });
  if (res.status !== 200 || !res.json?.access_token) throw upstreamError(res);
  return {
    access_token: res.json.access_token,
    token_type: res.json.token_type,
    expires_in: res.json.expires_in,
    ...(res.json.scope !== undefined ? { scope: res.json.scope } : {}),
    ...(res.json.authorization_details !== undefined
      ? { authorization_details: res.json.authorization_details }
      : {}),
    ...(dpopKeyId ? { dpop_key_id: dpopKeyId, jkt: dpopKeys.get(dpopKeyId).jkt } : {}),
  };
}

async function testProof(body) {
  let id = body.dpop_key_id;
  let entry;
  if (id) {
    entry = dpopKeys.get(id);
    if (!entry) throw new HttpError(404, 'unknown dpop_key_id');
  } else {
    ({ id, entry } = await newDpopKey(body.dpop_alg ?? 'ES256'));
  }
  if (typeof body.htm !== 'string' || typeof body.htu !== 'string') {
    throw new HttpError(400, 'htm and htu are required strings');
  }
  const proof = await makeProof(entry, {
    htm: body.htm,
    htu: body.htu,
    accessToken: body.access_token ?? undefined,
    nonce: body.nonce ?? undefined,
    iat: body.iat ?? undefined,
    additional: body.additional_claims ?? undefined,
  });
  return { proof, jkt: entry.jkt, dpop_key_id: id };
}

async function testRevoke(body) {
  if (!body.token) throw new HttpError(400, 'token is required');
  const endpoint = `${provider.issuer}/token/revocation`;
  const form = new URLSearchParams();
  const headers = { 'content-type': 'application/x-www-form-urlencoded' };
  form.set('token', body.token);
  if (body.token_type_hint) form.set('token_type_hint', body.token_type_hint);
  await applyClientAuth({ auth: 'client_secret_basic', ...body }, form, headers, provider.issuer);
  const res = await clientRequest(endpoint, {
    headers,
    body: form.toString(),
    certPem: body.client_cert_pem,
    keyPem: body.client_key_pem,
  });
  if (res.status !== 200) throw upstreamError(res);
  return { revoked: true };
}

async function readJson(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const text = Buffer.concat(chunks).toString('utf8');
  if (!text.trim()) return {};
  try {
    return JSON.parse(text);
  } catch {
    throw new HttpError(400, 'body is not valid JSON');
  }
}

async function handleTestApi(req, res) {
  const path = new URL(req.url, 'http://x').pathname;
  let status = 200;
  let out;
  try {
    if (req.method === 'GET' && path === '/__test/stats') {
      out = { introspections: introspectionCount };
    } else if (req.method === 'POST' && path === '/__test/token') {
      out = await testToken(await readJson(req));
    } else if (req.method === 'POST' && path === '/__test/proof') {
      out = await testProof(await readJson(req));
    } else if (req.method === 'POST' && path === '/__test/revoke') {
      out = await testRevoke(await readJson(req));
    } else {
      throw new HttpError(404, 'not found');
    }
  } catch (err) {
    status = err instanceof HttpError ? err.status : 500;
    out = { error: err.message, ...(err.extra ?? {}) };
    if (!(err instanceof HttpError)) process.stderr.write(`test-as: ${err.stack ?? err}\n`);
  }
  const payload = JSON.stringify(out);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(payload),
    'cache-control': 'no-store',
  });
  res.end(payload);
}

// -------------------------------------------------------------- server ---

let providerCallback;

function onRequest(req, res) {
  const started = process.hrtime.bigint();
  const path = req.url.split('?')[0];
  res.on('finish', () => {
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    process.stderr.write(`test-as: ${req.method} ${path} ${res.statusCode} ${ms.toFixed(1)}ms\n`);
  });
  if (path.startsWith('/__test/')) {
    handleTestApi(req, res);
    return;
  }
  // RFC 8414 metadata alias for oidc-provider's discovery document.
  if (path === '/.well-known/oauth-authorization-server') {
    req.url = '/.well-known/openid-configuration';
  }
  providerCallback(req, res);
}

const server = tlsOptions ? https.createServer(tlsOptions, onRequest) : http.createServer(onRequest);

server.on('error', (err) => die(`listen failed: ${err.message}`));
const onListening = () => {
  const actualPort = server.address().port;
  const base = `${scheme}://${HOST}:${actualPort}`;
  try {
    provider = buildProvider(port === 0 || listenFd !== undefined ? base : issuer);
    providerCallback = provider.callback();
  } catch (err) {
    die(`provider configuration error: ${err.stack ?? err}`);
  }
  process.stdout.write(`READY ${provider.issuer}\n`);
};
if (listenFd !== undefined) server.listen({ fd: listenFd }, onListening);
else server.listen(port, HOST, onListening);

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close();
    server.closeAllConnections?.();
    process.exit(0);
  });
}

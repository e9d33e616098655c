// A loopback enterprise identity provider for oauthproxy's end-to-end tests of [[trusted_issuers]]
// and [[enterprise_issuers]] (spec/interop.md, "Enterprise-managed authorization").
//
// It uses `jose` (panva), installed with oidc-provider from this directory's package-lock.json, to
// hold real signing keys (RS256 and ES256), publish them as a JWK Set, and sign:
//   - ID tokens for the MCP client's single sign-on (the subject token of the exchange below);
//   - ID-JAGs (typ oauth-id-jag+jwt) from an RFC 8693 token exchange, as an enterprise IdP would:
//     the subject token must be an ID token this IdP signed for the calling client, and the
//     ID-JAG names the client's id at the MCP authorization server (IDP_RAS_CLIENT_ID);
//   - anything a test asks for (POST /_test/mint), so negative cases are signed by the real keys.
//
// Usage:  node enterprise_idp.mjs [port]
//
// Environment:
//   IDP_PORT            port on 127.0.0.1 (argv[2] wins; 0 = any free port)
//   IDP_CLIENT_ID       the MCP client's id at this IdP (default "mcp-client")
//   IDP_CLIENT_SECRET   its secret (default "idp-secret"), by HTTP Basic or in the form
//   IDP_RAS_CLIENT_ID   the same client's id at the MCP authorization server (default "agent")
//   IDP_ID_JAG_TTL      lifetime of an ID-JAG in seconds (default 300)
//   IDP_WATCH_STDIN     "1": exit when stdin reaches EOF (the parent went away)
//
// Endpoints:
//   GET  /jwks.json        the public keys (application/json), counted in /_test/log
//   POST /token            token exchange: grant_type=urn:ietf:params:oauth:grant-type:token-exchange,
//                          requested_token_type=urn:ietf:params:oauth:token-type:id-jag,
//                          subject_token (an ID token of ours), subject_token_type
//                          urn:ietf:params:oauth:token-type:id_token, audience, resource, scope
// Test controls (loopback, unauthenticated: never run this outside tests):
//   POST /_test/id_token   {"sub": ...} -> {"id_token": ...} for IDP_CLIENT_ID (the SSO step)
//   POST /_test/mint       {"alg", "header", "claims"} -> {"token": ...}: claims are used as given,
//                          except iat, exp and jti, filled in when absent (null removes one)
//   POST /_test/rotate     new keys under new kids
//   GET  /_test/log        {"jwks_fetches": n, "exchanges": n}
//
// On start one JSON line goes to stdout: {"ready": true, "issuer", "jwks_uri", "token_endpoint", "port"}.

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import process from 'node:process';

import { SignJWT, exportJWK, generateKeyPair, jwtVerify, createLocalJWKSet } from 'jose';

const HOST = '127.0.0.1';
const CLIENT_ID = process.env.IDP_CLIENT_ID || 'mcp-client';
const CLIENT_SECRET = process.env.IDP_CLIENT_SECRET || 'idp-secret';
const RAS_CLIENT_ID = process.env.IDP_RAS_CLIENT_ID || 'agent';
const ID_JAG_TTL = Number(process.env.IDP_ID_JAG_TTL || 300);
const MAX_BODY = 64 * 1024;

const log = { jwks_fetches: 0, exchanges: 0 };
let keys = {};
let generation = 0;
let issuer = '';

async function rotate() {
  generation += 1;
  const fresh = {};
  for (const alg of ['RS256', 'ES256']) {
    const pair = await generateKeyPair(alg, { extractable: true });
    const kid = `${alg.toLowerCase()}-${generation}`;
    const jwk = { ...(await exportJWK(pair.publicKey)), kid, alg, use: 'sig' };
    fresh[alg] = { kid, privateKey: pair.privateKey, jwk };
  }
  keys = fresh;
}

function jwks() {
  return { keys: Object.values(keys).map((k) => k.jwk) };
}

async function sign(alg, header, claims) {
  const key = keys[alg];
  if (!key) throw new Error(`no key for ${alg}`);
  const protectedHeader = { alg, kid: key.kid, ...header };
  for (const [name, value] of Object.entries(protectedHeader)) {
    if (value === null) delete protectedHeader[name];
  }
  return new SignJWT(claims).setProtectedHeader(protectedHeader).sign(key.privateKey);
}

function withDefaults(claims) {
  const now = Math.floor(Date.now() / 1000);
  const full = { iat: now, exp: now + ID_JAG_TTL, jti: crypto.randomUUID(), ...claims };
  for (const [name, value] of Object.entries(full)) {
    if (value === null) delete full[name];
  }
  return full;
}

function send(res, status, body, headers = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

function oauthError(res, status, error, description) {
  send(res, status, { error, error_description: description });
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY) throw new Error('body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function clientOf(req, form) {
  const auth = req.headers.authorization || '';
  if (auth.startsWith('Basic ')) {
    const decoded = Buffer.from(auth.slice(6), 'base64').toString('utf8');
    const at = decoded.indexOf(':');
    return [decodeURIComponent(decoded.slice(0, at)), decodeURIComponent(decoded.slice(at + 1))];
  }
  return [form.get('client_id'), form.get('client_secret')];
}

// RFC 8693 token exchange for an ID-JAG (draft-ietf-oauth-identity-assertion-authz-grant,
// "Token Exchange"): the client proves who it is, the subject token proves who the user is, and the
// IdP decides, then signs an ID-JAG made out to the authorization server named by `audience`.
async function exchange(req, res, form) {
  const [clientId, secret] = clientOf(req, form);
  if (clientId !== CLIENT_ID || secret !== CLIENT_SECRET) {
    return oauthError(res, 401, 'invalid_client', 'client authentication failed');
  }
  if (form.get('grant_type') !== 'urn:ietf:params:oauth:grant-type:token-exchange') {
    return oauthError(res, 400, 'unsupported_grant_type', 'token exchange only');
  }
  if (form.get('requested_token_type') !== 'urn:ietf:params:oauth:token-type:id-jag') {
    return oauthError(res, 400, 'invalid_request', 'requested_token_type must be id-jag');
  }
  if (form.get('subject_token_type') !== 'urn:ietf:params:oauth:token-type:id_token') {
    return oauthError(res, 400, 'invalid_request', 'subject_token_type must be id_token');
  }
  const audience = form.get('audience');
  const resource = form.get('resource');
  if (!audience || !resource) {
    return oauthError(res, 400, 'invalid_request', 'audience and resource are required');
  }
  let user;
  try {
    const verified = await jwtVerify(form.get('subject_token') || '', createLocalJWKSet(jwks()), {
      issuer,
      audience: CLIENT_ID,
      algorithms: ['RS256', 'ES256'],
    });
    user = verified.payload;
  } catch {
    return oauthError(res, 400, 'invalid_grant', 'subject token invalid');
  }
  log.exchanges += 1;
  const scope = form.get('scope');
  const claims = withDefaults({
    iss: issuer,
    sub: user.sub,
    aud: audience,
    client_id: RAS_CLIENT_ID,
    resource,
    ...(scope ? { scope } : {}),
    ...(user.email ? { email: user.email } : {}),
  });
  const token = await sign('ES256', { typ: 'oauth-id-jag+jwt' }, claims);
  return send(res, 200, {
    issued_token_type: 'urn:ietf:params:oauth:token-type:id-jag',
    access_token: token,
    token_type: 'N_A',
    expires_in: ID_JAG_TTL,
    ...(scope ? { scope } : {}),
  });
}

async function handle(req, res) {
  const url = new URL(req.url, issuer);
  if (req.method === 'GET' && url.pathname === '/jwks.json') {
    log.jwks_fetches += 1;
    return send(res, 200, jwks(), { 'cache-control': 'max-age=300' });
  }
  if (req.method === 'GET' && url.pathname === '/_test/log') {
    return send(res, 200, log);
  }
  if (req.method !== 'POST') return send(res, 404, { error: 'not_found' });
  const raw = await readBody(req);
  if (url.pathname === '/token') {
    return exchange(req, res, new URLSearchParams(raw));
  }
  const body = raw ? JSON.parse(raw) : {};
  if (url.pathname === '/_test/id_token') {
    const claims = withDefaults({ iss: issuer, aud: CLIENT_ID, sub: body.sub || 'alice' });
    return send(res, 200, { id_token: await sign('RS256', { typ: 'JWT' }, claims) });
  }
  if (url.pathname === '/_test/mint') {
    const token = await sign(body.alg || 'ES256', body.header || {}, withDefaults(body.claims || {}));
    return send(res, 200, { token });
  }
  if (url.pathname === '/_test/rotate') {
    await rotate();
    return send(res, 200, { kids: Object.values(keys).map((k) => k.kid) });
  }
  return send(res, 404, { error: 'not_found' });
}

await rotate();
const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    process.stderr.write(`enterprise-idp: ${err && err.message}\n`);
    if (!res.headersSent) send(res, 500, { error: 'server_error' });
  });
});
const port = Number(process.argv[2] ?? process.env.IDP_PORT ?? 0);
server.listen(port, HOST, () => {
  const bound = server.address().port;
  issuer = `http://${HOST}:${bound}`;
  process.stdout.write(
    `${JSON.stringify({
      ready: true,
      port: bound,
      issuer,
      jwks_uri: `${issuer}/jwks.json`,
      token_endpoint: `${issuer}/token`,
    })}\n`,
  );
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
if (process.env.IDP_WATCH_STDIN === '1') {
  process.stdin.on('end', stop);
  process.stdin.resume();
}

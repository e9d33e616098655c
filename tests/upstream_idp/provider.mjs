// Loopback upstream OpenID Connect provider for oauthproxy end-to-end tests.
//
// Runs oidc-provider (panva) on 127.0.0.1 with a single static confidential
// client and a non-interactive login: every interaction is completed
// automatically for the fixed account "testuser" (or denied with
// access_denied when IDP_DENY=1). Meant for tests only.
//
// Usage:  node provider.mjs [port]
//
// Environment:
//   IDP_PORT               port to bind on 127.0.0.1 (argv[2] wins; 0 = pick a free one)
//   IDP_ISSUER             issuer override (default http://127.0.0.1:<bound port>)
//   IDP_REDIRECT_URIS      comma separated redirect URIs of the static client (required)
//   IDP_CLIENT_ID          default "proxy-client"
//   IDP_CLIENT_SECRET      default "proxy-secret"
//   IDP_TOKEN_AUTH_METHOD  registered method: client_secret_post (default) or client_secret_basic;
//                          oidc-provider accepts the secret in the form or via HTTP Basic either way
//   IDP_ACCESS_TTL         access token lifetime in seconds (default 3600)
//   IDP_REFRESH_TTL        refresh token lifetime in seconds (default 14 days)
//   IDP_CLOCK_TOLERANCE    seconds of leeway when checking token expiry (default 0, so an
//                          access token is refused as soon as IDP_ACCESS_TTL has passed)
//   IDP_DENY               "1" makes every authorization request end in access_denied
//   IDP_WATCH_STDIN        "1" exits when stdin reaches EOF (parent process went away)
//   IDP_DEBUG              "1" logs provider events to stderr
//
// On success a single JSON line is written to stdout:
//   {"ready": true, "issuer": ..., "authorization_endpoint": ..., "token_endpoint": ...,
//    "userinfo_endpoint": ..., "jwks_uri": ..., ...}

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import process from 'node:process';

import Provider from 'oidc-provider';

const HOST = '127.0.0.1';

function fail(message) {
  process.stderr.write(`upstream-idp: ${message}\n`);
  process.exit(2);
}

function intFromEnv(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0) fail(`${name} must be a non-negative integer, got ${raw}`);
  return value;
}

const rawPort = process.argv[2] ?? process.env.IDP_PORT ?? '0';
const requestedPort = Number(rawPort);
if (!Number.isInteger(requestedPort) || requestedPort < 0 || requestedPort > 65535) {
  fail(`invalid port ${rawPort}`);
}

const redirectUris = (process.env.IDP_REDIRECT_URIS ?? '')
  .split(',')
  .map((uri) => uri.trim())
  .filter(Boolean);
if (redirectUris.length === 0) fail('IDP_REDIRECT_URIS must list at least one redirect URI');

const CLIENT_ID = process.env.IDP_CLIENT_ID || 'proxy-client';
const CLIENT_SECRET = process.env.IDP_CLIENT_SECRET || 'proxy-secret';
const TOKEN_AUTH_METHOD = process.env.IDP_TOKEN_AUTH_METHOD || 'client_secret_post';
if (!['client_secret_post', 'client_secret_basic'].includes(TOKEN_AUTH_METHOD)) {
  fail(`IDP_TOKEN_AUTH_METHOD must be client_secret_post or client_secret_basic`);
}
const ACCESS_TTL = intFromEnv('IDP_ACCESS_TTL', 3600);
const REFRESH_TTL = intFromEnv('IDP_REFRESH_TTL', 14 * 24 * 60 * 60);
const CLOCK_TOLERANCE = intFromEnv('IDP_CLOCK_TOLERANCE', 0);
const DENY = process.env.IDP_DENY === '1';
const DEBUG = process.env.IDP_DEBUG === '1';

// The one and only account.
const ACCOUNT_ID = 'testuser';
const ACCOUNT_CLAIMS = {
  sub: ACCOUNT_ID,
  email: 'test@example.com',
  email_verified: true,
  name: 'Test User',
  preferred_username: 'tester',
};

function buildConfiguration() {
  // Fresh signing key per process: nothing here is meant to outlive a test run.
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'idp-test-rs256', use: 'sig', alg: 'RS256' };

  return {
    clients: [
      {
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        redirect_uris: redirectUris,
        token_endpoint_auth_method: TOKEN_AUTH_METHOD,
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        application_type: 'web',
      },
    ],
    jwks: { keys: [signingKey] },
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
    scopes: ['openid', 'profile', 'email', 'offline_access'],
    // oidc-provider's default (15 s) keeps expired opaque tokens usable for a while.
    clockTolerance: CLOCK_TOLERANCE,
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
    },
    features: {
      devInteractions: { enabled: false },
      registration: { enabled: false },
      userinfo: { enabled: true },
      revocation: { enabled: true },
    },
    // RFC 7636 is mandatory for every request; oidc-provider v9 only implements S256.
    pkce: { required: () => true },
    // Refresh tokens for the static client even without offline_access/prompt=consent.
    issueRefreshToken: async (_ctx, client, _code) =>
      client.clientId === CLIENT_ID && client.grantTypeAllowed('refresh_token'),
    findAccount: async (_ctx, sub) => {
      if (sub !== ACCOUNT_ID) return undefined;
      return {
        accountId: ACCOUNT_ID,
        claims: async () => ({ ...ACCOUNT_CLAIMS }),
      };
    },
    ttl: {
      AccessToken: () => ACCESS_TTL,
      AuthorizationCode: () => 60,
      IdToken: () => 3600,
      RefreshToken: () => REFRESH_TTL,
      Interaction: () => 600,
      Session: () => 24 * 60 * 60,
      Grant: () => REFRESH_TTL,
    },
    clientBasedCORS: () => false,
    // Machine-readable errors instead of the default HTML page.
    renderError: async (ctx, out) => {
      ctx.type = 'json';
      ctx.body = out;
    },
  };
}

// --- non-interactive login / consent --------------------------------------

const INTERACTION_PATH = /^\/interaction\/([A-Za-z0-9_-]+)\/?$/;

function sendJson(res, status, body) {
  const payload = JSON.stringify(body);
  res.statusCode = status;
  res.setHeader('Content-Type', 'application/json');
  res.setHeader('Content-Length', Buffer.byteLength(payload));
  res.setHeader('Cache-Control', 'no-store');
  res.end(payload);
}

async function grantEverythingRequested(provider, interaction) {
  const { prompt, params, grantId } = interaction;
  const accountId = interaction.session?.accountId ?? ACCOUNT_ID;
  let grant = grantId ? await provider.Grant.find(grantId) : undefined;
  grant ??= new provider.Grant({ accountId, clientId: params.client_id });

  const details = prompt.details ?? {};
  if (details.missingOIDCScope?.length) grant.addOIDCScope(details.missingOIDCScope.join(' '));
  if (details.missingOIDCClaims?.length) grant.addOIDCClaims(details.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(details.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  return grant.save();
}

async function handleInteraction(provider, req, res, uid) {
  let interaction;
  try {
    interaction = await provider.interactionDetails(req, res);
  } catch (err) {
    sendJson(res, 400, { error: 'invalid_request', error_description: String(err?.message ?? err) });
    return;
  }
  if (interaction.uid !== uid) {
    sendJson(res, 400, { error: 'invalid_request', error_description: 'interaction uid mismatch' });
    return;
  }

  let result;
  if (DENY) {
    result = { error: 'access_denied', error_description: 'the test user declined the request' };
  } else if (interaction.prompt.name === 'login') {
    result = { login: { accountId: ACCOUNT_ID, amr: ['pwd'] } };
  } else if (interaction.prompt.name === 'consent') {
    result = { consent: { grantId: await grantEverythingRequested(provider, interaction) } };
  } else {
    result = { error: 'interaction_required', error_description: `unsupported prompt ${interaction.prompt.name}` };
  }
  if (DEBUG) process.stderr.write(`upstream-idp: interaction ${uid} ${interaction.prompt.name} -> ${Object.keys(result)[0]}\n`);
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
}

// --- server ---------------------------------------------------------------

const server = http.createServer();
server.keepAliveTimeout = 1000;

server.listen(requestedPort, HOST, async () => {
  const { port } = server.address();
  const issuer = process.env.IDP_ISSUER || `http://${HOST}:${port}`;

  let provider;
  try {
    provider = new Provider(issuer, buildConfiguration());
  } catch (err) {
    fail(`invalid provider configuration: ${err?.stack ?? err}`);
  }

  // Static clients are validated lazily; do it now so a bad IDP_REDIRECT_URIS fails at startup.
  try {
    if (!(await provider.Client.find(CLIENT_ID))) throw new Error('client not found');
  } catch (err) {
    fail(`invalid static client ${CLIENT_ID}: ${err?.error_description ?? err?.message ?? err}`);
  }

  provider.on('server_error', (_ctx, err) => {
    process.stderr.write(`upstream-idp: server_error ${err?.stack ?? err}\n`);
  });
  if (DEBUG) {
    for (const event of ['authorization.error', 'grant.error', 'grant.success', 'userinfo.error']) {
      provider.on(event, (_ctx, err) => {
        process.stderr.write(`upstream-idp: ${event}${err ? ` ${err.name}: ${err.message}` : ''}\n`);
      });
    }
  }

  const providerCallback = provider.callback();
  server.on('request', (req, res) => {
    const match = req.method === 'GET' ? INTERACTION_PATH.exec(new URL(req.url, issuer).pathname) : null;
    if (match) {
      handleInteraction(provider, req, res, match[1]).catch((err) => {
        process.stderr.write(`upstream-idp: interaction failure ${err?.stack ?? err}\n`);
        if (!res.headersSent) sendJson(res, 500, { error: 'server_error' });
        else res.destroy();
      });
      return;
    }
    providerCallback(req, res);
  });

  // Read our own discovery document: proves the server answers before we say ready.
  let metadata;
  try {
    const response = await fetch(`${issuer}/.well-known/openid-configuration`);
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    metadata = await response.json();
  } catch (err) {
    fail(`discovery self-check failed: ${err?.message ?? err}`);
  }

  process.stdout.write(
    `${JSON.stringify({
      ready: true,
      pid: process.pid,
      port,
      issuer: metadata.issuer,
      authorization_endpoint: metadata.authorization_endpoint,
      token_endpoint: metadata.token_endpoint,
      userinfo_endpoint: metadata.userinfo_endpoint,
      jwks_uri: metadata.jwks_uri,
      revocation_endpoint: metadata.revocation_endpoint,
      end_session_endpoint: metadata.end_session_endpoint,
      client_id: CLIENT_ID,
      token_endpoint_auth_method: TOKEN_AUTH_METHOD,
      access_token_ttl: ACCESS_TTL,
      deny: DENY,
    })}\n`,
  );
});

server.on('error', (err) => fail(`cannot listen on ${HOST}:${requestedPort}: ${err.message}`));

let stopping = false;
function shutdown(reason) {
  if (stopping) return;
  stopping = true;
  if (DEBUG) process.stderr.write(`upstream-idp: stopping (${reason})\n`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}

process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
if (process.env.IDP_WATCH_STDIN === '1') {
  process.stdin.on('end', () => shutdown('stdin closed'));
  process.stdin.on('error', () => shutdown('stdin error'));
  process.stdin.resume();
}

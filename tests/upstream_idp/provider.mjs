// Loopback upstream OpenID Connect provider for oauthproxy end-to-end tests.
//
// Runs oidc-provider (panva) on 127.0.0.1 with a single static confidential
// client and a non-interactive login: every interaction is completed
// automatically for the account "testuser", or for the account the tests chose
// (POST /_test/settings?login_as=<id>), or denied with access_denied (IDP_DENY=1,
// or a disabled account). Meant for tests only.
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
//   IDP_PROFILE            which upstream this provider plays (default "oidc"):
//                            oidc    plain OpenID Connect (Google-shaped: discovery, JWKS, nonce);
//                            github  a GitHub-shaped shim in front of it (see "GitHub shim" below);
//                            jwt     OIDC whose access tokens are RFC 9068 JWTs for one API
//                                    (RFC 8707 resource indicators), signed with the rotating key
//   IDP_KEY_ID             kid of the signing key (default idp-test-rs256): a restart with another
//                          kid on the same port is a key rotation as a relying party sees it
//   IDP_API_RESOURCE       jwt profile: the API's resource indicator (default https://api.upstream.test)
//   IDP_GITHUB_APP         github profile: "1" behaves like a GitHub App (expiring user tokens with
//                          expires_in, a refresh_token and refresh_token_expires_in)
//   IDP_EMAIL_VERIFIED     "true" (default), "false" or "absent": the account's email_verified claim
//                          (oidc, jwt), and the `verified` flag of its address in the github shim's
//                          GET /user/emails ("absent": not listed at all)
//
// GitHub shim (IDP_PROFILE=github), the quirks oauthproxy's github profile relies on:
//   GET  /login/oauth/authorize     the GitHub authorize URL; the redirect back carries RFC 9207
//                                   `iss=<issuer>/login/oauth` as github.com's does since 2026
//                                   (github_iss=0 omits it, like older GitHub Enterprise servers)
//   POST /login/oauth/access_token  JSON only with `Accept: application/json`, form-encoded otherwise;
//                                   failures are HTTP 200 with `error` (bad_verification_code,
//                                   bad_refresh_token, incorrect_client_credentials); `scope` uses
//                                   commas; an OAuth App gets neither refresh_token nor expires_in
//   GET  /api/v3/user, GET /user    {id, login, name, email} for `Authorization: Bearer|token <t>`,
//                                   with X-OAuth-Scopes; 401 {"message": "Bad credentials"} otherwise;
//                                   `email` is the public profile address, which GitHub does not verify
//   GET  /api/v3/user/emails        [{email, primary, verified, visibility}] when the token was granted
//                                   user:email or user (404 otherwise, as GitHub answers)
//   GET  /api/v3/user/orgs          the token's account's organizations [{login, id}] and teams
//   GET  /api/v3/user/teams         [{slug, name, organization: {login}}], `per_page` (default 30, at
//                                   most 100) at a time with `page`, and a `Link` header (rel="next",
//                                   "last", "prev", "first") when there is more than one page
//   (each GitHub path also answers without the /api/v3 prefix, as api.github.com's do)
//
// Test controls (loopback only, no authentication: never run this outside tests):
//   GET  /_test/log                 what the provider saw: authorization requests (parameter names,
//                                   prompt, scope), token requests (grant_type, Accept, response
//                                   format, access token format and kid), JWKS, userinfo and /user
//                                   calls; never a token, code or secret
//   POST /_test/settings?deny=1|0&token_format=auto|form|json&github_iss=1|0
//                        &email_verified=true|false|absent&login_as=<account id>
//                                   deny: end every authorization in access_denied;
//                                   token_format: the github shim's answer format (auto honours Accept);
//                                   github_iss: whether the github shim sends `iss`;
//                                   email_verified: as IDP_EMAIL_VERIFIED (testuser), for the next sign-ins;
//                                   login_as: the account the next logins sign in as (default testuser;
//                                   a browser that still has a session with the provider keeps its account)
//   POST /_test/accounts/<id>       JSON {"claims": {...}, "github": {...}, "disabled": bool}: creates
//                                   the account or changes it (claims and github are merged key by key,
//                                   null removes a key; github.orgs is a list of logins, github.teams of
//                                   "org/slug"). Claims in ID tokens and UserInfo: groups, realm_access,
//                                   hd, tid (and _claim_names/_claim_sources for groups: Entra's group
//                                   overage) with openid; email, email_verified, xms_edov with email;
//                                   name, preferred_username with profile. Disabled: logins end in
//                                   access_denied, refreshes in invalid_grant, and UserInfo and the
//                                   github shim answer the account's access tokens 401
//   GET  /_test/accounts            every account
//
// On success a single JSON line is written to stdout:
//   {"ready": true, "issuer": ..., "authorization_endpoint": ..., "token_endpoint": ...,
//    "userinfo_endpoint": ..., "jwks_uri": ..., ...}

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import process from 'node:process';

import Provider, { errors, interactionPolicy } from 'oidc-provider';

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
const DEBUG = process.env.IDP_DEBUG === '1';
const PROFILE = process.env.IDP_PROFILE || 'oidc';
if (!['oidc', 'github', 'jwt'].includes(PROFILE)) fail(`IDP_PROFILE must be oidc, github or jwt, got ${PROFILE}`);
const KEY_ID = process.env.IDP_KEY_ID || 'idp-test-rs256';
const API_RESOURCE = process.env.IDP_API_RESOURCE || 'https://api.upstream.test';
const API_SCOPES = 'api:read api:write';
const GITHUB_APP = process.env.IDP_GITHUB_APP === '1';
// GitHub's identity for the one account: a numeric id (the stable subject) and a login.
const GITHUB_USER = { login: 'tester', id: 4242, name: 'Test User', email: 'test@example.com', type: 'User' };

// Mutable at run time through POST /_test/settings.
const EMAIL_VERIFIED_VALUES = ['true', 'false', 'absent'];
const settings = {
  deny: process.env.IDP_DENY === '1',
  tokenFormat: 'auto',
  githubIss: true,
  emailVerified: process.env.IDP_EMAIL_VERIFIED || 'true',
  loginAs: 'testuser',
};
if (!EMAIL_VERIFIED_VALUES.includes(settings.emailVerified)) {
  fail(`IDP_EMAIL_VERIFIED must be true, false or absent, got ${settings.emailVerified}`);
}
// What the provider saw (GET /_test/log). Never holds a token, a code or a secret.
const seen = [];
function note(entry) {
  if (seen.length < 1000) seen.push({ at: Date.now(), ...entry });
}

// Accounts, by account id (the `sub`). "testuser" always exists; tests add more, change them and
// pick who the next login signs in as through the test controls (POST /_test/accounts/<id>,
// POST /_test/settings?login_as=<id>). An account holds:
//   claims    everything but `sub` that ID tokens and UserInfo may carry (per the scopes below);
//   github    what the github shim shows: {id, login, name, email, orgs: [login], teams: ["org/slug"]};
//   disabled  true: logins end in access_denied, its refresh tokens get invalid_grant, and UserInfo
//             and the github shim answer its access tokens 401 (an account switched off upstream).
const ACCOUNT_ID = 'testuser';
const ACCOUNT_ID_RE = /^[A-Za-z0-9._-]{1,64}$/;
const accounts = new Map();
accounts.set(ACCOUNT_ID, {
  claims: { email: 'test@example.com', email_verified: true, name: 'Test User', preferred_username: 'tester' },
  github: { ...GITHUB_USER, orgs: [], teams: [] },
  disabled: false,
});
let nextGithubId = 100000;

// An account's claims. For testuser, `email_verified` follows the email_verified setting (true,
// false or left out); other accounts carry what the tests gave them.
function accountClaims(accountId) {
  const claims = { ...accounts.get(accountId).claims, sub: accountId };
  if (accountId === ACCOUNT_ID) {
    if (settings.emailVerified === 'absent') delete claims.email_verified;
    else claims.email_verified = settings.emailVerified === 'true';
  }
  return claims;
}

// The account behind an access token, unless the token is unknown or the account is disabled.
async function accountOfToken(provider, req) {
  const header = req.headers.authorization ?? '';
  const match = /^(?:Bearer|token) (\S+)$/i.exec(header);
  const token = match ? await provider.AccessToken.find(match[1]) : undefined;
  const account = token ? accounts.get(token.accountId) : undefined;
  if (!account || account.disabled) return undefined;
  return { accountId: token.accountId, account };
}

// Shallow merge of `changes` into `target`; a null value removes the key.
function mergeInto(target, changes) {
  for (const [key, value] of Object.entries(changes)) {
    if (value === null) delete target[key];
    else target[key] = value;
  }
}

// POST /_test/accounts/<id> with {claims?, github?, disabled?}: creates or changes an account.
function updateAccount(accountId, body) {
  if (!ACCOUNT_ID_RE.test(accountId)) return 'the account id must match [A-Za-z0-9._-]{1,64}';
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return 'the body must be a JSON object';
  const unknown = Object.keys(body).filter((key) => !['claims', 'github', 'disabled'].includes(key));
  if (unknown.length) return `unknown fields: ${unknown.join(', ')}`;
  for (const key of ['claims', 'github']) {
    const value = body[key];
    if (value !== undefined && (value === null || typeof value !== 'object' || Array.isArray(value))) {
      return `${key} must be an object`;
    }
  }
  if (body.claims && 'sub' in body.claims) return 'the sub claim is the account id';
  if (body.disabled !== undefined && typeof body.disabled !== 'boolean') return 'disabled must be a boolean';
  let account = accounts.get(accountId);
  if (!account) {
    account = {
      claims: {},
      github: { login: accountId, id: nextGithubId++, name: accountId, email: null, type: 'User', orgs: [], teams: [] },
      disabled: false,
    };
  }
  const github = { ...account.github };
  mergeInto(github, body.github ?? {});
  for (const key of ['orgs', 'teams']) {
    if (!Array.isArray(github[key]) || !github[key].every((v) => typeof v === 'string')) {
      return `github.${key} must be a list of strings`;
    }
  }
  if (!github.teams.every((team) => /^[^/]+\/[^/]+$/.test(team))) return 'github.teams must be org/slug';
  const claims = { ...account.claims };
  mergeInto(claims, body.claims ?? {});
  accounts.set(accountId, { claims, github, disabled: body.disabled ?? account.disabled });
  return undefined;
}

function buildConfiguration() {
  // Fresh signing key per process: nothing here is meant to outlive a test run.
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: KEY_ID, use: 'sig', alg: 'RS256' };

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
    // Claims an access rule reads ride on `openid`, so that they are in the ID token as well as in
    // UserInfo (conformIdTokenClaims keeps other scopes' claims out of code-flow ID tokens). An
    // account with `_claim_names`/`_claim_sources` for `groups` and no `groups` gets Entra's group
    // overage shape (oidc-provider passes distributed claims through for the claims in scope).
    claims: {
      openid: ['sub', 'groups', 'realm_access', 'hd', 'tid'],
      email: ['email', 'email_verified', 'xms_edov'],
      profile: ['name', 'preferred_username'],
    },
    interactions: { policy: interactionsPolicy() },
    features: {
      devInteractions: { enabled: false },
      registration: { enabled: false },
      userinfo: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: PROFILE === 'jwt' ? jwtResourceIndicators() : { enabled: true },
    },
    // RFC 7636 is mandatory for every request; oidc-provider v9 only implements S256.
    pkce: { required: () => true },
    // Refresh tokens for the static client even without offline_access/prompt=consent.
    issueRefreshToken: async (_ctx, client, _code) =>
      client.clientId === CLIENT_ID && client.grantTypeAllowed('refresh_token'),
    // A disabled account is not found: oidc-provider then answers invalid_grant to a refresh and
    // invalid_token at UserInfo, and an existing browser session has to log in again.
    findAccount: async (_ctx, sub) => {
      const account = accounts.get(sub);
      if (!account || account.disabled) return undefined;
      return {
        accountId: sub,
        claims: async () => accountClaims(sub),
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

// The default prompts, and one more reason to log in: the browser's session belongs to an account
// that was disabled since (oidc-provider finds no account for it and would fail further on).
function interactionsPolicy() {
  const { base, Check } = interactionPolicy;
  const policy = base();
  policy.get('login').checks.add(new Check(
    'account_disabled',
    'the account of this session is disabled',
    (ctx) => (ctx.oidc.session.accountId && !ctx.oidc.account ? Check.REQUEST_PROMPT : Check.NO_NEED_TO_PROMPT),
  ));
  return policy;
}

// RFC 8707 + RFC 9068 for the jwt profile: every authorization is for the one API (the default
// resource), and its access tokens are JWTs signed with the provider's current key.
function jwtResourceIndicators() {
  return {
    enabled: true,
    defaultResource: async () => API_RESOURCE,
    useGrantedResource: async () => true,
    getResourceServerInfo: async (_ctx, indicator) => {
      if (indicator !== API_RESOURCE) throw new errors.InvalidTarget();
      return {
        scope: API_SCOPES,
        audience: API_RESOURCE,
        accessTokenTTL: ACCESS_TTL,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      };
    },
  };
}

// --- non-interactive login / consent --------------------------------------

const GITHUB_MEMBERSHIPS = /^(?:\/api\/v3)?\/user\/(orgs|teams)$/;
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
  if (settings.deny) {
    result = { error: 'access_denied', error_description: 'the test user declined the request' };
  } else if (interaction.prompt.name === 'login') {
    if (accounts.get(settings.loginAs)?.disabled) {
      result = { error: 'access_denied', error_description: 'the account is disabled' };
    } else {
      result = { login: { accountId: settings.loginAs, amr: ['pwd'] } };
    }
  } else if (interaction.prompt.name === 'consent') {
    result = { consent: { grantId: await grantEverythingRequested(provider, interaction) } };
  } else {
    result = { error: 'interaction_required', error_description: `unsupported prompt ${interaction.prompt.name}` };
  }
  if (DEBUG) process.stderr.write(`upstream-idp: interaction ${uid} ${interaction.prompt.name} -> ${Object.keys(result)[0]}\n`);
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
}

// --- what the provider saw, and the test controls ------------------------

function readBody(req, limit = 64 * 1024) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > limit) {
        reject(new Error('body too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function jwtHeader(token) {
  const parts = typeof token === 'string' ? token.split('.') : [];
  if (parts.length !== 3) return undefined;
  try {
    return JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
}

function authScheme(req) {
  const header = req.headers.authorization;
  return header ? header.split(' ', 1)[0] : undefined;
}

// Logged before dispatch: names and harmless values only.
function noteRequest(req, url) {
  const path = url.pathname;
  const q = url.searchParams;
  if (path === '/auth' || path === '/login/oauth/authorize') {
    note({
      kind: 'authorize',
      path,
      params: [...new Set(q.keys())].sort(),
      scope: q.get('scope'),
      prompt: q.get('prompt'),
      access_type: q.get('access_type'),
      code_challenge_method: q.get('code_challenge_method'),
    });
  } else if (path === '/jwks') {
    note({ kind: 'jwks' });
  } else if (path === '/me') {
    note({ kind: 'userinfo', auth_scheme: authScheme(req) });
  }
}

// Koa middleware inside oidc-provider: the token endpoint's answers (format and kid only), and the
// github profile's RFC 9207 `iss` on the redirect back to the client (GitHub's value, or none).
function observe(redirectUris, issuer) {
  return async (ctx, next) => {
    await next();
    if (ctx.path === '/token' && ctx.method === 'POST') {
      const body = ctx.body && typeof ctx.body === 'object' ? ctx.body : {};
      const header = jwtHeader(body.access_token);
      note({
        kind: 'token',
        grant_type: ctx.oidc?.params?.grant_type ?? null,
        status: ctx.status,
        error: body.error ?? null,
        access_token_format: body.access_token ? (header ? 'jwt' : 'opaque') : null,
        access_token_kid: header?.kid ?? null,
        id_token_kid: jwtHeader(body.id_token)?.kid ?? null,
        refresh_token: Boolean(body.refresh_token),
        shim: ctx.get('x-github-shim') === '1',
      });
    }
    if (PROFILE === 'github' && ctx.status >= 300 && ctx.status < 400) {
      const location = ctx.response.get('location');
      if (location && redirectUris.some((uri) => location.startsWith(`${uri}?`))) {
        const target = new URL(location);
        if (target.searchParams.has('iss')) {
          if (settings.githubIss) target.searchParams.set('iss', `${issuer}/login/oauth`);
          else target.searchParams.delete('iss');
        }
        note({ kind: 'github_callback', iss: target.searchParams.get('iss') });
        ctx.redirect(target.href);
      }
    }
  };
}

const ACCOUNT_PATH = /^\/_test\/accounts\/([^/]+)$/;

async function handleTestControl(req, res, url) {
  if (url.pathname === '/_test/log' && req.method === 'GET') {
    sendJson(res, 200, { settings, seen });
    return;
  }
  if (url.pathname === '/_test/accounts' && req.method === 'GET') {
    sendJson(res, 200, { accounts: Object.fromEntries(accounts) });
    return;
  }
  const accountPath = req.method === 'POST' ? ACCOUNT_PATH.exec(url.pathname) : null;
  if (accountPath) {
    let body;
    try {
      body = JSON.parse(await readBody(req));
    } catch {
      sendJson(res, 400, { error: 'invalid_request', error_description: 'the body must be JSON' });
      return;
    }
    const accountId = decodeURIComponent(accountPath[1]);
    const problem = updateAccount(accountId, body);
    if (problem) {
      sendJson(res, 400, { error: 'invalid_request', error_description: problem });
      return;
    }
    sendJson(res, 200, { account: accounts.get(accountId) });
    return;
  }
  if (url.pathname === '/_test/settings' && req.method === 'POST') {
    const loginAs = url.searchParams.get('login_as');
    if (loginAs !== null) {
      if (!accounts.has(loginAs)) {
        sendJson(res, 400, { error: 'invalid_request', error_description: 'no such account' });
        return;
      }
      settings.loginAs = loginAs;
    }
    const deny = url.searchParams.get('deny');
    if (deny !== null) settings.deny = deny === '1';
    const githubIss = url.searchParams.get('github_iss');
    if (githubIss !== null) settings.githubIss = githubIss === '1';
    const emailVerified = url.searchParams.get('email_verified');
    if (emailVerified !== null) {
      if (!EMAIL_VERIFIED_VALUES.includes(emailVerified)) {
        sendJson(res, 400, { error: 'invalid_request' });
        return;
      }
      settings.emailVerified = emailVerified;
    }
    const format = url.searchParams.get('token_format');
    if (format !== null) {
      if (!['auto', 'form', 'json'].includes(format)) {
        sendJson(res, 400, { error: 'invalid_request' });
        return;
      }
      settings.tokenFormat = format;
    }
    sendJson(res, 200, { settings });
    return;
  }
  sendJson(res, 404, { error: 'not_found' });
}

// --- GitHub shim ----------------------------------------------------------

// The scope the proxy asked for at /login/oauth/authorize, reported back as GitHub does
// (comma-separated in the token response, ", "-separated in X-OAuth-Scopes).
let githubRequestedScope = '';

function githubAuthorize(res, url, issuer) {
  const params = new URLSearchParams(url.searchParams);
  githubRequestedScope = (params.get('scope') ?? '').split(/[ ,]+/).filter(Boolean).join(',');
  // oidc-provider needs OIDC scopes to log the user in; GitHub's own scopes are only echoed back.
  params.set('scope', GITHUB_APP ? 'openid offline_access' : 'openid');
  if (GITHUB_APP) params.set('prompt', 'consent');
  res.statusCode = 302;
  res.setHeader('Location', `${issuer}/auth?${params}`);
  res.setHeader('Cache-Control', 'no-store');
  res.end();
}

function sendGithubToken(req, res, body) {
  const wantsJson = (req.headers.accept ?? '').toLowerCase().includes('application/json');
  const json = settings.tokenFormat === 'json' || (settings.tokenFormat === 'auto' && wantsJson);
  note({ kind: 'github_token_answer', accept: req.headers.accept ?? null, format: json ? 'json' : 'form', error: body.error ?? null });
  // GitHub answers 200 even for errors.
  if (json) {
    sendJson(res, 200, body);
    return;
  }
  const payload = new URLSearchParams(Object.entries(body).map(([k, v]) => [k, String(v)])).toString();
  res.statusCode = 200;
  res.setHeader('Content-Type', 'application/x-www-form-urlencoded; charset=utf-8');
  res.setHeader('Content-Length', Buffer.byteLength(payload));
  res.setHeader('Cache-Control', 'no-store');
  res.end(payload);
}

async function githubToken(req, res, issuer) {
  const raw = await readBody(req);
  const form = new URLSearchParams(raw);
  const grantType = form.get('grant_type');
  const headers = { 'content-type': 'application/x-www-form-urlencoded', 'x-github-shim': '1' };
  if (req.headers.authorization) headers.authorization = req.headers.authorization;
  const upstream = await fetch(`${issuer}/token`, { method: 'POST', headers, body: raw });
  const answer = await upstream.json();
  if (answer.error) {
    let error = answer.error;
    if (error === 'invalid_grant') error = grantType === 'refresh_token' ? 'bad_refresh_token' : 'bad_verification_code';
    if (error === 'invalid_client') error = 'incorrect_client_credentials';
    sendGithubToken(req, res, {
      error,
      error_description: 'The code passed is incorrect or expired.',
      error_uri: 'https://docs.github.com/apps/troubleshooting',
    });
    return;
  }
  const body = { access_token: answer.access_token, token_type: 'bearer', scope: githubRequestedScope };
  if (GITHUB_APP) {
    body.expires_in = answer.expires_in;
    if (answer.refresh_token) {
      body.refresh_token = answer.refresh_token;
      body.refresh_token_expires_in = REFRESH_TTL;
    }
  }
  sendGithubToken(req, res, body);
}

const GITHUB_DOCS = 'https://docs.github.com/rest';

function githubPublicUser(github) {
  const { orgs: _orgs, teams: _teams, ...user } = github;
  return user;
}

async function githubUser(provider, req, res) {
  const found = await accountOfToken(provider, req);
  note({ kind: 'github_user', auth_scheme: authScheme(req), accept: req.headers.accept ?? null, valid: Boolean(found) });
  if (!found) {
    sendJson(res, 401, { message: 'Bad credentials', documentation_url: GITHUB_DOCS });
    return;
  }
  res.setHeader('X-OAuth-Scopes', githubRequestedScope.split(',').filter(Boolean).join(', '));
  res.setHeader('X-Accepted-OAuth-Scopes', '');
  sendJson(res, 200, githubPublicUser(found.account.github));
}

// GitHub's "List email addresses for the authenticated user": needs the user:email (or user) scope.
// testuser's address is verified as the email_verified setting says; another account's address is
// verified when its email_verified claim is true.
async function githubEmails(provider, req, res) {
  const found = await accountOfToken(provider, req);
  const scopes = githubRequestedScope.split(',');
  const allowed = GITHUB_APP || scopes.includes('user:email') || scopes.includes('user');
  note({ kind: 'github_emails', valid: Boolean(found), allowed, email_verified: settings.emailVerified });
  if (!found) {
    sendJson(res, 401, { message: 'Bad credentials', documentation_url: GITHUB_DOCS });
    return;
  }
  if (!allowed) {
    sendJson(res, 404, { message: 'Not Found', documentation_url: GITHUB_DOCS });
    return;
  }
  const { accountId, account } = found;
  let verified;
  if (accountId === ACCOUNT_ID) verified = settings.emailVerified === 'absent' ? undefined : settings.emailVerified === 'true';
  else verified = account.github.email ? account.claims.email_verified === true : undefined;
  const emails = verified === undefined
    ? []
    : [{ email: account.github.email, primary: true, verified, visibility: 'public' }];
  sendJson(res, 200, emails);
}

// A number for a name, stable within a run (GitHub's ids are numbers).
function numericId(name) {
  return crypto.createHash('sha256').update(name).digest().readUInt32BE(0);
}

// "List organizations for the authenticated user" and "List teams for the authenticated user":
// `per_page` (default 30, at most 100) and `page`, with RFC 8288 `Link` rel="next"/"last" (and
// "prev"/"first") as GitHub sends them whenever there is more than one page.
async function githubMemberships(provider, req, res, url, issuer, which) {
  const found = await accountOfToken(provider, req);
  const perPage = Math.min(Math.max(Number.parseInt(url.searchParams.get('per_page') ?? '30', 10) || 30, 1), 100);
  const page = Math.max(Number.parseInt(url.searchParams.get('page') ?? '1', 10) || 1, 1);
  note({ kind: `github_${which}`, valid: Boolean(found), page, per_page: perPage, scopes: githubRequestedScope.split(',').filter(Boolean) });
  if (!found) {
    sendJson(res, 401, { message: 'Bad credentials', documentation_url: GITHUB_DOCS });
    return;
  }
  const entries = which === 'orgs'
    ? found.account.github.orgs.map((login) => ({ login, id: numericId(login), description: null }))
    : found.account.github.teams.map((team) => {
      const [org, slug] = team.split('/');
      return { id: numericId(team), slug, name: slug, privacy: 'closed', organization: { login: org, id: numericId(org) } };
    });
  const last = Math.max(Math.ceil(entries.length / perPage), 1);
  const link = (n) => {
    const target = new URL(url.pathname, issuer);
    target.searchParams.set('per_page', String(perPage));
    target.searchParams.set('page', String(n));
    return target.href;
  };
  const links = [];
  if (page < last) links.push(`<${link(page + 1)}>; rel="next"`, `<${link(last)}>; rel="last"`);
  if (page > 1) links.push(`<${link(page - 1)}>; rel="prev"`, `<${link(1)}>; rel="first"`);
  if (links.length) res.setHeader('Link', links.join(', '));
  sendJson(res, 200, entries.slice((page - 1) * perPage, page * perPage));
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

  provider.use(observe(redirectUris, issuer));
  const providerCallback = provider.callback();
  server.on('request', (req, res) => {
    const url = new URL(req.url, issuer);
    const failed = (what) => (err) => {
      process.stderr.write(`upstream-idp: ${what} failure ${err?.stack ?? err}\n`);
      if (!res.headersSent) sendJson(res, 500, { error: 'server_error' });
      else res.destroy();
    };
    noteRequest(req, url);
    if (url.pathname.startsWith('/_test/')) {
      handleTestControl(req, res, url).catch(failed('test control'));
      return;
    }
    if (PROFILE === 'github') {
      if (url.pathname === '/login/oauth/authorize' && req.method === 'GET') {
        githubAuthorize(res, url, issuer);
        return;
      }
      if (url.pathname === '/login/oauth/access_token' && req.method === 'POST') {
        githubToken(req, res, issuer).catch(failed('github token'));
        return;
      }
      if ((url.pathname === '/api/v3/user/emails' || url.pathname === '/user/emails') && req.method === 'GET') {
        githubEmails(provider, req, res).catch(failed('github emails'));
        return;
      }
      if ((url.pathname === '/api/v3/user' || url.pathname === '/user') && req.method === 'GET') {
        githubUser(provider, req, res).catch(failed('github user'));
        return;
      }
      const memberships = req.method === 'GET' ? GITHUB_MEMBERSHIPS.exec(url.pathname) : null;
      if (memberships) {
        githubMemberships(provider, req, res, url, issuer, memberships[1]).catch(failed('github memberships'));
        return;
      }
    }
    const match = req.method === 'GET' ? INTERACTION_PATH.exec(url.pathname) : null;
    if (match) {
      handleInteraction(provider, req, res, match[1]).catch(failed('interaction'));
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
      deny: settings.deny,
      profile: PROFILE,
      kid: KEY_ID,
      api_resource: PROFILE === 'jwt' ? API_RESOURCE : undefined,
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

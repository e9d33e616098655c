// The TypeScript MCP SDK's machine clients against an MCP server behind oauthproxy: discovery, the
// client credentials grant (RFC 6749 §4.4) with the SDK's ClientCredentialsProvider
// (client_secret_basic) or PrivateKeyJwtProvider (RFC 7523 §2.2), then list the tools and call one.
//
// Run by tests/e2e/test_client_credentials_mcp.py. Input, from the environment:
//   MCP_URL        the protected MCP endpoint (http://127.0.0.1:<port>/mcp)
//   ISSUER         the proxy's issuer; the SDK presents the credentials to it only
//   CLIENT_ID      the pre-registered client
//   CLIENT_SECRET  its secret (ClientCredentialsProvider), or
//   PRIVATE_JWK    its private key as a JSON Web Key (PrivateKeyJwtProvider, ES256)
//   TOOL           the tool to call (default whoami)
// Output: one JSON line {"tools": [...], "text": "...", "scope": "...", "refresh_token": bool}.
// Exit status 1 with the error on stderr when anything fails.

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import {
  ClientCredentialsProvider,
  PrivateKeyJwtProvider,
} from '@modelcontextprotocol/sdk/client/auth-extensions.js';

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

function provider() {
  const common = { clientId: required('CLIENT_ID'), expectedIssuer: required('ISSUER') };
  if (process.env.PRIVATE_JWK) {
    return new PrivateKeyJwtProvider({
      ...common,
      privateKey: JSON.parse(process.env.PRIVATE_JWK),
      algorithm: 'ES256',
      jwtLifetimeSeconds: 120,
    });
  }
  return new ClientCredentialsProvider({ ...common, clientSecret: required('CLIENT_SECRET') });
}

async function main() {
  const auth = provider();
  const transport = new StreamableHTTPClientTransport(new URL(required('MCP_URL')), {
    authProvider: auth,
  });
  const client = new Client({ name: 'oauthproxy-ts-machine-client', version: '0.0.0' });
  await client.connect(transport);
  try {
    const { tools } = await client.listTools();
    const result = await client.callTool({ name: process.env.TOOL || 'whoami', arguments: {} });
    if (result.isError) throw new Error(`tool error: ${JSON.stringify(result.content)}`);
    const text = result.content
      .filter((part) => part.type === 'text')
      .map((part) => part.text)
      .join('');
    const tokens = auth.tokens() || {};
    process.stdout.write(
      JSON.stringify({
        tools: tools.map((tool) => tool.name),
        text,
        scope: tokens.scope ?? null,
        refresh_token: Boolean(tokens.refresh_token),
      }) + '\n',
    );
  } finally {
    await client.close();
  }
}

main().catch((error) => {
  process.stderr.write(`${error && error.stack ? error.stack : error}\n`);
  process.exit(1);
});

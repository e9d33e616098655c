// The TypeScript MCP SDK's OAuth client against an MCP server, for oauthproxy's end-to-end tests.
//
// Usage: node client.mjs SERVER_URL REDIRECT_URL [CLIENT_METADATA_URL]
//
// The SDK makes every OAuth decision itself (discovery, whether to use the metadata document URL as
// client_id or to register, PKCE, the token request); this script only stands in for the user:
// it prints {"authorize": URL} and reads the authorization code from the next line of stdin. At
// the end it prints {"client_id", "text", "requests"} (the tool's answer and every request the SDK
// sent, as "METHOD URL"), or {"error": message} if the SDK gave up.

import readline from 'node:readline';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';

const [serverUrl, redirectUrl, metadataUrl] = process.argv.slice(2);
const input = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const requests = [];

function say(message) {
  process.stdout.write(JSON.stringify(message) + '\n');
}

async function recordingFetch(url, init) {
  requests.push(`${init?.method ?? 'GET'} ${url}`);
  return fetch(url, init);
}

class Provider {
  get redirectUrl() {
    return redirectUrl;
  }
  get clientMetadata() {
    return {
      client_name: 'TypeScript SDK client',
      redirect_uris: [redirectUrl],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }
  get clientMetadataUrl() {
    return metadataUrl || undefined;
  }
  clientInformation() {
    return this.client;
  }
  saveClientInformation(information) {
    this.client = information;
  }
  tokens() {
    return this.saved;
  }
  saveTokens(tokens) {
    this.saved = tokens;
  }
  redirectToAuthorization(url) {
    say({ authorize: url.toString() });
  }
  saveCodeVerifier(verifier) {
    this.verifier = verifier;
  }
  codeVerifier() {
    return this.verifier;
  }
}

const provider = new Provider();

function transport() {
  return new StreamableHTTPClientTransport(new URL(serverUrl), {
    authProvider: provider,
    fetch: recordingFetch,
  });
}

async function main() {
  let client = new Client({ name: 'oauthproxy-ts-e2e', version: '1.0.0' });
  const first = transport();
  try {
    await client.connect(first);
  } catch (error) {
    if (!(error instanceof UnauthorizedError)) throw error;
    const code = (await input.next()).value;
    await first.finishAuth(code);
    client = new Client({ name: 'oauthproxy-ts-e2e', version: '1.0.0' });
    await client.connect(transport());
  }
  const result = await client.callTool({ name: 'whoami', arguments: {} });
  say({ client_id: provider.client?.client_id, text: result.content[0].text, requests });
  await client.close();
}

main().then(
  () => process.exit(0),
  (error) => {
    say({ error: String(error?.message ?? error), requests });
    process.exit(1);
  },
);

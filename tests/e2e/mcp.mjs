// The MCP side of the browser suite, with the official TypeScript SDK on both ends: an MCP
// server upstream (stateless Streamable HTTP) and an MCP client that discovers Vallum's
// authorization server, registers, has a person sign in in Chromium, and calls tools.

import http from 'node:http';
import https from 'node:https';
import { Readable } from 'node:stream';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { z } from 'zod';

/// `fetch` for Node clients (the MCP SDK, the IdP's back-channel calls): `*.localhost` names go
/// to the balancer over TLS, trusting the harness CA, as a real client reaches the gateway by
/// name; the body streams as it arrives. Other URLs go to the global fetch.
export function gatewayFetch(ca) {
  return (input, init = {}) => {
    const u = new URL(input instanceof Request ? input.url : String(input));
    if (!u.hostname.endsWith('.localhost')) return globalThis.fetch(input, init);
    const method = init.method || 'GET';
    const headers = { ...Object.fromEntries(new Headers(init.headers || {})), host: u.host };
    const body = init.body == null ? undefined : String(init.body);
    if (body !== undefined) headers['content-length'] = Buffer.byteLength(body);
    return new Promise((resolve, reject) => {
      const req = https.request({
        host: '127.0.0.1', port: Number(u.port || 443), path: u.pathname + u.search, method,
        // A connection per request: the balancer drops open connections when a test switches
        // nodes, and a pooled socket would then fail the next request.
        servername: u.hostname, ca, headers, agent: false,
      }, (res) => {
        const h = new Headers();
        for (const [k, v] of Object.entries(res.headers)) for (const one of [v].flat()) h.append(k, String(one));
        const empty = method === 'HEAD' || [204, 304].includes(res.statusCode);
        resolve(new Response(empty ? null : Readable.toWeb(res), { status: res.statusCode, headers: h }));
      });
      req.on('error', reject);
      if (body !== undefined) req.write(body);
      req.end();
    });
  };
}

/// The MCP server: `echo`, `read_file` and `delete`. `calls` records every tool call that
/// reached it and `authorizations` every `Authorization` header it was sent.
export async function startMcpUpstream(freePort) {
  const port = await freePort();
  const calls = [];
  const authorizations = [];
  const build = () => {
    const server = new McpServer({ name: 'e2e-tools', version: '1.0.0' });
    server.registerTool('echo', { description: 'Echoes its text', inputSchema: { text: z.string() } },
      async ({ text }) => { calls.push({ tool: 'echo', text }); return { content: [{ type: 'text', text }] }; });
    server.registerTool('read_file', { description: 'Reads a file', inputSchema: { path: z.string() } },
      async ({ path }) => { calls.push({ tool: 'read_file', path }); return { content: [{ type: 'text', text: `contents of ${path}` }] }; });
    server.registerTool('delete', { description: 'Deletes everything', inputSchema: {} },
      async () => { calls.push({ tool: 'delete' }); return { content: [{ type: 'text', text: 'deleted' }] }; });
    return server;
  };
  const httpServer = http.createServer(async (req, res) => {
    if (req.headers.authorization) authorizations.push(req.headers.authorization);
    if (req.method !== 'POST') { res.writeHead(405).end(); return; }
    const server = build();
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
    res.on('close', () => { transport.close(); server.close(); });
    await server.connect(transport);
    await transport.handleRequest(req, res);
  });
  await new Promise((r) => httpServer.listen(port, '127.0.0.1', r));
  return { port, calls, authorizations, close: () => httpServer.close() };
}

/// The client's side of OAuth, in memory, as the SDK's examples keep it; counts what it saves.
class MemoryOAuth {
  constructor(redirectUrl) {
    this.redirect = redirectUrl;
    this.saved = { tokens: 0, registrations: 0 };
    this.authorizationUrl = null;
  }
  get redirectUrl() { return this.redirect; }
  get clientMetadata() {
    return { client_name: 'Vallum e2e agent', redirect_uris: [this.redirect], grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'], token_endpoint_auth_method: 'none' };
  }
  clientInformation() { return this.client; }
  saveClientInformation(info) { this.client = info; this.saved.registrations++; }
  tokens() { return this.current; }
  saveTokens(t) { this.current = t; this.saved.tokens++; }
  redirectToAuthorization(url) { this.authorizationUrl = url; }
  saveCodeVerifier(v) { this.verifier = v; }
  codeVerifier() { return this.verifier; }
  /// The SDK calls this when the server refuses a grant (`invalid_grant`): start over.
  invalidateCredentials(scope) {
    if (scope === 'all' || scope === 'tokens') this.current = undefined;
    if (scope === 'all' || scope === 'client') this.client = undefined;
    if (scope === 'all' || scope === 'verifier') this.verifier = undefined;
  }
}

/// A one-request listener on loopback: the redirect URI the authorization code comes back to.
async function startCallback(freePort) {
  const port = await freePort();
  let deliver;
  const code = new Promise((r) => { deliver = r; });
  const server = http.createServer((req, res) => {
    const u = new URL(req.url, `http://127.0.0.1:${port}`);
    res.writeHead(200, { 'content-type': 'text/html' }).end('<p id="done">You can close this window.</p>');
    deliver({ code: u.searchParams.get('code'), error: u.searchParams.get('error'), iss: u.searchParams.get('iss') });
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${port}/cb`, code, close: () => server.close() };
}

/// An MCP client of `serverUrl` that signs in as `user` in `page` when the server asks: the
/// SDK gets the 401, reads the metadata, registers and builds the authorization URL; Chromium
/// signs in at the IdP and clicks Allow on the consent page; the SDK exchanges the code. Returns the connected client and its OAuth.
export async function connectAgent({ serverUrl, page, user, fetch, freePort, log }) {
  const callback = await startCallback(freePort);
  const oauth = new MemoryOAuth(callback.url);
  const transport = () => new StreamableHTTPClientTransport(new URL(serverUrl), { authProvider: oauth, fetch });
  let consentText = '';
  try {
    const probe = transport();
    const first = new Client({ name: 'vallum-e2e', version: '1.0.0' });
    let refused = null;
    await first.connect(probe).catch((e) => { refused = e; });
    if (!(refused instanceof UnauthorizedError)) throw new Error(`expected a 401 challenge first, got ${refused}`);
    if (!oauth.authorizationUrl) throw new Error('the SDK produced no authorization URL');
    log(`mcp: authorizing at ${oauth.authorizationUrl.origin}${oauth.authorizationUrl.pathname}`);
    await page.goto(oauth.authorizationUrl.toString());
    await page.waitForSelector('input[name="login"]');
    await page.fill('input[name="login"]', user);
    await page.fill('input[name="password"]', 'any-password');
    // After the IdP, the person is asked to allow the agent, and clicks Allow.
    await Promise.all([page.waitForURL((u) => u.pathname === '/.pomerium/mcp/authorize'), page.click('button[type="submit"]')]);
    await page.waitForSelector('button[value="allow"]');
    consentText = await page.textContent('body');
    await Promise.all([page.waitForURL((u) => u.href.startsWith(callback.url)), page.click('button[value="allow"]')]);
    const back = await callback.code;
    if (!back.code) throw new Error(`no code: ${JSON.stringify(back)}`);
    await probe.finishAuth(back.code);
    const client = new Client({ name: 'vallum-e2e', version: '1.0.0' });
    await client.connect(transport());
    return { client, oauth, back, consentText };
  } finally {
    callback.close();
  }
}

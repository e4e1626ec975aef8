// The end-to-end world, all on loopback and free ports: a certified OpenID Provider
// (oidc-provider) with test users and groups, an echo upstream that verifies Vallum's JWT
// assertion against the gateway's JWKS, one or two Vallum nodes serving TLS behind a TCP
// load balancer (so the browser always sees one host:port while the test picks the node), an
// optional private Redis, and one headless Chromium driven by playwright-core.

import { spawn, execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Provider from 'oidc-provider';
import * as jose from 'jose';
import { chromium } from 'playwright-core';
import { gatewayFetch, startMcpUpstream } from './mcp.mjs';
import { startIngresses } from './ingress.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(here, '../..');
export const ARTIFACTS = path.join(ROOT, 'target', 'e2e-artifacts');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const VALLUM = process.env.VALLUM_BIN || path.join(ROOT, 'target', 'debug', 'vallum');

export const CLIENT_SECRET = 'e2e-client-secret-do-not-use';
const COOKIE_SECRET = '8GIP1sU0aqXJZ8T8XkL1zB0cR2P0kTmYxw0a3DkBwsw=';
const SHARED_SECRET = 'Wm9vaF9zaGFyZWRfc2VjcmV0XzMyX2J5dGVzX19fXyE=';
/// Access tokens live this long, so a test can outlive one and see the session refreshed.
export const ACCESS_TOKEN_TTL = 8;
export const HOSTS = ['authenticate', 'app1', 'app2', 'admin', 'ws', 'device', 'vip', 'fwdauth', 'fa1', 'fa2', 'fadeny', 'fc1',
  'partners', 'choice', 'mcp'];
/// The second identity provider's client (routes with their own provider).
export const PARTNERS_CLIENT = 'vallum-partners';
// A small inline logo, so branded pages need no network.
const LOGO = 'data:image/svg+xml;base64,' + Buffer.from(
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="7" fill="#0f766e"/>' +
  '<path d="M9 9h14v9a7 7 0 0 1-14 0z" fill="#fff"/></svg>').toString('base64');

export const USERS = {
  alice: { email: 'alice@example.com', name: 'Alice Admin', groups: ['admins', 'engineering'] },
  bob: { email: 'bob@example.com', name: 'Bob Builder', groups: ['engineering'] },
  eve: { email: 'eve@example.com', name: 'Eve Outsider', groups: [] },
};

export async function freePort(host = '127.0.0.1') {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/// A CA and a certificate for localhost and the test hosts, made with the openssl CLI.
function makeCerts(dir) {
  const run = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  run('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key',
    '-out', 'ca.crt', '-days', '2', '-subj', '/CN=Vallum e2e CA');
  run('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'tls.key', '-out',
    'tls.csr', '-subj', '/CN=localhost');
  const sans = ['localhost', '*.localhost', ...HOSTS.map((h) => `${h}.localhost`)].map((n) => `DNS:${n}`);
  fs.writeFileSync(path.join(dir, 'ext.cnf'),
    `subjectAltName=${sans.join(',')}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n`);
  run('x509', '-req', '-in', 'tls.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'tls.crt',
    '-days', '2', '-extfile', 'ext.cnf');
  return {
    ca: fs.readFileSync(path.join(dir, 'ca.crt')), caFile: path.join(dir, 'ca.crt'),
    cert: path.join(dir, 'tls.crt'), key: path.join(dir, 'tls.key'),
  };
}

/// oidc-provider with the test users, refresh tokens, RP-initiated logout, back-channel logout
/// to the gateway, and its built-in login form (any password; the login is the user name).
async function startIdp(lbPort, log, ca, clientId = 'vallum') {
  const port = await freePort();
  const issuer = `http://127.0.0.1:${port}`;
  const base = `https://authenticate.localhost:${lbPort}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      client_secret: CLIENT_SECRET,
      redirect_uris: [`${base}/oauth2/callback`],
      post_logout_redirect_uris: [`${base}/.pomerium/signed_out`],
      backchannel_logout_uri: `${base}/.pomerium/backchannel_logout`,
      backchannel_logout_session_required: true,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
    }],
    async findAccount(ctx, id) {
      const u = USERS[id];
      if (!u) return undefined;
      return {
        accountId: id,
        async claims() {
          return { sub: id, email: u.email, email_verified: true, name: u.name, groups: u.groups };
        },
      };
    },
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
    features: {
      devInteractions: { enabled: true }, rpInitiatedLogout: { enabled: true }, backchannelLogout: { enabled: true },
    },
    // Back-channel logout tokens reach the gateway by its name, as from a real IdP.
    fetch: gatewayFetch(ca),
    pkce: { required: () => true },
    ttl: { AccessToken: ACCESS_TOKEN_TTL, IdToken: 3600, RefreshToken: 86400, Session: 3600, Grant: 3600, Interaction: 600 },
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    // First-party client: consent is implied, so the browser sees only the login form.
    async loadExistingGrant(ctx) {
      const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (grantId) return ctx.oidc.provider.Grant.find(grantId);
      const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
      grant.addOIDCScope('openid offline_access email profile groups');
      grant.addOIDCClaims(['email', 'email_verified', 'name', 'groups']);
      await grant.save();
      return grant;
    },
    cookies: { keys: [crypto.randomBytes(16).toString('hex')] },
    conformIdTokenClaims: false,
  });
  const counts = { logins: 0, refreshes: 0, endSessions: 0, backchannel: 0 };
  /// The IdP session id (`sid`) of the latest sign-in, as the ID token carries it.
  const sids = [];
  provider.on('authorization.success', (ctx) => {
    const sid = ctx.oidc.session?.sidFor?.(ctx.oidc.client?.clientId);
    if (sid) sids.push(sid);
  });
  provider.on('backchannel.success', () => { counts.backchannel++; log('idp: backchannel.success'); });
  provider.on('grant.success', (ctx) => {
    const gt = ctx.oidc.params?.grant_type;
    log(`idp: grant.success ${gt}`);
    if (gt === 'refresh_token') counts.refreshes++;
  });
  provider.on('interaction.ended', () => { counts.logins++; log('idp: interaction ended (login)'); });
  provider.on('end_session.success', () => { counts.endSessions++; log('idp: end_session.success'); });
  for (const ev of ['server_error', 'grant.error', 'authorization.error', 'end_session.error', 'userinfo.error',
    'introspection.error', 'backchannel.error']) {
    provider.on(ev, (_ctx, err) => log(`idp: ${ev}: ${err?.message} ${err?.error_description || ''}`));
  }
  const server = http.createServer(provider.callback());
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return { issuer, port, counts, sids, close: () => server.close() };
}

/// Fetches the gateway's JWKS (over TLS, trusting the harness CA) for the host a request named.
function fetchJwks(lbPort, host, ca) {
  return new Promise((resolve, reject) => {
    const req = https.request({
      host: '127.0.0.1', port: lbPort, path: '/.well-known/pomerium/jwks.json', servername: host, ca,
      headers: { host: `${host}:${lbPort}` },
    }, (res) => {
      let body = '';
      res.on('data', (c) => { body += c; });
      res.on('end', () => { try { resolve(JSON.parse(body)); } catch (e) { reject(new Error(`JWKS: ${res.statusCode} ${body}`)); } });
    });
    req.on('error', reject);
    req.end();
  });
}

/// An upstream that renders what it received (headers, URL) and whether the JWT assertion
/// verifies against the gateway's JWKS, and echoes websocket text frames.
async function startEcho(lbPort, ca) {
  const port = await freePort();
  const server = http.createServer(async (req, res) => {
    const host = (req.headers['x-forwarded-host'] || req.headers.host || '').split(':')[0];
    const assertion = req.headers['x-pomerium-jwt-assertion'];
    let jwt = { verified: false, reason: 'no assertion' };
    if (assertion) {
      try {
        const jwks = jose.createLocalJWKSet(await fetchJwks(lbPort, host, ca));
        const { payload } = await jose.jwtVerify(assertion, jwks, { audience: host });
        jwt = { verified: true, claims: payload };
      } catch (e) {
        jwt = { verified: false, reason: String(e.message || e) };
      }
    }
    const data = { method: req.method, url: req.url, host, headers: req.headers, jwt };
    const rows = Object.entries(req.headers).map(([k, v]) =>
      `<tr><th>${esc(k)}</th><td>${esc(String(v).slice(0, 120))}</td></tr>`).join('');
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(`<!doctype html><html><head><title>echo ${esc(host)}</title><style>body{font-family:sans-serif;margin:2rem}` +
      `th{text-align:left;padding-right:1rem}td{font-family:monospace}</style></head><body>` +
      `<h1>${esc(host)}${esc(req.url)}</h1><p id="who">Signed in as ${esc(jwt.claims?.email || 'nobody')} — ` +
      `assertion ${jwt.verified ? 'verified' : 'NOT verified'}</p><table>${rows}</table>` +
      `<pre id="data" hidden>${esc(JSON.stringify(data))}</pre></body></html>`);
  });
  server.on('upgrade', (req, socket, head) => {
    const key = req.headers['sec-websocket-key'];
    const accept = crypto.createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      `Sec-WebSocket-Accept: ${accept}\r\n\r\n`);
    // `head` holds whatever arrived with the request head (frames a client sent early).
    let buf = Buffer.alloc(0);
    const onData = (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 6) {
        const opcode = buf[0] & 0x0f;
        const len = buf[1] & 0x7f; // the tests send short frames only
        if (buf.length < 6 + len) return;
        const mask = buf.subarray(2, 6);
        const payload = Buffer.from(buf.subarray(6, 6 + len).map((b, i) => b ^ mask[i % 4]));
        buf = buf.subarray(6 + len);
        if (opcode === 0x8) { socket.end(Buffer.from([0x88, 0])); return; }
        if (opcode === 0x1) socket.write(Buffer.concat([Buffer.from([0x81, payload.length]), payload]));
      }
    };
    socket.on('data', onData);
    if (head?.length) onData(head);
    socket.on('error', () => {});
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return { port, close: () => server.close() };
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

/// A TCP load balancer in front of the gateway nodes: TLS passes through, so every node sees
/// the browser's SNI and Host; `use(i)` sends new connections to node i and drops open ones.
async function startBalancer(port) {
  let target = null;
  const open = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(target, '127.0.0.1');
    open.add(client); open.add(upstream);
    const drop = () => { client.destroy(); upstream.destroy(); open.delete(client); open.delete(upstream); };
    client.on('error', drop); upstream.on('error', drop); client.on('close', drop); upstream.on('close', drop);
    client.pipe(upstream); upstream.pipe(client);
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return {
    point(p) { target = p; for (const s of open) s.destroy(); open.clear(); },
    close: () => { for (const s of open) s.destroy(); server.close(); },
  };
}

async function startRedis(dir) {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    '--dir', dir], { stdio: 'ignore' });
  child.on('error', (e) => { throw new Error(`cannot start redis-server (${e.message}); apt-get install redis-server`); });
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise((r) => {
      const s = net.connect(port, '127.0.0.1', () => { s.end(); r(true); });
      s.on('error', () => r(false));
    });
    if (ok) return { url: `redis://127.0.0.1:${port}/`, close: () => child.kill('SIGKILL') };
    await sleep(50);
  }
  throw new Error('redis-server did not start');
}

async function startNode(name, dir, config, log) {
  const file = path.join(dir, `${name}.yaml`);
  fs.writeFileSync(file, config);
  const out = fs.openSync(path.join(dir, `${name}.log`), 'w');
  const child = spawn(VALLUM, ['run', '-c', file], {
    stdio: ['ignore', out, out], env: { ...process.env, VALLUM_LOG_FORMAT: 'text', VALLUM_LOG: process.env.E2E_VALLUM_LOG || 'info' },
  });
  const logFile = path.join(dir, `${name}.log`);
  const port = Number(config.match(/^address: 127\.0\.0\.1:(\d+)/m)[1]);
  for (let i = 0; i < 200; i++) {
    const text = fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : '';
    if (text.includes('identity provider discovered')) {
      log(`${name}: ready on ${port}`);
      return { name, port, child, config: file, log: () => fs.readFileSync(logFile, 'utf8') };
    }
    if (child.exitCode !== null) break;
    await sleep(100);
  }
  throw new Error(`${name} did not start:\n${fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : ''}`);
}

/// Starts the whole world. `nodes`: how many gateway nodes; `redis`: share sessions through a
/// private Redis (required for more than one node); `ingress`: nginx and Caddy in front of
/// forward-auth routes, asking Vallum.
export async function startWorld({ nodes = 1, redis = false, ingress = false } = {}) {
  if (!fs.existsSync(VALLUM)) throw new Error(`no Vallum binary at ${VALLUM}; run cargo build (or set VALLUM_BIN)`);
  if (!fs.existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}; apt-get install chromium (or set CHROMIUM)`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vallum-e2e-'));
  const lines = [];
  const log = (l) => lines.push(`${new Date().toISOString()} ${l}`);
  const certs = makeCerts(dir);
  const lbPort = await freePort();
  const lb = await startBalancer(lbPort);
  const idp = await startIdp(lbPort, log, certs.ca);
  // A second provider: the partners route signs in there, and the choice route offers both.
  const idp2 = await startIdp(lbPort, (l) => log(`partners ${l}`), certs.ca, PARTNERS_CLIENT);
  const echo = await startEcho(lbPort, certs.ca);
  const mcpUp = await startMcpUpstream(freePort);
  // Store calls get 1 s here rather than the 50 ms default: the suite tests flows, not store
  // latency, and on a 2-core CI machine running Chromium, two gateways and the IdP, a Redis
  // answer sometimes takes longer (a callback then answered 503).
  const store = redis ? await startRedis(dir) : null;
  const up = `http://127.0.0.1:${echo.port}`;
  const common = (port) => `address: 127.0.0.1:${port}
certificates:
  - cert: ${certs.cert}
    key: ${certs.key}
health_check_addr: ''
authenticate_service_url: https://authenticate.localhost:${lbPort}
idp_provider: oidc
idp_provider_url: ${idp.issuer}
idp_client_id: vallum
idp_client_secret: ${CLIENT_SECRET}
idp_scopes: [openid, profile, email, groups, offline_access]
cookie_secret: ${COOKIE_SECRET}
shared_secret: ${SHARED_SECRET}
branding_name: Acme Access
branding_logo_url: ${LOGO}
branding_color: "#0f766e"
pass_identity_headers: true
jwt_claims_headers: [email, groups]
runtime_flags:
  mcp_dynamic_client_registration: true
mcp_access_token_lifetime: 3s
${ingress ? 'forward_auth_url: https://fwdauth.localhost\n' : ''}${store ? `databroker_storage_type: redis\ndatabroker_storage_connection_string: ${store.url}\ndatabroker_storage_timeout: 1s\n` : ''}
routes:
  - from: https://app1.localhost
    to: ${up}
    policy:
      allow:
        or:
          - groups: {has: engineering}
  - from: https://app2.localhost
    to: ${up}
    allow_any_authenticated_user: true
  - from: https://admin.localhost
    to: ${up}
    policy:
      allow:
        or:
          - groups: {has: admins}
  - from: https://ws.localhost
    to: ${up}
    allow_websockets: true
    allow_any_authenticated_user: true
  - from: https://device.localhost
    to: ${up}
    policy:
      allow:
        and:
          - authenticated_user: true
          - device: {type: enclave_only}
  - from: https://vip.localhost
    to: ${up}
    policy:
      allow:
        and:
          - authenticated_user: true
          - device: {approved: true}
  - from: https://partners.localhost
    to: ${up}
    idp_provider_url: ${idp2.issuer}
    idp_client_id: ${PARTNERS_CLIENT}
    allow_any_authenticated_user: true
  - from: https://mcp.localhost
    to: http://127.0.0.1:${mcpUp.port}
    mcp:
      server:
        path: /mcp
    policy:
      - allow:
          or:
            - groups: {has: engineering}
      - deny:
          or:
            - mcp_tool: {is: delete}
            - and:
                - mcp_tool: {is: read_file}
                - not:
                    - mcp_tool_argument: {name: path, starts_with: /srv/public/}
  - from: https://choice.localhost
    to: ${up}
    allow_any_authenticated_user: true
    idp_choices:
      - name: Acme staff
      - name: Partner network
        idp_provider_url: ${idp2.issuer}
        idp_client_id: ${PARTNERS_CLIENT}
${ingress ? `  - from: https://fa1.localhost
    to: http://unused.invalid
    allow_any_authenticated_user: true
  - from: https://fa2.localhost
    to: http://unused.invalid
    allow_any_authenticated_user: true
  - from: https://fadeny.localhost
    to: http://unused.invalid
    policy:
      allow:
        or:
          - groups: {has: finance}
  - from: https://fc1.localhost
    to: http://unused.invalid
    allow_any_authenticated_user: true
` : ''}`;
  const gateways = [];
  for (let i = 0; i < nodes; i++) {
    gateways.push(await startNode(`node-${String.fromCharCode(97 + i)}`, dir, common(await freePort()), log));
  }
  lb.point(gateways[0].port);
  const ingresses = ingress ? await startIngresses(dir, certs, lbPort, echo.port, log, freePort) : null;
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    // HEADFUL=1 (under xvfb-run on a server) shows the browser; SLOWMO=ms slows each action.
    headless: !process.env.HEADFUL,
    slowMo: Number(process.env.SLOWMO || 0),
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', '--ignore-certificate-errors', '--disable-dev-shm-usage'],
  });
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const world = {
    dir, idp, idp2, lbPort, gateways, browser, lines, log, ingresses, mcpUp, freePort,
    /// `fetch` for Node clients of the gateway (the MCP SDK client).
    fetch: gatewayFetch(certs.ca),
    /// A URL on an ingress: `nginx` or `caddy`.
    via: (ingress, host, p = '/') =>
      `https://${host}.localhost:${ingress === 'nginx' ? ingresses.nginxPort : ingresses.caddyPort}${p}`,
    url: (host, p = '/') => `https://${host}.localhost:${lbPort}${p}`,
    /// Sends new connections to gateway node `i` (and drops open ones), like a balancer would.
    useNode(i) { lb.point(gateways[i].port); log(`balancer → ${gateways[i].name}`); },
    /// A fresh browser profile (its own cookies), recording its console and navigations.
    async profile(label) {
      const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1000, height: 700 } });
      const page = await context.newPage();
      const visited = [];
      page.on('console', (m) => log(`console[${label}] ${m.type()}: ${m.text()}`));
      page.on('pageerror', (e) => log(`pageerror[${label}]: ${e.message}`));
      // Every main-frame navigation request, redirect hops included.
      page.on('request', (r) => { if (r.isNavigationRequest() && r.frame() === page.mainFrame()) visited.push(r.url()); });
      if (process.env.TRACE) await context.tracing.start({ screenshots: true, snapshots: true });
      const close = async () => {
        if (process.env.TRACE) await context.tracing.stop({ path: path.join(ARTIFACTS, `trace-${label}.zip`) });
        await context.close();
      };
      return { context, page, visited, close };
    },
    /// Everything worth reading when a scenario fails.
    diagnostics() {
      return [
        '--- harness, browser console and IdP events ---', ...lines,
        ...gateways.map((g) => `--- gateway ${g.name} log ---\n${g.log()}`),
        ingresses ? ingresses.logs() : '',
      ].join('\n');
    },
    async close() {
      await browser.close().catch(() => {});
      for (const g of gateways) g.child.kill('SIGKILL');
      ingresses?.close();
      lb.close(); idp.close(); idp2.close(); echo.close(); mcpUp.close(); store?.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  return world;
}

/// Signs in on the IdP's login form (devInteractions: login = user name, any password) and
/// waits until the browser is back on `host` (after Vallum's callback and hand-off).
export async function idpLogin(page, user, host) {
  await page.waitForSelector('input[name="login"]');
  await page.fill('input[name="login"]', user);
  await page.fill('input[name="password"]', 'any-password');
  await Promise.all([
    page.waitForURL((u) => u.hostname === `${host}.localhost` && !u.pathname.startsWith('/.pomerium/callback'),
      { waitUntil: 'load' }),
    page.click('button[type="submit"]'),
  ]);
}

/// The echo upstream's record of the request it received.
export async function echoData(page) {
  return JSON.parse(await page.textContent('#data'));
}

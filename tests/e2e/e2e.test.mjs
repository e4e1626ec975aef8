// Browser scenarios: Chromium against Vallum (TLS) and oidc-provider, first with one node and
// the memory store, then with two nodes sharing Redis behind a balancer. A failing scenario
// prints the browser console, the IdP's events and every gateway's log.

import { describe, it as nodeIt, before as nodeBefore, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import https from 'node:https';
import { startWorld, idpLogin, echoData, ARTIFACTS, ACCESS_TOKEN_TTL, CLIENT_SECRET, VALLUM } from './harness.mjs';
import { execFileSync } from 'node:child_process';
import { connectAgent } from './mcp.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// No step may hang the suite: a scenario that has not finished in two minutes fails (the
// longest takes about 20 s), and a world that has not started in one fails its describe.
const it = (name, fn) => nodeIt(name, { timeout: 120_000 }, fn);
const before = (fn) => nodeBefore(fn, { timeout: 60_000 });

/// Runs `fn` in the page and fails after `ms` rather than waiting for an event that never
/// comes (a websocket that neither answers nor errors).
function evaluateWithin(page, ms, fn, arg) {
  return Promise.race([
    page.evaluate(fn, arg),
    sleep(ms).then(() => { throw new Error(`no answer in the page within ${ms} ms`); }),
  ]);
}

/// Runs a scenario; on failure, attaches everything needed to understand it.
function scenario(world, fn) {
  return async () => {
    try {
      await fn(world());
    } catch (e) {
      await sleep(300); // the gateways write their log lines a few milliseconds after the fact
      console.error(`\n===== scenario failed: ${e.message}\n${world()?.diagnostics?.() ?? ''}`);
      throw e;
    }
  };
}

const onIdp = (w, url) => url.startsWith(w.idp.issuer);

/// One HTTPS GET to the balancer with the given Host/SNI and headers (no redirects followed).
function rawGet(port, host, p, headers) {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port, path: p, servername: host, rejectUnauthorized: false,
      headers: { host: `${host}:${port}`, ...headers } }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('error', reject);
    req.end();
  });
}
const shot = (page, name) => page.screenshot({ path: path.join(ARTIFACTS, name), fullPage: true });

describe('one node, memory store', () => {
  let w;
  let alice; // alice's browser profile, signed in by the first scenario
  let signedInAt;
  before(async () => { w = await startWorld({ nodes: 1 }); });
  after(async () => { await w?.close(); });
  const world = () => w;

  it('a fresh user signs in at the IdP and lands on the original URL, query intact', scenario(world, async (w) => {
    alice = await w.profile('alice');
    const { page, visited } = alice;
    await page.goto(w.url('app1', '/some/page?x=1&y=two%20words'));
    assert.ok(onIdp(w, page.url()), `at the IdP's login page: ${page.url()}`);
    await idpLogin(page, 'alice', 'app1');
    signedInAt = Date.now();
    assert.equal(page.url(), w.url('app1', '/some/page?x=1&y=two%20words'));
    const data = await echoData(page);
    assert.equal(data.url, '/some/page?x=1&y=two%20words');
    assert.equal(data.jwt.verified, true, `assertion verifies against the JWKS: ${data.jwt.reason}`);
    assert.equal(data.jwt.claims.email, 'alice@example.com');
    assert.deepEqual(data.jwt.claims.groups, ['admins', 'engineering']);
    assert.equal(data.headers['x-pomerium-claim-email'], 'alice@example.com');
    assert.ok(visited.some((u) => u.includes('/oauth2/callback')), 'went through the authenticate callback');
    await shot(page, 'signed-in.png');
  }));

  it('single sign-on: a second app needs no IdP login', scenario(world, async (w) => {
    const { page, visited } = alice;
    const before = visited.length;
    const logins = w.idp.counts.logins;
    await page.goto(w.url('app2', '/'));
    assert.equal(page.url(), w.url('app2', '/'));
    assert.ok(!visited.slice(before).some((u) => onIdp(w, u)), `no IdP page: ${visited.slice(before)}`);
    assert.equal(w.idp.counts.logins, logins);
    assert.equal((await echoData(page)).jwt.claims.email, 'alice@example.com');
  }));

  it('cookies carry the configured flags', scenario(world, async (w) => {
    const cookies = await alice.context.cookies(w.url('app1', '/'));
    const session = cookies.find((c) => c.name === '_pomerium');
    assert.ok(session, `session cookie present: ${JSON.stringify(cookies)}`);
    assert.equal(session.secure, true);
    assert.equal(session.httpOnly, true);
    assert.equal(session.sameSite, 'Lax');
  }));

  it('the user page shows email and groups and no token', scenario(world, async (w) => {
    const { page } = alice;
    await page.goto(w.url('app1', '/.pomerium/'));
    const text = await page.textContent('body');
    assert.match(text, /alice@example\.com/);
    assert.match(text, /admins, engineering/);
    assert.match(text, /Acme Access/, 'branded');
    const html = await page.content();
    assert.ok(!/eyJ[\w-]+\.eyJ[\w-]+/.test(html), 'no JWT (ID or access token) on the page');
    assert.ok(!html.includes(CLIENT_SECRET));
    await shot(page, 'user-page.png');
  }));

  it('a denied user sees the 403 page with the request id and can reach /.pomerium/', scenario(world, async (w) => {
    const bob = await w.profile('bob');
    const { page } = bob;
    await page.goto(w.url('admin', '/'));
    await idpLogin(page, 'bob', 'admin');
    const resp = await page.reload();
    assert.equal(resp.status(), 403);
    const requestId = resp.headers()['x-request-id'];
    assert.ok(requestId);
    const text = await page.textContent('body');
    assert.ok(text.includes(requestId), `403 page shows the request id ${requestId}`);
    assert.match(text, /Acme Access/, 'branded');
    await shot(page, 'forbidden.png');
    await Promise.all([page.waitForURL(w.url('admin', '/.pomerium/')), page.click('a[href="/.pomerium/"]')]);
    assert.match(await page.textContent('body'), /bob@example\.com/);
    await bob.close();
  }));

  it('a websocket passes through a route that allows it, and not through one that does not', scenario(world, async (w) => {
    const { page } = alice;
    await page.goto(w.url('ws', '/'));
    const echoed = await evaluateWithin(page, 10_000, (url) => new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      ws.onopen = () => ws.send('hello through vallum');
      ws.onmessage = (m) => { resolve(m.data); ws.close(); };
      ws.onerror = () => reject(new Error('websocket error'));
      ws.onclose = (e) => reject(new Error(`websocket closed before the echo (code ${e.code})`));
    }), w.url('ws', '/socket').replace('https:', 'wss:'));
    assert.equal(echoed, 'hello through vallum');
    await page.goto(w.url('app2', '/'));
    const refused = await evaluateWithin(page, 10_000, (url) => new Promise((resolve) => {
      const ws = new WebSocket(url);
      ws.onopen = () => resolve('open');
      ws.onerror = () => resolve('refused');
      ws.onclose = () => resolve('refused');
    }), w.url('app2', '/socket').replace('https:', 'wss:'));
    assert.equal(refused, 'refused');
  }));

  it('a device: enrolled with a platform authenticator, required by a route, refused to a second profile without it, removed from the user page', scenario(world, async (w) => {
    const { page, context } = alice;
    // Chromium's DevTools virtual authenticator: a platform key with user verification.
    const cdp = await context.newCDPSession(page);
    await cdp.send('WebAuthn.enable', { enableUI: false });
    const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
      options: { protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true,
        isUserVerified: true, automaticPresenceSimulation: true },
    });
    const target = w.url('device', '/needs/device?x=1');
    await page.goto(target);
    assert.match(page.url(), /^https:\/\/authenticate\.localhost:\d+\/\.pomerium\/webauthn\?/, 'sent to the device page');
    assert.match(page.url(), /pomerium_device_type=enclave_only/);
    await page.fill('#name', 'alice laptop');
    await shot(page, 'device-page.png');
    await Promise.all([page.waitForURL(target, { timeout: 30000 }), page.click('#enrol')])
      .catch(async (e) => { throw new Error(`${e.message}; page status: ${await page.textContent('#status').catch(() => '?')}`); });
    assert.equal((await echoData(page)).url, '/needs/device?x=1', 'the route serves once the device is proven');
    const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
    assert.equal(credentials.length, 1, 'the authenticator holds one new credential');

    // Same user, second browser profile, no authenticator: signed in, but the route refuses.
    const other = await w.profile('alice-without-device');
    await other.page.goto(target);
    await other.page.fill('input[name="login"]', 'alice');
    await other.page.fill('input[name="password"]', 'any-password');
    await Promise.all([
      other.page.waitForURL((u) => u.pathname === '/.pomerium/webauthn', { waitUntil: 'load' }),
      other.page.click('button[type="submit"]'),
    ]);
    assert.match(await other.page.textContent('#device-list'), /alice laptop/, 'the enrolled device is listed');
    await other.page.goto(target);
    assert.match(other.page.url(), /\/\.pomerium\/webauthn\?/, 'the browser is sent to prove a device, not served');
    // The same session as an API client (JSON): 450, Pomerium's device-unauthenticated code.
    const cookie = (await other.context.cookies(target)).map((c) => `${c.name}=${c.value}`).join('; ');
    const api = await rawGet(w.lbPort, 'device.localhost', '/needs/device?x=1', { cookie, accept: 'application/json' });
    assert.equal(api.status, 450, `an API client gets 450: ${api.body}`);
    assert.equal(JSON.parse(api.body).error, 'device-unauthenticated');
    await other.close();

    // The user page lists the device; removing it ends its use at once.
    await page.goto(w.url('device', '/.pomerium/'));
    assert.match(await page.textContent('#devices'), /alice laptop/);
    await shot(page, 'user-page-devices.png');
    await Promise.all([page.waitForURL(w.url('device', '/.pomerium/')), page.click('#devices button[type="submit"]')]);
    assert.doesNotMatch(await page.textContent('#devices'), /alice laptop/, 'removed');
    await page.goto(target);
    assert.match(page.url(), /\/\.pomerium\/webauthn\?/, 'the route needs a device again');
    await cdp.send('WebAuthn.removeVirtualAuthenticator', { authenticatorId });
  }));

  it('a route with its own identity provider signs in there; a route with two lets the user choose', scenario(world, async (w) => {
    const onIdp2 = (u) => u.startsWith(w.idp2.issuer);
    const bob = await w.profile('bob-partners');
    const { page } = bob;
    await page.goto(w.url('partners', '/p'));
    assert.ok(onIdp2(page.url()), `at the partners provider's login: ${page.url()}`);
    await idpLogin(page, 'bob', 'partners');
    const data = await echoData(page);
    assert.equal(data.jwt.verified, true, data.jwt.reason);
    assert.equal(data.jwt.claims.email, 'bob@example.com');
    const names = (await bob.context.cookies(w.url('partners'))).map((c) => c.name);
    assert.ok(names.some((n) => n.startsWith('_pomerium_')), `its own cookie: ${names}`);
    // That session does not open a route on the global provider.
    await page.goto(w.url('app2', '/'));
    assert.ok(onIdp(w, page.url()), `app2 asks the global provider: ${page.url()}`);
    // The route that offers both takes it at once: no choice, no login.
    const logins = w.idp2.counts.logins;
    await page.goto(w.url('choice', '/c'));
    assert.equal(page.url(), w.url('choice', '/c'));
    assert.equal(w.idp2.counts.logins, logins);
    // A fresh browser chooses.
    const eve = await w.profile('eve-choice');
    await eve.page.goto(w.url('choice', '/c2'));
    await eve.page.waitForSelector('text=Partner network');
    assert.ok(await eve.page.isVisible('text=Acme staff'));
    await shot(eve.page, 'idp-choice.png');
    await Promise.all([eve.page.waitForURL((u) => onIdp2(u.href)), eve.page.click('text=Partner network')]);
    await idpLogin(eve.page, 'eve', 'choice');
    assert.equal(eve.page.url(), w.url('choice', '/c2'));
    assert.equal((await echoData(eve.page)).jwt.claims.email, 'eve@example.com');
    await bob.close();
    await eve.close();
  }));

  it('the session outlives the access token through refresh', scenario(world, async (w) => {
    const wait = signedInAt + (ACCESS_TOKEN_TTL + 2) * 1000 - Date.now();
    if (wait > 0) await sleep(wait);
    const { page, visited } = alice;
    const before = visited.length;
    await page.goto(w.url('app1', '/after-expiry'));
    assert.equal(page.url(), w.url('app1', '/after-expiry'), 'still signed in');
    assert.ok(!visited.slice(before).some((u) => onIdp(w, u)));
    for (let i = 0; i < 50 && w.idp.counts.refreshes === 0; i++) await sleep(100);
    assert.ok(w.idp.counts.refreshes >= 1, 'Vallum used the refresh token');
    await page.goto(w.url('app1', '/after-refresh'));
    assert.equal((await echoData(page)).jwt.verified, true);
  }));

  it('sign-out from app1 ends access on app1, app2 and at the IdP', scenario(world, async (w) => {
    const { page } = alice;
    await page.goto(w.url('app1', '/.pomerium/sign_out'));
    await Promise.all([page.waitForURL((u) => onIdp(w, u.href)), page.click('button[type="submit"]')]);
    // oidc-provider asks the user to confirm the RP-initiated logout.
    await Promise.all([
      page.waitForURL((u) => u.pathname === '/.pomerium/signed_out'),
      page.click('button[autofocus], button[type="submit"]'),
    ]);
    assert.equal(w.idp.counts.endSessions, 1, 'the IdP session ended');
    for (const app of ['app1', 'app2']) {
      await page.goto(w.url(app, '/'));
      assert.ok(onIdp(w, page.url()), `${app} sends the browser to sign in again: ${page.url()}`);
      await page.waitForSelector('input[name="login"]'); // the IdP asks again: its session is gone too
    }
    await alice.close();
  }));
});

describe('two nodes, Redis store, behind a balancer', () => {
  let w;
  before(async () => { w = await startWorld({ nodes: 2, redis: true }); });
  after(async () => { await w?.close(); });
  const world = () => w;

  it('sign in on node A, browse on node B, sign out on B, refused on A', scenario(world, async (w) => {
    const profile = await w.profile('alice-fleet');
    const { page, visited } = profile;
    w.useNode(0);
    await page.goto(w.url('app1', '/fleet'));
    await idpLogin(page, 'alice', 'app1');
    assert.equal((await echoData(page)).jwt.claims.email, 'alice@example.com');

    w.useNode(1);
    const before = visited.length;
    for (const app of ['app1', 'app2']) {
      await page.goto(w.url(app, '/on-b'));
      assert.equal(page.url(), w.url(app, '/on-b'), `node B serves ${app}`);
    }
    assert.ok(!visited.slice(before).some((u) => onIdp(w, u)), 'no sign-in on node B');

    await page.goto(w.url('app1', '/.pomerium/sign_out'));
    await Promise.all([page.waitForURL((u) => onIdp(w, u.href)), page.click('button[type="submit"]')]);
    await Promise.all([
      page.waitForURL((u) => u.pathname === '/.pomerium/signed_out'),
      page.click('button[autofocus], button[type="submit"]'),
    ]);

    w.useNode(0);
    await page.goto(w.url('app1', '/after-sign-out'));
    assert.ok(onIdp(w, page.url()), `node A refuses the signed-out session: ${page.url()}`);
    await profile.close();
  }));

  it('the IdP ends its session: back-channel logout signs the browser out of every app on both nodes', scenario(world, async (w) => {
    const profile = await w.profile('alice-backchannel');
    const { page } = profile;
    w.useNode(0);
    await page.goto(w.url('app1', '/bc'));
    await idpLogin(page, 'alice', 'app1');
    w.useNode(1);
    await page.goto(w.url('app2', '/bc-on-b'));
    assert.equal(page.url(), w.url('app2', '/bc-on-b'), 'node B serves app2');

    // The user ends the session at the IdP itself (not through Vallum): the IdP tells Vallum.
    const before = w.idp.counts.backchannel;
    await page.goto(`${w.idp.issuer}/session/end`);
    await Promise.all([
      page.waitForURL((u) => u.pathname.includes('/session/end/success')),
      page.click('button[autofocus], button[type="submit"]'),
    ]);
    for (let i = 0; i < 50 && w.idp.counts.backchannel === before; i++) await sleep(100);
    assert.equal(w.idp.counts.backchannel, before + 1, 'the IdP delivered its logout token');

    for (const node of [0, 1]) {
      w.useNode(node);
      for (const app of ['app1', 'app2']) {
        await page.goto(w.url(app, '/after-idp-logout'));
        assert.ok(onIdp(w, page.url()), `node ${node} sends ${app} to sign in again: ${page.url()}`);
        await page.waitForSelector('input[name="login"]');
      }
    }
    await profile.close();
  }));

  it('front-channel logout: the IdP\'s logout page loads Vallum in an iframe and the session ends', scenario(world, async (w) => {
    const profile = await w.profile('alice-frontchannel');
    const { page, visited } = profile;
    w.useNode(0);
    await page.goto(w.url('app1', '/fc'));
    await idpLogin(page, 'alice', 'app1');
    const sid = w.idp.sids.at(-1);
    assert.ok(sid, 'the IdP reported its session id');

    // A page on the IdP's origin, as its logout page is: a cross-site iframe, so no cookie.
    await page.goto(`${w.idp.issuer}/.well-known/openid-configuration`);
    const src = w.url('authenticate', `/.pomerium/sign_out?iss=${encodeURIComponent(w.idp.issuer)}&sid=${encodeURIComponent(sid)}`);
    const loaded = page.waitForResponse((r) => r.url() === src);
    await page.setContent(`<h1>Signing you out…</h1><iframe src="${src}"></iframe>`);
    const res = await loaded;
    assert.equal(res.status(), 200);
    assert.equal(res.headers()['cache-control'], 'no-store');
    assert.equal(res.headers().location, undefined, 'nothing for the iframe to follow');

    // Vallum's session is gone on both nodes: the next visit goes through the IdP again.
    w.useNode(1);
    const before = visited.length;
    await page.goto(w.url('app1', '/after-fc'));
    assert.ok(visited.slice(before).some((u) => onIdp(w, u)), `a new sign-in at the IdP: ${visited.slice(before)}`);
    await profile.close();
  }));

  it('a device enrolled on node A is proven on node B; an operator approves it with `vallum devices`', scenario(world, async (w) => {
    const profile = await w.profile('alice-device-fleet');
    const { page, context } = profile;
    const cdp = await context.newCDPSession(page);
    await cdp.send('WebAuthn.enable', { enableUI: false });
    await cdp.send('WebAuthn.addVirtualAuthenticator', {
      options: { protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true,
        isUserVerified: true, automaticPresenceSimulation: true },
    });
    w.useNode(0);
    await page.goto(w.url('device', '/on-a'));
    await page.fill('input[name="login"]', 'alice');
    await page.fill('input[name="password"]', 'any-password');
    await Promise.all([
      page.waitForURL((u) => u.pathname === '/.pomerium/webauthn', { waitUntil: 'load' }),
      page.click('button[type="submit"]'),
    ]);
    await page.fill('#name', 'fleet laptop');
    await Promise.all([page.waitForURL(w.url('device', '/on-a'), { timeout: 30000 }), page.click('#enrol')]);

    w.useNode(1);
    await page.goto(w.url('device', '/on-b'));
    assert.equal(page.url(), w.url('device', '/on-b'), 'node B sees the device proven on node A');
    // Proven but not approved: the approval route refuses (a device the user has, not one an
    // administrator vouched for).
    const refused = await page.goto(w.url('vip', '/'));
    assert.equal(refused.status(), 403);
    assert.match(await page.textContent('body'), /device-unauthorized/);

    const cfg = w.gateways[0].config;
    const list = execFileSync(VALLUM, ['devices', 'list', '--user', 'alice@example.com', '-c', cfg]).toString();
    assert.match(list, /enclave_only  fleet laptop/, list);
    const id = list.trim().split(/\s+/)[0];
    execFileSync(VALLUM, ['devices', 'approve', '--user', 'alice@example.com', '--device', id, '-c', cfg]);
    assert.match(execFileSync(VALLUM, ['devices', 'list', '--user', 'alice@example.com', '-c', cfg]).toString(), /approved/);
    await sleep(1500); // node B's session cache (databroker_cache_ttl, 1 s)
    const allowed = await page.goto(w.url('vip', '/approved'));
    assert.equal(allowed.status(), 200, 'approved by the operator: the route serves');
    assert.equal((await echoData(page)).url, '/approved');

    execFileSync(VALLUM, ['devices', 'remove', '--user', 'alice@example.com', '--device', id, '-c', cfg]);
    await sleep(1500);
    await page.goto(w.url('device', '/after-removal'));
    assert.match(page.url(), /\/\.pomerium\/webauthn\?/, 'removed by the operator: a device is needed again');
    await profile.close();
  }));

  it('an MCP agent (the official SDK) discovers, registers, has its user sign in, calls allowed tools, refreshes, and loses access at sign-out on every node', scenario(world, async (w) => {
    const profile = await w.profile('bob-agent');
    const { page } = profile;
    w.useNode(0);
    const serverUrl = w.url('mcp', '/mcp');
    const { client, oauth, back, consentText } = await connectAgent({
      serverUrl, page, user: 'bob', fetch: w.fetch, freePort: w.freePort, log: w.log,
    });
    assert.equal(back.iss, w.url('mcp', '').replace(/\/$/, ''), 'the code came with the issuer (RFC 9207)');
    assert.equal(oauth.saved.registrations, 1, 'registered once, dynamically');
    assert.match(consentText, /Vallum e2e agent wants to use https:\/\/mcp\.localhost:\d+\/mcp as bob@example\.com/);

    // tools/list answers only what bob may call; the call policy holds per tool and per argument.
    const { tools } = await client.listTools();
    assert.deepEqual(tools.map((t) => t.name).sort(), ['echo', 'read_file']);
    const echoed = await client.callTool({ name: 'echo', arguments: { text: 'hi from the agent' } });
    assert.equal(echoed.content[0].text, 'hi from the agent');
    const readable = await client.callTool({ name: 'read_file', arguments: { path: '/srv/public/notes.txt' } });
    assert.equal(readable.content[0].text, 'contents of /srv/public/notes.txt');
    const reached = w.mcpUp.calls.length;
    await assert.rejects(client.callTool({ name: 'delete', arguments: {} }), /-32001|denied|forbidden/i);
    await assert.rejects(client.callTool({ name: 'read_file', arguments: { path: '/etc/shadow' } }), /-32001|denied|forbidden/i);
    assert.equal(w.mcpUp.calls.length, reached, 'refused calls never reached the MCP server');
    assert.deepEqual(w.mcpUp.authorizations, [], "Vallum's tokens never reach the MCP server");

    // Bad input gets a clear refusal and nothing reaches the MCP server.
    const post = (body, token, type = 'application/json') => w.fetch(serverUrl, {
      method: 'POST', body,
      headers: { 'content-type': type, accept: 'application/json, text/event-stream', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    });
    const token = oauth.tokens().access_token;
    const before = w.mcpUp.calls.length;
    const badJson = await post('{"jsonrpc": "2.0", "id": 1, "method": ', token);
    assert.equal(badJson.status, 400);
    assert.equal((await badJson.json()).error.code, -32700);
    const oversized = await post(JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/call',
      params: { name: 'echo', arguments: { text: 'x'.repeat(5000) } } }), token);
    assert.equal(oversized.status, 413);
    const unknown = await post(JSON.stringify({ jsonrpc: '2.0', id: 3, method: 'no/such_method' }), token);
    assert.equal((await unknown.json()).error.code, -32601, 'the server itself says it has no such method');
    const forged = await post(JSON.stringify({ jsonrpc: '2.0', id: 4, method: 'tools/list' }), `${token.slice(0, -2)}AA`);
    assert.equal(forged.status, 401);
    assert.match(forged.headers.get('www-authenticate'), /error="invalid_token", resource_metadata="https:\/\/mcp\.localhost:\d+\/\.well-known\/oauth-protected-resource\/mcp"/);
    const registration = await w.fetch(w.url('mcp', '/.pomerium/mcp/register'), {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ redirect_uris: ['http://evil.example/cb'], token_endpoint_auth_method: 'none' }),
    });
    assert.equal(registration.status, 400);
    assert.equal((await registration.json()).error, 'invalid_redirect_uri');
    assert.equal(w.mcpUp.calls.length, before, 'no tool call reached the server');

    // The access token lives 3 s: the SDK gets a 401, refreshes, and the call goes through.
    const tokensBefore = oauth.saved.tokens;
    await sleep(3500);
    const later = await client.callTool({ name: 'echo', arguments: { text: 'after expiry' } });
    assert.equal(later.content[0].text, 'after expiry');
    assert.equal(oauth.saved.tokens, tokensBefore + 1, 'one refresh');

    // The same token on node B (shared Redis); then bob signs out there, in his browser.
    w.useNode(1);
    assert.equal((await client.callTool({ name: 'echo', arguments: { text: 'on b' } })).content[0].text, 'on b');
    await page.goto(w.url('mcp', '/.pomerium/sign_out'));
    await Promise.all([page.waitForURL((u) => onIdp(w, u.href)), page.click('button[type="submit"]')]);
    await Promise.all([
      page.waitForURL((u) => u.pathname === '/.pomerium/signed_out'),
      page.click('button[autofocus], button[type="submit"]'),
    ]);
    // On node A the agent's token is refused and its refresh token with it: it must ask bob again.
    w.useNode(0);
    const calls = w.mcpUp.calls.length;
    oauth.authorizationUrl = null;
    await assert.rejects(client.callTool({ name: 'echo', arguments: { text: 'after sign-out' } }), (e) =>
      e?.constructor?.name === 'UnauthorizedError' || /401|unauthorized/i.test(String(e?.message)));
    assert.ok(oauth.authorizationUrl, 'the SDK was sent back to authorization');
    assert.equal(w.mcpUp.calls.length, calls, 'nothing reached the MCP server after sign-out');
    await client.close();
    await profile.close();
  }));
});

describe('behind an ingress: nginx auth_request and Caddy forward_auth ask Vallum', () => {
  let w;
  let alice;
  before(async () => { w = await startWorld({ ingress: true }); });
  after(async () => { await w?.close(); });
  const world = () => w;

  it('nginx: a fresh user signs in through the ingress and lands on the original URL with a verified assertion', scenario(world, async (w) => {
    alice = await w.profile('alice-ingress');
    const { page, visited } = alice;
    const start = w.via('nginx', 'fa1', '/reports?year=2026&q=a%20b');
    await page.goto(start);
    assert.ok(onIdp(w, page.url()), `at the IdP's login page: ${page.url()}`);
    assert.ok(visited.some((u) => u.includes('fwdauth.localhost')), `nginx sent the browser to Vallum: ${visited}`);
    await idpLogin(page, 'alice', 'fa1');
    assert.equal(page.url(), start);
    assert.ok(visited.some((u) => u.startsWith(w.via('nginx', 'fa1', '/.pomerium/callback'))),
      'the session cookie was set on the app host, through nginx');
    const data = await echoData(page);
    assert.equal(data.url, '/reports?year=2026&q=a%20b');
    assert.equal(data.jwt.verified, true, `the assertion nginx copied verifies: ${data.jwt.reason}`);
    assert.equal(data.jwt.claims.email, 'alice@example.com');
    assert.equal(data.headers['x-pomerium-claim-email'], 'alice@example.com');
  }));

  it('single sign-on to a second app behind nginx, and to an app behind Caddy, without the IdP', scenario(world, async (w) => {
    const { page, visited } = alice;
    const logins = w.idp.counts.logins;
    for (const [ingress, host] of [['nginx', 'fa2'], ['caddy', 'fc1']]) {
      const before = visited.length;
      await page.goto(w.via(ingress, host, '/sso'));
      assert.equal(page.url(), w.via(ingress, host, '/sso'), `${ingress}: back on the app`);
      assert.ok(!visited.slice(before).some((u) => onIdp(w, u)), `${ingress}: no IdP page`);
      const data = await echoData(page);
      assert.equal(data.jwt.verified, true, `${ingress}: ${data.jwt.reason}`);
      assert.equal(data.jwt.claims.email, 'alice@example.com');
    }
    assert.equal(w.idp.counts.logins, logins);
  }));

  it('a policy refusal through nginx is a 403 and the upstream is not reached', scenario(world, async (w) => {
    const { page } = alice;
    const r = await page.goto(w.via('nginx', 'fadeny', '/secret'));
    assert.equal(r.status(), 403);
    assert.ok(!(await page.content()).includes('id="data"'), 'no echo page');
  }));

  it('sign-out on the app host ends access behind both ingresses', scenario(world, async (w) => {
    const { page } = alice;
    await page.goto(w.via('nginx', 'fa1', '/.pomerium/sign_out'));
    await Promise.all([page.waitForURL((u) => onIdp(w, u.href)), page.click('button[type="submit"]')]);
    await Promise.all([
      page.waitForURL((u) => u.pathname === '/.pomerium/signed_out'),
      page.click('button[autofocus], button[type="submit"]'),
    ]);
    for (const [ingress, host] of [['nginx', 'fa1'], ['caddy', 'fc1']]) {
      await page.goto(w.via(ingress, host, '/after'));
      assert.ok(onIdp(w, page.url()), `${ingress}: signed out, sent to sign in: ${page.url()}`);
    }
    await alice.close();
  }));
});

// A real OpenID provider (the e2e suite's pinned oidc-provider) for peers in load/compare that
// need one: Apache httpd with mod_auth_openidc signs in against it like a browser would.
//
//   node load/oidc-idp.mjs PORT CLIENT_ID CLIENT_SECRET REDIRECT_URI
// Prints "ready <issuer>" once listening. Users sign in on its development login form (any
// password); consent is implied for the one first-party client.
import http from 'node:http';
import crypto from 'node:crypto';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '../tests/e2e/package.json'));
const Provider = (await import(require.resolve('oidc-provider'))).default;

const [port, clientId, clientSecret, redirectUri] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;
const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code'],
    response_types: ['code'],
  }],
  async findAccount(_ctx, id) {
    return {
      accountId: id,
      async claims() {
        // `groups-N` is a user in N groups, engineering last: load/compare's cost rows.
        const n = Number(/^groups-(\d+)$/.exec(id)?.[1] ?? 1);
        const groups = [...Array.from({ length: n - 1 }, (_, i) => `group-${i + 1}`), 'engineering'];
        return { sub: id, email: `${id}@example.com`, email_verified: true, name: id, groups };
      },
    };
  },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] },
  scopes: ['openid', 'email', 'profile', 'groups'],
  features: { devInteractions: { enabled: true } },
  ttl: { AccessToken: 3600, IdToken: 3600, Session: 3600, Grant: 3600, Interaction: 600 },
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid email profile groups');
    grant.addOIDCClaims(['email', 'email_verified', 'name', 'groups']);
    await grant.save();
    return grant;
  },
  cookies: { keys: [crypto.randomBytes(16).toString('hex')] },
});
const server = http.createServer(provider.callback());
server.listen(Number(port), '127.0.0.1', () => console.log(`ready ${issuer}`));

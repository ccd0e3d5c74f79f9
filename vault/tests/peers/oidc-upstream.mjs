// A real OpenID provider (oidc-provider 9) acting as the vault's upstream in
// the integration tests. Configured from the PEER_CONFIG environment variable
// (JSON). Prints "listening <port>" once ready. With tls_cert_file and
// tls_key_file (PEM) it serves HTTPS and its issuer is https://127.0.0.1:<port>.
//
// Besides the provider's own endpoints it serves, for the test only:
//   GET  /interaction/:uid?account=ID  logs in as ID and grants consent (no browser)
//   GET  /_test/stats                  {"grants": {"authorization_code": n, "refresh_token": n},
//                                       "refused": {...}, "tokens": [every token value issued]}
//   POST /_test/revoke?account=ID      destroys every grant of ID (its refresh tokens stop working)
//   GET  /_test/grants?account=ID      {"live": n}: grants of ID that still exist (RFC 7009
//                                       revocation of a refresh token destroys its grant)
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import Provider from 'oidc-provider';

const cfg = JSON.parse(process.env.PEER_CONFIG || '{}');
const stats = { grants: {}, refused: {}, tokens: [] };
const grantsByAccount = new Map();

const tls = cfg.tls_cert_file
  ? { cert: fs.readFileSync(cfg.tls_cert_file), key: fs.readFileSync(cfg.tls_key_file) }
  : null;
const server = tls ? https.createServer(tls) : http.createServer();
server.listen(cfg.port || 0, '127.0.0.1', () => {
  const port = server.address().port;
  const issuer = `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: cfg.client_id || 'vault',
      client_secret: cfg.client_secret || 'vault-secret',
      redirect_uris: cfg.redirect_uris || [],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: cfg.token_endpoint_auth_method || 'client_secret_basic',
      scope: 'openid offline_access stocks:read stocks:trade',
    }],
    scopes: ['openid', 'offline_access', 'stocks:read', 'stocks:trade'],
    ttl: {
      AccessToken: cfg.access_token_ttl || 10,
      RefreshToken: 3600,
      AuthorizationCode: 60,
      Grant: 3600,
      Interaction: 300,
      Session: 3600,
      IdToken: 3600,
    },
    rotateRefreshToken: true,
    pkce: { required: () => true },
    cookies: { keys: ['agentward-vault-test-cookie-key'] },
    features: { devInteractions: { enabled: false }, revocation: { enabled: true } },
    findAccount: async (_ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  });

  provider.use(async (ctx, next) => {
    await next();
    if (ctx.path !== '/token' || ctx.method !== 'POST') return;
    const gt = ctx.oidc?.params?.grant_type || 'unknown';
    if (ctx.status === 200) {
      stats.grants[gt] = (stats.grants[gt] || 0) + 1;
      for (const k of ['access_token', 'refresh_token', 'id_token']) {
        if (ctx.body?.[k]) stats.tokens.push(ctx.body[k]);
      }
      const grant = ctx.oidc?.entities?.Grant;
      if (grant) {
        if (!grantsByAccount.has(grant.accountId)) grantsByAccount.set(grant.accountId, new Set());
        grantsByAccount.get(grant.accountId).add(grant.jti);
      }
    } else {
      stats.refused[gt] = (stats.refused[gt] || 0) + 1;
    }
  });

  const handle = provider.callback();
  server.on('request', async (req, res) => {
    const url = new URL(req.url, issuer);
    try {
      if (url.pathname.startsWith('/interaction/')) {
        const details = await provider.interactionDetails(req, res);
        const account = url.searchParams.get('account') || 'upstream-user';
        if (details.prompt.name === 'login') {
          return await provider.interactionFinished(req, res, { login: { accountId: account } }, { mergeWithLastSubmission: false });
        }
        const grant = details.grantId
          ? await provider.Grant.find(details.grantId)
          : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
        const missing = details.prompt.details;
        if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
        if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
        if (missing.missingResourceScopes) {
          for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
            grant.addResourceScope(indicator, scopes.join(' '));
          }
        }
        const grantId = await grant.save();
        return await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
      }
      if (url.pathname === '/_test/stats') {
        res.setHeader('content-type', 'application/json');
        return res.end(JSON.stringify(stats));
      }
      if (url.pathname === '/_test/grants') {
        const account = url.searchParams.get('account');
        let live = 0;
        for (const jti of grantsByAccount.get(account) || []) {
          if (await provider.Grant.find(jti)) live += 1;
        }
        res.setHeader('content-type', 'application/json');
        return res.end(JSON.stringify({ live }));
      }
      if (url.pathname === '/_test/revoke' && req.method === 'POST') {
        const account = url.searchParams.get('account');
        let revoked = 0;
        for (const jti of grantsByAccount.get(account) || []) {
          const grant = await provider.Grant.find(jti);
          if (grant) { await grant.destroy(); revoked += 1; }
        }
        res.setHeader('content-type', 'application/json');
        return res.end(JSON.stringify({ revoked }));
      }
    } catch (err) {
      res.statusCode = 500;
      return res.end(String(err && err.message));
    }
    return handle(req, res);
  });
  console.log(`listening ${port}`);
});

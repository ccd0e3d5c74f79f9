// The stock-trade broker's OAuth 2.0 / OpenID provider: a real authorization
// server (npm oidc-provider) where a user logs in to their broker account and
// lets the agentward vault act for them ("account linking"). The broker's API
// (../upstream.py, GET /broker/portfolio) accepts only access tokens issued
// here, checked by token introspection (RFC 7662).
//
//   node provider.mjs            # configuration from PROVIDER_CONFIG (JSON)
//
// PROVIDER_CONFIG fields (all optional):
//   port                 8082 (0: any free port)
//   issuer               http://127.0.0.1:<port>
//   vault                {client_id: "agentward-vault", client_secret: "vault-demo-secret",
//                         redirect_uris: ["http://127.0.0.1:8787/connect/callback"]}
//   api                  {client_id: "stocktrade-api", client_secret: "api-demo-secret"}
//                        the broker API, allowed to introspect tokens
//   password             "demo": every login name with this password is an account
//   access_token_ttl     3600 seconds
//   record_tokens        false: when true, GET /admin/stats lists every token
//                        value issued (end-to-end tests grep logs for them)
//
// Prints "stocktrade provider listening <port>" once ready.
//
// Pages (what a user's browser sees):
//   GET  /interaction/:uid            login form, then consent form
//   POST /interaction/:uid/login      login=…&password=…
//   POST /interaction/:uid/confirm    grants the scopes asked for
//   POST /interaction/:uid/abort      declines (the client gets access_denied)
// Provider endpoints (oidc-provider): /auth, /token, /token/introspection,
// /token/revocation, /me, /jwks, /.well-known/openid-configuration.
// Administration (stand-ins for the broker's account settings and monitoring):
//   POST /admin/accounts/:id/revoke   the user revokes every app's access:
//                                     grants destroyed, refresh tokens dead
//   GET  /admin/stats                 {"grants": {"authorization_code": n,
//                                     "refresh_token": n}, "refused": {...}}
import http from 'node:http';
import Provider from 'oidc-provider';

const cfg = JSON.parse(process.env.PROVIDER_CONFIG || '{}');
const vault = {
  client_id: 'agentward-vault',
  client_secret: 'vault-demo-secret',
  redirect_uris: ['http://127.0.0.1:8787/connect/callback'],
  ...(cfg.vault || {}),
};
const api = { client_id: 'stocktrade-api', client_secret: 'api-demo-secret', ...(cfg.api || {}) };
const password = cfg.password || 'demo';
const SCOPES = ['openid', 'offline_access', 'stocks:read', 'stocks:trade'];

const stats = { grants: {}, refused: {}, tokens: [] };
const grantsByAccount = new Map();

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (title, body) => `<!doctype html>
<html><head><meta charset="utf-8"><title>${escape(title)}</title></head>
<body style="font-family: sans-serif; max-width: 28em; margin: 3em auto">
<h1>StockTrade</h1>${body}</body></html>`;

function readForm(req) {
  return new Promise((resolve, reject) => {
    let data = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => {
      data += chunk;
      if (data.length > 16384) reject(new Error('form too large'));
    });
    req.on('end', () => resolve(new URLSearchParams(data)));
    req.on('error', reject);
  });
}

const server = http.createServer();
server.listen(cfg.port ?? 8082, '127.0.0.1', () => {
  const port = server.address().port;
  const issuer = cfg.issuer || `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: vault.client_id,
        client_secret: vault.client_secret,
        redirect_uris: vault.redirect_uris,
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: vault.token_endpoint_auth_method || 'client_secret_basic',
        scope: SCOPES.join(' '),
      },
      {
        // The broker API: a resource server, it only introspects tokens.
        client_id: api.client_id,
        client_secret: api.client_secret,
        redirect_uris: [],
        grant_types: [],
        response_types: [],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    scopes: SCOPES,
    ttl: {
      AccessToken: cfg.access_token_ttl || 3600,
      RefreshToken: 14 * 24 * 3600,
      AuthorizationCode: 60,
      Grant: 14 * 24 * 3600,
      Interaction: 600,
      Session: 3600,
      IdToken: 3600,
    },
    rotateRefreshToken: true,
    pkce: { required: () => true },
    cookies: { keys: [cfg.cookie_key || 'stocktrade-provider-demo-cookie-key'] },
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true },
      introspection: {
        enabled: true,
        // Only the broker API may ask what a token is.
        allowedPolicy: async (_ctx, client) => client.clientId === api.client_id,
      },
    },
    findAccount: async (_ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    renderError: async (ctx, out) => {
      ctx.type = 'html';
      ctx.body = page('Error', `<p>${escape(out.error)}: ${escape(out.error_description || '')}</p>`);
    },
  });

  provider.use(async (ctx, next) => {
    await next();
    if (ctx.path !== '/token' || ctx.method !== 'POST') return;
    const gt = ctx.oidc?.params?.grant_type || 'unknown';
    if (ctx.status === 200) {
      stats.grants[gt] = (stats.grants[gt] || 0) + 1;
      if (cfg.record_tokens) {
        for (const k of ['access_token', 'refresh_token', 'id_token']) {
          if (ctx.body?.[k]) stats.tokens.push(ctx.body[k]);
        }
      }
    } else {
      stats.refused[gt] = (stats.refused[gt] || 0) + 1;
    }
  });

  async function interaction(req, res, url) {
    const [, , uid, action] = url.pathname.split('/');
    const details = await provider.interactionDetails(req, res);
    if (details.uid !== uid) throw new Error('interaction mismatch');
    const { prompt, params } = details;
    if (req.method === 'GET') {
      res.setHeader('content-type', 'text/html; charset=utf-8');
      if (prompt.name === 'login') {
        return res.end(page('Sign in', `
<p>Sign in to your StockTrade account.</p>
<form method="post" action="/interaction/${escape(uid)}/login">
  <label>Login <input name="login" autofocus></label><br>
  <label>Password <input name="password" type="password"></label><br>
  <button type="submit">Sign in</button>
</form>`));
      }
      const client = await provider.Client.find(params.client_id);
      const scopes = String(params.scope || '').split(' ').filter(Boolean);
      return res.end(page('Allow access', `
<p><b>${escape(client?.clientName || params.client_id)}</b> asks to act for
<b>${escape(details.session?.accountId)}</b>:</p>
<ul>${scopes.map((s) => `<li>${escape(s)}</li>`).join('')}</ul>
<form method="post" action="/interaction/${escape(uid)}/confirm"><button type="submit">Allow</button></form>
<form method="post" action="/interaction/${escape(uid)}/abort"><button type="submit">Deny</button></form>`));
    }
    if (req.method !== 'POST') {
      res.statusCode = 405;
      return res.end();
    }
    const form = await readForm(req);
    if (action === 'login' && prompt.name === 'login') {
      const login = (form.get('login') || '').trim();
      if (!login || form.get('password') !== password) {
        res.statusCode = 401;
        res.setHeader('content-type', 'text/html; charset=utf-8');
        return res.end(page('Sign in', '<p>Wrong login or password.</p>'));
      }
      return provider.interactionFinished(req, res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
    }
    if (action === 'confirm' && prompt.name === 'consent') {
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
      const missing = prompt.details;
      if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
      if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
      if (missing.missingResourceScopes) {
        for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
          grant.addResourceScope(indicator, scopes.join(' '));
        }
      }
      const grantId = await grant.save();
      const account = details.session.accountId;
      if (!grantsByAccount.has(account)) grantsByAccount.set(account, new Set());
      grantsByAccount.get(account).add(grantId);
      return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    }
    if (action === 'abort') {
      return provider.interactionFinished(req, res, {
        error: 'access_denied', error_description: 'the user declined',
      }, { mergeWithLastSubmission: false });
    }
    res.statusCode = 400;
    return res.end('unexpected interaction step');
  }

  const handle = provider.callback();
  server.on('request', async (req, res) => {
    const url = new URL(req.url, issuer);
    try {
      if (url.pathname.startsWith('/interaction/')) return await interaction(req, res, url);
      if (url.pathname === '/admin/stats' && req.method === 'GET') {
        res.setHeader('content-type', 'application/json');
        const out = { grants: stats.grants, refused: stats.refused };
        if (cfg.record_tokens) out.tokens = stats.tokens;
        return res.end(JSON.stringify(out));
      }
      const revoke = url.pathname.match(/^\/admin\/accounts\/([^/]+)\/revoke$/);
      if (revoke && req.method === 'POST') {
        const account = decodeURIComponent(revoke[1]);
        let revoked = 0;
        for (const jti of grantsByAccount.get(account) || []) {
          const grant = await provider.Grant.find(jti);
          if (grant) {
            await grant.destroy();
            revoked += 1;
          }
        }
        grantsByAccount.delete(account);
        res.setHeader('content-type', 'application/json');
        return res.end(JSON.stringify({ account, revoked }));
      }
      if (url.pathname === '/healthz') {
        res.setHeader('content-type', 'application/json');
        return res.end('{"status":"ok"}');
      }
    } catch (err) {
      res.statusCode = 400;
      res.setHeader('content-type', 'text/plain');
      return res.end(String(err && err.message));
    }
    return handle(req, res);
  });
  console.log(`stocktrade provider listening ${port}`);
});

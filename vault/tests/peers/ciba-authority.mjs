// npm oidc-provider 9 as an OpenID CIBA authority (poll mode): the gateway's
// ciba-hold asks it at /backchannel and polls /token, exactly as it would
// ask Auth0 or Keycloak (no agentward parameters). Configured from
// PEER_CONFIG (JSON: port, client_id, client_secret). Prints
// "listening <port>" once ready. The user's "device", for the test only:
//   GET  /_test/pending                     [{"binding_message", "account"}] waiting for a decision
//   POST /_test/decide?binding_message=M&decision=approve|deny
import http from 'node:http';
import Provider, { errors } from 'oidc-provider';

const cfg = JSON.parse(process.env.PEER_CONFIG || '{}');
const pending = new Map(); // binding_message -> the backchannel request
const server = http.createServer();

server.listen(cfg.port || 0, '127.0.0.1', () => {
  const port = server.address().port;
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: cfg.client_id || 'gateway',
      client_secret: cfg.client_secret || 'gateway-secret',
      grant_types: ['urn:openid:params:grant-type:ciba'],
      response_types: [],
      redirect_uris: [],
      backchannel_token_delivery_mode: 'poll',
      token_endpoint_auth_method: 'client_secret_basic',
      scope: 'openid',
    }],
    scopes: ['openid'],
    cookies: { keys: ['agentward-ciba-peer-cookie-key'] },
    findAccount: async (_ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
    features: {
      devInteractions: { enabled: false },
      ciba: {
        enabled: true,
        deliveryModes: ['poll'],
        processLoginHint: async (_ctx, loginHint) => loginHint,
        processLoginHintToken: async () => { throw new errors.InvalidRequest('login_hint_token is not supported'); },
        verifyUserCode: async () => {},
        validateRequestContext: async () => {},
        // Auth0's rule, which the gateway's templates keep to.
        validateBindingMessage: async (_ctx, message) => {
          if (message !== undefined && !/^[A-Za-z0-9 +\-_.,:#]{1,64}$/.test(message)) {
            throw new errors.InvalidBindingMessage('letters, digits, space and +-_.,:# only, at most 64');
          }
        },
        triggerAuthenticationDevice: async (ctx, request) => {
          pending.set(ctx.oidc.params.binding_message, request);
        },
      },
    },
  });

  const handle = provider.callback();
  server.on('request', async (req, res) => {
    const url = new URL(req.url, issuer);
    try {
      if (url.pathname === '/_test/pending') {
        const list = [...pending].map(([message, r]) => ({ binding_message: message, account: r.accountId }));
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(list));
        return;
      }
      if (url.pathname === '/_test/decide' && req.method === 'POST') {
        const message = url.searchParams.get('binding_message');
        const request = pending.get(message);
        if (!request) {
          res.writeHead(404);
          res.end();
          return;
        }
        pending.delete(message);
        if (url.searchParams.get('decision') === 'approve') {
          const grant = new provider.Grant({ accountId: request.accountId, clientId: request.clientId });
          grant.addOIDCScope('openid');
          await grant.save();
          await provider.backchannelResult(request, grant);
        } else {
          await provider.backchannelResult(request, new errors.AccessDenied('the user denied'));
        }
        res.writeHead(204);
        res.end();
        return;
      }
      handle(req, res);
    } catch (e) {
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(String(e && e.stack || e));
    }
  });
  console.log(`listening ${port}`);
});

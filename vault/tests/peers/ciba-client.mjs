// npm openid-client completes a CIBA grant against the vault: discovery,
// initiateBackchannelAuthentication, then pollBackchannelAuthenticationGrant
// (it honours `interval` and `slow_down`). Prints one JSON line when the
// request is started (the test then approves through the page) and one
// with the grant's result. Configuration in CIBA_CLIENT_CONFIG (JSON).
import * as client from 'openid-client';

const conf = JSON.parse(process.env.CIBA_CLIENT_CONFIG);
const config = await client.discovery(
  new URL(conf.vault_url),
  conf.client_id,
  conf.client_secret,
  undefined,
  { execute: [client.allowInsecureRequests] },
);
const started = await client.initiateBackchannelAuthentication(config, conf.parameters);
console.log(JSON.stringify({ started: true, expires_in: started.expires_in, interval: started.interval }));
try {
  const tokens = await client.pollBackchannelAuthenticationGrant(config, started);
  console.log(JSON.stringify({
    access_token: tokens.access_token,
    token_type: tokens.token_type,
    authorization_details: tokens.authorization_details,
  }));
} catch (e) {
  console.log(JSON.stringify({ error: e.error ?? e.code ?? String(e), message: e.message }));
}

//! The vault's configuration: a TOML file, then environment overrides, then
//! command-line flags (see `cli.rs`). Secrets can stay out of the file: every
//! connection and client secret can come from the environment.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on, e.g. `127.0.0.1:8787`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The vault's external base URL; `connect_url`s and the OAuth
    /// `redirect_uri` (`{public_url}/connect/callback`) are built from it.
    #[serde(default)]
    pub public_url: Option<String>,
    /// `sqlite://path` / a plain file path (default `agentward-vault.db`), or
    /// `postgres://…`.
    #[serde(default = "default_database_url")]
    pub database_url: String,
    /// PostgreSQL schema to keep the tables in (created if missing).
    #[serde(default)]
    pub database_schema: Option<String>,
    /// File with data-encryption keys (`id:base64` per line, first is current).
    /// `AGENTWARD_VAULT_KEY` takes precedence.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// `text` (default) or `json`.
    #[serde(default)]
    pub log_format: LogFormat,
    /// A cached upstream access token is served only while it has more than
    /// this many seconds left.
    #[serde(default = "default_refresh_margin")]
    pub refresh_margin_seconds: u64,
    /// Lifetime of a signed connect ticket.
    #[serde(default = "default_ticket_ttl")]
    pub ticket_ttl_seconds: u64,
    /// Lifetime of a pending account-linking `state`.
    #[serde(default = "default_state_ttl")]
    pub state_ttl_seconds: u64,
    /// Timeout of each call to an upstream token endpoint or JWKS.
    #[serde(default = "default_upstream_timeout")]
    pub upstream_timeout_seconds: u64,
    /// Leeway for `exp`/`nbf` of subject tokens.
    #[serde(default = "default_clock_skew")]
    pub clock_skew_seconds: u64,
    /// Issuers whose JWTs identify users (same shape as the policy's `issuers`).
    #[serde(default)]
    pub issuers: Vec<serde_json::Value>,
    /// Confidential clients allowed to call `POST /oauth/token` (the gateway).
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    /// Upstream OAuth connections, by name.
    #[serde(default)]
    pub connections: BTreeMap<String, ConnectionConfig>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A client of the token endpoint (the gateway's token-exchange plugin).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The `client_id`.
    pub client_id: String,
    /// The secret; or set `AGENTWARD_VAULT_CLIENT_<CLIENT_ID>_SECRET`.
    #[serde(default)]
    pub client_secret: Option<String>,
}

/// How the vault authenticates to an upstream token endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenEndpointAuth {
    /// HTTP Basic with the url-encoded id and secret (RFC 6749 §2.3.1).
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

/// One upstream OAuth 2.0 provider the user links an account at.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    /// The upstream authorization endpoint.
    pub authorize_url: String,
    /// The upstream token endpoint.
    pub token_url: String,
    /// The vault's client id at the upstream.
    pub client_id: String,
    /// The vault's client secret at the upstream; or set
    /// `AGENTWARD_VAULT_CONNECTION_<NAME>_CLIENT_SECRET`.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Scopes requested when linking.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Other names a token-exchange `resource`/`audience` may use for this
    /// connection (e.g. the upstream API's base URL).
    #[serde(default)]
    pub resources: Vec<String>,
    /// Client authentication at the upstream token endpoint.
    #[serde(default)]
    pub token_endpoint_auth: TokenEndpointAuth,
    /// Extra query parameters for the authorize request, e.g.
    /// `{ prompt = "consent", access_type = "offline" }`.
    #[serde(default)]
    pub authorize_params: BTreeMap<String, String>,
}

fn default_listen() -> String {
    "127.0.0.1:8787".into()
}
fn default_database_url() -> String {
    "sqlite://agentward-vault.db".into()
}
fn default_refresh_margin() -> u64 {
    30
}
fn default_ticket_ttl() -> u64 {
    600
}
fn default_state_ttl() -> u64 {
    600
}
fn default_upstream_timeout() -> u64 {
    10
}
fn default_clock_skew() -> u64 {
    30
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: default_listen(),
            public_url: None,
            database_url: default_database_url(),
            database_schema: None,
            key_file: None,
            log_format: LogFormat::Text,
            refresh_margin_seconds: default_refresh_margin(),
            ticket_ttl_seconds: default_ticket_ttl(),
            state_ttl_seconds: default_state_ttl(),
            upstream_timeout_seconds: default_upstream_timeout(),
            clock_skew_seconds: default_clock_skew(),
            issuers: Vec::new(),
            clients: Vec::new(),
            connections: BTreeMap::new(),
        }
    }
}

impl Config {
    /// Parses a TOML document; the error names the offending field.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| format!("config: {e}"))
    }

    /// Fills secrets from the environment (`env` is a lookup so tests need not
    /// touch the process environment) and checks what must be present.
    pub fn resolve_secrets(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), String> {
        for client in &mut self.clients {
            let var = format!(
                "AGENTWARD_VAULT_CLIENT_{}_SECRET",
                env_name(&client.client_id)
            );
            if let Some(secret) = env(&var) {
                client.client_secret = Some(secret);
            }
            if client.client_secret.as_deref().unwrap_or("").is_empty() {
                return Err(format!(
                    "clients[{}]: client_secret missing (or set {var})",
                    client.client_id
                ));
            }
        }
        for (name, conn) in &mut self.connections {
            let var = format!(
                "AGENTWARD_VAULT_CONNECTION_{}_CLIENT_SECRET",
                env_name(name)
            );
            if let Some(secret) = env(&var) {
                conn.client_secret = Some(secret);
            }
            if conn.client_secret.as_deref().unwrap_or("").is_empty() {
                return Err(format!(
                    "connections.{name}: client_secret missing (or set {var})"
                ));
            }
        }
        Ok(())
    }

    /// The base URL the vault is reached at, without a trailing slash.
    pub fn public_base(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("http://{}", self.listen),
        }
    }
}

/// `my-client.v2` → `MY_CLIENT_V2`.
pub fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../vault.example.toml");

    #[test]
    fn example_config_parses() {
        let c = Config::from_toml(EXAMPLE).unwrap();
        assert!(c.connections.contains_key("google"));
        assert_eq!(c.clients[0].client_id, "gateway");
    }

    #[test]
    fn unknown_field_is_named() {
        let err = Config::from_toml("listn = \"x\"").unwrap_err();
        assert!(err.contains("listn"), "{err}");
    }

    #[test]
    fn secrets_come_from_environment() {
        let mut c = Config::from_toml(
            "[connections.my-api]\nauthorize_url='a'\ntoken_url='t'\nclient_id='c'\n[[clients]]\nclient_id='gw'\n",
        )
        .unwrap();
        let err = c.resolve_secrets(|_| None).unwrap_err();
        assert!(err.contains("AGENTWARD_VAULT_CLIENT_GW_SECRET"), "{err}");
        c.resolve_secrets(|k| Some(format!("from-{k}"))).unwrap();
        assert_eq!(
            c.connections["my-api"].client_secret.as_deref(),
            Some("from-AGENTWARD_VAULT_CONNECTION_MY_API_CLIENT_SECRET")
        );
    }
}

//! How the token-exchange plugin reaches the vault's token endpoint (or
//! Auth0's). The client secret's handling is in [`crate::secret`].

use super::{invalid, PolicyError};
use crate::secret::Secret;
use serde::Deserialize;

/// How the token-exchange plugin reaches the vault's token endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct VaultClient {
    /// Envoy cluster of the vault (or of Auth0's token endpoint).
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub cluster: String,
    /// Authority sent in the callout (defaults to the cluster name).
    #[serde(default)]
    pub authority: Option<String>,
    /// Token endpoint path.
    #[serde(default = "default_token_path")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^/")))]
    pub token_path: String,
    /// The gateway's client id at the vault.
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub client_id: String,
    /// The gateway's client secret at the vault, inline: for demos only,
    /// as Envoy's admin `/config_dump` shows the plugin configuration.
    /// Once the plugin has read `client_secret_env`, the secret in use.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub client_secret: Secret,
    /// The VM environment variable that holds the client secret (Envoy:
    /// `vm_config.environment_variables.host_env_keys`); exactly one of
    /// this and `client_secret`.
    #[serde(default)]
    #[cfg_attr(
        feature = "schema",
        schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))
    )]
    pub client_secret_env: Option<String>,
    /// `rfc8693` or `auth0`.
    #[serde(default)]
    pub dialect: ExchangeDialect,
    /// Callout timeout, in milliseconds.
    #[serde(default = "default_vault_timeout_ms")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub timeout_ms: u64,
    /// Refresh a cached upstream token this many seconds before it expires.
    #[serde(default = "default_expiry_margin")]
    pub expiry_margin_seconds: u64,
    /// Serve a cached upstream token for at most this long, however long
    /// it lives: after an unlink the gateway stops using the old token
    /// within this time even where the provider cannot revoke it (0: ask
    /// the vault on every request).
    #[serde(default = "default_max_cache")]
    pub max_cache_seconds: u64,
}

/// Token exchange request dialect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum ExchangeDialect {
    /// RFC 8693 token exchange.
    #[default]
    Rfc8693,
    /// Auth0 Token Vault (federated connection access token).
    Auth0,
}

impl VaultClient {
    /// Checks what the types cannot; errors name fields under `vault`.
    pub(super) fn validate(&self) -> Result<(), PolicyError> {
        if self.cluster.is_empty() {
            return Err(invalid("vault.cluster", "must not be empty"));
        }
        if self.client_id.is_empty() {
            return Err(invalid("vault.client_id", "must not be empty"));
        }
        self.check_secret()?;
        if !self.token_path.starts_with('/') {
            return Err(invalid("vault.token_path", "must start with `/`"));
        }
        if self.timeout_ms == 0 {
            return Err(invalid("vault.timeout_ms", "must be positive"));
        }
        Ok(())
    }
}

fn default_token_path() -> String {
    "/oauth/token".into()
}
fn default_vault_timeout_ms() -> u64 {
    2000
}
fn default_max_cache() -> u64 {
    300
}
fn default_expiry_margin() -> u64 {
    30
}

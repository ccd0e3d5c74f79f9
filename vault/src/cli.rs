//! Command line: every flag can also be set through its environment variable;
//! flags and variables override the configuration file.

use crate::config::{Config, LogFormat};
use crate::seal::Keyring;
use clap::Parser;
use std::path::PathBuf;

/// agentward-vault: token vault for the agentward gateway (account linking,
/// encrypted refresh tokens, RFC 8693 / Auth0 Token Vault token exchange).
#[derive(Debug, Parser)]
#[command(
    name = "agentward-vault",
    version,
    after_help = "Encryption keys: AGENTWARD_VAULT_KEY=\"id:base64-32-bytes[,older-id:base64…]\" (first is \
current; a bare base64 key gets id `default`), or a key file (same entries, one per line). Secrets: \
AGENTWARD_VAULT_CONNECTION_<NAME>_CLIENT_SECRET and AGENTWARD_VAULT_CLIENT_<ID>_SECRET override the file. \
Logs: RUST_LOG filters (default `info`)."
)]
pub struct Args {
    /// TOML configuration file (see vault.example.toml).
    #[arg(short, long, env = "AGENTWARD_VAULT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8787.
    #[arg(long, env = "AGENTWARD_VAULT_LISTEN")]
    pub listen: Option<String>,
    /// Address of the listener for /metrics and /healthz, e.g. 127.0.0.1:9787
    /// (when set, /metrics leaves the public listener).
    #[arg(long, env = "AGENTWARD_VAULT_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// External base URL (connect links and the OAuth redirect URI are built from it).
    #[arg(long, env = "AGENTWARD_VAULT_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The `aud` user tokens must name at /audit, DELETE /connections and /connect (default: the public URL).
    #[arg(long, env = "AGENTWARD_VAULT_AUDIENCE")]
    pub audience: Option<String>,
    /// `sqlite://file.db`, a file path, or `postgres://user@host/db`.
    #[arg(long, env = "AGENTWARD_VAULT_DATABASE_URL")]
    pub database_url: Option<String>,
    /// PostgreSQL schema for the vault's tables (created if missing).
    #[arg(long, env = "AGENTWARD_VAULT_DATABASE_SCHEMA")]
    pub database_schema: Option<String>,
    /// File with data-encryption keys (used when AGENTWARD_VAULT_KEY is unset).
    #[arg(long, env = "AGENTWARD_VAULT_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// PEM file of extra CA certificates for upstream HTTPS (a private CA).
    #[arg(long, env = "AGENTWARD_VAULT_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum, env = "AGENTWARD_VAULT_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Serve a cached upstream access token only while it has more than this many seconds left.
    #[arg(long, env = "AGENTWARD_VAULT_REFRESH_MARGIN_SECONDS")]
    pub refresh_margin_seconds: Option<u64>,
    /// Delete audit rows older than this many days (hourly and at start-up); 0 keeps them forever.
    #[arg(long, env = "AGENTWARD_VAULT_AUDIT_RETENTION_DAYS")]
    pub audit_retention_days: Option<u64>,
    /// Client ids (of `[[clients]]`) that may read every user's rows at GET /audit; comma-separated.
    #[arg(long, env = "AGENTWARD_VAULT_AUDIT_READERS", value_delimiter = ',')]
    pub audit_readers: Option<Vec<String>>,
    /// The issuer of the users stored before users were keyed by (issuer,
    /// subject): needed once to upgrade such a database when several issuers are configured.
    #[arg(long, env = "AGENTWARD_VAULT_LEGACY_ISSUER")]
    pub legacy_issuer: Option<String>,
    /// Check the configuration and keys, then exit.
    #[arg(long)]
    pub check: bool,
    /// Seal every stored token anew under the current (first) key, print the
    /// key ids still in use, then exit: after it, older keys can leave the
    /// keyring. Safe while vaults run.
    #[arg(long, conflicts_with = "check")]
    pub rekey: bool,
}

impl Args {
    /// Reads the file, applies flags and environment, resolves secrets and keys.
    pub fn load(&self) -> Result<(Config, Keyring), String> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                Config::from_toml(&text)?
            }
            None => Config::default(),
        };
        if let Some(v) = &self.listen {
            config.listen = v.clone();
        }
        if let Some(v) = &self.metrics_listen {
            config.metrics_listen = Some(v.clone());
        }
        if let Some(v) = &self.public_url {
            config.public_url = Some(v.clone());
        }
        if let Some(v) = &self.audience {
            config.audience = Some(v.clone());
        }
        if let Some(v) = &self.database_url {
            config.database_url = v.clone();
        }
        if let Some(v) = &self.database_schema {
            config.database_schema = Some(v.clone());
        }
        if let Some(v) = &self.key_file {
            config.key_file = Some(v.clone());
        }
        if let Some(v) = &self.ca_file {
            config.ca_file = Some(v.clone());
        }
        if let Some(v) = self.log_format {
            config.log_format = v;
        }
        if let Some(v) = self.refresh_margin_seconds {
            config.refresh_margin_seconds = v;
        }
        if let Some(v) = self.audit_retention_days {
            config.audit_retention_days = v;
        }
        if let Some(v) = &self.audit_readers {
            config.audit_readers = v
                .iter()
                .map(|id| id.trim().to_string())
                .filter(|id| !id.is_empty())
                .collect();
        }
        if let Some(v) = &self.legacy_issuer {
            config.legacy_issuer = Some(v.clone());
        }
        config.resolve_secrets(|name| std::env::var(name).ok())?;
        config.check_urls()?;
        config.check_audit_readers()?;
        config.check_http_limits()?;
        if let Some(ciba) = &config.ciba {
            ciba.check(&config)?;
        }
        let keys = match (std::env::var("AGENTWARD_VAULT_KEY").ok(), &config.key_file) {
            (Some(text), _) => {
                Keyring::parse(&text).map_err(|e| format!("AGENTWARD_VAULT_KEY: {e}"))?
            }
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                Keyring::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?
            }
            (None, None) => {
                return Err("no encryption key: set AGENTWARD_VAULT_KEY or key_file".into())
            }
        };
        Ok((config, keys))
    }
}

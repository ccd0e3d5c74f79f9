//! The vault's configuration: a TOML file, then environment overrides, then
//! command-line flags (see `cli.rs`). Secrets can stay out of the file: every
//! connection and client secret can come from the environment.

use crate::secret::Secret;
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
    /// Address of a second listener for `GET /metrics` and `GET /healthz`
    /// (e.g. `127.0.0.1:9787`), kept off the public one. When set, the
    /// public listener no longer serves `/metrics`.
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// A connection whose request headers are not complete this long after
    /// it opened (or after its previous answer) is closed.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_seconds: u64,
    /// A request body not received within this time is answered 408.
    #[serde(default = "default_body_read_timeout")]
    pub body_read_timeout_seconds: u64,
    /// A request not answered within this time is answered 503; the work
    /// goes on (a refresh in flight is still stored).
    #[serde(default = "default_request_timeout")]
    pub request_timeout_seconds: u64,
    /// Connections served at once per listener; more wait to be accepted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Largest `POST /oauth/token` body (bytes); larger is answered 413.
    #[serde(default = "default_max_token_request_bytes")]
    pub max_token_request_bytes: usize,
    /// The vault's external base URL; `connect_url`s and the OAuth
    /// `redirect_uri` (`{public_url}/connect/callback`) are built from it.
    #[serde(default)]
    pub public_url: Option<String>,
    /// The `aud` a user's JWT must name at the vault's own endpoints
    /// (`GET /audit`, `DELETE /connections/…`, `GET /connect/…` with a
    /// bearer token); default: the public URL. Token exchanges keep the
    /// issuers' `audiences` (the APIs').
    #[serde(default)]
    pub audience: Option<String>,
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
    /// The policy playground's files (`cargo xtask playground` builds them
    /// into `target/playground`), served at `/playground/`; unset: not
    /// served.
    #[serde(default)]
    pub playground_dir: Option<PathBuf>,
    /// A cached upstream access token is served only while it has more than
    /// this many seconds left.
    #[serde(default = "default_refresh_margin")]
    pub refresh_margin_seconds: u64,
    /// Lifetime of a connect ticket (a connect link).
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
    /// PEM file of extra CA certificates trusted for upstream HTTPS (token
    /// endpoints, JWKS), beside the built-in web PKI roots: a private CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Allow `http://` upstream URLs on hosts other than loopback. Off: OAuth
    /// codes, refresh tokens and client secrets travel to those URLs.
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// Issuers whose JWTs identify users (same shape as the policy's `issuers`).
    #[serde(default)]
    pub issuers: Vec<serde_json::Value>,
    /// The issuer of the users a database made before users were keyed by
    /// (issuer, subject) holds; needed once, to upgrade such a database,
    /// when several `issuers` are configured (with one, it is that one).
    #[serde(default)]
    pub legacy_issuer: Option<String>,
    /// Confidential clients allowed to call `POST /oauth/token` (the gateway).
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    /// `client_id`s of `clients` that may read every user's rows at
    /// `GET /audit` (with the same client authentication as the token
    /// endpoint). A user reads their own rows with their bearer token.
    #[serde(default)]
    pub audit_readers: Vec<String>,
    /// Audit rows older than this many days are deleted (hourly, and at
    /// start-up); 0 keeps them forever.
    #[serde(default = "default_audit_retention_days")]
    pub audit_retention_days: u64,
    /// Upstream OAuth connections, by name.
    #[serde(default)]
    pub connections: BTreeMap<String, ConnectionConfig>,
    /// The CIBA authority (`[ciba]`); absent, it is off.
    #[serde(default)]
    pub ciba: Option<crate::ciba::CibaConfig>,
    /// The OpenFGA-compatible API (off unless it has preshared keys).
    #[serde(default)]
    pub fga: crate::fga::FgaConfig,
}

fn default_header_read_timeout() -> u64 {
    10
}
fn default_body_read_timeout() -> u64 {
    10
}
fn default_request_timeout() -> u64 {
    30
}
fn default_max_connections() -> usize {
    1024
}
fn default_max_token_request_bytes() -> usize {
    16 * 1024
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
    pub client_secret: Option<Secret>,
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
    /// The upstream's token revocation endpoint (RFC 7009): unlinking
    /// revokes the refresh token there.
    #[serde(default)]
    pub revocation_url: Option<String>,
    /// The vault's client id at the upstream.
    pub client_id: String,
    /// The vault's client secret at the upstream; or set
    /// `AGENTWARD_VAULT_CONNECTION_<NAME>_CLIENT_SECRET`.
    #[serde(default)]
    pub client_secret: Option<Secret>,
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
fn default_audit_retention_days() -> u64 {
    90
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: default_listen(),
            metrics_listen: None,
            header_read_timeout_seconds: default_header_read_timeout(),
            body_read_timeout_seconds: default_body_read_timeout(),
            request_timeout_seconds: default_request_timeout(),
            max_connections: default_max_connections(),
            max_token_request_bytes: default_max_token_request_bytes(),
            public_url: None,
            audience: None,
            database_url: default_database_url(),
            database_schema: None,
            key_file: None,
            log_format: LogFormat::Text,
            playground_dir: None,
            refresh_margin_seconds: default_refresh_margin(),
            ticket_ttl_seconds: default_ticket_ttl(),
            state_ttl_seconds: default_state_ttl(),
            upstream_timeout_seconds: default_upstream_timeout(),
            clock_skew_seconds: default_clock_skew(),
            ca_file: None,
            allow_insecure_http: false,
            issuers: Vec::new(),
            legacy_issuer: None,
            clients: Vec::new(),
            audit_readers: Vec::new(),
            audit_retention_days: default_audit_retention_days(),
            connections: BTreeMap::new(),
            ciba: None,
            fga: crate::fga::FgaConfig::default(),
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
        self.fga.resolve_keys(&env);
        for client in &mut self.clients {
            let var = format!(
                "AGENTWARD_VAULT_CLIENT_{}_SECRET",
                env_name(&client.client_id)
            );
            if let Some(secret) = env(&var) {
                client.client_secret = Some(Secret::new(secret));
            }
            if client.client_secret.as_ref().is_none_or(Secret::is_empty) {
                return Err(format!(
                    "clients[{}]: client_secret missing (or set {var})",
                    client.client_id
                ));
            }
        }
        if let Some(ciba) = &mut self.ciba {
            ciba.resolve_secrets(&env)?;
        }
        for (name, conn) in &mut self.connections {
            let var = format!(
                "AGENTWARD_VAULT_CONNECTION_{}_CLIENT_SECRET",
                env_name(name)
            );
            if let Some(secret) = env(&var) {
                conn.client_secret = Some(Secret::new(secret));
            }
            if conn.client_secret.as_ref().is_none_or(Secret::is_empty) {
                return Err(format!(
                    "connections.{name}: client_secret missing (or set {var})"
                ));
            }
        }
        Ok(())
    }

    /// Checks that the HTTP limits are at least 1; the error names the field.
    pub fn check_http_limits(&self) -> Result<(), String> {
        let limits = [
            (
                "header_read_timeout_seconds",
                self.header_read_timeout_seconds,
            ),
            ("body_read_timeout_seconds", self.body_read_timeout_seconds),
            ("request_timeout_seconds", self.request_timeout_seconds),
            ("max_connections", self.max_connections as u64),
            (
                "max_token_request_bytes",
                self.max_token_request_bytes as u64,
            ),
        ];
        match limits.iter().find(|(_, v)| *v == 0) {
            Some((field, _)) => Err(format!("{field}: must be at least 1")),
            None => Ok(()),
        }
    }

    /// Checks that every `audit_readers` entry names one of `clients`.
    pub fn check_audit_readers(&self) -> Result<(), String> {
        match self
            .audit_readers
            .iter()
            .find(|id| !self.clients.iter().any(|c| &c.client_id == *id))
        {
            Some(id) => Err(format!(
                "audit_readers: `{id}` is not the client_id of any [[clients]] entry"
            )),
            None => Ok(()),
        }
    }

    /// Checks the upstream URLs: each must be `https://`, or `http://` to a
    /// loopback host, unless `allow_insecure_http` is set. The error names
    /// the field.
    pub fn check_urls(&self) -> Result<(), String> {
        let mut urls: Vec<(String, &str)> = Vec::new();
        for (name, conn) in &self.connections {
            urls.push((
                format!("connections.{name}.authorize_url"),
                &conn.authorize_url,
            ));
            urls.push((format!("connections.{name}.token_url"), &conn.token_url));
            if let Some(url) = &conn.revocation_url {
                urls.push((format!("connections.{name}.revocation_url"), url));
            }
        }
        if let Some(hook) = self.ciba.as_ref().and_then(|c| c.webhook.as_ref()) {
            urls.push(("ciba.webhook.url".into(), &hook.url));
        }
        for (i, issuer) in self.issuers.iter().enumerate() {
            if let Some(uri) = issuer.get("jwks_uri").and_then(|v| v.as_str()) {
                urls.push((format!("issuers[{i}].jwks_uri"), uri));
            }
        }
        for (field, url) in urls {
            match transport_of(url) {
                Some(Transport::Https | Transport::LoopbackHttp) => {}
                Some(Transport::Http) if self.allow_insecure_http => {}
                Some(Transport::Http) => {
                    return Err(format!(
                        "{field}: `{url}` is plain http to a host that is not loopback; use https \
                         (or set allow_insecure_http = true)"
                    ))
                }
                None => return Err(format!("{field}: `{url}` is not an http(s) URL")),
            }
        }
        Ok(())
    }

    /// The audience of user tokens at the vault's own endpoints: `audience`,
    /// else the public base URL.
    pub fn user_audience(&self) -> String {
        match &self.audience {
            Some(audience) if !audience.is_empty() => audience.clone(),
            _ => self.public_base(),
        }
    }

    /// The base URL the vault is reached at, without a trailing slash.
    pub fn public_base(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("http://{}", self.listen),
        }
    }
}

/// How a URL reaches its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Https,
    /// `http://` to `localhost`, `127.0.0.0/8` or `[::1]`.
    LoopbackHttp,
    Http,
}

fn transport_of(url: &str) -> Option<Transport> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    if host.is_empty() {
        return None;
    }
    match scheme.to_ascii_lowercase().as_str() {
        "https" => Some(Transport::Https),
        "http" => {
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            Some(if loopback {
                Transport::LoopbackHttp
            } else {
                Transport::Http
            })
        }
        _ => None,
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
        assert!(
            c.metrics_listen.is_some(),
            "the example keeps /metrics off the public listener"
        );
        let ciba = c.ciba.as_ref().unwrap();
        assert_eq!(ciba.check(&c), Ok(()));
        assert!(ciba.webhook.is_some());
        assert_eq!(c.check_urls(), Ok(()));
    }

    #[test]
    fn ciba_settings_are_checked_and_name_the_field() {
        let base = "[[clients]]\nclient_id = 'gw'\n[ciba]\n";
        let check = |extra: &str| {
            let c = Config::from_toml(&format!("{base}{extra}")).unwrap();
            c.ciba.as_ref().unwrap().check(&c)
        };
        assert_eq!(check("clients = ['gw']"), Ok(()));
        assert!(check("clients = []")
            .unwrap_err()
            .starts_with("ciba.clients:"));
        assert!(check("clients = ['nobody']")
            .unwrap_err()
            .starts_with("ciba.clients: `nobody`"));
        assert!(check("clients = ['gw']\nmax_wait_seconds = 30")
            .unwrap_err()
            .starts_with("ciba.max_wait_seconds:"));
        assert!(check("clients = ['gw']\ninterval_seconds = 0")
            .unwrap_err()
            .starts_with("ciba.interval_seconds:"));
        let mut c = Config::from_toml(&format!(
            "{base}clients = ['gw']\n[ciba.webhook]\nurl = 'http://notify.example/'\n"
        ))
        .unwrap();
        assert!(c.check_urls().unwrap_err().starts_with("ciba.webhook.url:"));
        c.clients.clear();
        let err = c.resolve_secrets(|_| None).unwrap_err();
        assert!(err.contains("AGENTWARD_VAULT_CIBA_WEBHOOK_SECRET"), "{err}");
        c.resolve_secrets(|k| {
            (k == "AGENTWARD_VAULT_CIBA_WEBHOOK_SECRET").then(|| "s3cret".into())
        })
        .unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn unknown_field_is_named() {
        let err = Config::from_toml("listn = \"x\"").unwrap_err();
        assert!(err.contains("listn"), "{err}");
    }

    #[test]
    fn plain_http_upstreams_are_refused_unless_loopback_or_allowed() {
        let conn = |token_url: &str| {
            format!("[connections.broker]\nauthorize_url='https://b.example/authorize'\ntoken_url='{token_url}'\nclient_id='c'\n")
        };
        for ok in [
            "https://b.example/token",
            "http://127.0.0.1:8082/token",
            "http://127.9.9.9/token",
            "http://localhost:8082/token",
            "http://[::1]:8082/token",
        ] {
            let c = Config::from_toml(&conn(ok)).unwrap();
            assert_eq!(c.check_urls(), Ok(()), "{ok}");
        }
        for bad in [
            "http://b.example/token",
            "http://10.0.0.1/token",
            "http://127.0.0.1.evil.example/token",
            "http://localhost@b.example/token",
        ] {
            let c = Config::from_toml(&conn(bad)).unwrap();
            let err = c.check_urls().unwrap_err();
            assert!(
                err.starts_with("connections.broker.token_url:"),
                "{bad}: {err}"
            );
        }
        let err = Config::from_toml(&conn("ftp://b.example/token"))
            .unwrap()
            .check_urls()
            .unwrap_err();
        assert!(err.contains("not an http(s) URL"), "{err}");
        let allowed = format!(
            "allow_insecure_http = true\n{}",
            conn("http://b.example/token")
        );
        assert_eq!(Config::from_toml(&allowed).unwrap().check_urls(), Ok(()));

        let jwks = "[[issuers]]\nissuer='https://i/'\naudiences=['a']\njwks_uri='http://idp.example/jwks'\njwks_cluster='x'\n";
        let err = Config::from_toml(jwks).unwrap().check_urls().unwrap_err();
        assert!(err.starts_with("issuers[0].jwks_uri:"), "{err}");
    }

    #[test]
    fn audit_settings_default_and_readers_must_be_clients() {
        let c = Config::from_toml("").unwrap();
        assert_eq!((c.audit_retention_days, c.audit_readers.len()), (90, 0));
        assert_eq!(c.check_audit_readers(), Ok(()));
        let c = Config::from_toml(
            "audit_readers = ['admin']\naudit_retention_days = 0\n[[clients]]\nclient_id = 'admin'\n",
        )
        .unwrap();
        assert_eq!(c.audit_retention_days, 0);
        assert_eq!(c.check_audit_readers(), Ok(()));
        let c = Config::from_toml("audit_readers = ['nobody']\n[[clients]]\nclient_id = 'gw'\n")
            .unwrap();
        let err = c.check_audit_readers().unwrap_err();
        assert!(err.starts_with("audit_readers: `nobody`"), "{err}");
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
            c.connections["my-api"]
                .client_secret
                .as_ref()
                .map(Secret::expose),
            Some("from-AGENTWARD_VAULT_CONNECTION_MY_API_CLIENT_SECRET")
        );
        let shown = format!("{c:?}");
        assert!(!shown.contains("from-AGENTWARD"), "{shown}");
    }

    #[test]
    fn debug_of_the_configuration_shows_no_secret() {
        let c = Config::from_toml(
            "[connections.api]\nauthorize_url='a'\ntoken_url='t'\nclient_id='c'\nclient_secret='conn-s3cret'\n\
             [[clients]]\nclient_id='gw'\nclient_secret='client-s3cret'\n",
        )
        .unwrap();
        let shown = format!("{c:?} {:?} {:?}", c.clients[0], c.connections["api"]);
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
    }

    #[test]
    fn http_limits_default_and_are_read() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(
            (
                c.header_read_timeout_seconds,
                c.body_read_timeout_seconds,
                c.request_timeout_seconds,
                c.max_connections,
                c.max_token_request_bytes
            ),
            (10, 10, 30, 1024, 16384)
        );
        let c = Config::from_toml(
            "metrics_listen = '127.0.0.1:9787'\nmax_connections = 8\nrequest_timeout_seconds = 5\n",
        )
        .unwrap();
        assert_eq!(c.metrics_listen.as_deref(), Some("127.0.0.1:9787"));
        assert_eq!((c.max_connections, c.request_timeout_seconds), (8, 5));
        assert_eq!(c.check_http_limits(), Ok(()));
        let c = Config::from_toml("max_connections = 0").unwrap();
        assert_eq!(
            c.check_http_limits(),
            Err("max_connections: must be at least 1".into())
        );
        let err = Config::from_toml("max_conections = 8").unwrap_err();
        assert!(err.contains("max_conections"), "{err}");
    }
}

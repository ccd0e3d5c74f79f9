//! The running vault: everything a request handler needs, built once from the
//! configuration, and the HTTP routes.

use crate::access_cache::AccessCache;
use crate::audit::{AuditLog, Retention};
use crate::config::Config;
use crate::link_events::{self, LinkEvents};
use crate::metrics::Metrics;
use crate::seal::Keyring;
use crate::single_flight::Flights;
use crate::store::{AuditEntry, ConnectTicket, Store, Upgrade};
use crate::subject::{Subject, SubjectVerifier, User};
use crate::ticket::{self, TicketSigner};
use crate::upstream::UpstreamClient;
use crate::{audit_api, consent, linking, token_exchange};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use std::sync::Arc;
use std::time::Duration;

/// Shared state of the service.
#[derive(Debug)]
pub struct Vault {
    /// The resolved configuration.
    pub config: Config,
    /// The database.
    pub store: Store,
    /// Data-encryption keys.
    pub keys: Keyring,
    /// MACs of the confirmation form and the linking-flow cookie.
    pub tickets: TicketSigner,
    /// Subject-token verifier (token exchange: the issuers' audiences).
    pub subjects: SubjectVerifier,
    /// Verifier of users' bearer tokens at the vault's own endpoints: the
    /// same issuers, but only the vault's audience (`Config::user_audience`).
    pub users: SubjectVerifier,
    /// Upstream token-endpoint client.
    pub upstream: UpstreamClient,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Per-(user, connection) refresh gates.
    pub flights: Flights,
    /// The audit queue and its background writer.
    pub audit_log: AuditLog,
    /// Deletes audit rows past `audit_retention_days` (`None`: kept forever).
    pub audit_retention: Option<Retention>,
    /// Recently served upstream access tokens (a few seconds each).
    pub access_cache: Arc<AccessCache>,
    /// Other replicas' link changes (PostgreSQL).
    pub link_events: Option<LinkEvents>,
    /// The CIBA authority, when `[ciba]` is configured.
    pub ciba: Option<crate::ciba::Ciba>,
    /// The OpenFGA-compatible engine (see [`crate::fga`]).
    pub fga: crate::fga::Fga,
}

/// Current Unix time in seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Vault {
    /// Builds the vault: connects the store, prepares keys and clients.
    pub async fn build(config: Config, keys: Keyring) -> Result<Arc<Vault>, String> {
        if config.connections.contains_key("callback") {
            return Err("connections.callback: the name `callback` is reserved".into());
        }
        let issuers = SubjectVerifier::parse_issuers(&config.issuers)?;
        let extra_roots = match &config.ca_file {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|e| format!("ca_file: cannot read {}: {e}", path.display()))?,
            ),
            None => None,
        };
        let store = open_store(&config, &keys).await?;
        let upstream = UpstreamClient::new(
            Duration::from_secs(config.upstream_timeout_seconds.max(1)),
            extra_roots.as_deref(),
        )?;
        let own_audience = config.user_audience();
        let user_issuers = issuers
            .iter()
            .cloned()
            .map(|mut issuer| {
                issuer.audiences = vec![own_audience.clone()];
                issuer
            })
            .collect();
        let users = SubjectVerifier::new(
            user_issuers,
            config.clock_skew_seconds,
            upstream.http().clone(),
        );
        let subjects =
            SubjectVerifier::new(issuers, config.clock_skew_seconds, upstream.http().clone());
        let tickets = TicketSigner::new(*keys.ticket_secret());
        let audit_log = AuditLog::start(store.clone());
        let metrics = Arc::new(Metrics::default());
        let audit_retention =
            Retention::start(store.clone(), config.audit_retention_days, metrics.clone());
        let access_cache = Arc::new(AccessCache::default());
        let link_events = LinkEvents::start(&store, access_cache.clone()).await;
        let ciba = match &config.ciba {
            Some(section) => Some(
                crate::ciba::Ciba::start(&config, section, &store, &keys, upstream.http().clone())
                    .await?,
            ),
            None => None,
        };
        let fga = crate::fga::Fga::new(&config.fga);
        if fga.enabled() {
            tracing::info!("FGA API on (/stores/...)");
        } else {
            tracing::info!(
                "FGA API off: no preshared key (set {} or [fga] preshared_keys)",
                crate::fga::KEYS_ENV
            );
        }
        Ok(Arc::new(Vault {
            config,
            store,
            keys,
            tickets,
            subjects,
            users,
            upstream,
            metrics,
            flights: Flights::default(),
            audit_log,
            audit_retention,
            access_cache,
            link_events,
            ciba,
            fga,
        }))
    }

    /// The link a user opens to (re)connect `connection`: an opaque,
    /// single-use ticket; the vault keeps the user, issuer and agent it
    /// stands for (see [`crate::ticket`]).
    pub async fn connect_url(&self, subject: &Subject, connection: &str) -> Result<String, String> {
        let now = unix_now();
        let (ticket, id) = ticket::new_ticket()?;
        let record = ConnectTicket {
            id,
            issuer: subject.issuer.clone(),
            sub: subject.sub.clone(),
            connection: connection.to_string(),
            agent: subject.agent.clone(),
            expires_at: now
                .saturating_add(i64::try_from(self.config.ticket_ttl_seconds).unwrap_or(600)),
            spent: false,
        };
        self.store
            .put_ticket(&record, now)
            .await
            .map_err(|e| e.to_string())?;
        Ok(format!(
            "{}/connect/{connection}?ticket={ticket}",
            self.config.public_base()
        ))
    }

    /// The OAuth redirect URI registered at every upstream.
    pub fn redirect_uri(&self) -> String {
        format!("{}/connect/callback", self.config.public_base())
    }

    /// After a write that changed the link of (`user`, `connection`): drops
    /// the cached access token here and tells the other replicas to (see
    /// [`link_events`]); a notice that cannot be sent is logged, and the
    /// replicas then drop theirs within the cache's few seconds.
    pub async fn link_changed(&self, user: &User, connection: &str) {
        self.access_cache.invalidate(user, connection);
        if let Err(e) = self
            .store
            .announce_link_change(link_events::CHANNEL, user, connection)
            .await
        {
            tracing::warn!(error = %e, "cannot tell the other replicas of a link change");
        }
    }

    /// Queues an audit row for the background writer (see [`AuditLog`]); a
    /// failure is logged, not fatal to the answer. `user` is `None` when
    /// the subject token was not verified.
    pub async fn audit(
        &self,
        user: Option<&User>,
        agent: Option<&str>,
        connection: Option<&str>,
        outcome: &str,
    ) {
        let entry = AuditEntry {
            at: unix_now(),
            issuer: user.map(|u| u.issuer.clone()).unwrap_or_default(),
            sub: user.map(|u| u.sub.clone()).unwrap_or_default(),
            agent: agent.map(str::to_string),
            connection: connection.map(str::to_string),
            outcome: outcome.to_string(),
        };
        self.audit_log.record(entry, &self.metrics).await;
    }

    /// Stops listening for link changes and audit retention, writes the
    /// queued audit rows and closes the database; call once the server has
    /// stopped taking requests.
    pub async fn shutdown(&self) {
        if let Some(events) = &self.link_events {
            events.shutdown().await;
        }
        if let Some(retention) = &self.audit_retention {
            retention.shutdown().await;
        }
        if let Some(ciba) = &self.ciba {
            ciba.shutdown().await;
        }
        self.audit_log.shutdown().await;
        self.store.close().await;
    }
}

/// Connects to the configured database, creating its tables or upgrading
/// them (see [`Upgrade`]): rows stored before users were keyed by issuer
/// belong to `legacy_issuer`, or to the one configured issuer.
pub async fn open_store(config: &Config, keys: &Keyring) -> Result<Store, String> {
    let issuers: Vec<&str> = config
        .issuers
        .iter()
        .filter_map(|i| i.get("issuer").and_then(|v| v.as_str()))
        .collect();
    let legacy_issuer = match (&config.legacy_issuer, issuers.as_slice()) {
        (Some(legacy), _) if !issuers.contains(&legacy.as_str()) => {
            return Err(format!(
                "legacy_issuer: {legacy:?} is not the issuer of any [[issuers]] entry"
            ))
        }
        (Some(legacy), _) => Some(legacy.as_str()),
        (None, [only]) => Some(*only),
        (None, _) => None,
    };
    let upgrade = Upgrade {
        legacy_issuer,
        keys: Some(keys),
    };
    Store::connect_upgrading(
        &config.database_url,
        config.database_schema.as_deref(),
        &upgrade,
    )
    .await
    .map_err(|e| e.to_string())
}

/// The HTTP routes of the public listener. `/metrics` is among them only
/// while no `metrics_listen` is configured.
pub fn router(vault: Arc<Vault>) -> Router {
    let mut routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/oauth/token", post(token_exchange::token))
        .route("/connect/callback", get(linking::callback))
        .route(
            "/connect/{connection}",
            get(linking::connect).post(consent::confirm),
        )
        .route("/connections/{connection}", delete(linking::unlink))
        .route("/audit", get(audit_api::audit))
        .route("/bc-authorize", post(crate::ciba::authorize::bc_authorize))
        .route(
            crate::ciba::introspect::PATH,
            post(crate::ciba::introspect::introspect),
        )
        .route(
            crate::ciba::page::PATH,
            get(crate::ciba::page::show).post(crate::ciba::page::decide),
        )
        .route(
            "/.well-known/openid-configuration",
            get(crate::ciba::discovery),
        )
        .route("/.well-known/jwks.json", get(crate::ciba::jwks));
    if vault.config.playground_dir.is_some() {
        use crate::playground;
        routes = routes
            .route(playground::PATH, get(playground::root))
            .route("/playground/", get(playground::index))
            .route("/playground/{file}", get(playground::serve));
    }
    if vault.config.metrics_listen.is_none() {
        routes = routes.route("/metrics", get(metrics));
    }
    if vault.fga.enabled() {
        routes = routes.merge(crate::fga::api::routes(vault.clone()));
    }
    with_request_timeout(routes.with_state(vault.clone()), &vault)
}

/// The HTTP routes of the `metrics_listen` listener: `/metrics`, `/healthz`.
pub fn metrics_router(vault: Arc<Vault>) -> Router {
    let routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(vault.clone());
    with_request_timeout(routes, &vault)
}

fn with_request_timeout(routes: Router, vault: &Vault) -> Router {
    let limit = Duration::from_secs(vault.config.request_timeout_seconds.max(1));
    routes.layer(axum::middleware::from_fn_with_state(
        limit,
        crate::serve::request_timeout,
    ))
}

async fn healthz(State(vault): State<Arc<Vault>>) -> Response {
    match vault.store.ping().await {
        Ok(()) => Json(serde_json::json!({"status": "ok", "database": vault.store.backend()}))
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "health check: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({"status": "unavailable"})),
            )
                .into_response()
        }
    }
}

async fn metrics(State(vault): State<Arc<Vault>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        vault.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_cache::Entry;

    #[tokio::test]
    async fn debug_of_the_vault_shows_no_secret_or_token() {
        let mut config = Config::from_toml(
            "database_url = 'sqlite::memory:'\n\
             [connections.api]\nauthorize_url='https://a/'\ntoken_url='https://t/'\n\
             client_id='c'\nclient_secret='conn-s3cret'\n\
             [[clients]]\nclient_id='gw'\nclient_secret='client-s3cret'\n",
        )
        .unwrap();
        config.resolve_secrets(|_| None).unwrap();
        let keys = Keyring::parse("k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
        let vault = Vault::build(config, keys).await.unwrap();
        let g = vault.access_cache.generation();
        vault.access_cache.insert(
            g,
            &crate::subject::User::new("https://issuer/", "alice"),
            "api",
            Entry::new("upstream-s3cret-token".into(), i64::MAX, None, 1),
        );
        let shown = format!("{vault:?}");
        assert!(shown.contains("alice"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!shown.contains("AAECAwQF"), "{shown}");
        vault.shutdown().await;
    }
}

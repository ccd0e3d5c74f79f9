//! token-exchange: for routes with an `exchange`, swaps the user's bearer
//! token for an upstream access token from the vault (RFC 8693 or Auth0
//! Token Vault dialect), caches it in shared data across worker VMs until
//! shortly before expiry, and sends it upstream in `Authorization`. The
//! agent's token never reaches the upstream; the upstream token never
//! reaches the agent. Messages and decisions live in `agentward_core::exchange`.

use agentward_core::cache::{TokenCache, TokenKey};
use agentward_core::clock::TickClock;
use agentward_core::exchange::{
    proven_identity, read_answer, token_request, ExchangeResult, ExchangeTarget, LocalExchange,
    UpstreamToken,
};
use agentward_core::identity::{ISSUER, SUB};
use agentward_core::proof::{self, ProofKey, PROOF};
use agentward_core::response;
use agentward_core::Policy;
use agentward_envoy::{clock_unavailable, hostcall, log, now_ms, respond, Counter};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

agentward_envoy::callbacks!(
    "proxy_on_request_headers",
    "proxy_on_http_call_response",
    "proxy_on_tick"
);

/// The largest vault answer read; a larger one is a vault failure (503).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// How often a VM reads the clock and adds its cache hits to the counter:
/// a cached request then makes neither host call.
const TICK: Duration = Duration::from_secs(1);

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(Root::default()));
}}

/// The plugin's counters, defined once per VM.
struct Counters {
    cache_hit: Counter,
    vault_call: Counter,
    vault_ok: Counter,
    refused: Counter,
    vault_unavailable: Counter,
    no_identity: Counter,
}

impl Counters {
    fn define() -> Counters {
        Counters {
            cache_hit: Counter::define("agentward.exchange.cache_hit"),
            vault_call: Counter::define("agentward.exchange.vault_call"),
            vault_ok: Counter::define("agentward.exchange.vault_ok"),
            refused: Counter::define("agentward.exchange.refused"),
            vault_unavailable: Counter::define("agentward.exchange.vault_unavailable"),
            no_identity: Counter::define("agentward.exchange.no_identity"),
        }
    }
}

struct Plugin {
    policy: Policy,
    /// Each route's exchange target (by index in `policy.routes`).
    targets: Vec<Option<ExchangeTarget>>,
    counters: Counters,
    /// This VM's exchanges by bearer token and target, in front of the
    /// shared-data cache (bounded by `identity.cache_max_entries`).
    local: RefCell<TokenCache<Rc<Remembered>>>,
    /// Cache hits not yet added to `counters.cache_hit` (added on tick).
    hits: Cell<u64>,
    /// The clock the caches are checked against, read on tick.
    clock: TickClock,
    /// The key of jwt-identity's `x-agentward-proof`, once read from shared data.
    proof_key: Cell<Option<ProofKey>>,
}

impl Plugin {
    /// Counts a request served from the caches (published on tick).
    fn hit(&self) {
        self.hits.set(self.hits.get() + 1);
    }

    /// Reads the clock and publishes the cache hits counted since the last tick.
    fn tick(&self) {
        if let Ok(now) = now_ms() {
            self.clock.tick(now / 1000);
        }
        self.counters.cache_hit.add(self.hits.replace(0));
    }

    /// The proof key: the one read before, or (`reread`, or none yet) the
    /// one in shared data now.
    fn proof_key(&self, reread: bool) -> Option<ProofKey> {
        match self.proof_key.get() {
            Some(key) if !reread => Some(key),
            known => {
                let key = agentward_envoy::proof::shared_key().or(known);
                self.proof_key.set(key);
                key
            }
        }
    }

    /// Remembers an exchange in this VM's cache, while the shared entry
    /// would be served too.
    fn remember(&self, key: TokenKey, entry: LocalExchange) {
        let margin = self
            .policy
            .vault
            .as_ref()
            .map_or(0, |v| v.expiry_margin_seconds);
        let until = entry.valid_until(margin);
        let authorization = bearer_value(&entry.token.access_token);
        let remembered = Remembered {
            exchange: entry,
            authorization,
        };
        self.local
            .borrow_mut()
            .insert(key, until, Rc::new(remembered));
    }
}

/// An exchange this VM remembers, with the `Authorization` value it sends.
struct Remembered {
    exchange: LocalExchange,
    authorization: String,
}

#[derive(Default)]
struct Root {
    plugin: Option<Rc<Plugin>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let Some(mut policy) = agentward_envoy::configured_policy() else {
            return false;
        };
        let Some(vault) = policy.vault.as_mut() else {
            log(
                LogLevel::Error,
                "agentward: invalid policy at `vault`: the token-exchange plugin needs the `vault` section",
            );
            return false;
        };
        // The VM's environment (Envoy: vm_config.environment_variables).
        if let Err(e) = vault.resolve_secret(|name| std::env::var(name).ok()) {
            log(LogLevel::Error, &format!("agentward: {e}"));
            return false;
        }
        let local = RefCell::new(TokenCache::new(policy.identity.cache_max_entries));
        let targets = policy.routes.iter().map(ExchangeTarget::of).collect();
        self.plugin = Some(Rc::new(Plugin {
            policy,
            targets,
            counters: Counters::define(),
            local,
            hits: Cell::new(0),
            clock: TickClock::new(TICK.as_secs()),
            proof_key: Cell::new(agentward_envoy::proof::shared_key()),
        }));
        if hostcall::set_tick_period(TICK).is_err() {
            log(
                LogLevel::Warn,
                "agentward: no tick period: the clock is read on every request",
            );
        }
        true
    }

    fn on_tick(&mut self) {
        if let Some(plugin) = &self.plugin {
            plugin.tick();
        }
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request {
            plugin: self.plugin.clone(),
            pending: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// An exchange under way for this request.
struct Pending {
    target: ExchangeTarget,
    cache_key: String,
    local_key: TokenKey,
    issuer: String,
    subject: String,
    proof: String,
}

struct Request {
    plugin: Option<Rc<Plugin>>,
    pending: Option<Pending>,
}

impl Request {
    fn count(&self, counter: fn(&Counters) -> Counter) {
        if let Some(p) = &self.plugin {
            counter(&p.counters).inc();
        }
    }
}

/// `Bearer <token>`.
fn bearer_value(token: &str) -> String {
    let mut value = String::with_capacity("Bearer ".len() + token.len());
    value.push_str("Bearer ");
    value.push_str(token);
    value
}

/// Puts the upstream token in `Authorization`; false (and a 503 sent) if the host refuses.
fn use_upstream_token(token: &str) -> bool {
    set_authorization(&bearer_value(token))
}

/// Sets `Authorization` to `value`; false (and a 503 sent) if the host refuses.
fn set_authorization(value: &str) -> bool {
    if hostcall::set_request_header("authorization", value).is_ok() {
        return true;
    }
    respond(&response::unavailable(
        "header_edit_failed",
        "the gateway could not set the upstream credentials",
    ));
    false
}

fn cached(key: &str, now: u64, margin: u64) -> Option<UpstreamToken> {
    // A host that cannot answer is a miss: the vault is asked instead.
    let (bytes, _) = hostcall::shared_data(key).ok()??;
    let token: UpstreamToken = serde_json::from_slice(&bytes).ok()?;
    token.usable(now, margin).then_some(token)
}

impl Context for Request {
    fn on_http_call_response(&mut self, _: u32, num_headers: usize, body_size: usize, _: usize) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let status = if num_headers == 0 {
            None
        } else {
            hostcall::http_call_response_header(":status")
                .ok()
                .flatten()
                .and_then(|s| s.parse().ok())
        };
        let Ok(now) = now_ms() else {
            self.count(|c| c.vault_unavailable);
            respond(&clock_unavailable());
            return;
        };
        let now = now / 1000;
        if body_size > MAX_ANSWER_BYTES {
            // Never read: an answer this big is not a token response.
            self.count(|c| c.vault_unavailable);
            log(
                LogLevel::Warn,
                &format!(
                    "agentward: vault answer for connection `{}` is {body_size} bytes, over the {MAX_ANSWER_BYTES}-byte limit",
                    pending.target.connection
                ),
            );
            respond(&agentward_core::exchange::unavailable(
                "the vault's answer was too large",
            ));
            return;
        }
        let body = hostcall::buffer(BufferType::HttpCallResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        match read_answer(status, &body, now, &pending.target.connection) {
            ExchangeResult::Token(mut token) => {
                self.count(|c| c.vault_ok);
                if let Some(vault) = self.plugin.as_ref().and_then(|p| p.policy.vault.as_ref()) {
                    token.cap_lifetime(now, vault);
                }
                if let Ok(json) = serde_json::to_vec(&token) {
                    // A lost race with another worker only costs a later exchange.
                    let _ = hostcall::set_shared_data(&pending.cache_key, &json, 0);
                }
                let accepted = use_upstream_token(&token.access_token);
                if let Some(plugin) = &self.plugin {
                    let entry = LocalExchange {
                        issuer: pending.issuer,
                        subject: pending.subject,
                        proof: pending.proof,
                        token,
                    };
                    plugin.remember(pending.local_key, entry);
                }
                if accepted && hostcall::resume_request().is_err() {
                    log(
                        LogLevel::Warn,
                        "agentward: could not resume the request after the exchange",
                    );
                }
            }
            ExchangeResult::Refuse(answer) => {
                self.count(if answer.status == 503 {
                    |c| c.vault_unavailable
                } else {
                    |c| c.refused
                });
                if answer.status >= 500 {
                    log(
                        LogLevel::Warn,
                        &format!(
                            "agentward: token exchange for connection `{}` failed: vault status {}",
                            pending.target.connection,
                            status.map_or("none".to_string(), |s: u32| s.to_string())
                        ),
                    );
                }
                respond(&answer);
            }
        }
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let Some(plugin) = self.plugin.clone() else {
            respond(&response::unavailable(
                "not_configured",
                "the token-exchange filter has no valid policy",
            ));
            return Action::Pause;
        };
        let headers = hostcall::request_headers().unwrap_or_default();
        let [method, path, authorization, subject, issuer, proof_header] =
            headers.get_many([":method", ":path", "authorization", SUB, ISSUER, PROOF]);
        let method = method.unwrap_or_default();
        let path = match agentward_core::path::normalize(path.unwrap_or_default()) {
            // Matching a path other than the one the upstream gets would let
            // `//broker/portfolio` skip the exchange: jwt-identity (or Envoy's
            // normalize_path and merge_slashes) puts it in normal form first.
            Ok(target) if target.was_normal() => target.path,
            Ok(_) => {
                respond(&response::invalid_request(
                    "invalid_path",
                    "the request path is not in normal form (jwt-identity must run before token-exchange)",
                ));
                return Action::Pause;
            }
            Err(why) => {
                respond(&response::invalid_request(
                    "invalid_path",
                    why.description(),
                ));
                return Action::Pause;
            }
        };
        let Some(target) = plugin
            .policy
            .route_index(method, &path)
            .and_then(|i| plugin.targets.get(i)?.as_ref())
        else {
            return Action::Continue;
        };
        let Some(vault) = plugin.policy.vault.as_ref() else {
            return Action::Continue;
        };
        // Only the identity jwt-identity verified is trusted: the one its
        // proof covers, for this very bearer token.
        let bearer = authorization.and_then(|a| {
            let (scheme, token) = a.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
        let (Some(subject_header), Some(bearer)) = (subject, bearer) else {
            self.count(|c| c.no_identity);
            respond(&response::missing_token(&plugin.policy.resource));
            return Action::Pause;
        };
        let refuse = |request: &Request, answer| {
            request.count(|c| c.no_identity);
            respond(&answer);
            Action::Pause
        };
        let use_cached = |token: &UpstreamToken| {
            plugin.hit();
            if use_upstream_token(&token.access_token) {
                Action::Continue
            } else {
                Action::Pause
            }
        };
        let margin = vault.expiry_margin_seconds;
        // A clock that cannot be read before the first tick gives 0: no
        // expiry can be checked, so the request fails closed.
        let now = plugin.clock.now(|| now_ms().map_or(0, |ms| ms / 1000));
        if now == 0 {
            respond(&clock_unavailable());
            return Action::Pause;
        }
        let mut cache = plugin.local.borrow_mut();
        let local_key = target.local_key(&cache, bearer);
        let local = cache.get(&local_key, now);
        drop(cache);
        let remembered = local.filter(|entry| {
            entry
                .exchange
                .for_identity(subject_header, issuer, proof_header)
                .is_some()
        });
        if let Some(entry) = remembered {
            plugin.hit();
            return if set_authorization(&entry.authorization) {
                Action::Continue
            } else {
                Action::Pause
            };
        }
        let Some(key) = plugin.proof_key(false) else {
            return refuse(self, proof::key_missing());
        };
        let header = |name: &str| headers.get(name);
        let proven = proven_identity(&key, header, proof_header, bearer).or_else(|| {
            // The key this VM read may have lost the race to be the one (see agentward_envoy::proof).
            let newer = plugin.proof_key(true).filter(|k| *k != key)?;
            proven_identity(&newer, header, proof_header, bearer)
        });
        let Some((issuer, subject)) = proven else {
            return refuse(self, proof::unproven(&plugin.policy.resource));
        };
        let proof = proof_header.unwrap_or_default().to_string();
        let cache_key = target.cache_key(&issuer, &subject);
        if let Some(token) = cached(&cache_key, now, margin) {
            let action = use_cached(&token);
            let entry = LocalExchange {
                issuer,
                subject,
                proof,
                token,
            };
            plugin.remember(local_key, entry);
            return action;
        }
        let callout = token_request(vault, target, bearer);
        let headers: Vec<(&str, &str)> = callout
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let timeout = Duration::from_millis(vault.timeout_ms);
        match hostcall::dispatch_http_call(
            &vault.cluster,
            &headers,
            Some(callout.body.as_bytes()),
            timeout,
        ) {
            Ok(_) => {
                self.count(|c| c.vault_call);
                self.pending = Some(Pending {
                    target: target.clone(),
                    cache_key,
                    local_key,
                    issuer,
                    subject,
                    proof,
                });
                Action::Pause
            }
            Err(status) => {
                self.count(|c| c.vault_unavailable);
                log(
                    LogLevel::Warn,
                    &format!(
                        "agentward: cannot call the vault cluster `{}`: {status:?}",
                        vault.cluster
                    ),
                );
                respond(&agentward_core::exchange::unavailable(
                    "the vault cluster is not reachable",
                ));
                Action::Pause
            }
        }
    }
}

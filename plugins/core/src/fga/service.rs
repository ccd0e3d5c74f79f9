//! The policy's top-level `fga` section: how scope-fga reaches an
//! OpenFGA-compatible API (the vault's, or an OpenFGA server), and who the
//! user and the agent are in its tuples.
//!
//! ```json
//! "fga": {
//!   "cluster": "vault", "authority": "vault.local",
//!   "store_id": "01JF…", "authorization_model_id": "01JF…",
//!   "preshared_key_env": "AGENTWARD_FGA_KEY",
//!   "timeout_ms": 1000, "batch_limit": 50, "cache_seconds": 10
//! }
//! ```

use super::tuple::check_template;
use crate::placeholder::{FieldRef, Root, Template};
use crate::policy::PolicyError;
use crate::secret::{is_env_name, Secret};
use serde::Deserialize;

/// How scope-fga reaches its FGA service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FgaService {
    /// The Envoy cluster of the FGA API.
    pub cluster: String,
    /// `:authority` of the calls (default: the cluster's name).
    #[serde(default)]
    pub authority: Option<String>,
    /// The OpenFGA store.
    pub store_id: String,
    /// The authorization model checks use (default: the store's latest).
    #[serde(default)]
    pub authorization_model_id: Option<String>,
    /// The preshared key, inline: for demos only (Envoy's admin
    /// `/config_dump` shows plugin configurations). After
    /// [`FgaService::resolve_key`], the key in use.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub preshared_key: Secret,
    /// The VM environment variable that holds the preshared key (sent as
    /// `Authorization: Bearer <key>`); at most one of this and
    /// `preshared_key`. Neither: calls carry no key.
    #[serde(default)]
    pub preshared_key_env: Option<String>,
    /// How long one call may take.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Most checks in one `batch-check` call (OpenFGA's default: 50).
    #[serde(default = "default_batch_limit")]
    pub batch_limit: usize,
    /// How long a decision is reused, in seconds (0: ask every time).
    #[serde(default = "default_cache_seconds")]
    pub cache_seconds: u64,
    /// How many decisions the cache holds (slots in shared data).
    #[serde(default = "default_cache_entries")]
    pub cache_entries: usize,
    /// The user in checks made for the user.
    #[serde(default = "default_user")]
    pub user: Template,
    /// The agent in checks made for the agent.
    #[serde(default = "default_agent")]
    pub agent: Template,
}

fn default_timeout_ms() -> u64 {
    1000
}
fn default_batch_limit() -> usize {
    50
}
fn default_cache_seconds() -> u64 {
    10
}
fn default_cache_entries() -> usize {
    10_000
}
fn default_user() -> Template {
    Template::prefixed(
        "user:",
        FieldRef {
            root: Root::Sub,
            path: Vec::new(),
        },
    )
}
fn default_agent() -> Template {
    Template::prefixed(
        "agent:",
        FieldRef {
            root: Root::Agent,
            path: Vec::new(),
        },
    )
}

/// Longest `timeout_ms` (a request waits for it).
pub const MAX_TIMEOUT_MS: u64 = 30_000;
/// Largest `batch_limit` (OpenFGA's configurable maximum is higher; 50 is
/// its default).
pub const MAX_BATCH_LIMIT: usize = 1000;
/// Longest `cache_seconds`: a revoked relationship stops granting after
/// at most this long.
pub const MAX_CACHE_SECONDS: u64 = 3600;

impl FgaService {
    /// The `:authority` of the calls.
    pub fn authority(&self) -> &str {
        self.authority.as_deref().unwrap_or(&self.cluster)
    }

    /// Checks what the types cannot; errors name fields under `fga`.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let error = |field: &str, message: &str| PolicyError {
            field: format!("fga.{field}"),
            message: message.to_string(),
        };
        if self.cluster.is_empty() {
            return Err(error("cluster", "must not be empty"));
        }
        if self.authority.as_deref() == Some("") {
            return Err(error("authority", "must not be empty"));
        }
        let id_ok =
            |s: &str| (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric());
        if !id_ok(&self.store_id) {
            return Err(error("store_id", "an OpenFGA store id (a ULID)"));
        }
        if let Some(model) = &self.authorization_model_id {
            if !id_ok(model) {
                return Err(error(
                    "authorization_model_id",
                    "an OpenFGA authorization model id (a ULID)",
                ));
            }
        }
        match (&self.preshared_key_env, self.preshared_key.is_empty()) {
            (Some(_), false) => {
                return Err(error(
                    "preshared_key_env",
                    "set at most one of `preshared_key` and `preshared_key_env`",
                ))
            }
            (Some(name), true) if !is_env_name(name) => {
                return Err(error(
                    "preshared_key_env",
                    "an environment variable name (letters, digits, `_`)",
                ))
            }
            _ => {}
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return Err(error("timeout_ms", "from 1 to 30000"));
        }
        if self.batch_limit == 0 || self.batch_limit > MAX_BATCH_LIMIT {
            return Err(error("batch_limit", "from 1 to 1000"));
        }
        if self.cache_seconds > MAX_CACHE_SECONDS {
            return Err(error("cache_seconds", "at most 3600"));
        }
        if self.cache_entries == 0 || self.cache_entries > 1_000_000 {
            return Err(error("cache_entries", "from 1 to 1000000"));
        }
        for (name, t) in [("user", &self.user), ("agent", &self.agent)] {
            check_template(t, true).map_err(|e| error(name, &e))?;
            if t.fields()
                .any(|f| !matches!(f.root, Root::Sub | Root::Issuer | Root::Agent))
            {
                return Err(error(
                    name,
                    "placeholders of the identity only (sub, agent)",
                ));
            }
        }
        Ok(())
    }

    /// Reads the key `preshared_key_env` names through `env` (the VM's
    /// environment) into `preshared_key`.
    pub fn resolve_key(
        &mut self,
        env: impl FnOnce(&str) -> Option<String>,
    ) -> Result<(), PolicyError> {
        let Some(name) = &self.preshared_key_env else {
            return Ok(());
        };
        match env(name).filter(|v| !v.is_empty()) {
            Some(value) => {
                self.preshared_key = Secret::new(value);
                Ok(())
            }
            None => Err(PolicyError {
                field: "fga.preshared_key_env".into(),
                message: format!(
                    "the VM environment has no `{name}` (Envoy: list it in \
                     vm_config.environment_variables.host_env_keys)"
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn service(v: serde_json::Value) -> Result<FgaService, PolicyError> {
        let s: FgaService = serde_json::from_value(v).map_err(|e| PolicyError {
            field: "fga".into(),
            message: e.to_string(),
        })?;
        s.validate()?;
        Ok(s)
    }

    #[test]
    fn a_minimal_section_gets_openfga_defaults() {
        let s =
            service(json!({"cluster": "vault", "store_id": "01JF0000000000000000000000"})).unwrap();
        assert_eq!(s.authority(), "vault");
        assert_eq!(
            (s.batch_limit, s.timeout_ms, s.cache_seconds),
            (50, 1000, 10)
        );
        assert!(s.preshared_key.is_empty());
        assert_eq!(s.user, Template::parse("user:{sub}").unwrap());
    }

    #[test]
    fn bad_sections_name_the_field() {
        let base = json!({"cluster": "vault", "store_id": "S1"});
        for (change, field) in [
            (json!({"cluster": ""}), "fga.cluster"),
            (json!({"store_id": "a/b"}), "fga.store_id"),
            (
                json!({"authorization_model_id": "x y"}),
                "fga.authorization_model_id",
            ),
            (
                json!({"preshared_key": "k", "preshared_key_env": "K"}),
                "fga.preshared_key_env",
            ),
            (json!({"preshared_key_env": "1K"}), "fga.preshared_key_env"),
            (json!({"timeout_ms": 0}), "fga.timeout_ms"),
            (json!({"batch_limit": 0}), "fga.batch_limit"),
            (json!({"cache_seconds": 7200}), "fga.cache_seconds"),
            (json!({"user": "{sub}"}), "fga.user"),
            (json!({"agent": "agent:{body.x}"}), "fga.agent"),
        ] {
            let mut v = base.clone();
            for (k, x) in change.as_object().unwrap() {
                v[k] = x.clone();
            }
            assert_eq!(service(v).unwrap_err().field, field, "{change}");
        }
    }

    #[test]
    fn the_key_comes_from_the_environment_and_is_never_shown() {
        let mut s =
            service(json!({"cluster": "c", "store_id": "S", "preshared_key_env": "K"})).unwrap();
        assert_eq!(
            s.clone().resolve_key(|_| None).unwrap_err().field,
            "fga.preshared_key_env"
        );
        s.resolve_key(|n| (n == "K").then(|| "sesame".to_string()))
            .unwrap();
        assert_eq!(s.preshared_key.expose(), "sesame");
        assert!(!format!("{s:?}").contains("sesame"));
    }
}

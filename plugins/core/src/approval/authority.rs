//! The policy's top-level `approval` section: how the gateway reaches the
//! CIBA authority (the vault, Auth0, Keycloak, npm `oidc-provider`: any
//! OpenID CIBA provider in poll mode). Endpoints, client authentication and
//! the `login_hint` format are configuration; nothing is vault-only except
//! the two parameters `agentward_params` turns off.

use super::handle::HandleKey;
use crate::policy::PolicyError;
use crate::secret::{is_env_name, Secret};
use serde::Deserialize;

/// How the gateway reaches the CIBA authority.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Authority {
    /// Envoy cluster of the authority.
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub cluster: String,
    /// `:authority` of the callouts (defaults to the cluster name).
    #[serde(default)]
    pub authority: Option<String>,
    /// The backchannel authentication endpoint's path.
    #[serde(default = "default_bc_authorize_path")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^/")))]
    pub bc_authorize_path: String,
    /// The token endpoint's path.
    #[serde(default = "default_token_path")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^/")))]
    pub token_path: String,
    /// The gateway's client id at the authority.
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub client_id: String,
    /// The client secret inline (demos only: Envoy's `/config_dump` shows it).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub client_secret: Secret,
    /// The VM environment variable holding the client secret; exactly one
    /// of this and `client_secret`.
    #[serde(default)]
    #[cfg_attr(
        feature = "schema",
        schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))
    )]
    pub client_secret_env: Option<String>,
    /// `client_secret_basic` (HTTP Basic) or `client_secret_post` (in the form).
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// How the user is named in `login_hint`: `sub`, or `iss_sub`
    /// (Auth0's `{"format":"iss_sub","iss":…,"sub":…}`).
    #[serde(default)]
    pub login_hint: LoginHintFormat,
    /// `scope` of the backchannel request; must contain `openid`.
    #[serde(default = "default_scope")]
    pub scope: String,
    /// `audience` of the approval token, when the authority takes one.
    #[serde(default)]
    pub audience: Option<String>,
    /// Long-poll: seconds the token endpoint may wait for the decision (the
    /// vault's `wait`; at most 60); 0 polls plainly every `interval`.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(max = 60)))]
    pub wait_seconds: u64,
    /// Send agentward's `request_digest` and `agent_id` (the vault shows
    /// the agent and copies both into the token); off for other providers.
    #[serde(default = "default_true")]
    pub agentward_params: bool,
    /// Header that carries the approval token to the upstream on approval
    /// (hold mode), so it can verify what was approved; none when absent.
    #[serde(default)]
    pub token_header: Option<String>,
    /// Callout timeout (a long-poll's is this plus `wait_seconds`).
    #[serde(default = "default_timeout_ms")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub timeout_ms: u64,
    /// The VM environment variable holding the key deferred approval ids
    /// are sealed with (base64url of 32 random bytes, the same on every
    /// replica); needed by `deferred` rules and MCP tools.
    #[serde(default)]
    #[cfg_attr(
        feature = "schema",
        schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))
    )]
    pub handle_key_env: Option<String>,
    /// Where a user sees and decides their pending approvals (shown to MCP
    /// clients as the URL elicitation's `url`); the authority's notification
    /// carries the link that decides, never this answer.
    #[serde(default)]
    pub approval_url: Option<String>,
    /// Most requests held per worker waiting for a decision; beyond, 503.
    #[serde(default = "default_max_held")]
    pub max_held_requests: usize,
}

/// Client authentication at the authority.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum ClientAuth {
    /// HTTP Basic with the form-url-encoded id and secret (RFC 6749 §2.3.1).
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form.
    ClientSecretPost,
}

/// How `login_hint` names the user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum LoginHintFormat {
    /// The plain `sub` (an authority with one issuer).
    #[default]
    Sub,
    /// `{"format":"iss_sub","iss":…,"sub":…}` (RFC 9493, as Auth0 takes it).
    IssSub,
}

fn default_bc_authorize_path() -> String {
    "/bc-authorize".into()
}
fn default_token_path() -> String {
    "/oauth/token".into()
}
fn default_scope() -> String {
    "openid".into()
}
fn default_true() -> bool {
    true
}
fn default_timeout_ms() -> u64 {
    5_000
}
fn default_max_held() -> usize {
    1_024
}

/// Longest long-poll the gateway asks for.
pub const MAX_WAIT_SECONDS: u64 = 60;

fn invalid(field: String, message: impl Into<String>) -> PolicyError {
    PolicyError {
        field,
        message: message.into(),
    }
}

/// Whether `name` is a lower-case HTTP header name the gateway may set.
pub(crate) fn is_settable_header(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.!#$%&'*+^`|~".contains(&b)
        })
        && !matches!(
            name,
            "authorization" | "host" | "content-length" | "transfer-encoding" | "connection" | "te"
        )
}

impl Authority {
    /// `:authority` of the callouts.
    pub fn host(&self) -> &str {
        self.authority.as_deref().unwrap_or(&self.cluster)
    }

    /// Checks the section; `at` is its field path (`approval`).
    pub fn validate(&self, at: &str) -> Result<(), PolicyError> {
        let f = |name: &str| format!("{at}.{name}");
        if self.cluster.is_empty() {
            return Err(invalid(f("cluster"), "must not be empty"));
        }
        for (name, path) in [
            ("bc_authorize_path", &self.bc_authorize_path),
            ("token_path", &self.token_path),
        ] {
            if !path.starts_with('/') || path.chars().any(|c| c.is_ascii_whitespace() || c == '#') {
                return Err(invalid(f(name), "a path starting with `/`"));
            }
        }
        if self.client_id.is_empty() {
            return Err(invalid(f("client_id"), "must not be empty"));
        }
        match (&self.client_secret_env, self.client_secret.is_empty()) {
            (None, true) => {
                return Err(invalid(
                    f("client_secret_env"),
                    "set `client_secret_env` (or `client_secret` for a demo)",
                ))
            }
            (Some(_), false) => {
                return Err(invalid(
                    f("client_secret_env"),
                    "set exactly one of `client_secret` and `client_secret_env`",
                ))
            }
            (Some(name), true) if !is_env_name(name) => {
                return Err(invalid(
                    f("client_secret_env"),
                    "an environment variable name (letters, digits, `_`)",
                ))
            }
            _ => {}
        }
        if !self.scope.split(' ').any(|s| s == "openid")
            || self
                .scope
                .split(' ')
                .any(|s| !crate::scopes::is_scope_token(s))
        {
            return Err(invalid(
                f("scope"),
                "space-separated scope tokens that include `openid` (CIBA requires it)",
            ));
        }
        if self.wait_seconds > MAX_WAIT_SECONDS {
            return Err(invalid(
                f("wait_seconds"),
                format!("at most {MAX_WAIT_SECONDS} (and below the authority's own bound)"),
            ));
        }
        if let Some(header) = &self.token_header {
            if !is_settable_header(header) {
                return Err(invalid(
                    f("token_header"),
                    "a lower-case header name other than authorization, host and framing headers",
                ));
            }
        }
        if self.timeout_ms == 0 {
            return Err(invalid(f("timeout_ms"), "must be positive"));
        }
        if let Some(name) = &self.handle_key_env {
            if !is_env_name(name) {
                return Err(invalid(
                    f("handle_key_env"),
                    "an environment variable name (letters, digits, `_`)",
                ));
            }
        }
        if let Some(url) = &self.approval_url {
            let ok = url.starts_with("https://") || url.starts_with("http://");
            if !ok
                || url
                    .chars()
                    .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
            {
                return Err(invalid(f("approval_url"), "an absolute http(s) URL"));
            }
        }
        Ok(())
    }

    /// Reads the secret `client_secret_env` names through `env` (the VM's
    /// environment) into `client_secret`; an inline secret stays.
    pub fn resolve_secret(
        &mut self,
        at: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(), PolicyError> {
        let Some(name) = &self.client_secret_env else {
            return Ok(());
        };
        match env(name).filter(|v| !v.is_empty()) {
            Some(value) => {
                self.client_secret = Secret::new(value);
                Ok(())
            }
            None => Err(missing_env(format!("{at}.client_secret_env"), name)),
        }
    }

    /// The handle key `handle_key_env` names, read through `env`; `None`
    /// when no variable is configured (then only hold mode works).
    pub fn handle_key(
        &self,
        at: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<HandleKey>, PolicyError> {
        let Some(name) = &self.handle_key_env else {
            return Ok(None);
        };
        let field = format!("{at}.handle_key_env");
        let value = env(name).ok_or_else(|| missing_env(field.clone(), name))?;
        HandleKey::from_base64(&value).map(Some).ok_or_else(|| {
            invalid(
                field,
                format!("`{name}` must hold base64url of 32 random bytes"),
            )
        })
    }
}

fn missing_env(field: String, name: &str) -> PolicyError {
    invalid(
        field,
        format!(
            "the VM environment has no `{name}` (Envoy: list it in \
             vm_config.environment_variables.host_env_keys)"
        ),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn authority(extra: serde_json::Value) -> Result<Authority, PolicyError> {
        let mut doc =
            json!({"cluster": "vault", "client_id": "gateway", "client_secret": "s3cret"});
        if let (Some(doc), Some(extra)) = (doc.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                doc.insert(k.clone(), v.clone());
            }
        }
        let a: Authority = serde_json::from_value(doc).map_err(|e| PolicyError {
            field: "approval".into(),
            message: e.to_string(),
        })?;
        a.validate("approval")?;
        Ok(a)
    }

    #[test]
    fn defaults_fit_the_vault() {
        let a = authority(json!({})).unwrap();
        assert_eq!(a.bc_authorize_path, "/bc-authorize");
        assert_eq!(a.token_path, "/oauth/token");
        assert_eq!(a.scope, "openid");
        assert_eq!(a.client_auth, ClientAuth::ClientSecretBasic);
        assert_eq!(a.login_hint, LoginHintFormat::Sub);
        assert_eq!(a.host(), "vault");
        assert!(a.agentward_params);
        assert!(!format!("{a:?}").contains("s3cret"));
    }

    #[test]
    fn every_error_names_its_field() {
        for (extra, field) in [
            (json!({"cluster": ""}), "approval.cluster"),
            (
                json!({"bc_authorize_path": "bc"}),
                "approval.bc_authorize_path",
            ),
            (json!({"token_path": "/a b"}), "approval.token_path"),
            (json!({"client_id": ""}), "approval.client_id"),
            (
                json!({"client_secret_env": "X"}),
                "approval.client_secret_env",
            ),
            (
                json!({"client_secret": "", "client_secret_env": "1X"}),
                "approval.client_secret_env",
            ),
            (json!({"client_secret": ""}), "approval.client_secret_env"),
            (json!({"scope": "trade"}), "approval.scope"),
            (json!({"scope": "openid a\"b"}), "approval.scope"),
            (json!({"wait_seconds": 61}), "approval.wait_seconds"),
            (
                json!({"token_header": "Authorization"}),
                "approval.token_header",
            ),
            (
                json!({"token_header": "authorization"}),
                "approval.token_header",
            ),
            (json!({"timeout_ms": 0}), "approval.timeout_ms"),
            (json!({"handle_key_env": "A-B"}), "approval.handle_key_env"),
            (
                json!({"approval_url": "vault/approve"}),
                "approval.approval_url",
            ),
        ] {
            let e = authority(extra.clone()).unwrap_err();
            assert_eq!(e.field, field, "{extra}: {e}");
        }
        let e = authority(json!({"client_auth": "private_key_jwt"})).unwrap_err();
        assert!(e.message.contains("unknown variant"), "{e}");
        let e = authority(json!({"login_hint": "email"})).unwrap_err();
        assert!(e.message.contains("unknown variant"), "{e}");
    }

    #[test]
    fn secrets_and_keys_come_from_the_environment() {
        let mut a = authority(
            json!({"client_secret": "", "client_secret_env": "CIBA_SECRET",
                                     "handle_key_env": "CIBA_KEY"}),
        )
        .unwrap();
        let key =
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, [7u8; 32]);
        let env = |name: &str| match name {
            "CIBA_SECRET" => Some("from-env".to_string()),
            "CIBA_KEY" => Some(key.clone()),
            _ => None,
        };
        a.resolve_secret("approval", env).unwrap();
        assert_eq!(a.client_secret.expose(), "from-env");
        assert_eq!(
            a.handle_key("approval", env).unwrap(),
            HandleKey::from_bytes(&[7; 32])
        );
        let e = a
            .handle_key("approval", |_| Some("short".into()))
            .unwrap_err();
        assert_eq!(e.field, "approval.handle_key_env");
        let e = a.handle_key("approval", |_| None).unwrap_err();
        assert!(e.message.contains("CIBA_KEY"), "{e}");
        let e = a.clone().resolve_secret("approval", |_| None).unwrap_err();
        assert!(e.message.contains("CIBA_SECRET"), "{e}");
        let plain = authority(json!({})).unwrap();
        assert_eq!(plain.handle_key("approval", |_| None), Ok(None));
    }
}

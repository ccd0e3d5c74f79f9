//! Secrets in the policy (the vault client secret): kept out of `Debug`
//! output and logs, and readable from the VM's environment instead of the
//! plugin configuration, which Envoy shows in its admin `/config_dump`.

use crate::policy::{PolicyError, VaultClient};
use serde::{Deserialize, Deserializer};
use std::fmt;

/// A secret value. `Debug` prints `[redacted]`; only [`Secret::expose`]
/// gives the value, where it is sent.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The value itself, owned.
    pub fn into_exposed(self) -> String {
        self.0
    }

    /// Whether no value is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_string())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// Whether `name` can name an environment variable: letters, digits and
/// `_`, not starting with a digit.
pub fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl VaultClient {
    /// Exactly one of `client_secret` and `client_secret_env` is set, and
    /// the variable's name is one.
    pub(crate) fn check_secret(&self) -> Result<(), PolicyError> {
        let error = |field: &str, message: &str| PolicyError {
            field: field.to_string(),
            message: message.to_string(),
        };
        match (&self.client_secret_env, self.client_secret.is_empty()) {
            (None, true) => Err(error(
                "vault.client_secret_env",
                "set `client_secret_env` (or `client_secret` for a demo)",
            )),
            (Some(_), false) => Err(error(
                "vault.client_secret_env",
                "set exactly one of `client_secret` and `client_secret_env`",
            )),
            (Some(name), true) if !is_env_name(name) => Err(error(
                "vault.client_secret_env",
                "an environment variable name (letters, digits, `_`)",
            )),
            _ => Ok(()),
        }
    }

    /// Reads the secret `client_secret_env` names through `env` (the VM's
    /// environment) into `client_secret`; an inline secret stays.
    pub fn resolve_secret(
        &mut self,
        env: impl FnOnce(&str) -> Option<String>,
    ) -> Result<(), PolicyError> {
        let Some(name) = &self.client_secret_env else {
            return Ok(());
        };
        match env(name).filter(|value| !value.is_empty()) {
            Some(value) => {
                self.client_secret = Secret(value);
                Ok(())
            }
            None => Err(PolicyError {
                field: "vault.client_secret_env".to_string(),
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
    use crate::Policy;

    fn policy(vault: &str) -> Result<Policy, PolicyError> {
        let doc = format!(
            r#"{{"resource": "https://api.example.com",
                "issuers": [{{"issuer": "https://idp.example.com/", "audiences": ["a"],
                             "jwks_uri": "https://idp.example.com/jwks", "jwks_cluster": "idp"}}],
                "vault": {{"cluster": "vault", "client_id": "gateway", {vault}}}}}"#
        );
        Policy::parse(doc.as_bytes())
    }

    #[test]
    fn a_policy_formatted_with_debug_shows_no_secret() {
        let policy = policy(r#""client_secret": "hunter2""#).unwrap();
        let text = format!("{policy:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("[redacted]"), "{text}");
    }

    #[test]
    fn exactly_one_secret_source() {
        for vault in [
            "\"timeout_ms\": 100",
            r#""client_secret": "s", "client_secret_env": "S""#,
            r#""client_secret_env": "NOT-A-NAME""#,
        ] {
            let e = policy(vault).unwrap_err();
            assert_eq!(e.field, "vault.client_secret_env", "{vault}: {e}");
        }
        assert!(policy(r#""client_secret_env": "S""#).is_ok());
    }

    #[test]
    fn the_secret_is_read_from_the_named_variable() {
        let mut policy = policy(r#""client_secret_env": "VAULT_SECRET""#).unwrap();
        let vault = policy.vault.as_mut().unwrap();
        let e = vault.clone().resolve_secret(|_| None).unwrap_err();
        assert!(e.message.contains("VAULT_SECRET"), "{e}");
        vault
            .resolve_secret(|name| (name == "VAULT_SECRET").then(|| "from-env".to_string()))
            .unwrap();
        assert_eq!(vault.client_secret.expose(), "from-env");
        assert!(!format!("{vault:?}").contains("from-env"));
    }

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Secret::from("hunter2");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some([redacted])");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn env_names() {
        assert!(is_env_name("AGENTWARD_VAULT_CLIENT_SECRET"));
        assert!(is_env_name("_x1"));
        assert!(!is_env_name(""));
        assert!(!is_env_name("1X"));
        assert!(!is_env_name("A-B"));
        assert!(!is_env_name("A B"));
    }
}

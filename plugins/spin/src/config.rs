//! What a component reads from its Spin variables. Spin variable names are
//! lower-case letters, digits and underscores:
//!
//! | variable | meaning |
//! |---|---|
//! | `policy` | the policy document (JSON), the one the Envoy plugins take |
//! | `next` | the next hop's origin: `http://scope-fga.spin.internal`, or the upstream's |
//! | `proof_key` | 32 hex digits: the key of jwt-identity's identity proof, the same for every component of the app (Envoy keeps it in shared data) |
//! | `cluster_<name>` | the origin a policy's cluster (`jwks_cluster`, `vault.cluster`) stands for, e.g. `cluster_vault = http://127.0.0.1:8200`; without it, `https://` and the call's authority |
//! | any other | what the policy reads from the environment (`vault.client_secret_env`), lower-cased |

use agentward_core::proof::ProofKey;

/// The header in which jwt-identity hands the identity proof's binding
/// (`agentward_core::proof::BINDING`) to the components after it: Envoy's
/// filter state has no wasi:http counterpart. Only the app's own
/// components see it: jwt-identity strips every inbound `x-agentward-*`
/// header, the others are private (reachable only through Spin's local
/// service chaining), and it never goes to the upstream.
pub const BINDING_HEADER: &str = "x-agentward-binding";

/// Whether an origin is a component of this app (`*.spin.internal`).
pub fn is_internal(origin: &str) -> bool {
    let authority = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    let host = authority.split(['/', ':']).next().unwrap_or_default();
    host.to_ascii_lowercase().ends_with(".spin.internal")
}
use agentward_core::response::{self, LocalResponse};
use agentward_core::Policy;

/// A variable's value; `None` when the app does not define it (or the host
/// refuses).
pub fn variable(name: &str) -> Option<String> {
    spin_sdk::variables::get(name).ok()
}

/// The environment as a policy reads it (`client_secret_env`): the variable
/// of that name in lower case.
pub fn env(name: &str) -> Option<String> {
    variable(&name.to_ascii_lowercase())
}

/// The policy from the `policy` variable, or the 503 to answer when it is
/// missing or invalid (logged, naming the field).
pub fn policy() -> Result<Policy, LocalResponse> {
    let refused = |message: String| {
        crate::log(&format!("agentward: {message}"));
        response::unavailable("not_configured", "the gateway has no valid policy")
    };
    let Some(json) = variable("policy") else {
        return Err(refused("the `policy` variable is not set".into()));
    };
    match Policy::parse(json.as_bytes()) {
        Ok(policy) => Ok(policy),
        Err(e) => Err(refused(e.to_string())),
    }
}

/// The identity proof's key from the `proof_key` variable (32 hex digits);
/// `None` when it is missing or malformed (logged).
pub fn proof_key() -> Option<ProofKey> {
    let hex = variable("proof_key")?;
    let key = parse_hex(hex.trim()).and_then(|bytes| ProofKey::from_bytes(&bytes));
    if key.is_none() {
        crate::log("agentward: the `proof_key` variable is not 32 hex digits");
    }
    key
}

fn parse_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The origin (`scheme://authority`) calls to a policy's cluster go to.
pub fn cluster_origin(cluster: &str, authority: &str) -> String {
    let name: String = cluster
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '_',
        })
        .collect();
    variable(&format!("cluster_{name}"))
        .map(|origin| origin.trim_end_matches('/').to_string())
        .unwrap_or_else(|| format!("https://{authority}"))
}

/// Milliseconds since the Unix epoch (`wasi:clocks/wall-clock`).
pub fn now_ms() -> Option<u64> {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    u64::try_from(since.as_millis()).ok().filter(|ms| *ms > 0)
}

#[cfg(test)]
mod tests {
    use super::parse_hex;

    #[test]
    fn only_spin_internal_hosts_are_components() {
        use super::is_internal;
        assert!(is_internal("http://scope-fga.spin.internal"));
        assert!(is_internal("http://ciba-hold.SPIN.internal:80/"));
        assert!(!is_internal("http://127.0.0.1:8080"));
        assert!(!is_internal("http://spin.internal.example.com"));
    }

    #[test]
    fn hex_is_read_in_pairs_and_refused_when_odd_or_not_hex() {
        assert_eq!(parse_hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(parse_hex("0ff"), None);
        assert_eq!(parse_hex("zz"), None);
    }
}

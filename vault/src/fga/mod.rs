//! An OpenFGA-compatible authorization engine: the part of OpenFGA's HTTP
//! API that the gateway's `scope-fga` plugin, the OpenFGA SDKs and the `fga`
//! CLI use (stores, authorization models, tuples, check, batch-check,
//! list-objects), schema 1.1 semantics, stored in the vault's database.
//! It is on only when preshared keys are configured.

pub mod api;
pub mod cache;
pub mod check;
pub mod errors;
pub mod model;
pub mod reverse;
pub mod store;

use crate::secret::Secret;
use cache::TupleCache;
use model::{AuthorizationModel, Model};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The environment variable with the API's preshared keys (comma-separated),
/// as OpenFGA's `OPENFGA_AUTHN_PRESHARED_KEYS`.
pub const KEYS_ENV: &str = "AGENTWARD_VAULT_FGA_PRESHARED_KEYS";

/// The `[fga]` section of the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FgaConfig {
    /// Bearer keys that may call the FGA API; none: the API is off.
    /// [`KEYS_ENV`] replaces them.
    #[serde(default)]
    pub preshared_keys: Vec<Secret>,
    /// Tuples the check cache keeps in memory at most (default
    /// [`cache::DEFAULT_CACHED_TUPLES`]); 0 turns it off.
    #[serde(default = "default_cached_tuples")]
    pub cached_tuples: usize,
}

fn default_cached_tuples() -> usize {
    cache::DEFAULT_CACHED_TUPLES
}

impl Default for FgaConfig {
    fn default() -> FgaConfig {
        FgaConfig {
            preshared_keys: Vec::new(),
            cached_tuples: cache::DEFAULT_CACHED_TUPLES,
        }
    }
}

impl FgaConfig {
    /// Takes the keys from [`KEYS_ENV`] when it is set.
    pub fn resolve_keys(&mut self, env: impl Fn(&str) -> Option<String>) {
        if let Some(list) = env(KEYS_ENV) {
            self.preshared_keys = list
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(Secret::new)
                .collect();
        }
        self.preshared_keys.retain(|k| !k.is_empty());
    }
}

/// How many parsed models are kept in memory.
const MODEL_CACHE: usize = 256;

/// The engine's state: the keys' digests, parsed models and the tuple cache.
pub struct Fga {
    key_digests: Vec<[u8; 32]>,
    models: Mutex<HashMap<(String, String), Arc<Model>>>,
    last_id: Mutex<(u64, u128)>,
    /// Stored tuples in memory (see [`cache`]).
    pub tuples: TupleCache,
}

impl std::fmt::Debug for Fga {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fga")
            .field("keys", &self.key_digests.len())
            .finish_non_exhaustive()
    }
}

impl Fga {
    /// From the configuration.
    pub fn new(config: &FgaConfig) -> Fga {
        Fga {
            key_digests: config
                .preshared_keys
                .iter()
                .map(|k| Sha256::digest(k.expose().as_bytes()).into())
                .collect(),
            models: Mutex::default(),
            last_id: Mutex::default(),
            tuples: TupleCache::new(config.cached_tuples),
        }
    }

    /// Whether the API is on (some key is configured).
    pub fn enabled(&self) -> bool {
        !self.key_digests.is_empty()
    }

    /// Whether `key` is one of the preshared keys; compares digests in
    /// constant time and looks at every key.
    pub fn key_ok(&self, key: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = 0u8;
        for known in &self.key_digests {
            let diff = known
                .iter()
                .zip(digest.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            found |= u8::from(diff == 0);
        }
        found == 1
    }

    /// A new ULID (monotonic within this process).
    pub fn new_id(&self) -> String {
        let now = u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0),
        )
        .unwrap_or(0);
        let mut random = [0u8; 10];
        if getrandom::getrandom(&mut random).is_err() {
            random = [0; 10];
        }
        let mut rand = random
            .iter()
            .fold(0u128, |acc, b| (acc << 8) | u128::from(*b));
        if let Ok(mut last) = self.last_id.lock() {
            if now <= last.0 {
                rand = (last.1 + 1) & ((1u128 << 80) - 1);
                *last = (last.0, rand);
                return ulid(last.0, rand);
            }
            *last = (now, rand);
        }
        ulid(now, rand)
    }

    /// The parsed model `id` of `store_id` from the cache.
    fn cached(&self, store_id: &str, id: &str) -> Option<Arc<Model>> {
        self.models
            .lock()
            .ok()?
            .get(&(store_id.to_string(), id.to_string()))
            .cloned()
    }

    fn remember(&self, store_id: &str, model: Arc<Model>) {
        if let Ok(mut cache) = self.models.lock() {
            if cache.len() >= MODEL_CACHE {
                cache.clear();
            }
            cache.insert((store_id.to_string(), model.id.clone()), model);
        }
    }

    /// Forgets a deleted store's models.
    fn forget_store(&self, store_id: &str) {
        if let Ok(mut cache) = self.models.lock() {
            cache.retain(|(s, _), _| s != store_id);
        }
        self.tuples.forget_store(store_id);
    }

    /// Parses a stored model (validated when written).
    fn parse_stored(json: &str) -> Result<Model, errors::FgaError> {
        let model: AuthorizationModel =
            serde_json::from_str(json).map_err(errors::FgaError::internal)?;
        Model::build(&model)
    }
}

/// Crockford's base32, as ULIDs use.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A ULID: 48 bits of milliseconds, 80 random bits, 26 characters.
fn ulid(ms: u64, rand: u128) -> String {
    let value: u128 = (u128::from(ms & ((1 << 48) - 1)) << 80) | (rand & ((1u128 << 80) - 1));
    (0..26)
        .rev()
        .map(|i| CROCKFORD[((value >> (i * 5)) & 31) as usize] as char)
        .collect()
}

/// Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// RFC 3339 (UTC, milliseconds) of Unix milliseconds.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulids_are_26_crockford_characters_and_increase() {
        let fga = Fga::new(&FgaConfig::default());
        let a = fga.new_id();
        let b = fga.new_id();
        assert_eq!(a.len(), 26);
        assert!(a.chars().all(|c| CROCKFORD.contains(&(c as u8))), "{a}");
        assert!(b > a, "{a} {b}");
    }

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_709_251_199_123), "2024-02-29T23:59:59.123Z");
    }

    #[test]
    fn only_configured_keys_pass() {
        let mut config = FgaConfig::default();
        config.resolve_keys(|_| Some("one, two ,,".into()));
        let fga = Fga::new(&config);
        assert!(fga.enabled());
        assert!(fga.key_ok("one") && fga.key_ok("two"));
        assert!(!fga.key_ok("three") && !fga.key_ok("") && !fga.key_ok("one "));
        assert!(!Fga::new(&FgaConfig::default()).enabled());
        assert!(!format!("{fga:?}").contains("one"));
    }
}

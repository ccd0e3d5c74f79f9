//! Envoy's `verify_signature` foreign function: BoringSSL at native speed.

use agentward_core::jwks::Jwk;
use agentward_core::policy::Algorithm;
use agentward_core::signature::{foreign_arguments, foreign_result, SignatureCheck};
use proxy_wasm::types::Status;
use std::cell::Cell;

/// Verifies through the host when it offers `verify_signature`; declines
/// (so core falls back to pure Rust) for algorithms it cannot take or when
/// the host lacks the function.
#[derive(Default)]
pub struct EnvoyVerifier {
    missing: Cell<bool>,
    used_foreign: Cell<bool>,
}

impl EnvoyVerifier {
    /// Whether the last verification went through the host (false: pure Rust).
    pub fn used_foreign(&self) -> bool {
        self.used_foreign.get()
    }
}

impl SignatureCheck for EnvoyVerifier {
    fn check(&self, alg: Algorithm, key: &Jwk, text: &[u8], signature: &[u8]) -> Option<bool> {
        self.used_foreign.set(false);
        if self.missing.get() {
            return None;
        }
        let args = foreign_arguments(alg, key, text, signature)?;
        match crate::hostcall::call_foreign_function("verify_signature", &args) {
            Ok(result) => {
                self.used_foreign.set(true);
                Some(result.is_some_and(|r| foreign_result(&r)))
            }
            Err(Status::NotFound) => {
                self.missing.set(true);
                None
            }
            Err(_) => None,
        }
    }
}

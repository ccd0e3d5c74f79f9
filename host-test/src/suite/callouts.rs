//! The plugins' dependencies, answered from the case
//! ([`agentward_core::scenario`]): the issuer's JWKS, OpenFGA checks, the
//! CIBA authority and the vault's token exchange. No server is needed.

use super::file::Case;
use crate::Host;
use agentward_core::scenario::Scenario;
use serde_json::Value;
use std::collections::HashSet;

const JSON: [(&str, &str); 1] = [("content-type", "application/json")];

/// Answers a case's callouts; its [`Scenario`] records them.
pub struct Responder {
    /// What the case answers, and the callouts made.
    pub scenario: Scenario,
}

impl Responder {
    /// A responder for `case`.
    pub fn new(case: &Case, jwks_clusters: HashSet<String>, jwks: Value) -> Responder {
        let scenario = Scenario::new(
            &case.fga,
            case.approval,
            case.exchange.clone(),
            jwks_clusters,
            jwks,
        );
        Responder { scenario }
    }

    /// Answers every pending callout of `host`; whether there was any.
    pub fn answer_pending(&mut self, host: &Host) -> bool {
        let pending = host.pending_http_calls();
        for call in &pending {
            let method = call.header(":method").unwrap_or("GET");
            let path = call.header(":path").unwrap_or("/");
            let answered = match self
                .scenario
                .answer(&call.cluster, method, path, &call.body)
            {
                Some((status, body)) => {
                    host.answer_http_call(call.token, status, &JSON, body.as_bytes())
                }
                None => host.fail_http_call(call.token),
            };
            if let Err(e) = answered {
                let at = self.scenario.callouts.len();
                self.scenario.unanswered.push(format!("{at}: {e}"));
            }
        }
        !pending.is_empty()
    }
}

//! Prometheus counters, rendered in the text exposition format by
//! `GET /metrics`. Hand-rolled: a handful of labelled counters do not need a
//! metrics framework.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

type Counters = Mutex<BTreeMap<&'static str, u64>>;

/// The vault's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    exchanges: Counters,
    refreshes: Counters,
    links: Counters,
    ciba: Counters,
    audit_dropped: AtomicU64,
    audit_purged: AtomicU64,
}

fn bump(map: &Counters, key: &'static str) {
    let mut map = map.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    *map.entry(key).or_insert(0) += 1;
}

impl Metrics {
    /// Counts a token exchange by outcome (`issued_cached`, `not_linked`, …).
    pub fn exchange(&self, outcome: &'static str) {
        bump(&self.exchanges, outcome);
    }

    /// Counts an upstream refresh by result (`ok`, `refused`, `unavailable`, `error`).
    pub fn refresh(&self, result: &'static str) {
        bump(&self.refreshes, result);
    }

    /// Counts a link event (`linked`, `unlinked`, `broken`, `failed`).
    pub fn link(&self, event: &'static str) {
        bump(&self.links, event);
    }

    /// Counts a CIBA event (`requested`, `approved`, `denied`,
    /// `token_issued`, `authorization_pending`, `slow_down`, …).
    pub fn ciba(&self, event: &'static str) {
        bump(&self.ciba, event);
    }

    /// Counts an audit row dropped because the audit queue was full.
    pub fn audit_dropped(&self) {
        self.audit_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts audit rows deleted by retention.
    pub fn audit_purged(&self, rows: u64) {
        self.audit_purged.fetch_add(rows, Ordering::Relaxed);
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let sections: [(&str, &str, &str, &Counters); 4] = [
            (
                "agentward_vault_exchanges_total",
                "Token exchanges by outcome.",
                "outcome",
                &self.exchanges,
            ),
            (
                "agentward_vault_refreshes_total",
                "Upstream refresh-token grants by result.",
                "result",
                &self.refreshes,
            ),
            (
                "agentward_vault_links_total",
                "Account-link events.",
                "event",
                &self.links,
            ),
            (
                "agentward_vault_ciba_total",
                "CIBA requests, decisions, polls and notifications by event.",
                "event",
                &self.ciba,
            ),
        ];
        for (name, help, label, map) in sections {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let map = map.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            for (value, count) in map.iter() {
                let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {count}");
            }
        }
        let plain = [
            (
                "agentward_vault_audit_dropped_total",
                "Audit rows dropped because the audit queue was full.",
                &self.audit_dropped,
            ),
            (
                "agentward_vault_audit_purged_total",
                "Audit rows deleted by retention (audit_retention_days).",
                &self.audit_purged,
            ),
        ];
        for (name, help, counter) in plain {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", counter.load(Ordering::Relaxed));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_in_text_format() {
        let m = Metrics::default();
        m.exchange("issued_cached");
        m.exchange("issued_cached");
        m.refresh("ok");
        let text = m.render();
        assert!(text.contains("# TYPE agentward_vault_exchanges_total counter"));
        assert!(text.contains("agentward_vault_exchanges_total{outcome=\"issued_cached\"} 2"));
        assert!(text.contains("agentward_vault_refreshes_total{result=\"ok\"} 1"));
        assert!(text.contains("# TYPE agentward_vault_links_total counter"));
        assert!(text.contains("agentward_vault_audit_dropped_total 0"));
        m.audit_dropped();
        assert!(m.render().contains("agentward_vault_audit_dropped_total 1"));
        assert!(text.contains("agentward_vault_audit_purged_total 0"));
        m.audit_purged(7);
        assert!(m.render().contains("agentward_vault_audit_purged_total 7"));
    }
}

//! Envoy stats through proxy-wasm metrics (shown under `wasmcustom.`).

use proxy_wasm::types::MetricType;
use std::collections::HashMap;

/// Counters by name, defined once per VM.
#[derive(Default)]
pub struct Metrics {
    ids: HashMap<String, u32>,
}

/// One counter, defined up front: adding to it is one host call, with no
/// lookup by name.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counter(Option<u32>);

impl Counter {
    /// Defines (or finds) counter `name`; one the host refuses counts nothing.
    pub fn define(name: &str) -> Counter {
        Counter(proxy_wasm::hostcalls::define_metric(MetricType::Counter, name).ok())
    }

    /// Adds one.
    pub fn inc(self) {
        if let Some(id) = self.0 {
            let _ = proxy_wasm::hostcalls::increment_metric(id, 1);
        }
    }
}

impl Metrics {
    /// Defines counters up front so they show (as 0) before first use.
    pub fn define(&mut self, names: &[&str]) {
        for name in names {
            self.id(name);
        }
    }

    fn id(&mut self, name: &str) -> Option<u32> {
        if let Some(id) = self.ids.get(name) {
            return Some(*id);
        }
        let id = proxy_wasm::hostcalls::define_metric(MetricType::Counter, name).ok()?;
        self.ids.insert(name.to_string(), id);
        Some(id)
    }

    /// Adds one to a counter.
    pub fn inc(&mut self, name: &str) {
        if let Some(id) = self.id(name) {
            let _ = proxy_wasm::hostcalls::increment_metric(id, 1);
        }
    }
}

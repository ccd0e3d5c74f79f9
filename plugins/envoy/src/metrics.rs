//! Envoy stats through proxy-wasm metrics (shown under `wasmcustom.`).

use proxy_wasm::types::MetricType;
use std::collections::HashMap;

/// Counters by name, defined once per VM.
#[derive(Default)]
pub struct Metrics {
    counters: HashMap<String, Counter>,
}

/// One counter, defined up front: adding to it is one host call, with no
/// lookup by name.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counter(Option<u32>);

impl Counter {
    /// Defines (or finds) counter `name`; one the host refuses counts nothing.
    pub fn define(name: &str) -> Counter {
        Counter(crate::hostcall::define_metric(MetricType::Counter, name).ok())
    }

    /// Adds one.
    pub fn inc(self) {
        self.add(1);
    }

    /// Adds `n` (nothing when `n` is 0).
    pub fn add(self, n: u64) {
        if let (Some(id), Ok(n @ 1..)) = (self.0, i64::try_from(n)) {
            let _ = crate::hostcall::increment_metric(id, n);
        }
    }
}

impl Metrics {
    /// Defines counters up front so they show (as 0) before first use.
    pub fn define(&mut self, names: &[&str]) {
        for name in names {
            self.counter(name);
        }
    }

    fn counter(&mut self, name: &str) -> Counter {
        if let Some(counter) = self.counters.get(name) {
            return *counter;
        }
        let counter = Counter::define(name);
        if counter.0.is_some() {
            self.counters.insert(name.to_string(), counter);
        }
        counter
    }

    /// Adds one to a counter.
    pub fn inc(&mut self, name: &str) {
        self.counter(name).inc();
    }
}

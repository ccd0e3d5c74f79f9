//! Plugin-defined metrics (`proxy_define_metric` and friends), readable by
//! name from tests. Semantics follow Envoy: counters only go up, gauges are
//! set or moved, histograms only record.

use crate::abi::Status;

/// The kind of a metric, as in `proxy_define_metric`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Monotonic count.
    Counter,
    /// Value that is set, or moved up and down.
    Gauge,
    /// Distribution of recorded values.
    Histogram,
}

impl MetricKind {
    pub(crate) fn from_code(code: i32) -> Option<Self> {
        match code {
            0 => Some(MetricKind::Counter),
            1 => Some(MetricKind::Gauge),
            2 => Some(MetricKind::Histogram),
            _ => None,
        }
    }
}

/// One metric and what the plugin did to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metric {
    /// The name the plugin gave.
    pub name: String,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// Current value of a counter or gauge (0 for a histogram).
    pub value: u64,
    /// Every value recorded into a histogram, in order.
    pub samples: Vec<u64>,
}

/// The metrics of one VM; a metric's id is its index plus one.
#[derive(Clone, Debug, Default)]
pub(crate) struct Metrics {
    all: Vec<Metric>,
}

impl Metrics {
    /// Defines a metric, or returns the id of the one already so named.
    pub(crate) fn define(&mut self, kind: MetricKind, name: &str) -> Result<u32, Status> {
        if let Some(index) = self.all.iter().position(|metric| metric.name == name) {
            return if self.all[index].kind == kind {
                Ok(index as u32 + 1)
            } else {
                Err(Status::BadArgument)
            };
        }
        self.all.push(Metric {
            name: name.to_string(),
            kind,
            value: 0,
            samples: Vec::new(),
        });
        Ok(self.all.len() as u32)
    }

    fn by_id(&mut self, id: u32) -> Result<&mut Metric, Status> {
        let index = (id as usize).checked_sub(1).ok_or(Status::NotFound)?;
        self.all.get_mut(index).ok_or(Status::NotFound)
    }

    pub(crate) fn increment(&mut self, id: u32, offset: i64) -> Result<(), Status> {
        let metric = self.by_id(id)?;
        match metric.kind {
            MetricKind::Counter if offset > 0 => metric.value += offset.unsigned_abs(),
            MetricKind::Gauge => {
                metric.value = metric.value.saturating_add_signed(offset);
            }
            _ => return Err(Status::BadArgument),
        }
        Ok(())
    }

    pub(crate) fn record(&mut self, id: u32, value: u64) -> Result<(), Status> {
        let metric = self.by_id(id)?;
        match metric.kind {
            MetricKind::Counter => metric.value += value,
            MetricKind::Gauge => metric.value = value,
            MetricKind::Histogram => metric.samples.push(value),
        }
        Ok(())
    }

    pub(crate) fn get(&mut self, id: u32) -> Result<u64, Status> {
        let metric = self.by_id(id)?;
        match metric.kind {
            MetricKind::Histogram => Err(Status::BadArgument),
            _ => Ok(metric.value),
        }
    }

    pub(crate) fn by_name(&self, name: &str) -> Option<&Metric> {
        self.all.iter().find(|metric| metric.name == name)
    }

    pub(crate) fn all(&self) -> &[Metric] {
        &self.all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_only_go_up_and_histograms_only_record() {
        let mut metrics = Metrics::default();
        let counter = metrics.define(MetricKind::Counter, "c").unwrap();
        let histogram = metrics.define(MetricKind::Histogram, "h").unwrap();
        assert_eq!(metrics.define(MetricKind::Counter, "c"), Ok(counter));
        assert_eq!(
            metrics.define(MetricKind::Gauge, "c"),
            Err(Status::BadArgument)
        );
        assert_eq!(metrics.increment(counter, 2), Ok(()));
        assert_eq!(metrics.increment(counter, -1), Err(Status::BadArgument));
        assert_eq!(metrics.get(counter), Ok(2));
        assert_eq!(metrics.record(histogram, 7), Ok(()));
        assert_eq!(metrics.increment(histogram, 1), Err(Status::BadArgument));
        assert_eq!(metrics.get(histogram), Err(Status::BadArgument));
        assert_eq!(metrics.get(99), Err(Status::NotFound));
        assert_eq!(
            metrics.by_name("h").map(|m| m.samples.clone()),
            Some(vec![7])
        );
    }

    #[test]
    fn gauges_are_set_and_moved() {
        let mut metrics = Metrics::default();
        let gauge = metrics.define(MetricKind::Gauge, "g").unwrap();
        metrics.record(gauge, 7).unwrap();
        metrics.increment(gauge, -2).unwrap();
        assert_eq!(metrics.get(gauge), Ok(5));
    }
}

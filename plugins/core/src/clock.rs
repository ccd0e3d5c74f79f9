//! A clock read once a tick instead of once a request: on a hot path the
//! host's clock is a host call per request, while cache expiries only need
//! seconds. Time is read ahead, never behind, so nothing cached is served
//! later than a read per request would allow.

use std::cell::Cell;

/// Reads between two ticks after which the host clock is read anyway, so a
/// VM whose ticks lag (or stop) still sees time pass.
pub const READ_EVERY: u64 = 64;

/// Unix seconds as of the last tick, plus the tick period.
#[derive(Debug)]
pub struct TickClock {
    /// Unix seconds at the last tick (0: no tick yet).
    at: Cell<u64>,
    /// Reads since the last tick.
    reads: Cell<u64>,
    /// The tick period, in whole seconds.
    period: u64,
}

impl TickClock {
    /// A clock ticked every `period_seconds`.
    pub fn new(period_seconds: u64) -> TickClock {
        TickClock {
            at: Cell::new(0),
            reads: Cell::new(0),
            period: period_seconds,
        }
    }

    /// On tick: `now` is the host clock.
    pub fn tick(&self, now: u64) {
        self.at.set(now);
        self.reads.set(0);
    }

    /// Unix seconds to check expiries against: the last tick's time plus
    /// one period (at least the true time while ticks come on time).
    /// `read` is the host clock: called before the first tick and on every
    /// [`READ_EVERY`]th read between two ticks.
    pub fn now(&self, read: impl FnOnce() -> u64) -> u64 {
        let at = self.at.get();
        if at == 0 {
            return read();
        }
        let reads = self.reads.get() + 1;
        if reads == READ_EVERY {
            self.reads.set(0);
            self.at.set(at.max(read()));
        } else {
            self.reads.set(reads);
        }
        self.at.get() + self.period
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_host_until_the_first_tick_then_runs_one_period_ahead() {
        let clock = TickClock::new(1);
        assert_eq!(clock.now(|| 500), 500);
        clock.tick(1000);
        assert_eq!(clock.now(|| unreachable!()), 1001);
    }

    #[test]
    fn without_ticks_every_64th_read_asks_the_host() {
        let clock = TickClock::new(1);
        clock.tick(1000);
        let asked = Cell::new(0);
        let host = || {
            asked.set(asked.get() + 1);
            2000
        };
        for _ in 1..READ_EVERY {
            assert_eq!(clock.now(host), 1001);
        }
        assert_eq!(asked.get(), 0);
        assert_eq!(clock.now(host), 2001);
        assert_eq!(asked.get(), 1);
        // A host clock behind the last tick never moves time back.
        clock.tick(3000);
        for _ in 1..READ_EVERY {
            clock.now(|| 10);
        }
        assert_eq!(clock.now(|| 10), 3001);
    }
}

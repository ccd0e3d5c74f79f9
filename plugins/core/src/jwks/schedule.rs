//! When to fetch an issuer's JWKS: the one schedule of the plugins and the
//! vault. The first keys are fetched at once and retried every
//! [`RETRY_MS`] until they come; loaded keys are refreshed every
//! `jwks_refresh_seconds` (retried after [`RETRY_MS`] when a refresh
//! fails); a token naming an unknown `kid` asks for a refetch at most once
//! per `jwks_min_refetch_seconds`; one fetch per issuer at a time. Pure:
//! the host owns the clock and the fetch, and reports when it ends.

use crate::policy::Issuer;

/// Delay before another attempt after a failed fetch.
pub const RETRY_MS: u64 = 2_000;

/// One issuer's fetch schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    refresh_ms: u64,
    min_refetch_ms: u64,
    in_flight: bool,
    failed: bool,
    refetch_wanted: bool,
    last_attempt_ms: Option<u64>,
    /// When a token's unknown `kid` last asked for a refetch (the rate limit).
    last_refetch_ms: Option<u64>,
    next_refresh_ms: u64,
}

impl Schedule {
    /// A schedule that refreshes every `refresh_ms` and refetches on an
    /// unknown `kid` at most every `min_refetch_ms`; nothing fetched yet.
    pub fn new(refresh_ms: u64, min_refetch_ms: u64) -> Schedule {
        Schedule {
            refresh_ms,
            min_refetch_ms,
            in_flight: false,
            failed: false,
            refetch_wanted: false,
            last_attempt_ms: None,
            last_refetch_ms: None,
            next_refresh_ms: 0,
        }
    }

    /// The schedule an issuer of the policy asks for.
    pub fn of(issuer: &Issuer) -> Schedule {
        Schedule::new(
            issuer.jwks_refresh_seconds.saturating_mul(1000),
            issuer.jwks_min_refetch_seconds.saturating_mul(1000),
        )
    }

    /// Whether a fetch should start at `now_ms`, given whether keys are
    /// loaded.
    pub fn due(&self, now_ms: u64, has_keys: bool) -> bool {
        if self.in_flight {
            return false;
        }
        if self.refetch_wanted {
            return true;
        }
        if has_keys {
            now_ms >= self.next_refresh_ms
        } else {
            self.last_attempt_ms
                .is_none_or(|last| now_ms >= last.saturating_add(RETRY_MS))
        }
    }

    /// Keys fetched at `fetched_ms` by an earlier instance were loaded (a
    /// host with a fresh instance per request): refreshed from then on, and
    /// an unknown kid refetches no sooner than `min_refetch_ms` after it.
    pub fn restored(&mut self, fetched_ms: u64) {
        self.finished(true, fetched_ms);
        self.last_attempt_ms = Some(fetched_ms);
        self.last_refetch_ms = Some(fetched_ms);
    }

    /// A fetch starts at `now_ms`.
    pub fn start(&mut self, now_ms: u64) {
        self.in_flight = true;
        self.refetch_wanted = false;
        self.last_attempt_ms = Some(now_ms);
    }

    /// The fetch ended at `now_ms`: `ok` when it brought a usable key set.
    pub fn finished(&mut self, ok: bool, now_ms: u64) {
        self.in_flight = false;
        self.failed = !ok;
        let wait = if ok { self.refresh_ms } else { RETRY_MS };
        self.next_refresh_ms = now_ms.saturating_add(wait);
    }

    /// A token named a `kid` the loaded keys lack: asks for a refetch,
    /// unless one is under way, already asked for, or one was asked for
    /// less than `min_refetch_ms` ago. Returns whether it was asked for.
    pub fn unknown_kid(&mut self, now_ms: u64) -> bool {
        if self.in_flight || self.refetch_wanted {
            return false;
        }
        let allowed = self
            .last_refetch_ms
            .is_none_or(|last| now_ms >= last.saturating_add(self.min_refetch_ms));
        if allowed {
            self.refetch_wanted = true;
            self.last_refetch_ms = Some(now_ms);
        }
        allowed
    }

    /// Whether a fetch is under way.
    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// Whether the last fetch failed and no other is under way.
    pub fn failed(&self) -> bool {
        self.failed && !self.in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_keys_are_fetched_at_once_and_retried_after_a_failure() {
        let mut s = Schedule::new(600_000, 30_000);
        assert!(s.due(0, false));
        s.start(0);
        assert!(!s.due(0, false), "one fetch at a time");
        s.finished(false, 100);
        assert!(s.failed());
        assert!(!s.due(1_999, false));
        assert!(s.due(2_000, false));
    }

    #[test]
    fn loaded_keys_are_refreshed_on_their_period_and_retried_after_a_failed_refresh() {
        let mut s = Schedule::new(600_000, 30_000);
        s.start(0);
        s.finished(true, 0);
        assert!(!s.failed());
        assert!(!s.due(599_999, true));
        assert!(s.due(600_000, true));
        s.start(600_000);
        s.finished(false, 600_000);
        assert!(!s.due(601_999, true));
        assert!(s.due(602_000, true));
    }

    #[test]
    fn an_unknown_kid_refetches_at_most_once_per_min_refetch() {
        let mut s = Schedule::new(600_000, 30_000);
        s.start(0);
        s.finished(true, 0);
        assert!(s.unknown_kid(1_000));
        assert!(!s.unknown_kid(1_001), "already asked for");
        assert!(s.due(1_001, true));
        s.start(1_001);
        assert!(!s.unknown_kid(1_002), "under way");
        s.finished(true, 1_100);
        assert!(!s.unknown_kid(30_999));
        assert!(!s.due(30_999, true));
        assert!(s.unknown_kid(31_000));
        assert!(s.due(31_000, true));
    }
}

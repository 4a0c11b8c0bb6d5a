//! Process-wide figures the bridge and the load test read: frame latency and live calls.
//! Lock-free: recording is a few relaxed atomic adds, cheap on the hot path.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Sub-buckets per power of two: about 12% resolution.
const SUB: usize = 8;
const BUCKETS: usize = 40 * SUB;

/// A log-linear histogram of durations in microseconds.
pub struct Histogram {
    counts: [AtomicU64; BUCKETS],
    max: AtomicU64,
    total: AtomicU64,
    sum: AtomicU64,
}

fn bucket(us: u64) -> usize {
    if us < SUB as u64 {
        return us as usize;
    }
    let msb = 63 - us.leading_zeros() as usize;
    let sub = ((us >> (msb - 3)) & (SUB as u64 - 1)) as usize;
    ((msb - 2) * SUB + sub).min(BUCKETS - 1)
}

/// The smallest value in bucket `i` (inverse of `bucket`).
fn lower_bound(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let msb = i / SUB + 2;
    let sub = (i % SUB) as u64;
    (1u64 << msb) | (sub << (msb - 3))
}

impl Histogram {
    pub const fn new() -> Histogram {
        Histogram {
            counts: [const { AtomicU64::new(0) }; BUCKETS],
            max: AtomicU64::new(0),
            total: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }

    pub fn record(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        self.counts[bucket(us)].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(us, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(us, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Sum of every recorded value, in microseconds.
    pub fn sum_us(&self) -> u64 {
        self.sum.load(Ordering::Relaxed)
    }

    /// How many values were at most `le_us` (to bucket resolution: whole buckets below it).
    pub fn count_le(&self, le_us: u64) -> u64 {
        self.counts
            .iter()
            .enumerate()
            .take_while(|(i, _)| lower_bound(i + 1) <= le_us + 1)
            .map(|(_, c)| c.load(Ordering::Relaxed))
            .sum()
    }

    pub fn max_us(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }

    /// The value at quantile `q` (0..=1), in microseconds, to bucket resolution.
    pub fn quantile_us(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c.load(Ordering::Relaxed);
            if seen >= rank {
                return lower_bound(i + 1).saturating_sub(1).min(self.max_us());
            }
        }
        self.max_us()
    }

    pub fn reset(&self) {
        for c in &self.counts {
            c.store(0, Ordering::Relaxed);
        }
        self.max.store(0, Ordering::Relaxed);
        self.total.store(0, Ordering::Relaxed);
        self.sum.store(0, Ordering::Relaxed);
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

/// Counts of errors by kind, for a fixed list of kinds (unknown kinds count as "other").
pub struct ErrorCounts {
    kinds: &'static [&'static str],
    counts: [AtomicU64; 8],
    other: AtomicU64,
}

impl ErrorCounts {
    pub const fn new(kinds: &'static [&'static str]) -> ErrorCounts {
        ErrorCounts {
            kinds,
            counts: [const { AtomicU64::new(0) }; 8],
            other: AtomicU64::new(0),
        }
    }

    pub fn add(&self, kind: &str) {
        match self.kinds.iter().position(|k| *k == kind) {
            Some(i) if i < self.counts.len() => self.counts[i].fetch_add(1, Ordering::Relaxed),
            _ => self.other.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// Every kind with its count, "other" last.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let mut out: Vec<(&'static str, u64)> = self
            .kinds
            .iter()
            .zip(&self.counts)
            .map(|(k, c)| (*k, c.load(Ordering::Relaxed)))
            .collect();
        out.push(("other", self.other.load(Ordering::Relaxed)));
        out
    }
}

/// Failed Stripe requests (every attempt, retried or not), by kind.
pub static STRIPE_ERRORS: ErrorCounts = ErrorCounts::new(&[
    "network",
    "rate_limited",
    "server",
    "card",
    "request",
    "decode",
]);
/// ElevenLabs agent failures, by kind: before the call is bridged, or `dropped` during it.
pub static AGENT_ERRORS: ErrorCounts = ErrorCounts::new(&[
    "signed_url",
    "connect",
    "timeout",
    "no_metadata",
    "audio_format",
    "dropped",
    "stalled",
]);

/// Succeeded PaymentIntents that fulfilled nothing, by why: created elsewhere on the account
/// (`foreign_payment`), or for another amount or currency than their order (`amount_mismatch`).
pub static IGNORED_PAYMENTS: ErrorCounts =
    ErrorCounts::new(&["foreign_payment", "amount_mismatch"]);

/// Requests served, by route and status, and the latency of each route.
pub struct HttpStats {
    requests: std::sync::Mutex<std::collections::BTreeMap<(String, u16), u64>>,
    latency: std::sync::Mutex<std::collections::BTreeMap<String, std::sync::Arc<Histogram>>>,
}

impl HttpStats {
    const fn new() -> HttpStats {
        HttpStats {
            requests: std::sync::Mutex::new(std::collections::BTreeMap::new()),
            latency: std::sync::Mutex::new(std::collections::BTreeMap::new()),
        }
    }

    /// `route` is the matched route pattern (bounded), never the raw path.
    pub fn record(&self, route: &str, status: u16, took: Duration) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((route.to_string(), status))
            .or_default() += 1;
        let h = self
            .latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(route.to_string())
            .or_insert_with(|| std::sync::Arc::new(Histogram::new()))
            .clone();
        h.record(took);
    }

    pub fn requests(&self) -> Vec<((String, u16), u64)> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    pub fn latencies(&self) -> Vec<(String, std::sync::Arc<Histogram>)> {
        self.latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

pub static HTTP: HttpStats = HttpStats::new();

/// Time a frame spends inside callgate, from read to written, either direction.
pub static FRAME_LATENCY: Histogram = Histogram::new();
/// Calls bridged right now.
pub static ACTIVE_CALLS: AtomicI64 = AtomicI64::new(0);
/// Frames forwarded, both directions.
pub static FRAMES: AtomicU64 = AtomicU64::new(0);
/// Calls this instance settled because the instance carrying them was gone.
pub static ORPHANED_CALLS: AtomicU64 = AtomicU64::new(0);
/// Times this instance lost the store long enough to stop its own live calls.
pub static CUT_OFF: AtomicU64 = AtomicU64::new(0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_counts_by_kind() {
        let e = ErrorCounts::new(&["a", "b"]);
        e.add("a");
        e.add("a");
        e.add("zzz");
        assert_eq!(e.snapshot(), vec![("a", 2), ("b", 0), ("other", 1)]);
    }

    #[test]
    fn buckets_are_monotonic_and_invert() {
        let mut last = 0;
        for us in [0u64, 1, 7, 8, 9, 15, 16, 100, 1000, 12345, 1_000_000] {
            let b = bucket(us);
            assert!(b >= last);
            assert!(
                lower_bound(b) <= us,
                "{us}: bucket {b} starts at {}",
                lower_bound(b)
            );
            last = b;
        }
    }

    #[test]
    fn quantiles() {
        let h = Histogram::new();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile_us(0.5);
        assert!((440..=560).contains(&p50), "{p50}");
        let p99 = h.quantile_us(0.99);
        assert!((900..=1000).contains(&p99), "{p99}");
        assert_eq!(h.max_us(), 1000);
        assert_eq!(h.count(), 1000);
        assert_eq!(h.sum_us(), 500_500);
        let le_100 = h.count_le(100);
        assert!((90..=100).contains(&le_100), "{le_100}");
        assert_eq!(h.count_le(10_000), 1000);
        assert_eq!(h.count_le(0), 0);
        h.reset();
        assert_eq!(h.quantile_us(0.5), 0);
    }
}

//! A latency histogram with fixed buckets, cheap enough for hot paths (atomics only).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds.
pub const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Observations per bucket, their count and sum.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// A histogram's values at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// `(upper bound in seconds, cumulative count)` per bucket.
    pub cumulative: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&le| secs <= le) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(took.as_micros() as u64, Relaxed);
    }

    /// The values now.
    pub fn snapshot(&self) -> Snapshot {
        let mut total = 0;
        let cumulative = BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(&le, bucket)| {
                total += bucket.load(Relaxed);
                (le, total)
            })
            .collect();
        Snapshot {
            cumulative,
            count: self.count.load(Relaxed),
            sum_seconds: self.sum_micros.load(Relaxed) as f64 / 1e6,
        }
    }
}

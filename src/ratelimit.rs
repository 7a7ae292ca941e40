//! Rate limits per API key and per conversation (`[limits]` in the configuration).
//!
//! Each limit is GCRA, the generic cell rate algorithm: a token bucket kept as one timestamp
//! per caller, the "theoretical arrival time" of its next request. A request is allowed when
//! that time is at most `burst` emission intervals ahead of now, and pushes it one interval
//! further; a refused request changes nothing and learns exactly how long to wait.
//!
//! Buckets live in a sharded map so callers on different shards never contend. A bucket whose
//! time has passed is indistinguishable from no bucket, so shards drop such idle buckets as
//! they grow: memory follows the callers active in the last `burst / rate` seconds, and a hard
//! cap per shard bounds it even under a flood of distinct callers (the bucket closest to idle
//! is forgotten, which only ever errs towards allowing a request).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use baton_actors::model::{ConversationId, KeyId, TenantId};

use crate::config::LimitSettings;
use crate::error::ApiError;

/// Shards of each limiter's map; a power of two well above the worker count.
const SHARDS: usize = 64;
/// A shard first sweeps its idle buckets when it holds this many.
const SWEEP_AT_LEAST: usize = 256;
/// Most buckets one shard keeps (262,144 per limiter, a few MiB at most).
const MAX_BUCKETS_PER_SHARD: usize = 4096;
const NANOS_PER_SEC: u64 = 1_000_000_000;

/// A sustained rate and the burst allowed on top of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests per second, sustained.
    pub per_second: u32,
    /// Requests that may arrive at once after a quiet spell.
    pub burst: u32,
}

/// A refused request: how long until the same request would be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    pub retry_after: Duration,
}

/// One GCRA limit over callers of type `K`.
pub struct RateLimiter<K> {
    quota: Quota,
    /// Nanoseconds between two requests at the sustained rate.
    emission: u64,
    /// How far ahead of now a caller's arrival time may run: `burst` emissions.
    tolerance: u64,
    shards: Box<[Mutex<Shard<K>>]>,
    /// Most buckets one shard keeps ([`MAX_BUCKETS_PER_SHARD`]; smaller in tests).
    cap_per_shard: usize,
    hasher: RandomState,
    /// The zero of the nanosecond clock `check` reads.
    origin: Instant,
}

impl<K> std::fmt::Debug for RateLimiter<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").field("quota", &self.quota).finish_non_exhaustive()
    }
}

/// One shard: each caller's theoretical arrival time, in nanoseconds since `origin`.
struct Shard<K> {
    arrivals: HashMap<K, u64>,
    /// The size at which the next sweep runs: twice what the last sweep kept.
    sweep_at: usize,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter for `quota`; `None` when its rate is 0 (no limit).
    pub fn new(quota: Quota) -> Option<Self> {
        if quota.per_second == 0 {
            return None;
        }
        let emission = (NANOS_PER_SEC / u64::from(quota.per_second)).max(1);
        let shards =
            (0..SHARDS).map(|_| Mutex::new(Shard { arrivals: HashMap::new(), sweep_at: SWEEP_AT_LEAST })).collect();
        Some(Self {
            quota,
            emission,
            tolerance: emission.saturating_mul(u64::from(quota.burst.max(1))),
            shards,
            cap_per_shard: MAX_BUCKETS_PER_SHARD,
            hasher: RandomState::new(),
            origin: Instant::now(),
        })
    }

    /// The quota this limiter enforces.
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// Counts one request of `caller` now.
    pub fn check(&self, caller: K) -> Result<(), Exceeded> {
        let now = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.check_at(caller, now)
    }

    /// Counts one request of `caller` at `now` (nanoseconds on this limiter's clock).
    pub fn check_at(&self, caller: K, now: u64) -> Result<(), Exceeded> {
        let shard = &self.shards[self.hasher.hash_one(&caller) as usize % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let known = shard.arrivals.get(&caller).copied();
        let next = known.unwrap_or(now).max(now).saturating_add(self.emission);
        let ahead = next - now;
        if ahead > self.tolerance {
            return Err(Exceeded { retry_after: Duration::from_nanos(ahead - self.tolerance) });
        }
        if known.is_none() {
            shard.make_room(now, self.cap_per_shard);
        }
        shard.arrivals.insert(caller, next);
        Ok(())
    }

    /// Buckets held (idle ones included until their shard sweeps).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).arrivals.len()).sum()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash + Eq + Clone> Shard<K> {
    /// Before a new bucket: drops idle buckets once the shard has doubled since the last
    /// sweep, and at the hard cap forgets the bucket closest to idle.
    fn make_room(&mut self, now: u64, cap: usize) {
        if self.arrivals.len() < self.sweep_at.min(cap) {
            return;
        }
        self.arrivals.retain(|_, arrival| *arrival > now);
        self.sweep_at = (self.arrivals.len() * 2).max(SWEEP_AT_LEAST);
        if self.arrivals.len() >= cap {
            let closest_to_idle = self.arrivals.iter().min_by_key(|(_, arrival)| **arrival).map(|(k, _)| k.clone());
            if let Some(caller) = closest_to_idle {
                self.arrivals.remove(&caller);
            }
        }
    }
}

/// Whom the per-key limit counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Caller {
    /// An API key.
    Key(KeyId),
    /// A JWT's subject within its tenant.
    Token { tenant: TenantId, subject: String },
}

/// The server's limits, shared by every worker.
#[derive(Debug)]
pub struct Limits {
    per_key: Option<RateLimiter<Caller>>,
    per_conversation: Option<RateLimiter<ConversationId>>,
}

impl Limits {
    /// The limits of `settings` (a rate of 0 turns that limit off).
    pub fn new(settings: &LimitSettings) -> Self {
        Self {
            per_key: RateLimiter::new(Quota { per_second: settings.per_key_per_second, burst: settings.per_key_burst }),
            per_conversation: RateLimiter::new(Quota {
                per_second: settings.per_conversation_per_second,
                burst: settings.per_conversation_burst,
            }),
        }
    }

    /// Counts a request of an authenticated `caller`; 429 beyond the per-key limit.
    pub fn check_caller(&self, caller: Caller) -> Result<(), ApiError> {
        let Some(limiter) = &self.per_key else { return Ok(()) };
        limiter.check(caller).map_err(|e| rate_limited("API key", limiter.quota(), e))
    }

    /// Counts a request addressing conversation `id`; 429 beyond the per-conversation limit.
    pub fn check_conversation(&self, id: ConversationId) -> Result<(), ApiError> {
        let Some(limiter) = &self.per_conversation else { return Ok(()) };
        limiter.check(id).map_err(|e| rate_limited("conversation", limiter.quota(), e))
    }
}

/// 429 naming the limit, with `Retry-After` in whole seconds (at least 1).
fn rate_limited(what: &str, quota: Quota, exceeded: Exceeded) -> ApiError {
    let retry_after = exceeded.retry_after.as_secs() + u64::from(exceeded.retry_after.subsec_nanos() > 0);
    let retry_after = retry_after.max(1);
    ApiError {
        status: StatusCode::TOO_MANY_REQUESTS,
        code: "rate_limited",
        message: format!(
            "rate limit per {what} exceeded ({} requests/s, bursts of {}); retry in {retry_after} s",
            quota.per_second,
            quota.burst.max(1)
        ),
        field: None,
        retry_after: Some(retry_after),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn limiter(per_second: u32, burst: u32) -> RateLimiter<u32> {
        RateLimiter::new(Quota { per_second, burst }).expect("a limit")
    }

    #[test]
    fn a_burst_passes_then_the_next_request_waits_one_interval() {
        let limiter = limiter(10, 5);

        let burst: Vec<bool> = (0..5).map(|_| limiter.check_at(1, 0).is_ok()).collect();
        let over = limiter.check_at(1, 0);

        assert_eq!(burst, [true; 5]);
        assert_eq!(over, Err(Exceeded { retry_after: Duration::from_millis(100) }));
    }

    #[test]
    fn the_sustained_rate_is_allowed_forever_and_no_faster() {
        let limiter = limiter(10, 1);

        // One request every 100 ms passes; one 50 ms after it does not.
        for i in 0..100 {
            assert!(limiter.check_at(7, i * 100 * MS).is_ok(), "request {i}");
            assert!(limiter.check_at(7, i * 100 * MS + 50 * MS).is_err(), "early request {i}");
        }
    }

    #[test]
    fn a_refused_request_costs_nothing() {
        let limiter = limiter(1, 1);
        assert!(limiter.check_at(1, 0).is_ok());

        for t in 1..100 {
            assert!(limiter.check_at(1, t * MS).is_err());
        }

        assert!(limiter.check_at(1, 1000 * MS).is_ok(), "refusals did not push the wait further");
    }

    #[test]
    fn callers_have_separate_buckets() {
        let limiter = limiter(1, 1);

        assert!(limiter.check_at(1, 0).is_ok());
        assert!(limiter.check_at(2, 0).is_ok());
        assert!(limiter.check_at(1, 0).is_err());
    }

    #[test]
    fn a_zero_rate_is_no_limiter() {
        assert!(RateLimiter::<u32>::new(Quota { per_second: 0, burst: 10 }).is_none());
    }

    #[test]
    fn idle_buckets_are_evicted_and_memory_stays_bounded() {
        let limiter = limiter(1000, 1);

        // 200,000 distinct callers, each idle again 1 ms after its request.
        for caller in 0..200_000u32 {
            limiter.check_at(caller, u64::from(caller) * 2 * MS).expect("a new caller passes");
        }

        assert!(limiter.len() <= SHARDS * SWEEP_AT_LEAST, "{} buckets kept", limiter.len());
    }

    #[test]
    fn a_flood_of_busy_callers_never_exceeds_the_cap() {
        let mut limiter = limiter(1, 1000);
        limiter.cap_per_shard = 8;

        for caller in 0..10_000u32 {
            assert!(limiter.check_at(caller, 0).is_ok(), "a new caller passes");
        }

        assert!(limiter.len() <= SHARDS * 8, "{} buckets kept", limiter.len());
    }

    #[test]
    fn retry_after_is_whole_seconds_and_at_least_one() {
        let quota = Quota { per_second: 10, burst: 1 };
        let short = rate_limited("conversation", quota, Exceeded { retry_after: Duration::from_millis(20) });
        let long = rate_limited("API key", quota, Exceeded { retry_after: Duration::from_millis(2100) });

        assert_eq!((short.retry_after, long.retry_after), (Some(1), Some(3)));
        assert_eq!(short.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(short.message.contains("per conversation"), "{}", short.message);
        assert!(long.message.contains("per API key"), "{}", long.message);
    }
}

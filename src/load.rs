//! An HTTP load generator for `POST /v1/chatbots/{bot}/conversations/handle`.
//!
//! [`run`] sends provider-style messages spread round-robin over many conversations, either
//! closed loop (each of `connections` tasks sends its next request as soon as the previous one
//! answered) or open loop at a fixed `rate`. In open loop each request has a scheduled send time,
//! a pacer thread releases it within 0.2 ms of that time, and its latency is measured from
//! that time, not from when it actually left: a stalled server then shows up as latency of the
//! requests that had to wait, instead of silently lowering the send rate (the "coordinated
//! omission" that closed-loop tools suffer from).
//!
//! Latencies go into a [`Histogram`] with logarithmic buckets (at most 1/64 relative error),
//! so long runs take constant memory. The library backs `benches/load.rs` and is meant to back
//! a `baton load` command as well.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

/// How long one request may take before it counts as a `timeout` error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The text every generated message carries.
pub const MESSAGE_TEXT: &str = "hello";

/// In open loop, the pacer's shortest sleep: requests due closer together than this are
/// released together, each at most this late. (tokio's timers tick once a millisecond, so a
/// request that slept on one left up to a millisecond after its time, and that lateness was
/// counted as the server's latency.)
const PACE: Duration = Duration::from_micros(200);

/// What to send, where, and for how long.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Base URL of the server, e.g. `http://127.0.0.1:8080` (a trailing `/` is ignored).
    pub url: String,
    /// API key sent as `X-API-Key` (needs the `messages:handle` scope).
    pub key: Option<String>,
    /// The chatbot id, the path segment of the handle route.
    pub chatbot: String,
    /// How many conversations the messages are spread over (provider ids `p0`, `p1`, …).
    pub conversations: usize,
    /// Concurrent requests at most; also the size of the connection pool.
    pub connections: usize,
    /// Stop sending after this long. At least one of `duration` and `messages` must be set.
    pub duration: Option<Duration>,
    /// Stop after this many requests.
    pub messages: Option<u64>,
    /// Open loop at this many messages per second; `None` sends back to back (closed loop).
    pub rate: Option<f64>,
    /// Overrides the whole request path (e.g. a bare handler to compare against).
    pub path: Option<String>,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8080".into(),
            key: None,
            chatbot: String::new(),
            conversations: 10_000,
            connections: 64,
            duration: Some(Duration::from_secs(10)),
            messages: None,
            rate: None,
            path: None,
        }
    }
}

impl LoadConfig {
    /// The full URL requests are posted to.
    pub fn endpoint(&self) -> String {
        let path = match &self.path {
            Some(path) => path.clone(),
            None => format!("/v1/chatbots/{}/conversations/handle", self.chatbot),
        };
        let separator = if path.starts_with('/') { "" } else { "/" };
        format!("{}{separator}{path}", self.url.trim_end_matches('/'))
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.conversations > 0, "conversations must be at least 1");
        anyhow::ensure!(self.connections > 0, "connections must be at least 1");
        anyhow::ensure!(
            self.duration.is_some() || self.messages.is_some(),
            "set a duration or a number of messages, or the run never ends"
        );
        if let Some(rate) = self.rate {
            anyhow::ensure!(rate.is_finite() && rate > 0.0, "rate must be a positive number of messages per second");
        }
        anyhow::ensure!(
            self.path.is_some() || !self.chatbot.trim().is_empty(),
            "chatbot must be set (or a path given)"
        );
        Ok(())
    }
}

/// The outcome of a run. Latencies are those of successful (2xx) requests.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    /// Requests sent (successful or not).
    pub sent: u64,
    /// Requests answered 2xx.
    pub ok: u64,
    /// Failed requests by kind: `http 503`, `timeout`, `connect`, `request`, `body`.
    pub errors: BTreeMap<String, u64>,
    /// From the first send to the last answer.
    pub elapsed: Duration,
    /// Successful messages per second.
    pub throughput: f64,
    /// Mean latency.
    pub mean: Duration,
    /// Median latency.
    pub p50: Duration,
    /// 90th percentile latency.
    pub p90: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Slowest request.
    pub max: Duration,
}

impl LoadReport {
    /// All failed requests.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The report as JSON, durations in milliseconds.
    pub fn to_json(&self) -> serde_json::Value {
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        json!({
            "sent": self.sent,
            "ok": self.ok,
            "errors": self.errors,
            "elapsed_s": (self.elapsed.as_secs_f64() * 1e3).round() / 1e3,
            "throughput": (self.throughput * 10.0).round() / 10.0,
            "mean_ms": ms(self.mean),
            "p50_ms": ms(self.p50),
            "p90_ms": ms(self.p90),
            "p99_ms": ms(self.p99),
            "max_ms": ms(self.max),
        })
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ok of {} sent in {:.2?} = {:.0} msgs/s; latency p50 {:.2?} p90 {:.2?} p99 {:.2?} max {:.2?}",
            self.ok, self.sent, self.elapsed, self.throughput, self.p50, self.p90, self.p99, self.max
        )?;
        if !self.errors.is_empty() {
            write!(f, "; errors {:?}", self.errors)?;
        }
        Ok(())
    }
}

/// Live counts of a run, for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    pub sent: AtomicU64,
    pub ok: AtomicU64,
    pub errors: AtomicU64,
}

/// Runs the load described by `config` against a running server and reports what it saw.
///
/// Must be called inside a tokio runtime; the requests run as `config.connections` tasks.
pub async fn run(config: &LoadConfig) -> anyhow::Result<LoadReport> {
    run_with_progress(config, Arc::new(Progress::default())).await
}

/// Like [`run`], counting into `progress` as it goes.
pub async fn run_with_progress(config: &LoadConfig, progress: Arc<Progress>) -> anyhow::Result<LoadReport> {
    config.validate()?;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::CONTENT_TYPE, reqwest::header::HeaderValue::from_static("application/json"));
    if let Some(key) = &config.key {
        let value = reqwest::header::HeaderValue::from_str(key).context("the API key is not a valid header value")?;
        headers.insert("x-api-key", value);
    }
    let client = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(config.connections)
        .tcp_nodelay(true)
        .timeout(REQUEST_TIMEOUT)
        .default_headers(headers)
        .build()
        .context("could not build the HTTP client")?;
    let start = Instant::now();
    let plan = Arc::new(Plan {
        client,
        endpoint: config.endpoint(),
        run_id: format!("{:016x}", rand::random::<u64>()),
        conversations: config.conversations as u64,
        start,
        deadline: config.duration.map(|d| start + d),
        messages: config.messages,
        rate: config.rate,
        next: AtomicU64::new(0),
        due_now: tokio::sync::Semaphore::new(0),
        progress,
    });
    let pacer = match plan.rate {
        Some(_) => {
            let (plan, tasks) = (Arc::clone(&plan), config.connections);
            let thread = std::thread::Builder::new().name("load-pacer".into()).spawn(move || pace(&plan, tasks));
            Some(thread.context("could not start the open loop's pacer thread")?)
        }
        None => None,
    };
    let workers: Vec<_> = (0..config.connections).map(|_| tokio::spawn(send_until_done(Arc::clone(&plan)))).collect();
    let mut total = Tally::default();
    for worker in workers {
        total.merge(worker.await.context("a load task panicked")?);
    }
    if let Some(pacer) = pacer {
        pacer.join().map_err(|_| anyhow::anyhow!("the open loop's pacer panicked"))?;
    }
    Ok(total.report(start.elapsed()))
}

/// The open loop's clock, on its own thread: adds a permit to `plan.due_now` as each request
/// falls due, sleeping on the system's precise timer in between (at least [`PACE`]). After
/// the last request it adds one more permit per task, so that every task takes a number past
/// the end and stops.
fn pace(plan: &Plan, tasks: usize) {
    let mut released = 0;
    loop {
        let now = Instant::now();
        let mut due = 0;
        let next = loop {
            match plan.due(released + due, now) {
                Some(at) if at <= now => due += 1,
                next => break next,
            }
        };
        released += due;
        plan.due_now.add_permits(due as usize);
        match next {
            Some(at) => std::thread::sleep(at.saturating_duration_since(Instant::now()).max(PACE)),
            None => {
                plan.due_now.add_permits(tasks);
                return;
            }
        }
    }
}

/// What all workers share: the client, the schedule and the next request number.
#[derive(Debug)]
struct Plan {
    client: reqwest::Client,
    endpoint: String,
    /// Makes message ids unique across runs, so a rerun is not answered as a duplicate.
    run_id: String,
    conversations: u64,
    start: Instant,
    deadline: Option<Instant>,
    messages: Option<u64>,
    rate: Option<f64>,
    /// The number of the next request; each number is taken once.
    next: AtomicU64,
    /// In open loop, one permit per request that is due ([`pace`]); a task takes one before
    /// it takes a number.
    due_now: tokio::sync::Semaphore,
    progress: Arc<Progress>,
}

impl Plan {
    /// When request `n` is due, or `None` when the run is over before it.
    fn due(&self, n: u64, now: Instant) -> Option<Instant> {
        if self.messages.is_some_and(|limit| n >= limit) {
            return None;
        }
        let due = match self.rate {
            Some(rate) => self.start + Duration::from_secs_f64(n as f64 / rate),
            None => now,
        };
        match self.deadline {
            Some(deadline) if due >= deadline => None,
            _ => Some(due),
        }
    }
}

/// The JSON body of request `n`: conversation `n % conversations`, message id unique per run.
fn handle_body(run_id: &str, n: u64, conversations: u64) -> String {
    let conversation = n % conversations;
    format!(
        r#"{{"channelId":"load","channelName":"Load","providerId":"p{conversation}","message":{{"id":"{run_id}-{n}","type":"text","text":"{MESSAGE_TEXT}"}}}}"#
    )
}

/// One connection's loop: in open loop wait until a request is due; take the next request
/// number, send, record.
async fn send_until_done(plan: Arc<Plan>) -> Tally {
    let mut tally = Tally::default();
    loop {
        if plan.rate.is_some() {
            match plan.due_now.acquire().await {
                Ok(permit) => permit.forget(),
                Err(_) => break,
            }
        }
        let n = plan.next.fetch_add(1, Ordering::Relaxed);
        let Some(due) = plan.due(n, Instant::now()) else { break };
        let body = handle_body(&plan.run_id, n, plan.conversations);
        tally.sent += 1;
        plan.progress.sent.fetch_add(1, Ordering::Relaxed);
        match plan.client.post(&plan.endpoint).body(body).send().await {
            Ok(response) => {
                let status = response.status();
                match response.bytes().await {
                    Ok(_) if status.is_success() => {
                        tally.ok += 1;
                        tally.latencies.record(due.elapsed());
                        plan.progress.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => tally.error(format!("http {}", status.as_u16()), &plan.progress),
                    Err(error) => tally.error(error_kind(&error, "body"), &plan.progress),
                }
            }
            Err(error) => tally.error(error_kind(&error, "request"), &plan.progress),
        }
    }
    tally
}

fn error_kind(error: &reqwest::Error, otherwise: &str) -> String {
    if error.is_timeout() {
        "timeout".into()
    } else if error.is_connect() {
        "connect".into()
    } else {
        otherwise.into()
    }
}

/// One worker's counts, merged into the report at the end.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    ok: u64,
    errors: BTreeMap<String, u64>,
    latencies: Histogram,
}

impl Tally {
    fn error(&mut self, kind: String, progress: &Progress) {
        *self.errors.entry(kind).or_default() += 1;
        progress.errors.fetch_add(1, Ordering::Relaxed);
    }

    fn merge(&mut self, other: Tally) {
        self.sent += other.sent;
        self.ok += other.ok;
        for (kind, count) in other.errors {
            *self.errors.entry(kind).or_default() += count;
        }
        self.latencies.merge(&other.latencies);
    }

    fn report(self, elapsed: Duration) -> LoadReport {
        let seconds = elapsed.as_secs_f64();
        let h = &self.latencies;
        LoadReport {
            sent: self.sent,
            ok: self.ok,
            errors: self.errors,
            elapsed,
            throughput: if seconds > 0.0 { self.ok as f64 / seconds } else { 0.0 },
            mean: h.mean(),
            p50: h.percentile(0.50),
            p90: h.percentile(0.90),
            p99: h.percentile(0.99),
            max: h.max(),
        }
    }
}

/// Bits of mantissa kept per power of two: 64 sub-buckets, so at most 1/64 relative error.
const SUB_BUCKET_BITS: u32 = 6;
const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS;

/// A latency histogram over nanoseconds with logarithmic buckets.
///
/// Values below 128 ns are kept exactly; above, each power of two is split into 64 buckets,
/// so a percentile is off by at most 1/64 of its value. Percentiles report the highest value
/// of their bucket (never below the truth), clamped to the smallest and largest value seen.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum_nanos: u128,
    min_nanos: u64,
    max_nanos: u64,
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        self.record_nanos(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    fn record_nanos(&mut self, nanos: u64) {
        let index = bucket_of(nanos);
        if index >= self.counts.len() {
            self.counts.resize(index + 1, 0);
        }
        self.counts[index] += 1;
        self.min_nanos = if self.total == 0 { nanos } else { self.min_nanos.min(nanos) };
        self.max_nanos = self.max_nanos.max(nanos);
        self.total += 1;
        self.sum_nanos += u128::from(nanos);
    }

    /// Adds everything `other` recorded.
    pub fn merge(&mut self, other: &Histogram) {
        if other.total == 0 {
            return;
        }
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.min_nanos = if self.total == 0 { other.min_nanos } else { self.min_nanos.min(other.min_nanos) };
        self.max_nanos = self.max_nanos.max(other.max_nanos);
        self.total += other.total;
        self.sum_nanos += other.sum_nanos;
    }

    /// How many latencies were recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The smallest latency recorded (zero when empty).
    pub fn min(&self) -> Duration {
        Duration::from_nanos(self.min_nanos)
    }

    /// The largest latency recorded (zero when empty).
    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max_nanos)
    }

    /// The mean latency (zero when empty).
    pub fn mean(&self) -> Duration {
        match self.total {
            0 => Duration::ZERO,
            n => Duration::from_nanos(u64::try_from(self.sum_nanos / u128::from(n)).unwrap_or(u64::MAX)),
        }
    }

    /// The latency at quantile `q` (0.5 = median, 0.99 = p99): the smallest recorded value
    /// such that at least `q` of all values are at or below it. Zero when empty.
    pub fn percentile(&self, q: f64) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).clamp(1, self.total);
        if rank == 1 {
            return self.min();
        }
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let highest = bucket_bounds(index).1;
                return Duration::from_nanos(highest.clamp(self.min_nanos, self.max_nanos));
            }
        }
        self.max()
    }
}

/// The bucket holding `nanos`.
fn bucket_of(nanos: u64) -> usize {
    if nanos < 2 * SUB_BUCKETS {
        return nanos as usize;
    }
    let top_bit = 63 - nanos.leading_zeros();
    let shift = top_bit - SUB_BUCKET_BITS;
    let mantissa = (nanos >> shift) - SUB_BUCKETS;
    ((u64::from(shift) + 1) * SUB_BUCKETS + mantissa) as usize
}

/// The lowest and highest value of bucket `index`.
fn bucket_bounds(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < 2 * SUB_BUCKETS {
        return (index, index);
    }
    let shift = index / SUB_BUCKETS - 1;
    let mantissa = index % SUB_BUCKETS;
    let low = (SUB_BUCKETS + mantissa) << shift;
    (low, low + ((1u64 << shift) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn micros(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    fn within_one_64th(actual: Duration, expected: Duration) -> bool {
        let (a, e) = (actual.as_nanos() as f64, expected.as_nanos() as f64);
        (a - e).abs() <= e / 64.0
    }

    #[test]
    fn small_values_have_buckets_of_their_own() {
        for nanos in 0..2 * SUB_BUCKETS {
            assert_eq!(bucket_bounds(bucket_of(nanos)), (nanos, nanos));
        }
    }

    #[test]
    fn every_value_falls_inside_its_bucket_and_buckets_grow_with_values() {
        let mut values: Vec<u64> =
            (0..64).flat_map(|bit| [1u64 << bit, (1u64 << bit) - 1, (1u64 << bit) + 1]).collect();
        values.extend([u64::MAX, 999, 1_000_000, 123_456_789, 10_000_000_000]);
        values.sort_unstable();
        let mut previous = 0;
        for nanos in values {
            let index = bucket_of(nanos);
            let (low, high) = bucket_bounds(index);
            assert!(low <= nanos && nanos <= high, "{nanos} outside bucket {index} = {low}..={high}");
            assert!(high - low <= low / SUB_BUCKETS, "bucket {index} wider than 1/64 of its values");
            assert!(index >= previous, "bucket of {nanos} goes backwards");
            previous = index;
        }
    }

    #[test]
    fn an_empty_histogram_reports_zero() {
        let h = Histogram::new();
        assert_eq!(h.count(), 0);
        assert_eq!(h.percentile(0.99), Duration::ZERO);
        assert_eq!(h.mean(), Duration::ZERO);
        assert_eq!(h.max(), Duration::ZERO);
    }

    #[test]
    fn percentiles_of_a_uniform_spread_are_within_a_64th() {
        let mut h = Histogram::new();
        for n in 1..=1000 {
            h.record(micros(n));
        }
        assert_eq!(h.count(), 1000);
        assert!(within_one_64th(h.percentile(0.50), micros(500)), "p50 {:?}", h.percentile(0.50));
        assert!(within_one_64th(h.percentile(0.90), micros(900)), "p90 {:?}", h.percentile(0.90));
        assert!(within_one_64th(h.percentile(0.99), micros(990)), "p99 {:?}", h.percentile(0.99));
        assert!(h.percentile(0.50) >= micros(500), "a percentile never reports below the truth");
        assert_eq!(h.percentile(1.0), micros(1000));
        assert_eq!(h.percentile(0.0), micros(1));
        assert_eq!(h.max(), micros(1000));
        assert_eq!(h.min(), micros(1));
        assert_eq!(h.mean(), Duration::from_nanos(500_500));
    }

    #[test]
    fn one_slow_request_in_a_hundred_sets_the_p99_but_not_the_p90() {
        let mut h = Histogram::new();
        for _ in 0..98 {
            h.record(micros(200));
        }
        h.record(Duration::from_millis(50));
        h.record(Duration::from_millis(80));
        assert!(within_one_64th(h.percentile(0.90), micros(200)));
        assert!(within_one_64th(h.percentile(0.99), Duration::from_millis(50)));
        assert_eq!(h.percentile(0.999), Duration::from_millis(80));
    }

    #[test]
    fn a_single_value_is_every_percentile_exactly() {
        let mut h = Histogram::new();
        h.record(Duration::from_nanos(1_234_567));
        for q in [0.0, 0.5, 0.99, 1.0] {
            assert_eq!(h.percentile(q), Duration::from_nanos(1_234_567));
        }
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let (mut a, mut b, mut all) = (Histogram::new(), Histogram::new(), Histogram::new());
        for n in 1..=300 {
            let latency = micros(n * 37 % 1000 + 1);
            if n % 3 == 0 { &mut a } else { &mut b }.record(latency);
            all.record(latency);
        }
        let mut merged = Histogram::new();
        merged.merge(&a);
        merged.merge(&b);
        merged.merge(&Histogram::new());
        assert_eq!(merged, all);
    }

    #[test]
    fn bodies_spread_round_robin_with_unique_message_ids() {
        let bodies: Vec<serde_json::Value> =
            (0..6).map(|n| serde_json::from_str(&handle_body("run1", n, 4)).expect("valid JSON")).collect();
        let providers: Vec<&str> = bodies.iter().map(|b| b["providerId"].as_str().unwrap()).collect();
        assert_eq!(providers, ["p0", "p1", "p2", "p3", "p0", "p1"]);
        let ids: std::collections::BTreeSet<&str> =
            bodies.iter().map(|b| b["message"]["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), 6);
        assert_eq!(bodies[0]["channelId"], "load");
        assert_eq!(bodies[0]["message"]["type"], "text");
        assert_eq!(bodies[0]["message"]["text"], MESSAGE_TEXT);
    }

    /// An open loop of `rate` requests a second for `run`, starting now.
    fn open_loop(rate: f64, run: Duration) -> Plan {
        let start = Instant::now();
        Plan {
            client: reqwest::Client::new(),
            endpoint: String::new(),
            run_id: String::new(),
            conversations: 1,
            start,
            deadline: Some(start + run),
            messages: None,
            rate: Some(rate),
            next: AtomicU64::new(0),
            due_now: tokio::sync::Semaphore::new(0),
            progress: Arc::new(Progress::default()),
        }
    }

    #[test]
    fn open_loop_requests_are_due_at_fixed_intervals_until_the_deadline() {
        let plan = open_loop(100.0, Duration::from_secs(1));
        let start = plan.start;
        let later = start + Duration::from_secs(5);
        assert_eq!(plan.due(0, later), Some(start));
        assert_eq!(plan.due(50, later), Some(start + Duration::from_millis(500)));
        assert_eq!(plan.due(100, later), None);
    }

    #[test]
    fn the_pacer_releases_each_request_once_it_is_due_and_then_one_stop_per_task() {
        let plan = Arc::new(open_loop(2_000.0, Duration::from_millis(100)));
        let due_by = |now: Instant| (0..200).filter(|&n| plan.due(n, now).is_some_and(|at| at <= now)).count();

        let pacer = {
            let plan = Arc::clone(&plan);
            std::thread::spawn(move || pace(&plan, 3))
        };
        let mut looked = 0;
        while !pacer.is_finished() {
            let released = plan.due_now.available_permits();
            let due = due_by(Instant::now());
            assert!(released.min(200) <= due, "{released} released when {due} were due");
            looked += 1;
            std::thread::sleep(Duration::from_micros(300));
        }
        pacer.join().expect("the pacer ends with the schedule");

        assert!(looked > 10, "the pacer ran while it was watched ({looked} looks)");
        assert_eq!(plan.due_now.available_permits(), 200 + 3, "every request of the 100 ms, then a stop per task");
    }

    #[test]
    fn a_run_without_an_end_is_refused() {
        let config = LoadConfig { chatbot: "bot".into(), duration: None, messages: None, ..LoadConfig::default() };
        assert!(config.validate().is_err());
        assert!(LoadConfig { chatbot: "bot".into(), ..LoadConfig::default() }.validate().is_ok());
    }

    #[test]
    fn the_endpoint_is_the_handle_route_unless_a_path_is_given() {
        let config = LoadConfig { url: "http://h:1/".into(), chatbot: "b".into(), ..LoadConfig::default() };
        assert_eq!(config.endpoint(), "http://h:1/v1/chatbots/b/conversations/handle");
        let bare = LoadConfig { path: Some("/bare".into()), ..config };
        assert_eq!(bare.endpoint(), "http://h:1/bare");
    }
}

//! The webhook actor: delivers the outbox.
//!
//! Conversation actors never wait on the network: they write a [`Delivery`] in the same
//! atomic store batch as the change that caused it and wake this actor, which sends it with
//! timeouts, signs it (Standard Webhooks: `webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`), retries 5xx, 429
//! and timeouts on a schedule with jitter (honouring `Retry-After`), and marks it failed
//! after the last try. Deliveries to a conversation's reply webhook go out in conversation
//! order. A bot reply whose conversation changed hands since it was made is dropped. Private
//! and loopback addresses are refused after DNS resolution unless allowed, and redirects are
//! never followed. Pending deliveries live in the store, so a restart resumes them.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::Rng as _;
use sha2::Sha256;

use crate::model::{now, Delivery, DeliveryId, DeliveryKind, DeliveryStatus, WebhookMethod};
use crate::store::{Store, StoreError};

/// How often the outbox is looked at even without a wake-up (for retries coming due).
const POLL_EVERY: Duration = Duration::from_millis(250);
/// The earliest a delivery held behind its conversation's head is looked at again.
const HELD_RECHECK: Duration = Duration::from_secs(1);
/// The largest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Webhook settings.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub allow_private_networks: bool,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// Waits before each retry; after the last one a delivery fails.
    pub retry_schedule: Vec<Duration>,
    /// Calls in flight at once.
    pub max_in_flight: usize,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct WebhookStats {
    pub delivered: std::sync::atomic::AtomicU64,
    pub retried: std::sync::atomic::AtomicU64,
    pub failed: std::sync::atomic::AtomicU64,
    pub cancelled: std::sync::atomic::AtomicU64,
}

/// Whether `ip` is loopback, private, link-local or otherwise not a public address.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || v6.to_ipv4_mapped().is_some_and(|v4| is_private(IpAddr::V4(v4)))
        }
    }
}

/// Resolves names and refuses private addresses, so the check holds at connection time (no
/// rebinding between a check and the connect).
#[derive(Debug, Clone, Copy)]
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = addrs.into_iter().filter(|a| !is_private(a.ip())).collect();
            if public.is_empty() {
                return Err(format!("{host} resolves only to private or loopback addresses").into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP client deliveries use: timeouts, no redirects, private addresses refused unless allowed.
pub fn delivery_client(config: &WebhookConfig) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(config.connect_timeout)
        .timeout(config.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("baton-webhooks/", env!("CARGO_PKG_VERSION")));
    if !config.allow_private_networks {
        builder = builder.dns_resolver(Arc::new(PublicOnly));
    }
    builder.build()
}

/// `v1,<base64 HMAC-SHA256>` of `id.timestamp.body` with `secret` (a `whsec_` secret is
/// base64 after its prefix, as Standard Webhooks defines; any other is used as bytes).
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let engine = base64::engine::general_purpose::STANDARD;
    let key = secret
        .strip_prefix("whsec_")
        .and_then(|b64| engine.decode(b64).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec());
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", engine.encode(mac.finalize().into_bytes()))
}

/// What one attempt came to.
#[derive(Debug)]
enum Attempt {
    Delivered(u16),
    /// Worth retrying (5xx, 429, 408, timeouts, connection failures).
    Retry {
        status: Option<u16>,
        error: String,
        retry_after: Option<Duration>,
    },
    /// Not worth retrying (other 4xx, refused address, bad configuration).
    Fail {
        status: Option<u16>,
        error: String,
    },
    /// 410: the endpoint is gone.
    Gone,
    /// A bot reply whose conversation changed hands (or was deleted) before it went out.
    Cancelled(String),
}

/// Wake up: new deliveries were queued (or one was set to retry now).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Wake;

/// Wait until no call is in flight, at most until `deadline` (shutdown). What is left stays
/// pending in the outbox for the next start.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Drain {
    pub deadline: Duration,
}

/// Resolves when the webhook actor has no call in flight (or immediately once stopping).
#[derive(Debug, Clone, Message)]
#[rtype(result = "usize")]
struct InFlight;

/// The actor delivering the outbox.
#[derive(Debug)]
pub struct WebhookActor {
    store: Store,
    client: reqwest::Client,
    config: WebhookConfig,
    /// Deliveries being attempted right now.
    in_flight: HashSet<DeliveryId>,
    /// Set at shutdown: no new attempts start.
    draining: bool,
    stats: Arc<WebhookStats>,
    /// Notified by conversation actors when they queued deliveries.
    wake: Arc<tokio::sync::Notify>,
}

impl WebhookActor {
    /// A webhook actor over `store`'s outbox, woken by `wake`.
    pub fn new(
        store: Store,
        config: WebhookConfig,
        stats: Arc<WebhookStats>,
        wake: Arc<tokio::sync::Notify>,
    ) -> reqwest::Result<Self> {
        let client = delivery_client(&config)?;
        Ok(Self { store, client, config, in_flight: HashSet::new(), draining: false, stats, wake })
    }

    /// Starts attempts for due deliveries, up to the in-flight limit.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.draining || self.in_flight.len() >= self.config.max_in_flight {
            return;
        }
        let room = self.config.max_in_flight - self.in_flight.len();
        let due = match self.store.due_deliveries(now(), room + self.in_flight.len()) {
            Ok(due) => due,
            Err(error) => {
                tracing::error!(%error, "could not read the outbox");
                return;
            }
        };
        for delivery in due {
            if self.in_flight.len() >= self.config.max_in_flight {
                break;
            }
            if self.in_flight.contains(&delivery.id) {
                continue;
            }
            match self.store.is_next_in_order(&delivery) {
                Ok(true) => {}
                Ok(false) => {
                    // An earlier message of this conversation goes first: wait until it is
                    // tried again (it promotes this one when it settles), out of the way of
                    // other conversations' deliveries.
                    if let Err(error) = self.hold_behind_head(delivery) {
                        tracing::error!(%error, "could not reschedule a delivery behind its conversation's head");
                    }
                    continue;
                }
                Err(error) => {
                    tracing::error!(%error, "could not read the outbox order");
                    continue;
                }
            }
            self.in_flight.insert(delivery.id);
            let attempt =
                attempt(self.store.clone(), self.client.clone(), self.config.allow_private_networks, delivery.clone());
            ctx.spawn(attempt.into_actor(self).map(move |outcome, actor, ctx| {
                actor.in_flight.remove(&delivery.id);
                if let Err(error) = actor.settle(delivery, outcome) {
                    tracing::error!(%error, "could not record a delivery attempt");
                }
                actor.pump(ctx);
            }));
        }
    }

    /// Records an attempt's outcome and schedules what comes next.
    fn settle(&mut self, mut d: Delivery, outcome: Attempt) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        let at = now();
        d.attempts += 1;
        d.updated_at = at;
        match outcome {
            Attempt::Delivered(status) => {
                d.status = DeliveryStatus::Delivered;
                d.last_status = Some(status);
                d.last_error = None;
                d.delivered_at = Some(at);
                self.stats.delivered.fetch_add(1, Relaxed);
            }
            Attempt::Cancelled(why) => {
                d.status = DeliveryStatus::Cancelled;
                d.attempts -= 1;
                d.last_error = Some(why);
                self.stats.cancelled.fetch_add(1, Relaxed);
            }
            Attempt::Gone => {
                d.status = DeliveryStatus::Failed;
                d.last_status = Some(410);
                d.last_error = Some(GONE.into());
                self.stats.failed.fetch_add(1, Relaxed);
                self.give_up_on_endpoint(&d)?;
            }
            Attempt::Fail { status, error } => {
                d.status = DeliveryStatus::Failed;
                d.last_status = status;
                d.last_error = Some(error);
                self.stats.failed.fetch_add(1, Relaxed);
            }
            Attempt::Retry { status, error, retry_after } => {
                d.last_status = status;
                d.last_error = Some(error);
                match self.config.retry_schedule.get(d.attempts as usize - 1) {
                    Some(&wait) => {
                        let wait = jitter(wait).max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER));
                        d.next_attempt_at = at + chrono::Duration::from_std(wait).unwrap_or_default();
                        self.stats.retried.fetch_add(1, Relaxed);
                    }
                    None => {
                        d.status = DeliveryStatus::Failed;
                        self.stats.failed.fetch_add(1, Relaxed);
                    }
                }
            }
        }
        // Durability of the outcome rides on the next group commit; a crash before it only
        // means one more (idempotent, same webhook-id) attempt.
        let _ = self.store.update_delivery(&d)?;
        if d.status != DeliveryStatus::Pending {
            self.promote_successor(&d)?;
        }
        Ok(())
    }

    /// Moves a delivery held back by its conversation's order to when the head is tried next.
    fn hold_behind_head(&self, mut held: Delivery) -> Result<(), StoreError> {
        let floor = now() + chrono::Duration::from_std(HELD_RECHECK).unwrap_or_default();
        let head_due = self.store.head_in_order(held.conversation_id)?.map(|h| h.next_attempt_at);
        held.next_attempt_at = head_due.map_or(floor, |due| due.max(floor));
        let _ = self.store.update_delivery(&held)?;
        Ok(())
    }

    /// Once `settled` is out of its conversation's order, the next one goes now.
    fn promote_successor(&self, settled: &Delivery) -> Result<(), StoreError> {
        if let Some(mut next) = self.store.head_in_order(settled.conversation_id)? {
            let at = now();
            if next.next_attempt_at > at {
                next.next_attempt_at = at;
                let _ = self.store.update_delivery(&next)?;
            }
        }
        Ok(())
    }
}

/// Why deliveries to an endpoint that answered 410 stop.
const GONE: &str = "the endpoint answered 410 Gone; no more retries to it";

impl WebhookActor {
    /// After a 410, the tenant's other pending deliveries to that endpoint are not retried
    /// either: they fail at once, saying why. Deliveries made later are tried afresh.
    fn give_up_on_endpoint(&self, gone: &Delivery) -> Result<(), StoreError> {
        let far = now() + chrono::Duration::days(3650);
        for mut other in self.store.due_deliveries(far, usize::MAX)? {
            let same = other.tenant_id == gone.tenant_id && other.url == gone.url && other.id != gone.id;
            if same && other.status == DeliveryStatus::Pending && !self.in_flight.contains(&other.id) {
                other.status = DeliveryStatus::Failed;
                other.last_error = Some(GONE.into());
                other.updated_at = now();
                let _ = self.store.update_delivery(&other)?;
                self.stats.failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

/// ±20% so retries of many deliveries do not arrive together.
fn jitter(wait: Duration) -> Duration {
    let factor = rand::thread_rng().gen_range(0.8..1.2);
    wait.mul_f64(factor)
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&Utc) - Utc::now()).to_std().ok()
}

/// Makes one attempt.
async fn attempt(store: Store, client: reqwest::Client, allow_private: bool, d: Delivery) -> Attempt {
    if d.kind == DeliveryKind::BotReply {
        match store.conversation(d.conversation_id) {
            Ok(Some(c)) if c.epoch == d.epoch => {}
            Ok(Some(_)) => {
                return Attempt::Cancelled("a human took the conversation over before this reply went out".into())
            }
            Ok(None) => return Attempt::Cancelled("the conversation was deleted".into()),
            Err(error) => return Attempt::Retry { status: None, error: error.to_string(), retry_after: None },
        }
    }
    let url = match reqwest::Url::parse(&d.url) {
        Ok(url) => url,
        Err(e) => return Attempt::Fail { status: None, error: format!("bad URL: {e}") },
    };
    let literal = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        _ => None,
    };
    let local_name = url.host_str().is_some_and(|h| h.eq_ignore_ascii_case("localhost") || h.ends_with(".localhost"));
    if !allow_private && (literal.is_some_and(is_private) || local_name) {
        return Attempt::Fail {
            status: None,
            error: "refused: the URL points at a private or loopback address".into(),
        };
    }
    let body = match serde_json::to_vec(&d.body) {
        Ok(body) => body,
        Err(e) => return Attempt::Fail { status: None, error: format!("could not encode the body: {e}") },
    };
    let method = match d.method {
        WebhookMethod::Post => reqwest::Method::POST,
        WebhookMethod::Put => reqwest::Method::PUT,
        WebhookMethod::Patch => reqwest::Method::PATCH,
    };
    let id = d.id.to_string();
    let timestamp = Utc::now().timestamp();
    let mut request = client.request(method, url).header(reqwest::header::CONTENT_TYPE, "application/json");
    for (name, value) in &d.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    request = request.header("webhook-id", &id).header("webhook-timestamp", timestamp.to_string());
    if let Some(secret) = d.secret.as_deref().filter(|s| !s.is_empty()) {
        request = request.header("webhook-signature", sign(secret, &id, timestamp, &body));
    }
    match request.body(body).send().await {
        Ok(response) => {
            let status = response.status();
            let code = status.as_u16();
            if status.is_success() {
                Attempt::Delivered(code)
            } else if code == 410 {
                Attempt::Gone
            } else if status.is_server_error() || code == 429 || code == 408 {
                Attempt::Retry {
                    status: Some(code),
                    error: format!("HTTP {status}"),
                    retry_after: retry_after(response.headers()),
                }
            } else {
                Attempt::Fail { status: Some(code), error: format!("HTTP {status}") }
            }
        }
        Err(e) if e.is_timeout() => Attempt::Retry { status: None, error: "timed out".into(), retry_after: None },
        Err(e) if e.is_connect() => {
            let refused = std::error::Error::source(&e).is_some_and(|s| s.to_string().contains("private or loopback"));
            if refused {
                Attempt::Fail {
                    status: None,
                    error: "refused: the host resolves to a private or loopback address".into(),
                }
            } else {
                Attempt::Retry { status: None, error: format!("could not connect: {e}"), retry_after: None }
            }
        }
        Err(e) => Attempt::Retry { status: None, error: format!("request failed: {e}"), retry_after: None },
    }
}

impl Actor for WebhookActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(POLL_EVERY, |actor, ctx| actor.pump(ctx));
        let wake = Arc::clone(&self.wake);
        ctx.add_stream(futures_util::stream::unfold(wake, |wake| async move {
            wake.notified().await;
            Some(((), wake))
        }));
        self.pump(ctx);
    }
}

impl StreamHandler<()> for WebhookActor {
    fn handle(&mut self, _item: (), ctx: &mut Self::Context) {
        self.pump(ctx);
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {}
}

impl Handler<Wake> for WebhookActor {
    type Result = ();

    fn handle(&mut self, _msg: Wake, ctx: &mut Self::Context) {
        self.pump(ctx);
    }
}

impl Handler<InFlight> for WebhookActor {
    type Result = usize;

    fn handle(&mut self, _msg: InFlight, _ctx: &mut Self::Context) -> usize {
        self.in_flight.len()
    }
}

impl Handler<Drain> for WebhookActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Drain, ctx: &mut Self::Context) -> Self::Result {
        self.draining = true;
        let addr = ctx.address();
        let wait = async move {
            let give_up = tokio::time::Instant::now() + msg.deadline;
            while tokio::time::Instant::now() < give_up {
                match addr.send(InFlight).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        };
        Box::pin(wait.into_actor(self))
    }
}

//! `api` AI contexts: their content is fetched over HTTP (own headers, timeout and size limit,
//! optionally a JSON pointer into the answer) and kept in a cache bounded in entries, bytes and
//! time, so a busy conversation does not call the knowledge endpoint on every message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::read_body;
use crate::model::{AiContext, AiContextApi, AiContextId};
use crate::webhook::is_private;

/// Most cached contents kept at once.
const MAX_CACHED_CONTEXTS: usize = 1024;
/// Most bytes of cached contents kept at once.
const MAX_CACHED_BYTES: usize = 32 << 20;
/// Largest JSON answer read when `content_pointer` picks the content out of it.
const MAX_JSON_ANSWER_BYTES: usize = 4 << 20;

/// Why an `api` context's content could not be had (the context is then left out of the prompt).
#[derive(Debug, thiserror::Error)]
pub(super) enum FetchError {
    #[error("timed out")]
    Timeout,
    #[error("request failed: {0}")]
    Request(String),
    #[error("answered HTTP {0}")]
    Http(u16),
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the answer is not JSON")]
    NotJson,
    #[error("the answer has nothing at {0}")]
    PointerNotFound(String),
    #[error("not a valid URL")]
    BadUrl,
    #[error("refused: the URL points at a private or loopback address")]
    PrivateAddress,
}

/// Fetches the content `api` describes: the answer's text, or the value at `content_pointer`
/// (a string as is, anything else as JSON), cut to `max_bytes` on a character boundary.
///
/// Unless `allow_private`, a URL naming a private or loopback address is refused here; names
/// that resolve to one are refused by `http`'s resolver.
pub(super) async fn fetch(
    http: &reqwest::Client,
    api: &AiContextApi,
    allow_private: bool,
) -> Result<String, FetchError> {
    let url = reqwest::Url::parse(&api.url).map_err(|_| FetchError::BadUrl)?;
    if !allow_private && names_private_host(&url) {
        return Err(FetchError::PrivateAddress);
    }
    let mut request = http
        .get(url)
        .timeout(Duration::from_millis(api.timeout_ms.max(1)))
        .header(reqwest::header::USER_AGENT, concat!("baton-ai/", env!("CARGO_PKG_VERSION")));
    for (name, value) in &api.headers {
        request = request.header(name, value);
    }
    let mut response = request.send().await.map_err(request_error)?;
    if !response.status().is_success() {
        return Err(FetchError::Http(response.status().as_u16()));
    }
    if api.content_pointer.is_empty() {
        // The whole body is the content, so nothing past `max_bytes` is needed.
        let (body, _) = read_body(&mut response, api.max_bytes).await.map_err(request_error)?;
        return Ok(cut(String::from_utf8_lossy(&body).into_owned(), api.max_bytes));
    }
    let (body, truncated) = read_body(&mut response, MAX_JSON_ANSWER_BYTES).await.map_err(request_error)?;
    if truncated {
        return Err(FetchError::TooLarge(MAX_JSON_ANSWER_BYTES));
    }
    let answer: serde_json::Value = serde_json::from_slice(&body).map_err(|_| FetchError::NotJson)?;
    let content = match answer.pointer(&api.content_pointer) {
        Some(serde_json::Value::String(text)) => text.clone(),
        Some(serde_json::Value::Null) | None => return Err(FetchError::PointerNotFound(api.content_pointer.clone())),
        Some(other) => other.to_string(),
    };
    Ok(cut(content, api.max_bytes))
}

/// Whether `url`'s host is a private or loopback IP literal (which no resolver sees) or `localhost`.
fn names_private_host(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => is_private(ip.into()),
        Some(url::Host::Ipv6(ip)) => is_private(ip.into()),
        Some(url::Host::Domain(name)) => {
            let name = name.to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
        None => true,
    }
}

fn request_error(error: reqwest::Error) -> FetchError {
    if error.is_timeout() {
        FetchError::Timeout
    } else {
        // Without the URL: it may carry a token in its query.
        FetchError::Request(error.without_url().to_string())
    }
}

/// `text` cut to at most `max_bytes` bytes without splitting a character.
fn cut(mut text: String, max_bytes: usize) -> String {
    if text.len() > max_bytes {
        let mut end = max_bytes;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Fetched contents by context, each kept for its context's `cache_ttl_secs` and only while the
/// context is unchanged (its `updated_at`); bounded in entries and bytes, oldest evicted first.
#[derive(Debug)]
pub(super) struct ContextCache {
    max_entries: usize,
    max_bytes: usize,
    state: Mutex<CacheState>,
}

#[derive(Debug, Default)]
struct CacheState {
    entries: HashMap<AiContextId, CachedContent>,
    /// Sum of the entries' content lengths.
    bytes: usize,
}

#[derive(Debug)]
struct CachedContent {
    /// The context's `updated_at` when fetched: an edited context is fetched again.
    version: DateTime<Utc>,
    content: Arc<str>,
    fetched_at: Instant,
    expires_at: Instant,
}

impl Default for ContextCache {
    fn default() -> Self {
        Self::new(MAX_CACHED_CONTEXTS, MAX_CACHED_BYTES)
    }
}

impl ContextCache {
    pub(super) fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self { max_entries, max_bytes, state: Mutex::default() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The content of `context` fetched less than its TTL before `now`, if any.
    pub(super) fn get(&self, context: &AiContext, now: Instant) -> Option<Arc<str>> {
        let state = self.state();
        let entry = state.entries.get(&context.id)?;
        (entry.version == context.updated_at && now < entry.expires_at).then(|| Arc::clone(&entry.content))
    }

    /// Keeps `content` of `context` for `ttl` from `now` (not at all for a zero TTL or a content
    /// larger than the whole cache).
    pub(super) fn insert(&self, context: &AiContext, content: Arc<str>, ttl: Duration, now: Instant) {
        let mut state = self.state();
        if let Some(old) = state.entries.remove(&context.id) {
            state.bytes -= old.content.len();
        }
        if ttl.is_zero() || content.len() > self.max_bytes || self.max_entries == 0 {
            return;
        }
        state.entries.retain(|_, entry| now < entry.expires_at);
        state.bytes = state.entries.values().map(|e| e.content.len()).sum();
        while state.entries.len() >= self.max_entries || state.bytes + content.len() > self.max_bytes {
            let Some(oldest) = state.entries.iter().min_by_key(|(_, e)| e.fetched_at).map(|(id, _)| *id) else {
                break;
            };
            if let Some(evicted) = state.entries.remove(&oldest) {
                state.bytes -= evicted.content.len();
            }
        }
        state.bytes += content.len();
        let expires_at = now.checked_add(ttl).unwrap_or(now + Duration::from_secs(86_400));
        state
            .entries
            .insert(context.id, CachedContent { version: context.updated_at, content, fetched_at: now, expires_at });
    }

    /// How many contents are cached.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.state().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use uuid::Uuid;

    use super::*;
    use crate::model::{AiContextType, ChatbotId};

    fn context(id: u128) -> AiContext {
        let at = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        AiContext {
            id: AiContextId(Uuid::from_u128(id)),
            chatbot_id: ChatbotId(Uuid::from_u128(1)),
            name: "Catalog".into(),
            trigger_keywords: vec!["price".into()],
            context_type: AiContextType::Api,
            content: String::new(),
            api_config: None,
            priority: 0,
            enabled: true,
            created_at: at,
            updated_at: at,
        }
    }

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn a_cached_content_is_served_until_its_ttl_runs_out() {
        let cache = ContextCache::default();
        let start = Instant::now();
        let c = context(1);

        cache.insert(&c, Arc::from("prices"), TTL, start);

        assert_eq!(cache.get(&c, start + Duration::from_secs(59)).as_deref(), Some("prices"));
        assert_eq!(cache.get(&c, start + TTL), None);
    }

    #[test]
    fn an_edited_context_is_not_served_from_the_cache() {
        let cache = ContextCache::default();
        let start = Instant::now();
        let mut c = context(1);
        cache.insert(&c, Arc::from("old"), TTL, start);

        c.updated_at += chrono::Duration::seconds(1);

        assert_eq!(cache.get(&c, start), None);
    }

    #[test]
    fn a_zero_ttl_caches_nothing() {
        let cache = ContextCache::default();
        let start = Instant::now();
        let c = context(1);

        cache.insert(&c, Arc::from("prices"), Duration::ZERO, start);

        assert_eq!(cache.get(&c, start), None);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn the_oldest_entry_is_evicted_when_the_cache_is_full() {
        let cache = ContextCache::new(2, 1 << 20);
        let start = Instant::now();
        let (a, b, c) = (context(1), context(2), context(3));

        cache.insert(&a, Arc::from("a"), TTL, start);
        cache.insert(&b, Arc::from("b"), TTL, start + Duration::from_secs(1));
        cache.insert(&c, Arc::from("c"), TTL, start + Duration::from_secs(2));

        let now = start + Duration::from_secs(3);
        assert_eq!(cache.get(&a, now), None);
        assert_eq!(cache.get(&b, now).as_deref(), Some("b"));
        assert_eq!(cache.get(&c, now).as_deref(), Some("c"));
    }

    #[test]
    fn the_cache_stays_within_its_byte_bound() {
        let cache = ContextCache::new(100, 10);
        let start = Instant::now();
        let (a, b, huge) = (context(1), context(2), context(3));

        cache.insert(&a, Arc::from("aaaaaa"), TTL, start);
        cache.insert(&b, Arc::from("bbbbbb"), TTL, start + Duration::from_secs(1));
        cache.insert(&huge, Arc::from("x".repeat(11)), TTL, start + Duration::from_secs(2));

        let now = start + Duration::from_secs(3);
        assert_eq!(cache.get(&a, now), None, "evicted to make room for b");
        assert_eq!(cache.get(&b, now).as_deref(), Some("bbbbbb"));
        assert_eq!(cache.get(&huge, now), None, "larger than the whole cache");
    }

    #[test]
    fn expired_entries_make_room_first() {
        let cache = ContextCache::new(2, 1 << 20);
        let start = Instant::now();
        let (a, b, c) = (context(1), context(2), context(3));
        cache.insert(&a, Arc::from("a"), Duration::from_secs(1), start);
        cache.insert(&b, Arc::from("b"), TTL, start);

        cache.insert(&c, Arc::from("c"), TTL, start + Duration::from_secs(2));

        let now = start + Duration::from_secs(3);
        assert_eq!(cache.get(&b, now).as_deref(), Some("b"));
        assert_eq!(cache.get(&c, now).as_deref(), Some("c"));
    }

    #[test]
    fn private_and_loopback_hosts_are_recognized() {
        let private = |url: &str| names_private_host(&reqwest::Url::parse(url).unwrap());

        assert!(private("http://127.0.0.1:8080/x"));
        assert!(private("http://10.1.2.3/x"));
        assert!(private("http://[::1]/x"));
        assert!(private("http://LocalHost/x"));
        assert!(private("http://api.localhost/x"));
        assert!(private("http://169.254.169.254/latest/meta-data"));
        assert!(!private("https://example.com/x"));
        assert!(!private("https://93.184.216.34/x"));
    }

    #[test]
    fn content_is_cut_on_a_character_boundary() {
        assert_eq!(cut("héllo".into(), 2), "h");
        assert_eq!(cut("héllo".into(), 3), "hé");
        assert_eq!(cut("hello".into(), 10), "hello");
    }
}

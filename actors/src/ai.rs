//! AI replies (bot behaviour step 5): a chatbot's system prompt plus the AI contexts its message
//! triggers plus the conversation's recent history, sent to the chatbot's provider (OpenAI or
//! Anthropic) for one answer.
//!
//! [`Ai`] owns the HTTP clients and the cache of `api` contexts. The pure parts — which contexts
//! apply, the system prompt, the history as chat turns — are in [`prompt`]. API keys come from
//! the server's configuration, are never logged and never sent anywhere but their provider.

mod anthropic;
mod contexts;
#[cfg(test)]
mod fake_http;
mod openai;
pub mod prompt;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::Value;

use self::contexts::ContextCache;
use self::prompt::ChatTurn;
use crate::engine::rules::normalize;
use crate::model::{AiContext, AiContextType, Message, Role, Settings};

/// Largest provider answer read.
const MAX_ANSWER_BYTES: usize = 4 << 20;
/// Most of a provider's error answer read (for [`AiError::Http`]).
const MAX_ERROR_BYTES: usize = 4096;
/// How much of a provider's error answer is kept, in characters.
const ERROR_BODY_CHARS: usize = 200;
/// Most `api` contexts considered for one reply (highest priority first), bounding the calls a
/// single message can cause.
const MAX_API_CONTEXTS_PER_REPLY: usize = 8;

/// Settings of the AI clients (from config).
#[derive(Clone)]
pub struct AiConfig {
    /// Requests go to `{openai_base_url}/chat/completions`.
    pub openai_base_url: String,
    pub openai_api_key: Option<String>,
    /// Requests go to `{anthropic_base_url}/v1/messages`.
    pub anthropic_base_url: String,
    pub anthropic_api_key: Option<String>,
    /// Time to connect to a provider or a context endpoint.
    pub connect_timeout: Duration,
    /// Time for a whole provider call.
    pub timeout: Duration,
    /// Most history messages in a prompt.
    pub history_messages: usize,
    /// Most characters of history in a prompt (oldest messages dropped first).
    pub history_max_chars: usize,
    /// Most characters of AI context contents in a prompt.
    pub context_budget_chars: usize,
}

impl Default for AiConfig {
    fn default() -> Self {
        Self {
            openai_base_url: "https://api.openai.com/v1".into(),
            openai_api_key: None,
            anthropic_base_url: "https://api.anthropic.com".into(),
            anthropic_api_key: None,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            history_messages: 20,
            history_max_chars: 8000,
            context_budget_chars: 6000,
        }
    }
}

/// Shows whether keys are set, never the keys.
impl std::fmt::Debug for AiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = |k: &Option<String>| if k.is_some() { "set" } else { "unset" };
        f.debug_struct("AiConfig")
            .field("openai_base_url", &self.openai_base_url)
            .field("openai_api_key", &key(&self.openai_api_key))
            .field("anthropic_base_url", &self.anthropic_base_url)
            .field("anthropic_api_key", &key(&self.anthropic_api_key))
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("history_messages", &self.history_messages)
            .field("history_max_chars", &self.history_max_chars)
            .field("context_budget_chars", &self.context_budget_chars)
            .finish()
    }
}

/// Why no AI answer was had.
#[derive(Debug, thiserror::Error)]
pub enum AiError {
    /// The chatbot's provider has no API key configured (nothing was sent).
    #[error("no API key is configured for {0}")]
    MissingKey(&'static str),
    /// `ai_provider` is neither `openai` nor `anthropic`.
    #[error("unknown AI provider {0:?} (expected \"openai\" or \"anthropic\")")]
    UnknownProvider(String),
    #[error("the AI provider did not answer in time")]
    Timeout,
    /// A non-2xx answer: its status and the first characters of its body.
    #[error("the AI provider answered HTTP {0}: {1}")]
    Http(u16, String),
    /// The call could not be made (connection refused, TLS, …).
    #[error("the AI request failed: {0}")]
    Request(String),
    /// A 2xx answer without the expected shape.
    #[error("the AI provider's answer is malformed: {0}")]
    Malformed(String),
}

/// One AI answer.
#[derive(Debug, Clone, PartialEq)]
pub struct AiAnswer {
    pub text: String,
    /// As the provider counted them (prompt and answer), when it said.
    pub tokens_used: Option<u32>,
}

/// The AI service: provider clients, the api-context cache. Cheap to clone (Arc inside).
#[derive(Debug, Clone)]
pub struct Ai {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: AiConfig,
    /// Calls the providers (their addresses come from the server's own configuration).
    providers: reqwest::Client,
    /// The two chat providers.
    openai: OpenAiClient,
    anthropic: AnthropicClient,
    /// Fetches `api` contexts (addresses chosen by tenants: private ones refused unless allowed).
    contexts: reqwest::Client,
    /// Whether `api` contexts may be fetched from private or loopback addresses.
    allow_private_networks: bool,
    cache: ContextCache,
}

/// What one provider call asks: the model's settings, the system prompt and the chat turns
/// (ending with the user's message).
#[derive(Debug)]
pub struct ChatRequest<'a> {
    pub model: &'a str,
    pub temperature: f64,
    pub max_tokens: u32,
    pub system: &'a str,
    pub turns: &'a [ChatTurn],
}

/// A chat model provider: one prompt in, one answer out. baton has two, selected by a
/// chatbot's `ai_provider`: [`OpenAiClient`] (any OpenAI-compatible server) and
/// [`AnthropicClient`].
pub trait ChatProvider: Send + Sync + std::fmt::Debug {
    /// The `ai_provider` name that selects this provider.
    fn name(&self) -> &'static str;

    /// Whether it can be asked at all (its key is configured), checked before any work.
    fn ready(&self) -> Result<(), AiError>;

    /// Asks for one answer over `http`.
    fn complete<'a>(
        &'a self,
        http: &'a reqwest::Client,
        request: &'a ChatRequest<'a>,
    ) -> futures_util::future::BoxFuture<'a, Result<AiAnswer, AiError>>;
}

/// An endpoint and its key, as both clients need them.
#[derive(Clone)]
struct Endpoint {
    base_url: String,
    api_key: Option<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = if self.api_key.is_some() { "set" } else { "unset" };
        f.debug_struct("Endpoint").field("base_url", &self.base_url).field("api_key", &key).finish()
    }
}

impl Endpoint {
    fn key(&self, provider: &'static str) -> Result<&str, AiError> {
        match self.api_key.as_deref().map(str::trim) {
            Some(key) if !key.is_empty() => Ok(key),
            _ => Err(AiError::MissingKey(provider)),
        }
    }
}

/// OpenAI's chat completions API, or any server that speaks it (a local model server too).
#[derive(Debug, Clone)]
pub struct OpenAiClient(Endpoint);

impl OpenAiClient {
    /// A client for `{base_url}/chat/completions` with `api_key`.
    pub fn new(base_url: &str, api_key: Option<String>) -> Self {
        Self(Endpoint { base_url: base_url.to_string(), api_key })
    }
}

impl ChatProvider for OpenAiClient {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn ready(&self) -> Result<(), AiError> {
        self.0.key(self.name()).map(|_| ())
    }

    fn complete<'a>(
        &'a self,
        http: &'a reqwest::Client,
        request: &'a ChatRequest<'a>,
    ) -> futures_util::future::BoxFuture<'a, Result<AiAnswer, AiError>> {
        Box::pin(async move { openai::complete(http, &self.0.base_url, self.0.key(self.name())?, request).await })
    }
}

/// Anthropic's messages API.
#[derive(Debug, Clone)]
pub struct AnthropicClient(Endpoint);

impl AnthropicClient {
    /// A client for `{base_url}/v1/messages` with `api_key`.
    pub fn new(base_url: &str, api_key: Option<String>) -> Self {
        Self(Endpoint { base_url: base_url.to_string(), api_key })
    }
}

impl ChatProvider for AnthropicClient {
    fn name(&self) -> &'static str {
        "anthropic"
    }

    fn ready(&self) -> Result<(), AiError> {
        self.0.key(self.name()).map(|_| ())
    }

    fn complete<'a>(
        &'a self,
        http: &'a reqwest::Client,
        request: &'a ChatRequest<'a>,
    ) -> futures_util::future::BoxFuture<'a, Result<AiAnswer, AiError>> {
        Box::pin(async move { anthropic::complete(http, &self.0.base_url, self.0.key(self.name())?, request).await })
    }
}

impl Ai {
    /// Builds the clients: connect and total timeouts, no redirects. `api` contexts at loopback
    /// or private addresses are refused (see [`Ai::with_private_networks`]).
    pub fn new(config: AiConfig) -> reqwest::Result<Self> {
        let providers = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("baton-ai/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let contexts = context_client(&config, false)?;
        let inner = Inner {
            openai: OpenAiClient::new(&config.openai_base_url, config.openai_api_key.clone()),
            anthropic: AnthropicClient::new(&config.anthropic_base_url, config.anthropic_api_key.clone()),
            config,
            providers,
            contexts,
            allow_private_networks: false,
            cache: ContextCache::default(),
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Whether `api` contexts may be fetched from loopback, private or link-local addresses
    /// (checked after DNS resolution, like webhooks). Off by default: a context URL is chosen
    /// by a tenant and its content is shown to the model, so it must not reach internal
    /// services. Pass `webhooks.allow_private_networks`.
    pub fn with_private_networks(self, allowed: bool) -> reqwest::Result<Self> {
        let contexts = context_client(&self.inner.config, allowed)?;
        Ok(Self {
            inner: Arc::new(Inner {
                config: self.inner.config.clone(),
                providers: self.inner.providers.clone(),
                openai: self.inner.openai.clone(),
                anthropic: self.inner.anthropic.clone(),
                contexts,
                allow_private_networks: allowed,
                cache: ContextCache::default(),
            }),
        })
    }

    /// The configuration the service was built with.
    pub fn config(&self) -> &AiConfig {
        &self.inner.config
    }

    /// One reply: system prompt (settings.system_prompt + the contexts whose trigger_keywords
    /// match `user_text`, highest priority first, within context_budget_chars; `api` contexts
    /// fetched through a TTL cache bounded in size and time, and left out when they cannot be
    /// fetched) + recent `history` (bounded by history_messages and history_max_chars, oldest
    /// dropped first; user → "user", assistant and agent → "assistant", system messages skipped)
    /// + `user_text` as the last user turn (not duplicated when history's last message is that
    /// same user text). Calls the provider of settings.ai_provider ("openai" | "anthropic") with
    /// settings.ai_model, ai_temperature, ai_max_tokens.
    #[tracing::instrument(skip_all, fields(provider = %settings.ai_provider, model = %settings.ai_model))]
    pub async fn reply(
        &self,
        settings: &Settings,
        contexts: &[AiContext],
        history: &[Message],
        user_text: &str,
    ) -> Result<AiAnswer, AiError> {
        let provider = self.provider(&settings.ai_provider)?;
        provider.ready()?;
        let normalized = normalize(user_text);
        let resolved = self.resolve_contexts(contexts, &normalized).await;
        let chosen = prompt::select_contexts(&resolved, &normalized, self.inner.config.context_budget_chars);
        let sections: Vec<(&str, &str)> = chosen.iter().map(|c| (c.name.as_str(), c.content.as_str())).collect();
        let system = prompt::system_prompt(&settings.system_prompt, &sections);
        let turns = self.turns(history, user_text);
        let request = ChatRequest {
            model: settings.ai_model.trim(),
            temperature: settings.ai_temperature,
            max_tokens: settings.ai_max_tokens,
            system: &system,
            turns: &turns,
        };
        tracing::debug!(contexts = chosen.len(), turns = turns.len(), "asking the AI provider");
        let answer = provider.complete(&self.inner.providers, &request).await;
        match &answer {
            Ok(a) => tracing::debug!(tokens_used = ?a.tokens_used, "AI answered"),
            Err(e) => tracing::warn!(error = %e, "AI reply failed"),
        }
        answer
    }

    /// The base URL and key of `provider`; `MissingKey` when it has no key.
    /// The provider a chatbot's `ai_provider` names.
    pub fn provider(&self, name: &str) -> Result<&dyn ChatProvider, AiError> {
        match name.trim().to_ascii_lowercase().as_str() {
            "openai" => Ok(&self.inner.openai),
            "anthropic" => Ok(&self.inner.anthropic),
            _ => Err(AiError::UnknownProvider(name.to_string())),
        }
    }

    /// The triggered contexts with their content: static ones as they are, `api` ones fetched
    /// (or cached) and left out when that fails.
    async fn resolve_contexts(&self, contexts: &[AiContext], normalized: &str) -> Vec<AiContext> {
        let mut api_contexts = 0;
        let mut candidates = Vec::new();
        for context in prompt::matching_contexts(contexts, normalized) {
            if context.context_type == AiContextType::Api {
                if api_contexts == MAX_API_CONTEXTS_PER_REPLY {
                    continue;
                }
                api_contexts += 1;
            }
            candidates.push(context);
        }
        join_all(candidates.into_iter().map(|c| self.resolve_context(c))).await.into_iter().flatten().collect()
    }

    async fn resolve_context(&self, context: &AiContext) -> Option<AiContext> {
        let api = match context.context_type {
            AiContextType::Static => return Some(context.clone()),
            AiContextType::Api => context.api_config.as_ref()?,
        };
        let with_content = |content: &str| AiContext { content: content.to_string(), ..context.clone() };
        let cache = &self.inner.cache;
        if let Some(content) = cache.get(context, Instant::now()) {
            return Some(with_content(&content));
        }
        match contexts::fetch(&self.inner.contexts, api, self.inner.allow_private_networks).await {
            Ok(content) => {
                let content: Arc<str> = Arc::from(content);
                cache.insert(context, Arc::clone(&content), Duration::from_secs(api.cache_ttl_secs), Instant::now());
                Some(with_content(&content))
            }
            Err(error) => {
                tracing::warn!(context_id = %context.id, %error, "AI context could not be fetched; left out of the prompt");
                None
            }
        }
    }

    /// The bounded history plus `user_text` as the last user turn.
    fn turns(&self, history: &[Message], user_text: &str) -> Vec<ChatTurn> {
        let user_text = user_text.trim();
        let config = &self.inner.config;
        // The caller usually stored the incoming message before asking; do not send it twice.
        let mut earlier = history;
        if let Some(last) = history.iter().rposition(|m| m.role != Role::System && !m.content.trim().is_empty()) {
            if history[last].role == Role::User && history[last].content.trim() == user_text {
                earlier = &history[..last];
            }
        }
        let mut turns = prompt::history(earlier, config.history_messages, config.history_max_chars);
        turns.push(ChatTurn::user(user_text));
        turns
    }
}

/// The client for `api` contexts: the webhook client's address policy (private addresses
/// refused after DNS resolution unless `allow_private`), timeouts, no redirects.
fn context_client(config: &AiConfig, allow_private: bool) -> reqwest::Result<reqwest::Client> {
    crate::webhook::delivery_client(&crate::webhook::WebhookConfig {
        allow_private_networks: allow_private,
        connect_timeout: config.connect_timeout,
        timeout: config.timeout,
        retry_schedule: Vec::new(),
        max_in_flight: 1,
    })
}

/// Sends `body` as JSON and reads a JSON answer: `Http` for a non-2xx status, `Timeout`,
/// `Request` when the call cannot be made, `Malformed` when the answer is not JSON.
async fn post_json(request: reqwest::RequestBuilder, body: &Value) -> Result<Value, AiError> {
    let mut response = request.json(body).send().await.map_err(transport_error)?;
    let status = response.status();
    if !status.is_success() {
        let (bytes, _) = read_body(&mut response, MAX_ERROR_BYTES).await.map_err(transport_error)?;
        let text: String = String::from_utf8_lossy(&bytes).chars().take(ERROR_BODY_CHARS).collect();
        return Err(AiError::Http(status.as_u16(), text));
    }
    let (bytes, truncated) = read_body(&mut response, MAX_ANSWER_BYTES).await.map_err(transport_error)?;
    if truncated {
        return Err(AiError::Malformed(format!("the answer is larger than {MAX_ANSWER_BYTES} bytes")));
    }
    serde_json::from_slice(&bytes).map_err(|e| AiError::Malformed(format!("the answer is not JSON: {e}")))
}

fn transport_error(error: reqwest::Error) -> AiError {
    if error.is_timeout() {
        return AiError::Timeout;
    }
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    AiError::Request(message)
}

/// Reads at most `limit` bytes of a response body; `true` when there was more.
async fn read_body(response: &mut reqwest::Response, limit: usize) -> reqwest::Result<(Vec<u8>, bool)> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// A token count as stored.
fn saturate(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::{TimeZone, Utc};
    use serde_json::json;
    use uuid::Uuid;

    use super::fake_http::{Answer, FakeServer};
    use super::*;
    use crate::model::{AiContextApi, AiContextId, ChatbotId, ConversationId, MessageId};

    fn openai_answer(text: &str, total_tokens: u64) -> Answer {
        Answer::json(
            200,
            json!({
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": total_tokens - 5, "completion_tokens": 5, "total_tokens": total_tokens},
            }),
        )
    }

    fn anthropic_answer(text: &str, input: u64, output: u64) -> Answer {
        Answer::json(
            200,
            json!({
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": input, "output_tokens": output},
            }),
        )
    }

    /// A provider fake answering both APIs on their paths.
    async fn provider() -> FakeServer {
        FakeServer::start(|request| match request.path.as_str() {
            "/v1/chat/completions" => openai_answer("Shipping is free over $50.", 42),
            "/v1/messages" => anthropic_answer("Shipping is free over $50.", 30, 12),
            _ => Answer::json(404, json!({"error": "no such path"})),
        })
        .await
    }

    fn config(server: &FakeServer) -> AiConfig {
        AiConfig {
            openai_base_url: format!("{}/v1", server.url),
            openai_api_key: Some("sk-test-openai".into()),
            anthropic_base_url: server.url.clone(),
            anthropic_api_key: Some("sk-ant-test".into()),
            timeout: Duration::from_secs(5),
            ..AiConfig::default()
        }
    }

    fn ai(config: AiConfig) -> Ai {
        Ai::new(config).expect("clients build").with_private_networks(true).expect("clients build")
    }

    fn settings(provider: &str) -> Settings {
        Settings {
            ai_enabled: true,
            ai_provider: provider.into(),
            ai_model: "test-model".into(),
            ai_temperature: 0.25,
            ai_max_tokens: 123,
            system_prompt: "You are the shop's assistant.".into(),
            ..Settings::default()
        }
    }

    fn context(id: u128, name: &str, priority: i32, keywords: &[&str], content: &str) -> AiContext {
        let at = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(id as i64);
        AiContext {
            id: AiContextId(Uuid::from_u128(id)),
            chatbot_id: ChatbotId(Uuid::from_u128(1)),
            name: name.into(),
            trigger_keywords: keywords.iter().map(|k| k.to_string()).collect(),
            context_type: AiContextType::Static,
            content: content.into(),
            api_config: None,
            priority,
            enabled: true,
            created_at: at,
            updated_at: at,
        }
    }

    fn api_context(id: u128, url: &str, ttl_secs: u64) -> AiContext {
        AiContext {
            context_type: AiContextType::Api,
            api_config: Some(AiContextApi {
                url: url.into(),
                headers: BTreeMap::from([("x-catalog-token".to_string(), "cat-1".to_string())]),
                cache_ttl_secs: ttl_secs,
                max_bytes: 1024,
                timeout_ms: 2000,
                content_pointer: String::new(),
            }),
            ..context(id, "Catalog", 5, &["price"], "")
        }
    }

    fn message(seq: u64, role: Role, content: &str) -> Message {
        Message {
            id: MessageId(Uuid::from_u128(seq as u128)),
            ..Message::new(ConversationId(Uuid::from_u128(7)), seq, role, content, "text", Utc::now())
        }
    }

    fn shop_contexts() -> Vec<AiContext> {
        vec![
            context(1, "Returns", 1, &["return", "refund"], "Returns within 30 days."),
            context(2, "Shipping", 10, &["shipping", "delivery"], "Free shipping over $50."),
            context(3, "Hours", 20, &["shipping"], "We ship Monday to Friday."),
        ]
    }

    fn conversation(user_text: &str) -> Vec<Message> {
        vec![
            message(1, Role::User, "hi"),
            message(2, Role::Assistant, "Hello! How can I help?"),
            message(3, Role::System, "user_seen_message"),
            message(4, Role::Agent, "Anna from support here."),
            message(5, Role::User, user_text),
        ]
    }

    #[test]
    fn the_chatbots_ai_provider_picks_one_of_the_two_clients() {
        let ai = Ai::new(AiConfig::default()).expect("clients build");
        assert_eq!(ai.provider("openai").map(|p| p.name()).ok(), Some("openai"));
        assert_eq!(ai.provider(" Anthropic ").map(|p| p.name()).ok(), Some("anthropic"));
        assert!(matches!(ai.provider("mistral"), Err(AiError::UnknownProvider(_))));
        assert!(matches!(ai.provider("openai").map(|p| p.ready()), Ok(Err(AiError::MissingKey("openai")))));
    }

    #[tokio::test]
    async fn an_openai_reply_sends_the_prompt_contexts_and_history_and_counts_tokens() {
        let server = provider().await;
        let text = "How much is shipping?";

        let answer =
            ai(config(&server)).reply(&settings("openai"), &shop_contexts(), &conversation(text), text).await.unwrap();

        assert_eq!(answer, AiAnswer { text: "Shipping is free over $50.".into(), tokens_used: Some(42) });
        let requests = server.requests();
        assert_eq!(requests.len(), 1);
        let request = &requests[0];
        assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/v1/chat/completions"));
        assert_eq!(request.header("authorization"), Some("Bearer sk-test-openai"));
        assert!(request.header("content-type").is_some_and(|v| v.starts_with("application/json")));
        let body = request.json();
        assert_eq!(body["model"], "test-model");
        assert_eq!(body["temperature"], 0.25);
        assert_eq!(body["max_tokens"], 123);
        assert_eq!(
            body["messages"],
            json!([
                {"role": "system", "content": "You are the shop's assistant.\n\n## Hours\nWe ship Monday to Friday.\n\n## Shipping\nFree shipping over $50."},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "Hello! How can I help?"},
                {"role": "assistant", "content": "Anna from support here."},
                {"role": "user", "content": "How much is shipping?"},
            ])
        );
    }

    #[tokio::test]
    async fn an_anthropic_reply_sends_alternating_turns_and_sums_the_tokens() {
        let server = provider().await;
        let text = "Can I get a refund?";
        let history = [message(1, Role::Assistant, "Welcome!"), message(2, Role::User, "hi")];

        let answer = ai(config(&server)).reply(&settings("Anthropic"), &shop_contexts(), &history, text).await.unwrap();

        assert_eq!(answer, AiAnswer { text: "Shipping is free over $50.".into(), tokens_used: Some(42) });
        let requests = server.requests();
        let request = &requests[0];
        assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/v1/messages"));
        assert_eq!(request.header("x-api-key"), Some("sk-ant-test"));
        assert_eq!(request.header("anthropic-version"), Some("2023-06-01"));
        assert_eq!(request.header("authorization"), None);
        let body = request.json();
        assert_eq!(body["model"], "test-model");
        assert_eq!(body["max_tokens"], 123);
        assert_eq!(body["temperature"], 0.25);
        assert_eq!(body["system"], "You are the shop's assistant.\n\n## Returns\nReturns within 30 days.");
        assert_eq!(body["messages"], json!([{"role": "user", "content": "hi\n\nCan I get a refund?"}]));
    }

    #[tokio::test]
    async fn the_users_text_is_added_as_the_last_turn_when_history_does_not_end_with_it() {
        let server = provider().await;

        ai(config(&server)).reply(&settings("openai"), &[], &[message(1, Role::User, "earlier")], "now").await.unwrap();

        let messages = server.requests()[0].json()["messages"].clone();
        assert_eq!(
            messages,
            json!([
                {"role": "system", "content": "You are the shop's assistant."},
                {"role": "user", "content": "earlier"},
                {"role": "user", "content": "now"},
            ])
        );
    }

    #[tokio::test]
    async fn history_is_bounded_by_the_configured_message_count() {
        let server = provider().await;
        let history: Vec<Message> = (1..=30).map(|i| message(i, Role::User, &format!("m{i}"))).collect();
        let config = AiConfig { history_messages: 4, ..config(&server) };

        ai(config).reply(&settings("openai"), &[], &history, "m30").await.unwrap();

        let messages = server.requests()[0].json()["messages"].clone();
        let texts: Vec<&str> = messages.as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
        assert_eq!(texts[1..], ["m26", "m27", "m28", "m29", "m30"]);
    }

    #[tokio::test]
    async fn a_provider_without_a_key_fails_before_any_request() {
        let server = provider().await;
        let no_keys = AiConfig { openai_api_key: None, anthropic_api_key: Some(String::new()), ..config(&server) };
        let ai = ai(no_keys);

        let openai = ai.reply(&settings("openai"), &[], &[], "hi").await;
        let anthropic = ai.reply(&settings("anthropic"), &[], &[], "hi").await;

        assert!(matches!(openai, Err(AiError::MissingKey("openai"))), "{openai:?}");
        assert!(matches!(anthropic, Err(AiError::MissingKey("anthropic"))), "{anthropic:?}");
        assert!(server.requests().is_empty());
    }

    #[tokio::test]
    async fn an_unknown_provider_is_refused() {
        let server = provider().await;

        let result = ai(config(&server)).reply(&settings("mistral"), &[], &[], "hi").await;

        assert!(matches!(result, Err(AiError::UnknownProvider(ref p)) if p == "mistral"), "{result:?}");
        assert!(server.requests().is_empty());
    }

    #[tokio::test]
    async fn an_error_status_is_reported_with_the_start_of_its_body() {
        let long_message = "rate limited ".repeat(50);
        let server = FakeServer::start(move |_| Answer::text(429, &long_message)).await;

        let result = ai(config(&server)).reply(&settings("openai"), &[], &[], "hi").await;

        match result {
            Err(AiError::Http(429, body)) => {
                assert_eq!(body.chars().count(), 200);
                assert!(body.starts_with("rate limited rate limited"));
            }
            other => panic!("expected Http(429, …), got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_provider_that_answers_too_late_is_a_timeout() {
        let server = FakeServer::start(|_| openai_answer("late", 10).delayed(Duration::from_secs(3))).await;
        let config = AiConfig { timeout: Duration::from_millis(200), ..config(&server) };

        let result = ai(config).reply(&settings("openai"), &[], &[], "hi").await;

        assert!(matches!(result, Err(AiError::Timeout)), "{result:?}");
    }

    #[tokio::test]
    async fn an_answer_that_is_not_json_or_has_no_text_is_malformed() {
        let not_json = FakeServer::start(|_| Answer::text(200, "<html>oops</html>")).await;
        let no_text = FakeServer::start(|_| Answer::json(200, json!({"choices": []}))).await;
        let anthropic_empty = FakeServer::start(|_| Answer::json(200, json!({"content": []}))).await;

        let a = ai(config(&not_json)).reply(&settings("openai"), &[], &[], "hi").await;
        let b = ai(config(&no_text)).reply(&settings("openai"), &[], &[], "hi").await;
        let c = ai(config(&anthropic_empty)).reply(&settings("anthropic"), &[], &[], "hi").await;

        for result in [a, b, c] {
            assert!(matches!(result, Err(AiError::Malformed(_))), "{result:?}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_provider_is_a_request_error() {
        let config = AiConfig { openai_base_url: "http://127.0.0.1:9".into(), ..AiConfig::default() };
        let config = AiConfig { openai_api_key: Some("sk-unreachable-key".into()), ..config };

        let result = ai(config).reply(&settings("openai"), &[], &[], "hi").await;

        match result {
            Err(AiError::Request(message)) => assert!(!message.contains("sk-unreachable-key"), "{message}"),
            other => panic!("expected a request error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_api_context_is_fetched_once_within_its_ttl() {
        let provider = provider().await;
        let catalog = FakeServer::start(|_| Answer::text(200, "Widgets cost $5.")).await;
        let ai = ai(config(&provider));
        let contexts = [api_context(9, &format!("{}/catalog", catalog.url), 300)];

        ai.reply(&settings("openai"), &contexts, &[], "what is the price?").await.unwrap();
        ai.reply(&settings("openai"), &contexts, &[], "and the price of gadgets?").await.unwrap();

        let fetches = catalog.requests();
        assert_eq!(fetches.len(), 1);
        assert_eq!((fetches[0].method.as_str(), fetches[0].path.as_str()), ("GET", "/catalog"));
        assert_eq!(fetches[0].header("x-catalog-token"), Some("cat-1"));
        for request in provider.requests() {
            let system = request.json()["messages"][0]["content"].as_str().unwrap().to_string();
            assert!(system.ends_with("## Catalog\nWidgets cost $5."), "{system}");
        }
    }

    #[tokio::test]
    async fn an_api_context_is_fetched_again_once_its_ttl_ran_out() {
        let provider = provider().await;
        let catalog = FakeServer::start(|_| Answer::text(200, "Widgets cost $5.")).await;
        let ai = ai(config(&provider));
        let contexts = [api_context(9, &format!("{}/catalog", catalog.url), 1)];

        ai.reply(&settings("openai"), &contexts, &[], "price?").await.unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        ai.reply(&settings("openai"), &contexts, &[], "price?").await.unwrap();

        assert_eq!(catalog.requests().len(), 2);
    }

    #[tokio::test]
    async fn an_api_context_with_no_ttl_is_fetched_every_time() {
        let provider = provider().await;
        let catalog = FakeServer::start(|_| Answer::text(200, "Widgets cost $5.")).await;
        let ai = ai(config(&provider));
        let contexts = [api_context(9, &format!("{}/catalog", catalog.url), 0)];

        for _ in 0..3 {
            ai.reply(&settings("openai"), &contexts, &[], "price?").await.unwrap();
        }

        assert_eq!(catalog.requests().len(), 3);
    }

    #[tokio::test]
    async fn an_api_context_is_not_fetched_when_its_keywords_do_not_match() {
        let provider = provider().await;
        let catalog = FakeServer::start(|_| Answer::text(200, "Widgets cost $5.")).await;
        let contexts = [api_context(9, &format!("{}/catalog", catalog.url), 300)];

        ai(config(&provider)).reply(&settings("openai"), &contexts, &[], "hello").await.unwrap();

        assert!(catalog.requests().is_empty());
    }

    #[tokio::test]
    async fn an_api_context_that_fails_is_left_out_and_the_reply_still_comes() {
        let provider = provider().await;
        let broken = FakeServer::start(|_| Answer::text(500, "down")).await;
        let contexts = [
            api_context(9, &format!("{}/catalog", broken.url), 300),
            context(2, "Prices", 1, &["price"], "See the site."),
        ];

        let answer = ai(config(&provider)).reply(&settings("openai"), &contexts, &[], "price?").await.unwrap();

        assert_eq!(answer.text, "Shipping is free over $50.");
        let system = provider.requests()[0].json()["messages"][0]["content"].as_str().unwrap().to_string();
        assert_eq!(system, "You are the shop's assistant.\n\n## Prices\nSee the site.");
    }

    #[tokio::test]
    async fn a_failed_fetch_is_not_cached() {
        let provider = provider().await;
        let broken = FakeServer::start(|_| Answer::text(503, "down")).await;
        let ai = ai(config(&provider));
        let contexts = [api_context(9, &format!("{}/catalog", broken.url), 300)];

        ai.reply(&settings("openai"), &contexts, &[], "price?").await.unwrap();
        ai.reply(&settings("openai"), &contexts, &[], "price?").await.unwrap();

        assert_eq!(broken.requests().len(), 2);
    }

    #[tokio::test]
    async fn an_api_context_that_answers_too_late_is_left_out() {
        let provider = provider().await;
        let slow = FakeServer::start(|_| Answer::text(200, "late").delayed(Duration::from_secs(3))).await;
        let mut slow_context = api_context(9, &format!("{}/catalog", slow.url), 300);
        slow_context.api_config.as_mut().unwrap().timeout_ms = 100;

        let answer = ai(config(&provider)).reply(&settings("openai"), &[slow_context], &[], "price?").await;

        assert!(answer.is_ok(), "{answer:?}");
        let system = provider.requests()[0].json()["messages"][0]["content"].as_str().unwrap().to_string();
        assert_eq!(system, "You are the shop's assistant.");
    }

    #[tokio::test]
    async fn the_content_pointer_picks_the_content_out_of_a_json_answer_and_max_bytes_cuts_it() {
        let provider = provider().await;
        let catalog =
            FakeServer::start(|_| Answer::json(200, json!({"data": {"summary": "Widgets cost $5 each, gadgets $7."}})))
                .await;
        let mut c = api_context(9, &format!("{}/catalog", catalog.url), 300);
        let api = c.api_config.as_mut().unwrap();
        api.content_pointer = "/data/summary".into();
        api.max_bytes = 15;

        ai(config(&provider)).reply(&settings("openai"), &[c], &[], "price?").await.unwrap();

        let system = provider.requests()[0].json()["messages"][0]["content"].as_str().unwrap().to_string();
        assert!(system.ends_with("## Catalog\nWidgets cost $5"), "{system}");
    }

    #[tokio::test]
    async fn an_api_contexts_fetched_content_counts_against_the_budget() {
        let provider = provider().await;
        let catalog = FakeServer::start(|_| Answer::text(200, &"x".repeat(100))).await;
        let contexts = [
            api_context(9, &format!("{}/catalog", catalog.url), 300),
            context(2, "Prices", 1, &["price"], "See the site."),
        ];
        let config = AiConfig { context_budget_chars: 50, ..config(&provider) };

        ai(config).reply(&settings("openai"), &contexts, &[], "price?").await.unwrap();

        let system = provider.requests()[0].json()["messages"][0]["content"].as_str().unwrap().to_string();
        assert_eq!(system, "You are the shop's assistant.\n\n## Prices\nSee the site.");
    }

    #[tokio::test]
    async fn api_contexts_on_private_addresses_are_refused_unless_allowed() {
        let provider = provider().await;
        let catalog = FakeServer::start(|_| Answer::text(200, "internal data")).await;
        let strict = Ai::new(config(&provider)).unwrap();

        for url in [format!("http://localhost:{}/catalog", catalog.port()), format!("{}/catalog", catalog.url)] {
            let answer = strict.reply(&settings("openai"), &[api_context(9, &url, 300)], &[], "price?").await;
            assert!(answer.is_ok(), "{answer:?}");
        }

        assert!(catalog.requests().is_empty());
        for request in provider.requests() {
            let system = request.json()["messages"][0]["content"].as_str().unwrap().to_string();
            assert!(!system.contains("internal data"), "{system}");
        }
    }

    #[test]
    fn the_config_never_shows_its_keys() {
        let config = AiConfig { openai_api_key: Some("sk-secret-123".into()), ..AiConfig::default() };

        let shown = format!("{config:?} {:?}", Ai::new(config.clone()).unwrap());

        assert!(!shown.contains("sk-secret-123"), "{shown}");
        assert!(shown.contains("openai_api_key: \"set\""), "{shown}");
    }
}

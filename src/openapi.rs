//! The OpenAPI 3.1 document of the native API, generated from the code: each handler's
//! `#[utoipa::path]` attribute, the model's `ToSchema` derives, and the view structs below for
//! the answers handlers build with `serde_json::json!`. Served at `GET /openapi.json` and
//! rendered at `GET /docs`; the schema test (`tests/api/openapi.rs`) drives every route and
//! validates its real answers against it.
//!
//! Conventions applied once here rather than on every handler ([`Conventions`]):
//! - a handler declares the scopes it needs as `security(("api_key" = ["scope"]))`; the same
//!   requirement is offered for the `bearer` and `chatcaptain_key` schemes;
//! - every authenticated operation can answer 401, 403, 429 and 503; one with a JSON body 400,
//!   408, 413 and 415; one with query parameters 400;
//! - the per-conversation routes under `/v1/chatbots/{bot}/conversations/{id}` are also served
//!   under `/v1/conversations/{id}`, and `/v1/ws` under `/ws/conversations` (seed `003`).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use actix_web::{web, HttpResponse};
use baton_actors::model::{
    AiContext, AiContextApi, AiContextType, ApiKey, Button, Channel, ChatbotId, ContactId, ConversationId,
    ConversationStatus, DeliveryId, DeliveryKind, DeliveryStatus, Flow, FlowStep, MatchType, Message, MessageId,
    PanelConfig, ReplyWebhook, ResponseType, Session, Settings, TakeoverWebhook, TenantId, Transfer,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{ApiKey as ApiKeyScheme, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Header, Ref, RefOr, SecurityRequirement};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use crate::routes::resource;

/// Paths answered without authentication.
pub const PUBLIC_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"];

/// Route prefixes served twice: (documented prefix, alias prefix, operation id suffix of the alias).
const ALIASES: &[(&str, &str, &str)] = &[
    ("/v1/chatbots/{bot}/conversations/{id}", "/v1/conversations/{id}", "_direct"),
    ("/v1/ws", "/ws/conversations", "_seed_003"),
];

/// The native API's OpenAPI document.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "baton",
        description = "A conversation runtime for chatbots on messaging channels: native API. \
            Errors are `{\"error\", \"code\", \"field\"?}`; lists are `{\"items\": [...]}`; \
            every object is scoped to the tenant of the calling key.",
    ),
    paths(
        crate::routes::health::healthz,
        crate::routes::health::readyz,
        crate::routes::health::metrics,
        openapi_json,
        docs,
        crate::routes::api_keys::create,
        crate::routes::api_keys::list,
        crate::routes::api_keys::delete,
        crate::routes::chatbots::create,
        crate::routes::chatbots::list,
        crate::routes::chatbots::get,
        crate::routes::chatbots::update,
        crate::routes::chatbots::delete,
        crate::routes::chatbots::get_settings,
        crate::routes::chatbots::put_settings,
        crate::routes::keywords::list,
        crate::routes::keywords::create,
        crate::routes::keywords::get,
        crate::routes::keywords::update,
        crate::routes::keywords::delete,
        crate::routes::ai_contexts::list,
        crate::routes::ai_contexts::create,
        crate::routes::ai_contexts::get,
        crate::routes::ai_contexts::update,
        crate::routes::ai_contexts::delete,
        crate::routes::channels::list,
        crate::routes::channels::get,
        crate::routes::channels::put,
        crate::routes::channels::patch,
        crate::routes::flows::list,
        crate::routes::flows::create,
        crate::routes::flows::get,
        crate::routes::flows::update,
        crate::routes::flows::delete,
        crate::routes::conversations::handle,
        crate::routes::conversations::event,
        crate::routes::conversations::payload,
        crate::routes::conversations::custom_event,
        crate::routes::conversations::list,
        crate::routes::conversations::create,
        crate::routes::conversations::find,
        crate::routes::conversations::get,
        crate::routes::conversations::update,
        crate::routes::conversations::delete,
        crate::routes::conversations::messages,
        crate::routes::conversations::post_message,
        crate::routes::conversations::bot_control,
        crate::routes::conversations::set_status,
        crate::routes::conversations::autoreply,
        crate::routes::contacts::export,
        crate::routes::contacts::get,
        crate::routes::contacts::delete,
        crate::routes::drafts::draft,
        crate::routes::sessions::list,
        crate::routes::sessions::get,
        crate::routes::sessions::update,
        crate::routes::teams::create_team,
        crate::routes::teams::list_teams,
        crate::routes::teams::get_team,
        crate::routes::teams::create_agent,
        crate::routes::teams::list_agents,
        crate::routes::teams::get_agent,
        crate::routes::transfers::list,
        crate::routes::transfers::create,
        crate::routes::transfers::pickup,
        crate::routes::transfers::get,
        crate::routes::transfers::assign,
        crate::routes::transfers::resume,
        crate::routes::deliveries::list,
        crate::routes::deliveries::get,
        crate::routes::deliveries::retry,
        crate::routes::live::connect,
    ),
    components(schemas(ApiErrorBody)),
    modifiers(&Conventions),
    tags(
        (name = "api-keys", description = "API keys of the tenant (scope `admin`)"),
        (name = "chatbots", description = "Chatbots and their settings"),
        (name = "keywords", description = "Keyword rules: the first enabled rule that matches answers"),
        (name = "ai-contexts", description = "Knowledge given to the AI model when its keywords match"),
        (name = "flows", description = "Multi-step flows"),
        (name = "channels", description = "Provider channels and their webhooks"),
        (name = "ingestion", description = "What channel providers post: messages, events, payloads"),
        (name = "conversations", description = "Conversations, their messages, and human takeover"),
        (name = "contacts", description = "The people behind provider ids, and erasing everything of theirs"),
        (name = "sessions", description = "Flow sessions of conversations"),
        (name = "teams", description = "Teams and agents who pick up transfers"),
        (name = "transfers", description = "Hand-overs of conversations to humans"),
        (name = "webhook-deliveries", description = "The outbox of webhook calls"),
        (name = "live", description = "Live events over WebSocket"),
        (name = "operations", description = "Liveness, readiness, metrics and this document (no authentication)"),
    )
)]
pub struct ApiDoc;

/// The document as served, built once.
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serializes"))
}

/// Registers `GET /openapi.json` and `GET /docs`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/openapi.json").route(web::get().to(openapi_json)))
        .service(resource("/docs").route(web::get().to(docs)));
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi_document",
    tag = "operations",
    summary = "This OpenAPI 3.1 document",
    responses((status = 200, description = "The OpenAPI document", body = Object)),
)]
async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(document())
}

/// The rendered reference: Scalar, loaded from a CDN by the browser, reading `/openapi.json`.
const DOCS_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>baton API reference</title>
</head>
<body>
  <div id="app"></div>
  <noscript>
    The API reference needs JavaScript; the document itself is at <a href="/openapi.json">/openapi.json</a>.
  </noscript>
  <script src="https://cdn.jsdelivr.net/npm/@scalar/api-reference@1.72.1/dist/browser/standalone.js"></script>
  <script>Scalar.createApiReference('#app', { url: '/openapi.json' })</script>
</body>
</html>
"#;

#[utoipa::path(
    get,
    path = "/docs",
    operation_id = "api_reference",
    tag = "operations",
    summary = "The API reference rendered from /openapi.json",
    responses((status = 200, description = "An HTML page", body = String, content_type = "text/html")),
)]
async fn docs() -> HttpResponse {
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(DOCS_PAGE)
}

/// Applies the conventions listed at the top of this file.
#[derive(Debug)]
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.security_schemes.insert(
            "api_key".into(),
            SecurityScheme::ApiKey(ApiKeyScheme::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "An API key (`bt_…`). Scopes listed on an operation are alternatives: one of them is needed.",
            ))),
        );
        components.security_schemes.insert(
            "bearer".into(),
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key, or an HS256 JWT with claims sub, tenant, scopes, exp"))
                    .build(),
            ),
        );
        components.security_schemes.insert(
            "chatcaptain_key".into(),
            SecurityScheme::ApiKey(ApiKeyScheme::Header(ApiKeyValue::with_description(
                "x-chatcaptain-key",
                "An API key, in the header of seed 002",
            ))),
        );
        components.security_schemes.insert(
            "token".into(),
            SecurityScheme::ApiKey(ApiKeyScheme::Query(ApiKeyValue::with_description(
                "token",
                "An API key in the query string (WebSocket routes only)",
            ))),
        );
        for (name, description) in [
            ("BadRequest", "Malformed input; `field` names what is wrong"),
            ("Unauthorized", "No credentials (`Missing authentication`) or an unknown key"),
            ("Forbidden", "The key lacks the scope the operation needs"),
            ("PayloadTooLarge", "The body is over the configured limit"),
            ("UnsupportedMediaType", "The body is not `application/json`"),
        ] {
            components.responses.insert(name.into(), RefOr::T(error_response(description).build()));
        }
        components.responses.insert(
            "RequestTimeout".into(),
            RefOr::T(error_response("The body did not arrive within `server.body_read_timeout_ms`").build()),
        );
        components.responses.insert(
            "TooManyRequests".into(),
            RefOr::T(
                error_response("Over the rate limit of the key or of the conversation; retry after `Retry-After`")
                    .header("Retry-After", Header::new(<u64 as PartialSchema>::schema()))
                    .build(),
            ),
        );
        components.responses.insert(
            "Unavailable".into(),
            RefOr::T(
                error_response("Storage or the conversation is unavailable or overloaded; retry after `Retry-After`")
                    .header("Retry-After", Header::new(<u64 as PartialSchema>::schema()))
                    .build(),
            ),
        );

        let mut aliases = Vec::new();
        for (path, item) in &openapi.paths.paths {
            for (from, to, suffix) in ALIASES {
                if let Some(rest) = path.strip_prefix(from).filter(|rest| rest.is_empty() || rest.starts_with('/')) {
                    aliases.push((format!("{to}{rest}"), alias_of(item.clone(), suffix)));
                }
            }
        }
        openapi.paths.paths.extend(aliases);

        let mut operation_ids = std::collections::BTreeSet::new();
        for (path, item) in openapi.paths.paths.iter_mut() {
            let public = PUBLIC_PATHS.contains(&path.as_str());
            for (method, operation) in operations_mut(item) {
                if let Some(id) = &mut operation.operation_id {
                    if !operation_ids.insert(id.clone()) {
                        id.push('_');
                        id.push_str(method);
                        operation_ids.insert(id.clone());
                    }
                }
                if !public {
                    authenticated(operation);
                }
            }
        }
    }
}

/// An `ApiErrorBody` response.
fn error_response(description: &str) -> ResponseBuilder {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", Content::new(Some(Ref::from_schema_name("ApiErrorBody"))))
}

/// `item` as served under an alias: without the `bot` path parameter, with distinct operation ids.
fn alias_of(mut item: PathItem, suffix: &str) -> PathItem {
    for (_, operation) in operations_mut(&mut item) {
        if let Some(parameters) = &mut operation.parameters {
            parameters.retain(|p| p.name != "bot");
        }
        if let Some(id) = &mut operation.operation_id {
            id.push_str(suffix);
        }
    }
    item
}

fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("get", item.get.as_mut()),
        ("put", item.put.as_mut()),
        ("post", item.post.as_mut()),
        ("delete", item.delete.as_mut()),
        ("patch", item.patch.as_mut()),
    ]
    .into_iter()
    .filter_map(|(method, operation)| operation.map(|o| (method, o)))
}

/// Offers each declared `api_key` requirement for the other key schemes too, and adds the
/// errors every authenticated operation can answer.
fn authenticated(operation: &mut Operation) {
    let declared = operation.security.take().unwrap_or_default();
    let mut security = Vec::new();
    for requirement in declared {
        let value = serde_json::to_value(&requirement).unwrap_or_default();
        security.push(requirement);
        if let Some(scopes) = value.get("api_key").and_then(Value::as_array) {
            let scopes: Vec<String> = scopes.iter().filter_map(Value::as_str).map(str::to_string).collect();
            security.push(SecurityRequirement::new("bearer", scopes.clone()));
            security.push(SecurityRequirement::new("chatcaptain_key", scopes));
        }
    }
    operation.security = Some(security);
    let responses = &mut operation.responses.responses;
    let mut common =
        vec![("401", "Unauthorized"), ("403", "Forbidden"), ("429", "TooManyRequests"), ("503", "Unavailable")];
    if operation.request_body.is_some() {
        common.extend([
            ("400", "BadRequest"),
            ("408", "RequestTimeout"),
            ("413", "PayloadTooLarge"),
            ("415", "UnsupportedMediaType"),
        ]);
    }
    let has_query = operation
        .parameters
        .iter()
        .flatten()
        .any(|p| matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query) && p.name != "token");
    if has_query {
        common.push(("400", "BadRequest"));
    }
    for (status, name) in common {
        responses.entry(status.into()).or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
    }
}

// ---------------------------------------------------------------------------------------------
// Schemas of answers built with `serde_json::json!` and of free-form request bodies
// ---------------------------------------------------------------------------------------------

/// An error: a human readable message, a stable snake_case code and, for 400 and 422, the
/// request field at fault (`message.text`, `keywords[0]`, `greeting_buttons[1].title`).
#[derive(Debug, ToSchema)]
pub struct ApiErrorBody {
    pub error: String,
    pub code: String,
    #[schema(nullable = false)]
    pub field: Option<String>,
    /// On 5xx answers: the request id (also in the `X-Request-Id` header) to quote when
    /// reporting the failure; the server's log carries the cause under it.
    #[schema(nullable = false)]
    pub request_id: Option<String>,
}

/// `{"deleted": true}`.
#[derive(Debug, ToSchema)]
pub struct Deleted {
    pub deleted: bool,
}

/// A liveness or readiness answer.
#[derive(Debug, ToSchema)]
pub struct HealthStatus {
    /// `ok`, `ready` or `unavailable`.
    pub status: String,
}

/// A new API key, with the key itself (shown only here).
#[derive(Debug, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub api_key: ApiKey,
    /// The key (`bt_` + 40 characters); only its hash is stored.
    pub key: String,
}

/// The tenant's API keys (never the keys themselves).
#[derive(Debug, ToSchema)]
pub struct ApiKeyList {
    pub items: Vec<ApiKey>,
}

/// The tenant's chatbots.
#[derive(Debug, ToSchema)]
pub struct ChatbotList {
    pub items: Vec<baton_actors::model::Chatbot>,
}

/// A partial chatbot update: the fields given change (`settings` through `/settings`).
#[derive(Debug, ToSchema)]
pub struct ChatbotPatch {
    #[schema(nullable = false)]
    pub name: Option<String>,
    #[schema(nullable = false)]
    pub description: Option<String>,
}

/// A chatbot's settings as served, with the chatbot they belong to.
#[derive(Debug, ToSchema)]
pub struct SettingsView {
    #[serde(flatten)]
    pub settings: Settings,
    /// The chatbot's id.
    pub id: ChatbotId,
    pub chatbot_id: ChatbotId,
    /// The tenant's id.
    pub account_id: TenantId,
    pub updated_at: DateTime<Utc>,
}

/// A chatbot's keyword rules, highest priority first (ties: oldest first).
#[derive(Debug, ToSchema)]
pub struct KeywordRuleList {
    pub items: Vec<baton_actors::model::KeywordRule>,
}

/// A partial rule update (PUT and PATCH alike): the fields given replace the rule's.
#[derive(Debug, ToSchema)]
pub struct KeywordRulePatch {
    #[schema(nullable = false)]
    pub name: Option<String>,
    #[schema(nullable = false)]
    pub keywords: Option<Vec<String>>,
    #[schema(nullable = false)]
    pub match_type: Option<MatchType>,
    #[schema(nullable = false)]
    pub response_type: Option<ResponseType>,
    #[schema(nullable = false)]
    pub response: Option<String>,
    #[schema(nullable = false)]
    pub buttons: Option<Vec<Button>>,
    #[schema(nullable = false)]
    pub priority: Option<i32>,
    #[schema(nullable = false)]
    pub enabled: Option<bool>,
}

/// A chatbot's AI contexts.
#[derive(Debug, ToSchema)]
pub struct AiContextList {
    pub items: Vec<AiContext>,
}

/// A partial AI context update (PUT and PATCH alike), as a JSON merge patch.
#[derive(Debug, ToSchema)]
pub struct AiContextPatch {
    #[schema(nullable = false)]
    pub name: Option<String>,
    #[schema(nullable = false)]
    pub trigger_keywords: Option<Vec<String>>,
    #[schema(nullable = false)]
    pub context_type: Option<AiContextType>,
    #[schema(nullable = false)]
    pub content: Option<String>,
    /// Null removes it.
    pub api_config: Option<AiContextApi>,
    #[schema(nullable = false)]
    pub priority: Option<i32>,
    #[schema(nullable = false)]
    pub enabled: Option<bool>,
}

/// A chatbot's channels (webhook secrets masked).
#[derive(Debug, ToSchema)]
pub struct ChannelList {
    pub items: Vec<Channel>,
}

/// A channel's configuration: PUT creates or replaces it, PATCH changes the fields given. A
/// `reply_webhook.secret` sent back as `********` keeps the stored one.
#[derive(Debug, ToSchema)]
pub struct ChannelConfig {
    #[schema(nullable = false)]
    pub name: Option<String>,
    /// The provider kind (default `whatsapp`).
    #[schema(nullable = false)]
    pub provider: Option<String>,
    /// Null removes it.
    pub reply_webhook: Option<ReplyWebhook>,
    /// Null removes it.
    pub human_takeover_webhook: Option<TakeoverWebhook>,
}

/// A chatbot's flows.
#[derive(Debug, ToSchema)]
pub struct FlowList {
    pub items: Vec<Flow>,
}

/// A partial flow update (PUT and PATCH alike): the fields given replace the flow's, `steps`
/// as a whole.
#[derive(Debug, ToSchema)]
pub struct FlowPatch {
    #[schema(nullable = false)]
    pub name: Option<String>,
    #[schema(nullable = false)]
    pub trigger_keywords: Option<Vec<String>>,
    #[schema(nullable = false)]
    pub initial_message: Option<String>,
    #[schema(nullable = false)]
    pub completion_message: Option<String>,
    #[schema(nullable = false)]
    pub enabled: Option<bool>,
    /// Null removes it.
    pub panel_config: Option<PanelConfig>,
    #[schema(nullable = false)]
    pub steps: Option<Vec<FlowStep>>,
}

/// Contact details a provider sends with a message or a new conversation.
#[derive(Debug, ToSchema)]
pub struct ContactInput {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub phones: Option<Vec<String>>,
    pub emails: Option<Vec<String>>,
}

/// What an incoming message is.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IncomingMessageType {
    Text,
    Button,
    ListReply,
    Media,
    Location,
}

/// The answer of a sync `handle` (serialized as is: the schema is the response).
#[derive(Debug, Serialize, ToSchema)]
pub struct HandleResponse {
    pub conversation_id: ConversationId,
    pub contact_id: ContactId,
    /// The stored incoming message.
    pub message_id: MessageId,
    pub bot_active: bool,
    /// The bot's replies, in order (empty when the bot is paused or silent).
    pub replies: Vec<baton_actors::model::Reply>,
    /// Whether `message.id` was seen before: then this is the first answer again.
    pub duplicate: bool,
}

/// The answer of an `async: true` handle; replies go to the channel's reply webhook.
#[derive(Debug, Serialize, ToSchema)]
pub struct HandleAccepted {
    pub conversation_id: ConversationId,
    pub message_id: MessageId,
    pub duplicate: bool,
}

/// The answer of `event`, `payload` and `custom-event`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventResponse {
    pub conversation_id: ConversationId,
    pub replies: Vec<baton_actors::model::Reply>,
    pub bot_active: bool,
    /// What the engine did, with `isDebug` only (absent otherwise).
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<Vec<String>>,
}

/// A conversation as served.
#[derive(Debug, ToSchema)]
pub struct ConversationView {
    pub id: ConversationId,
    pub chatbot_id: ChatbotId,
    /// The provider's `channelId`.
    pub channel_id: String,
    pub channel_name: String,
    pub contact_id: ContactId,
    /// The provider's id of the person (`providerId`).
    pub provider_id: String,
    pub status: ConversationStatus,
    pub bot_active: bool,
    /// The open or paused flow session; null when there is none.
    #[schema(required = true)]
    pub session: Option<Session>,
    pub variables: Map<String, Value>,
    /// Free-form metadata; null until set.
    pub metadata: Value,
    pub message_count: u64,
    #[schema(required = true)]
    pub last_message_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub last_seen_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A page of conversations, newest first.
#[derive(Debug, ToSchema)]
pub struct ConversationPage {
    pub items: Vec<ConversationView>,
    /// Pass back as `cursor` for the next page; null on the last one.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// A conversation after `autoreply`, with the seed `003` name of `bot_active`.
#[derive(Debug, ToSchema)]
pub struct AutoreplyView {
    #[serde(flatten)]
    pub conversation: ConversationView,
    pub ai_autoreply_enabled: bool,
}

/// A contact: the person behind a provider id on a chatbot.
#[derive(Debug, ToSchema)]
pub struct ContactView {
    pub id: ContactId,
    pub chatbot_id: ChatbotId,
    /// The provider's id of the person (`providerId`).
    pub provider_id: String,
    pub first_name: String,
    pub last_name: String,
    pub phones: Vec<String>,
    pub emails: Vec<String>,
    /// The contact's conversations (one per channel it wrote on).
    pub conversation_ids: Vec<ConversationId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A conversation exported as one document.
#[derive(Debug, ToSchema)]
pub struct ConversationExport {
    pub conversation: ConversationView,
    /// Null when the contact record is gone.
    #[schema(required = true)]
    pub contact: Option<ContactView>,
    /// Every stored message, in `seq` order (older ones may have passed their retention).
    pub messages: Vec<Message>,
    /// Every flow session the conversation had, oldest first, closed ones included.
    pub sessions: Vec<Session>,
    /// Every transfer the conversation had, oldest first.
    pub transfers: Vec<TransferView>,
    pub exported_at: DateTime<Utc>,
}

/// A page of a conversation's messages, in `seq` order.
#[derive(Debug, ToSchema)]
pub struct MessagePage {
    pub items: Vec<Message>,
    /// Pass back as `after_seq` for the next page; null when this page is not full.
    #[schema(required = true)]
    pub next_after_seq: Option<u64>,
}

/// Pause or resume.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BotAction {
    Pause,
    Resume,
}

/// The outcome of bot-control (seed `000`).
#[derive(Debug, ToSchema)]
pub struct BotControlResponse {
    pub success: bool,
    pub conversation_id: ConversationId,
    pub bot_active: bool,
    pub action: BotAction,
}

/// A reply the AI model would give now; nothing is sent or stored.
#[derive(Debug, ToSchema)]
pub struct DraftResponse {
    pub draft: String,
}

/// A session status change.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionAction {
    Open,
    Close,
    Pause,
    Resume,
}

/// The tenant's sessions, newest first.
#[derive(Debug, ToSchema)]
pub struct SessionList {
    pub items: Vec<Session>,
}

/// The tenant's teams.
#[derive(Debug, ToSchema)]
pub struct TeamList {
    pub items: Vec<baton_actors::model::Team>,
}

/// The tenant's agents.
#[derive(Debug, ToSchema)]
pub struct AgentList {
    pub items: Vec<baton_actors::model::Agent>,
}

/// A transfer as served, with its team's and agent's names.
#[derive(Debug, ToSchema)]
pub struct TransferView {
    #[serde(flatten)]
    pub transfer: Transfer,
    #[schema(required = true)]
    pub team_name: Option<String>,
    #[schema(required = true)]
    pub agent_name: Option<String>,
}

/// Transfers and how many wait (unpicked) in each queue.
#[derive(Debug, ToSchema)]
pub struct TransferList {
    pub transfers: Vec<TransferView>,
    pub general_queue_count: u64,
    /// Team id → waiting transfers.
    pub team_queue_counts: BTreeMap<String, u64>,
}

/// An outbound webhook call as served (its signing secret never is).
#[derive(Debug, ToSchema)]
pub struct DeliveryView {
    pub id: DeliveryId,
    pub kind: DeliveryKind,
    pub status: DeliveryStatus,
    pub chatbot_id: ChatbotId,
    pub conversation_id: ConversationId,
    pub channel_id: String,
    pub url: String,
    pub method: baton_actors::model::WebhookMethod,
    /// The JSON body sent.
    pub payload: Value,
    /// Whether the call carries Standard Webhooks signature headers.
    pub signed: bool,
    pub attempts: u32,
    /// When the next attempt is due, while pending.
    #[schema(required = true)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The HTTP status of the last attempt.
    #[schema(required = true)]
    pub last_status: Option<u16>,
    #[schema(required = true)]
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[schema(required = true)]
    pub delivered_at: Option<DateTime<Utc>>,
}

/// The tenant's webhook deliveries, newest first.
#[derive(Debug, ToSchema)]
pub struct DeliveryList {
    pub items: Vec<DeliveryView>,
}

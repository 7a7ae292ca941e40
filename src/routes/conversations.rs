//! Conversations: ingestion (`handle`), listing and lookup, and every per-conversation
//! route, served both under `/v1/chatbots/{bot}/conversations/{id}` and `/v1/conversations/{id}`.
//! Every change goes through the conversation's actor; reads come from the store.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use baton_actors::botconfig::BotConfig;
use baton_actors::conversation::{
    ApplyPayload, Changed, ContactInput, DeleteConversation, EventHandled, HandleIncoming, IncomingMessage,
    OpenConversation, Origin, PostAgentMessage, RecordEvent, SetBotActive, UpdateConversation,
};
use baton_actors::model::{
    ContactId, Conversation, ConversationId, ConversationStatus, FlowId, Message, Session, SessionStatus,
};
use baton_actors::store::ConversationCursor;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Map, Value};

use crate::app::AppState;
use crate::auth::{Principal, Scope};
use crate::error::ApiError;
use crate::extract::{BodyLimit, Json, Query};
use crate::metrics::HandleOutcome;
use crate::openapi::{EventResponse, HandleAccepted, HandleResponse};
use crate::routes::{deleted, max_chars, required_text, resource};

/// Extra time a sync message waits for its AI answer beyond the model timeout and debounce.
const AI_WAIT_MARGIN: Duration = Duration::from_secs(5);
/// Longest channel, provider and message id accepted.
const MAX_ID_CHARS: usize = 256;
/// Page sizes.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 200;
const DEFAULT_MESSAGES_PAGE: usize = 100;
const MAX_MESSAGES_PAGE: usize = 1000;

/// The ingestion route, registered before every other so the router finds it first.
pub(crate) fn configure_ingestion(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/v1/chatbots/{bot}/conversations/handle").app_data(BodyLimit::Handle).route(web::post().to(handle)),
    );
}

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/chatbots/{bot}/conversations/find").route(web::get().to(find)))
        .service(resource("/v1/chatbots/{bot}/conversations/event").route(web::post().to(event)))
        .service(resource("/v1/chatbots/{bot}/conversations/payload").route(web::post().to(payload)))
        .service(resource("/v1/chatbots/{bot}/conversations/custom-event").route(web::post().to(custom_event)))
        .service(resource("/v1/chatbots/{bot}/conversations").route(web::get().to(list)).route(web::post().to(create)));
    for prefix in ["/v1/chatbots/{bot}/conversations/{id}", "/v1/conversations/{id}"] {
        cfg.service(
            resource(prefix).route(web::get().to(get)).route(web::patch().to(update)).route(web::delete().to(delete)),
        )
        .service(
            resource(&format!("{prefix}/messages")).route(web::get().to(messages)).route(web::post().to(post_message)),
        )
        .service(resource(&format!("{prefix}/bot-control")).route(web::post().to(bot_control)))
        .service(resource(&format!("{prefix}/status")).route(web::put().to(set_status)))
        .service(resource(&format!("{prefix}/autoreply")).route(web::post().to(autoreply)));
    }
}

/// Accepts an id sent as a JSON string or number (providers differ).
fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        S(String),
        N(serde_json::Number),
    }
    match Id::deserialize(d)? {
        Id::S(s) => Ok(s),
        Id::N(n) => Ok(n.to_string()),
    }
}

fn opt_string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    string_or_number(d).map(Some)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct HandleRequest {
    #[serde(default)]
    chatbot_id: Option<String>,
    #[serde(deserialize_with = "string_or_number")]
    channel_id: String,
    #[serde(default)]
    channel_name: Option<String>,
    #[serde(deserialize_with = "string_or_number")]
    provider_id: String,
    #[serde(default)]
    #[allow(dead_code)]
    callee: Option<String>,
    #[serde(default, rename = "async")]
    asynchronous: bool,
    message: IncomingBody,
    #[serde(default)]
    #[schema(value_type = Option<crate::openapi::ContactInput>)]
    contact: Option<ContactInput>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = IncomingMessage)]
struct IncomingBody {
    #[serde(default, deserialize_with = "opt_string_or_number")]
    id: Option<String>,
    #[serde(default, rename = "type")]
    #[schema(value_type = Option<crate::openapi::IncomingMessageType>)]
    kind: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    button_id: Option<String>,
    #[serde(default)]
    payload: Option<Value>,
    #[serde(default)]
    from_me: bool,
}

/// Checks the ids naming a conversation.
fn validate_origin(channel_id: &str, provider_id: &str, channel_name: Option<&str>) -> Result<(), ApiError> {
    required_text("channelId", channel_id)?;
    max_chars("channelId", channel_id, MAX_ID_CHARS)?;
    required_text("providerId", provider_id)?;
    max_chars("providerId", provider_id, MAX_ID_CHARS)?;
    if let Some(name) = channel_name {
        max_chars("channelName", name, 200)?;
    }
    Ok(())
}

/// Validates an incoming message and reduces it to what the actor needs.
fn incoming_message(body: IncomingBody) -> Result<IncomingMessage, ApiError> {
    let kind = body.kind.unwrap_or_else(|| "text".into());
    let text = body.text.unwrap_or_default();
    let text = match kind.as_str() {
        "text" => {
            if text.trim().is_empty() {
                return Err(ApiError::bad_request("message.text", "message.text is required for text messages"));
            }
            text
        }
        "button" | "list_reply" => match (text.trim().is_empty(), body.button_id) {
            (false, _) => text,
            (true, Some(id)) if !id.trim().is_empty() => id,
            _ => {
                return Err(ApiError::bad_request(
                    "message.button_id",
                    format!("message.button_id or message.text is required for {kind} messages"),
                ))
            }
        },
        "media" | "location" => {
            if text.is_empty() {
                body.payload.map(|p| p.to_string()).unwrap_or_default()
            } else {
                text
            }
        }
        other => {
            return Err(ApiError::bad_request(
                "message.type",
                format!("message.type must be one of text, button, list_reply, media, location; got {other:?}"),
            ))
        }
    };
    if let Some(id) = &body.id {
        required_text("message.id", id)?;
        max_chars("message.id", id, MAX_ID_CHARS)?;
    }
    Ok(IncomingMessage {
        provider_message_id: body.id.map(|id| id.trim().to_string()),
        message_type: kind,
        text,
        from_me: body.from_me,
    })
}

/// `POST /v1/chatbots/{bot}/conversations/handle`: a provider's incoming message.
#[utoipa::path(
    post,
    path = "/v1/chatbots/{bot}/conversations/handle",
    operation_id = "handle_message",
    tag = "ingestion",
    summary = "A provider's incoming message",
    params(("bot" = String, Path, description = "Chatbot id")),
    request_body = HandleRequest,
    responses(
        (status = 200, description = "Handled; the bot's replies", body = HandleResponse),
        (
            status = 202,
            description = "Accepted (async); replies go to the reply webhook",
            body = HandleAccepted,
        ),
        (status = 404, description = "No such chatbot", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["messages:handle"])),
)]
async fn handle(
    state: web::Data<AppState>,
    principal: Principal,
    bot: web::Path<String>,
    body: Json<HandleRequest>,
) -> Result<HttpResponse, ApiError> {
    let started = std::time::Instant::now();
    let result = handle_message(&state, &principal, &bot, body.0).await;
    let outcome = match &result {
        Ok((_, outcome)) => *outcome,
        Err(_) => HandleOutcome::Rejected,
    };
    state.metrics.handled(outcome, started.elapsed());
    result.map(|(response, _)| response)
}

/// Handles one incoming message; the response and how it ended, for the metrics.
async fn handle_message(
    state: &AppState,
    principal: &Principal,
    bot: &str,
    body: HandleRequest,
) -> Result<(HttpResponse, HandleOutcome), ApiError> {
    principal.require(Scope::MessagesHandle)?;
    let bot = state.chatbot(principal, bot)?;
    check_body_chatbot(body.chatbot_id.as_deref(), &bot)?;
    validate_origin(&body.channel_id, &body.provider_id, body.channel_name.as_deref())?;
    let message = incoming_message(body.message)?;
    let channel_id = body.channel_id.trim().to_string();
    let provider_id = body.provider_id.trim().to_string();
    let conversation_id = ConversationId::derive(bot.chatbot.id, &channel_id, &provider_id);
    state.limits.check_conversation(conversation_id)?;
    let origin = Origin {
        channel_name: body
            .channel_name
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| channel_id.clone()),
        channel_id,
        provider_id,
        contact: body.contact,
    };
    let deliver_replies = body.asynchronous;
    // A sync message the AI model answers waits for the answer, at most this long.
    let ai_wait = Duration::from_millis(
        state.settings.ai.timeout_ms + bot.chatbot.settings.ai_debounce_ms + AI_WAIT_MARGIN.as_millis() as u64,
    );
    // Answered once durable: the group committer hands the answer over.
    let handled = state
        .registry
        .handle_durably(conversation_id, HandleIncoming { bot, origin, message, deliver_replies })
        .await?;
    let mut outcome = handled.outcome;
    if let Some(waiting) = handled.ai_reply {
        // `None` (or no answer in time) means a newer message or a human took over first.
        match tokio::time::timeout(ai_wait, waiting).await {
            Ok(Ok(Some(ai))) => {
                state.store.durable(ai.ticket).await?;
                outcome.replies = ai.replies;
                outcome.bot_active = ai.bot_active;
            }
            // Superseded: answer with the conversation as it stands now.
            _ => {
                if let Some(now) = state.store.conversation(conversation_id)? {
                    outcome.bot_active = now.bot_active;
                }
            }
        }
    }
    let class = if handled.duplicate {
        HandleOutcome::Duplicate
    } else if !outcome.bot_active && outcome.replies.is_empty() {
        HandleOutcome::Paused
    } else if outcome.replies.is_empty() {
        HandleOutcome::Silent
    } else {
        HandleOutcome::Replied
    };
    if body.asynchronous {
        let response = HttpResponse::Accepted().json(HandleAccepted {
            conversation_id: outcome.conversation_id,
            message_id: outcome.message_id,
            duplicate: handled.duplicate,
        });
        return Ok((response, class));
    }
    let response = HttpResponse::Ok().json(HandleResponse {
        conversation_id: outcome.conversation_id,
        contact_id: outcome.contact_id,
        message_id: outcome.message_id,
        bot_active: outcome.bot_active,
        replies: outcome.replies,
        duplicate: handled.duplicate,
    });
    Ok((response, class))
}

/// The conversation's session if it is not closed.
fn live_session(state: &AppState, c: &Conversation) -> Result<Option<Session>, ApiError> {
    Ok(match c.session_id {
        Some(id) => state.store.session(id)?.filter(|s| s.status != SessionStatus::Closed),
        None => None,
    })
}

/// A conversation as served, with its live session.
pub fn view(state: &AppState, c: &Conversation) -> Result<Value, ApiError> {
    let mut view = conversation_view(c);
    view["session"] = json!(live_session(state, c)?);
    Ok(view)
}

/// A conversation as served, with `session` as given.
fn view_with(c: &Conversation, session: Option<&Session>) -> Value {
    let mut view = conversation_view(c);
    view["session"] = json!(session.filter(|s| s.status != SessionStatus::Closed));
    view
}

/// A conversation as served, without its session (`session` is null).
pub fn conversation_view(c: &Conversation) -> Value {
    json!({
        "id": c.id,
        "chatbot_id": c.chatbot_id,
        "channel_id": c.channel_id,
        "channel_name": c.channel_name,
        "contact_id": c.contact_id,
        "provider_id": c.provider_id,
        "status": c.status,
        "bot_active": c.bot_active,
        "session": Value::Null,
        "variables": c.variables,
        "metadata": c.metadata,
        "message_count": c.next_seq.saturating_sub(1),
        "last_message_at": c.last_message_at,
        "last_seen_at": c.last_seen_at,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
    })
}

#[utoipa::path(
    get,
    path = "/v1/chatbots/{bot}/conversations",
    operation_id = "list_conversations",
    tag = "conversations",
    summary = "List conversations, newest first",
    params(
        ("bot" = String, Path, description = "Chatbot id"),
        ("contactId" = Option<String>, Query, description = "Only this contact's"),
        ("channelId" = Option<String>, Query, description = "Only this channel's"),
        ("status" = Option<ConversationStatus>, Query, description = "Only this status"),
        ("bot_active" = Option<bool>, Query, description = "Only paused (false) or active (true) bots"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "Page size (default 50)"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of conversations", body = crate::openapi::ConversationPage),
        (status = 400, description = "A malformed parameter", body = crate::openapi::ApiErrorBody),
        (status = 404, description = "No such chatbot", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["conversations:read"])),
)]
async fn list(
    state: web::Data<AppState>,
    principal: Principal,
    bot: web::Path<String>,
    query: Query,
) -> Result<HttpResponse, ApiError> {
    principal.require(Scope::ConversationsRead)?;
    let bot = state.chatbot(&principal, &bot)?;
    let contact: Option<ContactId> = query.parse("contactId", "a UUID")?;
    let channel = query.get("channelId").filter(|c| !c.is_empty()).map(str::to_string);
    let status: Option<ConversationStatus> = query.parse("status", "one of active, completed, escalated, failed")?;
    let bot_active: Option<bool> = query.parse("bot_active", "true or false")?;
    let limit = query.parse::<usize>("limit", "a number from 1 to 200")?.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request("limit", "limit must be a number from 1 to 200"));
    }
    let cursor: Option<ConversationCursor> = query.parse("cursor", "a cursor from a previous page")?;
    let keep = |c: &Conversation| {
        contact.is_none_or(|id| c.contact_id == id)
            && channel.as_ref().is_none_or(|id| &c.channel_id == id)
            && status.is_none_or(|s| c.status == s)
            && bot_active.is_none_or(|b| c.bot_active == b)
    };
    let (page, next) = state.store.conversations_of(bot.chatbot.id, cursor.as_ref(), limit, keep)?;
    let items = page.iter().map(|c| view(&state, c)).collect::<Result<Vec<Value>, ApiError>>()?;
    Ok(HttpResponse::Ok().json(json!({ "items": items, "next_cursor": next.map(|c| c.to_string()) })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct CreateConversation {
    #[serde(deserialize_with = "string_or_number")]
    channel_id: String,
    #[serde(default)]
    channel_name: Option<String>,
    #[serde(deserialize_with = "string_or_number")]
    provider_id: String,
    #[serde(default)]
    #[schema(value_type = Option<crate::openapi::ContactInput>)]
    contact: Option<ContactInput>,
}

/// Opens a conversation without a message: 201 when new, 200 with the existing one otherwise.
#[utoipa::path(
    post,
    path = "/v1/chatbots/{bot}/conversations",
    operation_id = "open_conversation",
    tag = "conversations",
    summary = "Open a conversation without a message",
    params(("bot" = String, Path, description = "Chatbot id")),
    request_body = CreateConversation,
    responses(
        (status = 201, description = "A new conversation", body = crate::openapi::ConversationView),
        (status = 200, description = "The existing conversation", body = crate::openapi::ConversationView),
        (status = 404, description = "No such chatbot", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["conversations:write"])),
)]
async fn create(
    state: web::Data<AppState>,
    principal: Principal,
    bot: web::Path<String>,
    body: Json<CreateConversation>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Scope::ConversationsWrite)?;
    let bot = state.chatbot(&principal, &bot)?;
    let body = body.0;
    validate_origin(&body.channel_id, &body.provider_id, body.channel_name.as_deref())?;
    let channel_id = body.channel_id.trim().to_string();
    let provider_id = body.provider_id.trim().to_string();
    let id = ConversationId::derive(bot.chatbot.id, &channel_id, &provider_id);
    let origin = Origin {
        channel_name: body
            .channel_name
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| channel_id.clone()),
        channel_id,
        provider_id,
        contact: body.contact,
    };
    let changed = state.registry.send(id, OpenConversation { bot, origin }).await?;
    state.store.durable(changed.ticket).await?;
    let status = if changed.created { actix_web::http::StatusCode::CREATED } else { actix_web::http::StatusCode::OK };
    Ok(HttpResponse::build(status).json(view_with(&changed.conversation, changed.session.as_ref())))
}

#[utoipa::path(
    get,
    path = "/v1/chatbots/{bot}/conversations/find",
    operation_id = "find_conversation",
    tag = "conversations",
    summary = "Find a conversation by channel and provider id",
    params(
        ("bot" = String, Path, description = "Chatbot id"),
        ("channelId" = String, Query, description = "The provider's channelId"),
        ("providerId" = String, Query, description = "The provider's id of the person"),
    ),
    responses(
        (status = 200, description = "The conversation", body = crate::openapi::ConversationView),
        (status = 400, description = "channelId or providerId missing", body = crate::openapi::ApiErrorBody),
        (status = 404, description = "No such chatbot or conversation", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["conversations:read"])),
)]
async fn find(
    state: web::Data<AppState>,
    principal: Principal,
    bot: web::Path<String>,
    query: Query,
) -> Result<HttpResponse, ApiError> {
    principal.require(Scope::ConversationsRead)?;
    let bot = state.chatbot(&principal, &bot)?;
    let channel = query.get("channelId").unwrap_or("").trim();
    let provider = query.get("providerId").unwrap_or("").trim();
    if channel.is_empty() {
        return Err(ApiError::bad_request("channelId", "channelId is required"));
    }
    if provider.is_empty() {
        return Err(ApiError::bad_request("providerId", "providerId is required"));
    }
    let id = ConversationId::derive(bot.chatbot.id, channel, provider);
    let conversation = state.store.conversation(id)?.ok_or_else(|| ApiError::not_found("conversation"))?;
    Ok(HttpResponse::Ok().json(view(&state, &conversation)?))
}

/// The conversation named by the path, checked against the caller's tenant and, on nested
/// paths, the chatbot; with its chatbot's configuration.
pub(crate) fn resolve(
    state: &AppState,
    principal: &Principal,
    req: &HttpRequest,
) -> Result<(Conversation, Arc<BotConfig>), ApiError> {
    find_conversation(state, principal, req.match_info().get("id").unwrap_or(""), req.match_info().get("bot"))
}

/// The caller's conversation `id` (404 for a malformed id or another tenant's), checked
/// against chatbot `bot` when given; with its chatbot's configuration.
pub(crate) fn find_conversation(
    state: &AppState,
    principal: &Principal,
    id: &str,
    bot: Option<&str>,
) -> Result<(Conversation, Arc<BotConfig>), ApiError> {
    let not_found = || ApiError::not_found("conversation");
    let id: ConversationId = id.parse().map_err(|_| not_found())?;
    let conversation = state.store.conversation(id)?.ok_or_else(not_found)?;
    if conversation.tenant_id != principal.tenant_id {
        return Err(not_found());
    }
    if let Some(bot) = bot {
        if bot != conversation.chatbot_id.to_string() {
            // Either the chatbot is not the caller's or the conversation is not in it.
            state.chatbot(principal, bot)?;
            return Err(not_found());
        }
    }
    let bot = state.chatbot(principal, &conversation.chatbot_id.to_string()).map_err(|_| not_found())?;
    state.limits.check_conversation(conversation.id)?;
    Ok((conversation, bot))
}

/// The caller's conversation `id` for reading (scope `conversations:read`).
pub(crate) fn read_conversation(
    state: &AppState,
    principal: &Principal,
    id: &str,
    bot: Option<&str>,
) -> Result<Conversation, ApiError> {
    principal.require(Scope::ConversationsRead)?;
    Ok(find_conversation(state, principal, id, bot)?.0)
}

/// The tenant's conversations across all its chatbots that `keep` accepts, newest first
/// (scope `conversations:read`).
pub(crate) fn tenant_conversations(
    state: &AppState,
    principal: &Principal,
    mut keep: impl FnMut(&Conversation) -> bool,
) -> Result<Vec<Conversation>, ApiError> {
    principal.require(Scope::ConversationsRead)?;
    let mut all = Vec::new();
    for bot in state.store.chatbots_of(principal.tenant_id)? {
        all.extend(state.store.conversations_of(bot.id, None, usize::MAX, &mut keep)?.0);
    }
    all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    Ok(all)
}

#[utoipa::path(
    get,
    path = "/v1/chatbots/{bot}/conversations/{id}",
    operation_id = "get_conversation",
    tag = "conversations",
    summary = "Get a conversation",
    params(
        ("bot" = String, Path, description = "Chatbot id"),
        ("id" = String, Path, description = "Conversation id"),
    ),
    responses(
        (status = 200, description = "The conversation", body = crate::openapi::ConversationView),
        (status = 404, description = "No such chatbot or conversation", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["conversations:read"])),
)]
async fn get(req: HttpRequest, state: web::Data<AppState>, principal: Principal) -> Result<HttpResponse, ApiError> {
    let info = req.match_info();
    let conversation = read_conversation(&state, &principal, info.get("id").unwrap_or(""), info.get("bot"))?;
    Ok(HttpResponse::Ok().json(view(&state, &conversation)?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = ConversationPatch)]
#[serde(deny_unknown_fields)]
struct PatchConversation {
    #[serde(default)]
    #[schema(value_type = Option<ConversationStatus>)]
    status: Option<String>,
    #[serde(default)]
    variables: Option<Map<String, Value>>,
    #[serde(default)]
    metadata: Option<Value>,
}

pub(crate) fn parse_status(raw: &str) -> Result<ConversationStatus, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::bad_request(
            "status",
            format!("status must be one of active, completed, escalated, failed; got {raw:?}"),
        )
    })
}

/// Sends a change to the conversation's actor and waits until it is durable.
async fn apply_change(state: &AppState, id: ConversationId, update: UpdateConversation) -> Result<Changed, ApiError> {
    let changed = state.registry.send(id, update).await?;
    state.store.durable(changed.ticket).await?;
    Ok(changed)
}

/// Sends a change to the conversation's actor and answers with the conversation.
async fn change(state: &AppState, id: ConversationId, update: UpdateConversation) -> Result<HttpResponse, ApiError> {
    let changed = apply_change(state, id, update).await?;
    Ok(HttpResponse::Ok().json(view_with(&changed.conversation, changed.session.as_ref())))
}

#[utoipa::path(
    patch,
    path = "/v1/chatbots/{bot}/conversations/{id}",
    operation_id = "update_conversation",
    tag = "conversations",
    summary = "Change status, variables (merged) or metadata",
    params(
        ("bot" = String, Path, description = "Chatbot id"),
        ("id" = String, Path, description = "Conversation id"),
    ),
    request_body = PatchConversation,
    responses(
        (status = 200, description = "The conversation", body = crate::openapi::ConversationView),
        (
            status = 400,
            description = "An unknown field, a bad status or metadata that is not an object",
            body = crate::openapi::ApiErrorBody,
        ),
        (status = 404, description = "No such chatbot or conversation", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["conversations:write"])),
)]
async fn update(
    req: HttpRequest,
    state: web::Data<AppState>,
    principal: Principal,
    body: Json<PatchConversation>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Scope::ConversationsWrite)?;
    let body = body.0;
    let status = body.status.as_deref().map(parse_status).transpose()?;
    if let Some(metadata) = &body.metadata {
        if !metadata.is_object() && !metadata.is_null() {
            return Err(ApiError::bad_request("metadata", "metadata must be an object or null"));
        }
    }
    let (conversation, _) = resolve(&state, &principal, &req)?;
    change(&state, conversation.id, UpdateConversation { status, variables: body.variables, metadata: body.metadata })
        .await
}

#[utoipa::path(
    delete,
    path = "/v1/chatbots/{bot}/conversations/{id}",
    operation_id = "delete_conversation",
    tag = "conversations",
    summary = "Delete a conversation and its messages",
    params(
        ("bot" = String, Path, description = "Chatbot id"),
        ("id" = String, Path, description = "Conversation id"),
    ),
    responses(
        (status = 200, description = "Deleted", body = crate::openapi::Deleted),
        (status = 404, description = "No such chatbot or conversation", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["conversations:write"])),
)]
async fn delete(req: HttpRequest, state: web::Data<AppState>, principal: Principal) -> Result<HttpResponse, ApiError> {
    principal.require(Scope::ConversationsWrite)?;
    let (conversation, _) = resolve(&state, &principal, &req)?;
    let ticket = state.registry.send(conversation.id, DeleteConversation).await?;
    state.store.durable(ticket).await?;
    Ok(deleted())
}

#[utoipa::path(
    get,
    path = "/v1/chatbots/{bot}/conversations/{id}/messages",
    operation_id = "list_messages",
    tag = "conversations",
    summary = "A conversation's messages in order",
    params(
        ("bot" = String, Path, description = "Chatbot id"),
        ("id" = String, Path, description = "Conversation id"),
        ("after_seq" = Option<u64>, Query, description = "Only messages after this seq (default 0)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Page size (default 100)"),
    ),
    responses(
        (status = 200, description = "A page of messages", body = crate::openapi::MessagePage),
        (status = 400, description = "A malformed parameter", body = crate::openapi::ApiErrorBody),
        (status = 404, description = "No such chatbot or conversation", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["conversations:read"])),
)]
async fn messages(
    req: HttpRequest,
    state: web::Data<AppState>,
    principal: Principal,
    query: Query,
) -> Result<HttpResponse, ApiError> {
    let info = req.match_info();
    let (items, next) = message_page(&state, &principal, info.get("id").unwrap_or(""), info.get("bot"), &query)?;
    Ok(HttpResponse::Ok().json(json!({ "items": items, "next_after_seq": next })))
}

/// A page of conversation `id`'s messages after `after_seq` (query `after_seq`, `limit`),
/// with the `seq` to continue after when the page is full.
pub(crate) fn message_page(
    state: &AppState,
    principal: &Principal,
    id: &str,
    bot: Option<&str>,
    query: &Query,
) -> Result<(Vec<Message>, Option<u64>), ApiError> {
    principal.require(Scope::ConversationsRead)?;
    let after_seq = query.parse::<u64>("after_seq", "a non-negative number")?.unwrap_or(0);
    let limit = query.parse::<usize>("limit", "a number from 1 to 1000")?.unwrap_or(DEFAULT_MESSAGES_PAGE);
    if !(1..=MAX_MESSAGES_PAGE).contains(&limit) {
        return Err(ApiError::bad_request("limit", "limit must be a number from 1 to 1000"));
    }
    let (conversation, _) = find_conversation(state, principal, id, bot)?;
    let items = state.store.messages(conversation.id, after_seq, limit)?;
    let next = (items.len() == limit).then(|| items.last().map(|m| m.seq)).flatten();
    Ok((items, next))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct AgentMessage {
    content: String,
    #[serde(default, deserialize_with = "opt_string_or_number")]
    agent_id: Option<String>,
}

/// An agent's reply: stored as role `agent`, pauses the bot when the chatbot says so.
#[utoipa::path(
    post,
    path = "/v1/chatbots/{bot}/conversations/{id}/messages",
    operation_id = "post_agent_message",
    tag = "conversations",
    summary = "An agent's reply (delivered to the reply webhook; pauses the bot)",
    params(
        ("bot" = String, Path, description = "Chatbot id"),
        ("id" = String, Path, description = "Conversation id"),
    ),
    request_body = AgentMessage,
    responses(
        (status = 201, description = "The stored message", body = Message),
        (status = 400, description = "Blank or too long content", body = crate::openapi::ApiErrorBody),
        (status = 404, description = "No such chatbot or conversation", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["conversations:write"])),
)]
async fn post_message(
    req: HttpRequest,
    state: web::Data<AppState>,
    principal: Principal,
    body: Json<AgentMessage>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Scope::ConversationsWrite)?;
    let body = body.0;
    required_text("content", &body.content)?;
    max_chars("content", &body.content, 65_536)?;
    let (conversation, bot) = resolve(&state, &principal, &req)?;
    let posted = state
        .registry
        .send(conversation.id, PostAgentMessage { bot, content: body.content, agent_id: body.agent_id })
        .await?;
    state.store.durable(posted.ticket).await?;
    Ok(HttpResponse::Created().json(posted.message))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = BotControlRequest)]
struct BotControl {
    #[serde(default)]
    #[schema(value_type = Option<crate::openapi::BotAction>)]
    action: Option<String>,
    #[serde(default, deserialize_with = "opt_string_or_number")]
    agent_id: Option<String>,
}

/// The outcome of a pause or resume, in the shape of seed `000`.
pub async fn set_bot_active(
    state: &AppState,
    id: ConversationId,
    active: bool,
    agent_id: Option<String>,
) -> Result<Value, ApiError> {
    let changed = state.registry.send(id, SetBotActive { active, agent_id }).await?;
    state.store.durable(changed.ticket).await?;
    Ok(json!({
        "success": true,
        "conversation_id": id,
        "bot_active": changed.conversation.bot_active,
        "action": if active { "resume" } else { "pause" },
    }))
}

#[utoipa::path(
    post,
    path = "/v1/chatbots/{bot}/conversations/{id}/bot-control",
    operation_id = "bot_control",
    tag = "conversations",
    summary = "Pause or resume the bot (human takeover)",
    params(
        ("bot" = String, Path, description = "Chatbot id"),
        ("id" = String, Path, description = "Conversation id"),
    ),
    request_body = BotControl,
    responses(
        (status = 200, description = "Done", body = crate::openapi::BotControlResponse),
        (status = 400, description = "action missing or not pause/resume", body = crate::openapi::ApiErrorBody),
        (status = 404, description = "No such chatbot or conversation", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["conversations:write"])),
)]
async fn bot_control(
    req: HttpRequest,
    state: web::Data<AppState>,
    principal: Principal,
    body: Json<BotControl>,
) -> Result<HttpResponse, ApiError> {
    let info = req.match_info();
    let (id, bot) = (info.get("id").unwrap_or(""), info.get("bot"));
    let body = body.0;
    Ok(HttpResponse::Ok().json(control_bot(&state, &principal, id, bot, body.action.as_deref(), body.agent_id).await?))
}

/// Pauses or resumes the bot of conversation `id` (`action` "pause" or "resume").
pub(crate) async fn control_bot(
    state: &AppState,
    principal: &Principal,
    id: &str,
    bot: Option<&str>,
    action: Option<&str>,
    agent_id: Option<String>,
) -> Result<Value, ApiError> {
    principal.require(Scope::ConversationsWrite)?;
    let active = match action {
        None => return Err(ApiError::bad_request("action", "action is required")),
        Some("pause") => false,
        Some("resume") => true,
        Some(_) => return Err(ApiError::bad_request("action", "action must be \"pause\" or \"resume\"")),
    };
    let (conversation, _) = find_conversation(state, principal, id, bot)?;
    set_bot_active(state, conversation.id, active, agent_id).await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = ConversationStatusChange)]
struct SetStatus {
    #[schema(value_type = ConversationStatus)]
    status: String,
}

#[utoipa::path(
    put,
    path = "/v1/chatbots/{bot}/conversations/{id}/status",
    operation_id = "set_conversation_status",
    tag = "conversations",
    summary = "Set a conversation's status",
    params(
        ("bot" = String, Path, description = "Chatbot id"),
        ("id" = String, Path, description = "Conversation id"),
    ),
    request_body = SetStatus,
    responses(
        (status = 200, description = "The conversation", body = crate::openapi::ConversationView),
        (status = 400, description = "An unknown status", body = crate::openapi::ApiErrorBody),
        (status = 404, description = "No such chatbot or conversation", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["conversations:write"])),
)]
async fn set_status(
    req: HttpRequest,
    state: web::Data<AppState>,
    principal: Principal,
    body: Json<SetStatus>,
) -> Result<HttpResponse, ApiError> {
    let info = req.match_info();
    let changed =
        update_status(&state, &principal, info.get("id").unwrap_or(""), info.get("bot"), &body.0.status).await?;
    Ok(HttpResponse::Ok().json(view_with(&changed.conversation, changed.session.as_ref())))
}

/// Moves conversation `id` to status `raw` (active, completed, escalated, failed).
pub(crate) async fn update_status(
    state: &AppState,
    principal: &Principal,
    id: &str,
    bot: Option<&str>,
    raw: &str,
) -> Result<Changed, ApiError> {
    principal.require(Scope::ConversationsWrite)?;
    let status = parse_status(raw)?;
    let (conversation, _) = find_conversation(state, principal, id, bot)?;
    apply_change(state, conversation.id, UpdateConversation { status: Some(status), ..UpdateConversation::default() })
        .await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = AutoreplyRequest)]
struct Autoreply {
    enabled: bool,
}

/// Turns the bot on or off for one conversation (the same flag as bot-control).
#[utoipa::path(
    post,
    path = "/v1/chatbots/{bot}/conversations/{id}/autoreply",
    operation_id = "set_autoreply",
    tag = "conversations",
    summary = "Turn the bot on or off (the same flag as bot-control)",
    params(
        ("bot" = String, Path, description = "Chatbot id"),
        ("id" = String, Path, description = "Conversation id"),
    ),
    request_body = Autoreply,
    responses(
        (status = 200, description = "The conversation", body = crate::openapi::AutoreplyView),
        (status = 404, description = "No such chatbot or conversation", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["conversations:write"])),
)]
async fn autoreply(
    req: HttpRequest,
    state: web::Data<AppState>,
    principal: Principal,
    body: Json<Autoreply>,
) -> Result<HttpResponse, ApiError> {
    let info = req.match_info();
    let changed =
        set_autoreply(&state, &principal, info.get("id").unwrap_or(""), info.get("bot"), body.0.enabled).await?;
    let mut view = view_with(&changed.conversation, changed.session.as_ref());
    view["ai_autoreply_enabled"] = Value::Bool(changed.conversation.bot_active);
    Ok(HttpResponse::Ok().json(view))
}

/// Turns the bot of conversation `id` on or off.
pub(crate) async fn set_autoreply(
    state: &AppState,
    principal: &Principal,
    id: &str,
    bot: Option<&str>,
    enabled: bool,
) -> Result<Changed, ApiError> {
    principal.require(Scope::ConversationsWrite)?;
    let (conversation, _) = find_conversation(state, principal, id, bot)?;
    let changed = state.registry.send(conversation.id, SetBotActive { active: enabled, agent_id: None }).await?;
    state.store.durable(changed.ticket).await?;
    Ok(changed)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct EventRequest {
    #[serde(default)]
    chatbot_id: Option<String>,
    #[serde(deserialize_with = "string_or_number")]
    channel_id: String,
    #[serde(default)]
    channel_name: Option<String>,
    #[serde(deserialize_with = "string_or_number")]
    provider_id: String,
    #[serde(default)]
    #[allow(dead_code)]
    callee: Option<String>,
    #[serde(default, rename = "async")]
    asynchronous: bool,
    event: String,
}

/// Checks a body's optional `chatbotId` against the path.
fn check_body_chatbot(body: Option<&str>, bot: &BotConfig) -> Result<(), ApiError> {
    match body {
        Some(id) if id.trim() != bot.chatbot.id.to_string() => {
            Err(ApiError::bad_request("chatbotId", "chatbotId in the body does not match the chatbot in the path"))
        }
        _ => Ok(()),
    }
}

/// The answer of `event`, `payload` and `custom-event`: like `handle`'s, plus the trace when asked.
fn event_response(handled: EventHandled, asynchronous: bool, debug: bool) -> HttpResponse {
    let body = EventResponse {
        conversation_id: handled.conversation.id,
        replies: handled.replies,
        bot_active: handled.conversation.bot_active,
        trace: debug.then_some(handled.trace),
    };
    if asynchronous {
        HttpResponse::Accepted().json(body)
    } else {
        HttpResponse::Ok().json(body)
    }
}

/// `POST …/conversations/event`: a channel event (`user_seen_message` updates `last_seen_at`).
#[utoipa::path(
    post,
    path = "/v1/chatbots/{bot}/conversations/event",
    operation_id = "record_event",
    tag = "ingestion",
    summary = "A channel event (user_seen_message sets last_seen_at)",
    params(("bot" = String, Path, description = "Chatbot id")),
    request_body = EventRequest,
    responses(
        (status = 200, description = "Recorded", body = crate::openapi::EventResponse),
        (status = 202, description = "Recorded (async)", body = crate::openapi::EventResponse),
        (status = 404, description = "No such chatbot", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["messages:handle"])),
)]
async fn event(
    state: web::Data<AppState>,
    principal: Principal,
    bot: web::Path<String>,
    body: Json<EventRequest>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Scope::MessagesHandle)?;
    let body = body.0;
    let bot = state.chatbot(&principal, &bot)?;
    check_body_chatbot(body.chatbot_id.as_deref(), &bot)?;
    validate_origin(&body.channel_id, &body.provider_id, body.channel_name.as_deref())?;
    let event = required_text("event", &body.event)?.to_string();
    max_chars("event", &event, 200)?;
    let channel_id = body.channel_id.trim().to_string();
    let provider_id = body.provider_id.trim().to_string();
    let id = ConversationId::derive(bot.chatbot.id, &channel_id, &provider_id);
    state.limits.check_conversation(id)?;
    let origin = Origin {
        channel_name: body
            .channel_name
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| channel_id.clone()),
        channel_id,
        provider_id,
        contact: None,
    };
    let handled = state.registry.send(id, RecordEvent { bot, origin, event }).await?;
    state.store.durable(handled.ticket).await?;
    Ok(event_response(handled, body.asynchronous, false))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct PayloadRequest {
    #[serde(default)]
    chatbot_id: Option<String>,
    #[serde(deserialize_with = "string_or_number")]
    conversation_id: String,
    #[serde(default)]
    flow_id: Option<String>,
    #[serde(default, deserialize_with = "opt_string_or_number")]
    step_id: Option<String>,
    #[serde(default)]
    event: Option<String>,
    /// A JSON object, or a string holding one (seed `002` documents a string).
    #[serde(default)]
    event_payload: Option<Value>,
    #[serde(default, rename = "async")]
    asynchronous: bool,
    #[serde(default)]
    is_debug: bool,
}

/// The conversation `raw` of chatbot `bot` (404 otherwise).
fn conversation_of_bot(state: &AppState, bot: &BotConfig, raw: &str) -> Result<Conversation, ApiError> {
    let id: ConversationId = raw.trim().parse().map_err(|_| ApiError::not_found("conversation"))?;
    match state.store.conversation(id)? {
        Some(c) if c.chatbot_id == bot.chatbot.id => {
            state.limits.check_conversation(id)?;
            Ok(c)
        }
        _ => Err(ApiError::not_found("conversation")),
    }
}

/// Sends a payload to a conversation's actor and answers like `handle`.
async fn apply_payload(
    state: &AppState,
    conversation: ConversationId,
    msg: ApplyPayload,
    asynchronous: bool,
    debug: bool,
) -> Result<HttpResponse, ApiError> {
    let handled = state.registry.send(conversation, msg).await?;
    state.store.durable(handled.ticket).await?;
    Ok(event_response(handled, asynchronous, debug))
}

/// `POST …/conversations/payload`: jump into a flow or step, or deliver an event with a payload.
#[utoipa::path(
    post,
    path = "/v1/chatbots/{bot}/conversations/payload",
    operation_id = "apply_payload",
    tag = "ingestion",
    summary = "Jump into a flow or step, or deliver an event with a payload",
    params(("bot" = String, Path, description = "Chatbot id")),
    request_body = PayloadRequest,
    responses(
        (status = 200, description = "Applied; the bot's replies", body = crate::openapi::EventResponse),
        (
            status = 202,
            description = "Applied (async); replies go to the reply webhook",
            body = crate::openapi::EventResponse,
        ),
        (
            status = 404,
            description = "No such chatbot, conversation, flow or step",
            body = crate::openapi::ApiErrorBody,
        ),
        (
            status = 409,
            description = "stepId without flowId while no flow is in progress",
            body = crate::openapi::ApiErrorBody,
        ),
    ),
    security(("api_key" = ["messages:handle"])),
)]
async fn payload(
    state: web::Data<AppState>,
    principal: Principal,
    bot: web::Path<String>,
    body: Json<PayloadRequest>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Scope::MessagesHandle)?;
    let body = body.0;
    let bot = state.chatbot(&principal, &bot)?;
    check_body_chatbot(body.chatbot_id.as_deref(), &bot)?;
    let conversation = conversation_of_bot(&state, &bot, &body.conversation_id)?;
    let flow_id = match body.flow_id.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(raw) => Some(raw.parse::<FlowId>().map_err(|_| ApiError::not_found("flow"))?),
        None => None,
    };
    let payload = match body.event_payload {
        Some(Value::String(raw)) if raw.trim().is_empty() => None,
        Some(Value::String(raw)) => Some(
            serde_json::from_str::<Value>(&raw)
                .map_err(|e| ApiError::bad_request("eventPayload", format!("eventPayload is not valid JSON: {e}")))?,
        ),
        Some(Value::Null) | None => None,
        Some(other) => Some(other),
    };
    let event = body.event.map(|e| e.trim().to_string()).filter(|e| !e.is_empty());
    let step = body.step_id.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    if flow_id.is_none() && step.is_none() && event.is_none() && payload.is_none() {
        return Err(ApiError::bad_request("flowId", "one of flowId, stepId, event or eventPayload is required"));
    }
    let msg = ApplyPayload { bot: Some(bot), deliver_replies: body.asynchronous, flow_id, step, event, payload };
    apply_payload(&state, conversation.id, msg, body.asynchronous, body.is_debug).await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct CustomEventRequest {
    #[serde(default)]
    chatbot_id: Option<String>,
    #[serde(deserialize_with = "string_or_number")]
    conversation_id: String,
    event: String,
}

/// `POST …/conversations/custom-event`: starts the flows whose trigger lists `event:NAME`.
#[utoipa::path(
    post,
    path = "/v1/chatbots/{bot}/conversations/custom-event",
    operation_id = "custom_event",
    tag = "ingestion",
    summary = "Start the flows whose trigger lists event:NAME",
    params(("bot" = String, Path, description = "Chatbot id")),
    request_body = CustomEventRequest,
    responses(
        (status = 200, description = "Applied; the bot's replies", body = crate::openapi::EventResponse),
        (status = 404, description = "No such chatbot or conversation", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["messages:handle"])),
)]
async fn custom_event(
    state: web::Data<AppState>,
    principal: Principal,
    bot: web::Path<String>,
    body: Json<CustomEventRequest>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Scope::MessagesHandle)?;
    let body = body.0;
    let bot = state.chatbot(&principal, &bot)?;
    check_body_chatbot(body.chatbot_id.as_deref(), &bot)?;
    let event = required_text("event", &body.event)?.to_string();
    let conversation = conversation_of_bot(&state, &bot, &body.conversation_id)?;
    let msg = ApplyPayload { bot: Some(bot), event: Some(event), ..ApplyPayload::default() };
    apply_payload(&state, conversation.id, msg, false, false).await
}

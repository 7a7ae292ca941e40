//! Seed `003` (CallMissed conversations): `/api/v1/conversations…` across the tenant's
//! chatbots, authenticated with `Authorization: Bearer KEY` like every native route.
//!
//! A conversation is served as `{id, tenant_id, bot_id, channel, external_id, status,
//! duration_seconds, metadata, ai_autoreply_enabled, created_at, updated_at, bot_name}`:
//! `channel` is the channel's provider kind (`whatsapp`, …), `external_id` the provider id,
//! `ai_autoreply_enabled` the bot flag, and `duration_seconds` null while the conversation
//! is active, else the seconds from its start to its last message. Lists are bare arrays,
//! newest first; the conversation list takes `limit` (default [`DEFAULT_PAGE`], at most
//! [`MAX_PAGE`]) and `offset` besides the documented filters. Errors are the native ones
//! (`{"error": "..."}`).

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use baton_actors::model::{ChatbotId, Conversation, ConversationStatus, Message};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::{Principal, Scope};
use crate::error::ApiError;
use crate::extract::{Json, Query};
use crate::routes::conversations::{
    message_page, parse_status, read_conversation, set_autoreply, tenant_conversations, update_status,
};
use crate::routes::resource;

/// Page size of the conversation list.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
/// Messages fetched per store read while collecting a whole thread.
const MESSAGES_PER_READ: usize = 1000;

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/api/v1/conversations").route(web::get().to(list)))
        .service(resource("/api/v1/conversations/{id}").route(web::get().to(get)))
        .service(resource("/api/v1/conversations/{id}/messages").route(web::get().to(messages)))
        .service(resource("/api/v1/conversations/{id}/status").route(web::put().to(set_status)))
        .service(resource("/api/v1/conversations/{id}/ai-draft").route(web::post().to(ai_draft)))
        .service(resource("/api/v1/conversations/{id}/autoreply").route(web::post().to(autoreply)));
}

/// Chatbot names and channel provider kinds, looked up once per request.
#[derive(Debug, Default)]
struct Names {
    bots: HashMap<ChatbotId, Option<String>>,
    providers: HashMap<(ChatbotId, String), Option<String>>,
}

impl Names {
    /// The provider kind of conversation `c`'s channel.
    fn provider(&mut self, state: &AppState, c: &Conversation) -> Result<Option<String>, ApiError> {
        let key = (c.chatbot_id, c.channel_id.clone());
        if let Some(provider) = self.providers.get(&key) {
            return Ok(provider.clone());
        }
        let provider = state.store.channel(c.chatbot_id, &c.channel_id)?.map(|channel| channel.provider);
        self.providers.insert(key, provider.clone());
        Ok(provider)
    }

    /// Conversation `c` in this API's shape.
    fn view(&mut self, state: &AppState, c: &Conversation) -> Result<Value, ApiError> {
        let bot_name = match self.bots.get(&c.chatbot_id) {
            Some(name) => name.clone(),
            None => {
                let name = state.store.chatbot(c.chatbot_id)?.map(|bot| bot.name);
                self.bots.insert(c.chatbot_id, name.clone());
                name
            }
        };
        let duration_seconds = (c.status != ConversationStatus::Active)
            .then(|| (c.last_message_at.unwrap_or(c.updated_at) - c.created_at).num_seconds().max(0));
        Ok(json!({
            "id": c.id,
            "tenant_id": c.tenant_id,
            "bot_id": c.chatbot_id,
            "channel": self.provider(state, c)?,
            "external_id": c.provider_id,
            "status": c.status,
            "duration_seconds": duration_seconds,
            "metadata": c.metadata,
            "ai_autoreply_enabled": c.bot_active,
            "created_at": c.created_at,
            "updated_at": c.updated_at,
            "bot_name": bot_name,
        }))
    }
}

/// `GET /api/v1/conversations?channel&status&bot_id`.
async fn list(state: web::Data<AppState>, principal: Principal, query: Query) -> Result<HttpResponse, ApiError> {
    let status = query.get("status").filter(|s| !s.is_empty()).map(parse_status).transpose()?;
    let bot: Option<ChatbotId> = query.parse("bot_id", "a UUID")?;
    let channel = query.get("channel").filter(|c| !c.is_empty());
    let limit = query.parse::<usize>("limit", "a number from 1 to 1000")?.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request("limit", "limit must be a number from 1 to 1000"));
    }
    let offset = query.parse::<usize>("offset", "a non-negative number")?.unwrap_or(0);
    let found = tenant_conversations(&state, &principal, |c| {
        status.is_none_or(|s| c.status == s) && bot.is_none_or(|b| c.chatbot_id == b)
    })?;
    let mut names = Names::default();
    let mut items = Vec::new();
    for c in &found {
        if let Some(channel) = channel {
            if names.provider(&state, c)?.as_deref() != Some(channel) {
                continue;
            }
        }
        items.push(c);
    }
    let page = items.into_iter().skip(offset).take(limit);
    let views = page.map(|c| names.view(&state, c)).collect::<Result<Vec<Value>, ApiError>>()?;
    Ok(HttpResponse::Ok().json(views))
}

async fn get(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let conversation = read_conversation(&state, &principal, &id, None)?;
    Ok(HttpResponse::Ok().json(Names::default().view(&state, &conversation)?))
}

/// A message in this API's shape.
fn message_view(m: &Message) -> Value {
    json!({
        "id": m.id,
        "conversation_id": m.conversation_id,
        "role": m.role,
        "content": m.content,
        "message_type": m.message_type,
        "tokens_used": m.tokens_used,
        "created_at": m.created_at,
    })
}

/// The whole thread in order, read page by page through the native message list.
async fn messages(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let mut thread = Vec::new();
    let mut after_seq = 0;
    loop {
        let page =
            Query(vec![("after_seq".into(), after_seq.to_string()), ("limit".into(), MESSAGES_PER_READ.to_string())]);
        let (items, next) = message_page(&state, &principal, &id, None, &page)?;
        thread.extend(items.iter().map(message_view));
        match next {
            Some(seq) => after_seq = seq,
            None => break,
        }
    }
    Ok(HttpResponse::Ok().json(thread))
}

#[derive(Debug, Deserialize)]
struct StatusBody {
    status: String,
}

async fn set_status(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
    body: Json<StatusBody>,
) -> Result<HttpResponse, ApiError> {
    let changed = update_status(&state, &principal, &id, None, &body.0.status).await?;
    Ok(HttpResponse::Ok().json(Names::default().view(&state, &changed.conversation)?))
}

#[derive(Debug, Deserialize)]
struct AutoreplyBody {
    enabled: bool,
}

async fn autoreply(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
    body: Json<AutoreplyBody>,
) -> Result<HttpResponse, ApiError> {
    let changed = set_autoreply(&state, &principal, &id, None, body.0.enabled).await?;
    Ok(HttpResponse::Ok().json(Names::default().view(&state, &changed.conversation)?))
}

/// `{"draft": "…"}`: the native AI draft (nothing sent, nothing stored).
async fn ai_draft(
    req: HttpRequest,
    state: web::Data<AppState>,
    principal: Principal,
) -> Result<HttpResponse, ApiError> {
    principal.require(Scope::ConversationsWrite)?;
    let draft = crate::routes::drafts::draft_for(&state, &principal, &req).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "draft": draft })))
}

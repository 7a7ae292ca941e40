//! `/v1/sessions`: conversations' flow sessions. Status changes go through the
//! conversation's actor: pause keeps the position and silences the bot, resume continues at
//! the same step, close ends the session.

use actix_web::{web, HttpResponse};
use baton_actors::conversation::{SessionAction, SetSessionStatus};
use baton_actors::model::{ChatbotId, Session, SessionId, SessionStatus};
use serde::Deserialize;
use serde_json::Value;

use crate::app::AppState;
use crate::auth::{Principal, Scope};
use crate::error::ApiError;
use crate::extract::{Json, Query};
use crate::routes::resource;

/// Page size of the list.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 500;

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/sessions").route(web::get().to(list)))
        .service(resource("/v1/sessions/{id}").route(web::get().to(get)).route(web::patch().to(update)));
}

#[utoipa::path(
    get,
    path = "/v1/sessions",
    operation_id = "list_sessions",
    tag = "sessions",
    summary = "List flow sessions, newest first",
    params(
        ("chatbot_id" = Option<String>, Query, description = "Only this chatbot's"),
        ("status" = Option<SessionStatus>, Query, description = "Only this status"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "At most this many (default 100)"),
    ),
    responses(
        (status = 200, description = "The sessions", body = crate::openapi::SessionList),
        (status = 400, description = "A malformed parameter", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["conversations:read"])),
)]
async fn list(state: web::Data<AppState>, principal: Principal, query: Query) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(list_sessions(&state, &principal, &query)?))
}

/// `{"items": [...]}`: the tenant's sessions, newest first, filtered by `chatbot_id` and `status`.
pub(crate) fn list_sessions(state: &AppState, principal: &Principal, query: &Query) -> Result<Value, ApiError> {
    principal.require(Scope::ConversationsRead)?;
    let chatbot: Option<ChatbotId> = query.parse("chatbot_id", "a UUID")?;
    let status = match query.get("status").filter(|s| !s.is_empty()) {
        None => None,
        Some("open") => Some(SessionStatus::Open),
        Some("paused") => Some(SessionStatus::Paused),
        Some("closed") => Some(SessionStatus::Closed),
        Some(other) => {
            return Err(ApiError::bad_request(
                "status",
                format!("status must be open, paused or closed; got {other:?}"),
            ))
        }
    };
    let limit = query.parse::<usize>("limit", "a number from 1 to 500")?.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request("limit", "limit must be a number from 1 to 500"));
    }
    let keep = |s: &Session| chatbot.is_none_or(|b| s.chatbot_id == b) && status.is_none_or(|st| s.status == st);
    let sessions = state.store.sessions_of(principal.tenant_id, limit, keep)?;
    Ok(serde_json::json!({ "items": sessions }))
}

/// The caller's session `id` (404 for another tenant's).
pub fn find(state: &AppState, principal: &Principal, id: &str) -> Result<Session, ApiError> {
    let id: SessionId = id.parse().map_err(|_| ApiError::not_found("session"))?;
    match state.store.session(id)? {
        Some(s) if s.tenant_id == principal.tenant_id => Ok(s),
        _ => Err(ApiError::not_found("session")),
    }
}

#[utoipa::path(
    get,
    path = "/v1/sessions/{id}",
    operation_id = "get_session",
    tag = "sessions",
    summary = "Get a session",
    params(("id" = String, Path, description = "Session id")),
    responses(
        (status = 200, description = "The session", body = Session),
        (status = 404, description = "No such session", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["conversations:read"])),
)]
async fn get(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(read_session(&state, &principal, &id)?))
}

/// The caller's session `id` for reading (scope `conversations:read`).
pub(crate) fn read_session(state: &AppState, principal: &Principal, id: &str) -> Result<Session, ApiError> {
    principal.require(Scope::ConversationsRead)?;
    find(state, principal, id)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SessionPatch {
    #[serde(default)]
    #[schema(value_type = Option<crate::openapi::SessionAction>)]
    status: Option<String>,
}

/// Parses a session action (`open`, `close`, `pause`, `resume`).
pub fn parse_action(raw: Option<&str>) -> Result<SessionAction, ApiError> {
    match raw {
        None => Err(ApiError::bad_request("status", "status is required")),
        Some("open") => Ok(SessionAction::Open),
        Some("close") | Some("closed") => Ok(SessionAction::Close),
        Some("pause") | Some("paused") => Ok(SessionAction::Pause),
        Some("resume") => Ok(SessionAction::Resume),
        Some(other) => {
            Err(ApiError::bad_request("status", format!("status must be open, close, pause or resume; got {other:?}")))
        }
    }
}

/// Applies a status change through the session's conversation actor.
pub async fn set_status(state: &AppState, session: &Session, action: SessionAction) -> Result<Session, ApiError> {
    let changed =
        state.registry.send(session.conversation_id, SetSessionStatus { session_id: session.id, action }).await?;
    state.store.durable(changed.ticket).await?;
    Ok(changed.session)
}

#[utoipa::path(
    patch,
    path = "/v1/sessions/{id}",
    operation_id = "update_session",
    tag = "sessions",
    summary = "Open, close, pause or resume a session",
    params(("id" = String, Path, description = "Session id")),
    request_body = SessionPatch,
    responses(
        (status = 200, description = "The session", body = Session),
        (status = 400, description = "status missing or unknown", body = crate::openapi::ApiErrorBody),
        (status = 404, description = "No such session", body = crate::openapi::ApiErrorBody),
        (
            status = 409,
            description = "The change does not fit the session's state",
            body = crate::openapi::ApiErrorBody,
        ),
    ),
    security(("api_key" = ["conversations:write"])),
)]
async fn update(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
    body: Json<SessionPatch>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(update_session(&state, &principal, &id, body.0.status.as_deref(), None).await?))
}

/// Applies status `raw` (open, close, pause, resume) to session `id`; when `chatbot` is given
/// the session must belong to it (404 otherwise).
pub(crate) async fn update_session(
    state: &AppState,
    principal: &Principal,
    id: &str,
    raw: Option<&str>,
    chatbot: Option<ChatbotId>,
) -> Result<Session, ApiError> {
    principal.require(Scope::ConversationsWrite)?;
    let action = parse_action(raw)?;
    let session = find(state, principal, id)?;
    if chatbot.is_some_and(|bot| bot != session.chatbot_id) {
        return Err(ApiError::not_found("session"));
    }
    set_status(state, &session, action).await
}

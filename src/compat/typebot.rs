//! Seed `004` (Evolution API, Typebot integration):
//! `PATCH /api/v2/instance/{instanceId}/typebot-integration/session/{sessionId} {status}`,
//! where the instance is a chatbot and the session one of its flow sessions.
//!
//! Answers `{sessionId, keyRemoteJid, status, typebotIntegrationId}`: the conversation's
//! provider id, the session's status after the change and its current flow (or null).
//! Errors are NestJS-shaped, `{"message": ["..."], "error": "Bad Request", "statusCode": 400}`,
//! authentication errors included. Besides the native key headers, Evolution's own
//! `apikey` header carries a key.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::{authenticate, Principal};
use crate::compat::{ErrorShape, Reshaped};
use crate::error::ApiError;
use crate::extract::Json;
use crate::routes::resource;
use crate::routes::sessions::update_session;

/// Evolution API's key header.
const EVOLUTION_KEY_HEADER: &str = "apikey";

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/api/v2/instance/{instance}/typebot-integration/session/{session}")
            .route(web::patch().to(patch_session)),
    );
}

/// `{"message": ["..."], "error": "<reason phrase>", "statusCode": n}`.
#[derive(Debug)]
struct NestShape;

impl ErrorShape for NestShape {
    fn body(error: &ApiError) -> Value {
        json!({
            "message": [error.message],
            "error": error.status.canonical_reason().unwrap_or("Error"),
            "statusCode": error.status.as_u16(),
        })
    }
}

type Failure = Reshaped<NestShape>;

#[derive(Debug, Deserialize)]
struct SessionStatus {
    #[serde(default)]
    status: Option<String>,
}

/// The caller: the native credential headers, or else Evolution's `apikey`.
fn caller(state: &AppState, req: &HttpRequest, native: Result<Principal, ApiError>) -> Result<Principal, ApiError> {
    let evolution_key = req.headers().get(EVOLUTION_KEY_HEADER).and_then(|v| v.to_str().ok()).map(str::trim);
    match (native, evolution_key) {
        (Err(_), Some(key)) if !key.is_empty() => authenticate(state, key),
        (native, _) => native,
    }
}

async fn patch_session(
    state: web::Data<AppState>,
    req: HttpRequest,
    principal: Result<Principal, ApiError>,
    path: web::Path<(String, String)>,
    body: Result<Json<SessionStatus>, ApiError>,
) -> Result<HttpResponse, Failure> {
    let principal = caller(&state, &req, principal)?;
    let body = body?.0;
    let (instance, session) = path.into_inner();
    let bot = state.chatbot(&principal, &instance)?;
    let session = update_session(&state, &principal, &session, body.status.as_deref(), Some(bot.chatbot.id)).await?;
    let conversation = state
        .store
        .conversation(session.conversation_id)
        .map_err(ApiError::from)?
        .ok_or_else(|| ApiError::not_found("conversation"))?;
    Ok(HttpResponse::Ok().json(json!({
        "sessionId": session.id,
        "keyRemoteJid": conversation.provider_id,
        "status": session.status,
        "typebotIntegrationId": session.current_flow_id,
    })))
}

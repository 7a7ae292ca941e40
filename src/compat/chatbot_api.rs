//! Seed `001` (Chatbot API): `/api/chatbot/…` on the tenant's default chatbot — the one
//! named by the `X-Chatbot-Id` header, else the first one created.
//!
//! Answers are `{"status": "success", "data": …}` where `data` is the native answer (lists
//! are `{"items": [...]}`, transfers the native transfers object); errors are
//! `{"status": "error", "message": "..."}` with the native status. Transfers and a session
//! looked up by id are the tenant's, as natively; the session list is the default
//! chatbot's.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::app::AppState;
use crate::auth::Principal;
use crate::compat::{ErrorShape, Reshaped};
use crate::error::ApiError;
use crate::extract::{Json, Query};
use crate::routes::ai_contexts::CreateContext;
use crate::routes::flows::FlowBody;
use crate::routes::keywords::CreateRule;
use crate::routes::transfers::{Assign, CreateTransfer};
use crate::routes::{ai_contexts, chatbots, flows, keywords, resource, sessions, transfers};

/// The header naming the chatbot a request acts on.
const CHATBOT_HEADER: &str = "x-chatbot-id";

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/api/chatbot/settings").route(web::get().to(get_settings)).route(web::put().to(put_settings)),
    )
    .service(
        resource("/api/chatbot/keywords").route(web::get().to(list_keywords)).route(web::post().to(create_keyword)),
    )
    .service(
        resource("/api/chatbot/keywords/{id}")
            .route(web::put().to(update_keyword))
            .route(web::patch().to(update_keyword))
            .route(web::delete().to(delete_keyword)),
    )
    .service(
        resource("/api/chatbot/ai-contexts")
            .route(web::get().to(list_ai_contexts))
            .route(web::post().to(create_ai_context)),
    )
    .service(
        resource("/api/chatbot/ai-contexts/{id}")
            .route(web::put().to(update_ai_context))
            .route(web::patch().to(update_ai_context))
            .route(web::delete().to(delete_ai_context)),
    )
    .service(resource("/api/chatbot/flows").route(web::get().to(list_flows)).route(web::post().to(create_flow)))
    .service(
        resource("/api/chatbot/transfers").route(web::get().to(list_transfers)).route(web::post().to(create_transfer)),
    )
    .service(resource("/api/chatbot/transfers/pickup").route(web::post().to(pickup)))
    .service(resource("/api/chatbot/transfers/{id}/assign").route(web::put().to(assign)))
    .service(resource("/api/chatbot/transfers/{id}/resume").route(web::put().to(resume)))
    .service(resource("/api/chatbot/sessions").route(web::get().to(list_sessions)))
    .service(resource("/api/chatbot/sessions/{id}").route(web::get().to(get_session)));
}

/// `{"status": "error", "message": "..."}`.
#[derive(Debug)]
struct EnvelopeShape;

impl ErrorShape for EnvelopeShape {
    fn body(error: &ApiError) -> Value {
        json!({ "status": "error", "message": error.message })
    }
}

type Failure = Reshaped<EnvelopeShape>;
type Answer = Result<HttpResponse, Failure>;

/// `{"status": "success", "data": data}` with `status`.
fn success(status: StatusCode, data: impl Serialize) -> Answer {
    Ok(HttpResponse::build(status).json(json!({ "status": "success", "data": data })))
}

/// The id of the chatbot the request acts on: `X-Chatbot-Id` (404 unless the caller's), else
/// the tenant's first.
fn chatbot_of(state: &AppState, principal: &Principal, req: &HttpRequest) -> Result<String, ApiError> {
    if let Some(id) = req.headers().get(CHATBOT_HEADER) {
        let id = id.to_str().map_err(|_| ApiError::not_found("chatbot"))?.trim();
        return Ok(state.chatbot(principal, id)?.chatbot.id.to_string());
    }
    let first = state.store.chatbots_of(principal.tenant_id)?.into_iter().next();
    first.map(|bot| bot.id.to_string()).ok_or_else(|| {
        let mut error = ApiError::not_found("chatbot");
        error.message = "No chatbot exists yet; create one with POST /v1/chatbots".into();
        error
    })
}

async fn get_settings(state: web::Data<AppState>, principal: Result<Principal, ApiError>, req: HttpRequest) -> Answer {
    let principal = principal?;
    let bot = chatbot_of(&state, &principal, &req)?;
    success(StatusCode::OK, chatbots::settings_of(&state, &principal, &bot)?)
}

async fn put_settings(
    state: web::Data<AppState>,
    principal: Result<Principal, ApiError>,
    req: HttpRequest,
    body: Result<Json<Map<String, Value>>, ApiError>,
) -> Answer {
    let principal = principal?;
    let body = body?.0;
    let bot = chatbot_of(&state, &principal, &req)?;
    success(StatusCode::OK, chatbots::update_settings(&state, &principal, &bot, body).await?)
}

async fn list_keywords(state: web::Data<AppState>, principal: Result<Principal, ApiError>, req: HttpRequest) -> Answer {
    let principal = principal?;
    let bot = chatbot_of(&state, &principal, &req)?;
    success(StatusCode::OK, keywords::list_rules(&state, &principal, &bot)?)
}

async fn create_keyword(
    state: web::Data<AppState>,
    principal: Result<Principal, ApiError>,
    req: HttpRequest,
    body: Result<Json<CreateRule>, ApiError>,
) -> Answer {
    let principal = principal?;
    let body = body?.0;
    let bot = chatbot_of(&state, &principal, &req)?;
    success(StatusCode::CREATED, keywords::create_rule(&state, &principal, &bot, body).await?)
}

async fn update_keyword(
    state: web::Data<AppState>,
    principal: Result<Principal, ApiError>,
    req: HttpRequest,
    id: web::Path<String>,
    body: Result<Json<Map<String, Value>>, ApiError>,
) -> Answer {
    let principal = principal?;
    let body = body?.0;
    let bot = chatbot_of(&state, &principal, &req)?;
    success(StatusCode::OK, keywords::update_rule(&state, &principal, &bot, &id, body).await?)
}

async fn delete_keyword(
    state: web::Data<AppState>,
    principal: Result<Principal, ApiError>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Answer {
    let principal = principal?;
    let bot = chatbot_of(&state, &principal, &req)?;
    keywords::delete_rule(&state, &principal, &bot, &id).await?;
    success(StatusCode::OK, json!({ "deleted": true }))
}

async fn list_ai_contexts(
    state: web::Data<AppState>,
    principal: Result<Principal, ApiError>,
    req: HttpRequest,
) -> Answer {
    let principal = principal?;
    let bot = chatbot_of(&state, &principal, &req)?;
    success(StatusCode::OK, ai_contexts::list_contexts(&state, &principal, &bot)?)
}

async fn create_ai_context(
    state: web::Data<AppState>,
    principal: Result<Principal, ApiError>,
    req: HttpRequest,
    body: Result<Json<CreateContext>, ApiError>,
) -> Answer {
    let principal = principal?;
    let body = body?.0;
    let bot = chatbot_of(&state, &principal, &req)?;
    success(StatusCode::CREATED, ai_contexts::create_context(&state, &principal, &bot, body).await?)
}

async fn update_ai_context(
    state: web::Data<AppState>,
    principal: Result<Principal, ApiError>,
    req: HttpRequest,
    id: web::Path<String>,
    body: Result<Json<Map<String, Value>>, ApiError>,
) -> Answer {
    let principal = principal?;
    let body = body?.0;
    let bot = chatbot_of(&state, &principal, &req)?;
    success(StatusCode::OK, ai_contexts::update_context(&state, &principal, &bot, &id, body).await?)
}

async fn delete_ai_context(
    state: web::Data<AppState>,
    principal: Result<Principal, ApiError>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Answer {
    let principal = principal?;
    let bot = chatbot_of(&state, &principal, &req)?;
    ai_contexts::delete_context(&state, &principal, &bot, &id).await?;
    success(StatusCode::OK, json!({ "deleted": true }))
}

async fn list_flows(state: web::Data<AppState>, principal: Result<Principal, ApiError>, req: HttpRequest) -> Answer {
    let principal = principal?;
    let bot = chatbot_of(&state, &principal, &req)?;
    success(StatusCode::OK, flows::list_flows(&state, &principal, &bot)?)
}

async fn create_flow(
    state: web::Data<AppState>,
    principal: Result<Principal, ApiError>,
    req: HttpRequest,
    body: Result<Json<FlowBody>, ApiError>,
) -> Answer {
    let principal = principal?;
    let body = body?.0;
    let bot = chatbot_of(&state, &principal, &req)?;
    success(StatusCode::CREATED, flows::create_flow(&state, &principal, &bot, body).await?)
}

async fn list_transfers(state: web::Data<AppState>, principal: Result<Principal, ApiError>, query: Query) -> Answer {
    let principal = principal?;
    success(StatusCode::OK, transfers::list_transfers(&state, &principal, &query)?)
}

async fn create_transfer(
    state: web::Data<AppState>,
    principal: Result<Principal, ApiError>,
    body: Result<Json<CreateTransfer>, ApiError>,
) -> Answer {
    let principal = principal?;
    let body = body?.0;
    success(StatusCode::CREATED, transfers::open_transfer(&state, &principal, body).await?)
}

async fn pickup(state: web::Data<AppState>, principal: Result<Principal, ApiError>, query: Query) -> Answer {
    let principal = principal?;
    success(StatusCode::OK, transfers::pick_up(&state, &principal, &query).await?)
}

async fn assign(
    state: web::Data<AppState>,
    principal: Result<Principal, ApiError>,
    id: web::Path<String>,
    body: Result<Json<Assign>, ApiError>,
) -> Answer {
    let principal = principal?;
    let body = body?.0;
    success(StatusCode::OK, transfers::assign_transfer(&state, &principal, &id, body).await?)
}

async fn resume(state: web::Data<AppState>, principal: Result<Principal, ApiError>, id: web::Path<String>) -> Answer {
    let principal = principal?;
    success(StatusCode::OK, transfers::resume_transfer(&state, &principal, &id).await?)
}

/// The default chatbot's sessions: the caller's query with `chatbot_id` set to it.
async fn list_sessions(
    state: web::Data<AppState>,
    principal: Result<Principal, ApiError>,
    req: HttpRequest,
    query: Query,
) -> Answer {
    let principal = principal?;
    let bot = chatbot_of(&state, &principal, &req)?;
    let mut pairs: Vec<(String, String)> = query.0.into_iter().filter(|(k, _)| k != "chatbot_id").collect();
    pairs.push(("chatbot_id".into(), bot));
    success(StatusCode::OK, sessions::list_sessions(&state, &principal, &Query(pairs))?)
}

async fn get_session(
    state: web::Data<AppState>,
    principal: Result<Principal, ApiError>,
    id: web::Path<String>,
) -> Answer {
    let principal = principal?;
    success(StatusCode::OK, sessions::read_session(&state, &principal, &id)?)
}

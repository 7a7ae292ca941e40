//! `POST …/conversations/{id}/ai-draft`: what the AI model would answer now, for an agent to
//! edit and send: the same prompt the bot would use, but nothing is sent and nothing stored.

use actix_web::{web, HttpRequest, HttpResponse};
use baton_actors::ai::AiError;
use baton_actors::model::Role;

use crate::app::AppState;
use crate::auth::{Principal, Scope};
use crate::error::ApiError;
use crate::routes::conversations::resolve;
use crate::routes::resource;

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    for path in ["/v1/chatbots/{bot}/conversations/{id}/ai-draft", "/v1/conversations/{id}/ai-draft"] {
        cfg.service(resource(path).route(web::post().to(draft)));
    }
}

/// The draft for the conversation named by the request's path.
pub async fn draft_for(state: &AppState, principal: &Principal, req: &HttpRequest) -> Result<String, ApiError> {
    let (conversation, bot) = resolve(state, principal, req)?;
    let ai = state.registry.ai().ok_or_else(|| ApiError::unavailable("no AI service is configured", 60))?;
    let history = state.store.recent_messages(conversation.id, ai.config().history_messages + 1)?;
    let Some(last_user) = history.iter().rev().find(|m| m.role == Role::User && !m.content.trim().is_empty()) else {
        return Err(ApiError::conflict("this conversation has no user message to draft a reply to"));
    };
    let settings = &bot.chatbot.settings;
    match ai.reply(settings, &bot.ai_contexts, &history, &last_user.content).await {
        Ok(answer) if !answer.text.trim().is_empty() => Ok(answer.text.trim().to_string()),
        Ok(_) => Err(bad_gateway("the AI model answered with nothing")),
        Err(error @ (AiError::MissingKey(_) | AiError::UnknownProvider(_))) => Err(ApiError {
            status: actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            code: "ai_not_configured",
            message: format!("no AI model is available to draft a reply: {error}"),
            field: None,
            retry_after: None,
        }),
        Err(error) => {
            tracing::warn!(conversation_id = %conversation.id, %error, "AI draft failed");
            Err(bad_gateway(&format!("the AI model could not draft a reply: {error}")))
        }
    }
}

fn bad_gateway(message: &str) -> ApiError {
    ApiError {
        status: actix_web::http::StatusCode::BAD_GATEWAY,
        code: "ai_unavailable",
        message: message.to_string(),
        field: None,
        retry_after: None,
    }
}

#[utoipa::path(
    post,
    path = "/v1/chatbots/{bot}/conversations/{id}/ai-draft",
    operation_id = "ai_draft",
    tag = "conversations",
    summary = "What the AI model would answer now (nothing sent or stored)",
    params(
        ("bot" = String, Path, description = "Chatbot id"),
        ("id" = String, Path, description = "Conversation id"),
    ),
    responses(
        (status = 200, description = "The draft", body = crate::openapi::DraftResponse),
        (status = 404, description = "No such chatbot or conversation", body = crate::openapi::ApiErrorBody),
        (status = 409, description = "The conversation has no user message", body = crate::openapi::ApiErrorBody),
        (status = 502, description = "The AI model failed (code ai_unavailable)", body = crate::openapi::ApiErrorBody),
        (status = 503, description = "No AI provider is configured (code ai_not_configured)", body = crate::openapi::ApiErrorBody),
        (
            status = 503,
            description = "No AI service is configured, or storage is unavailable",
            body = crate::openapi::ApiErrorBody,
        ),
    ),
    security(("api_key" = ["conversations:write"])),
)]
async fn draft(req: HttpRequest, state: web::Data<AppState>, principal: Principal) -> Result<HttpResponse, ApiError> {
    principal.require(Scope::ConversationsWrite)?;
    let draft = draft_for(&state, &principal, &req).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "draft": draft })))
}

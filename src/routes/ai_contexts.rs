//! `/v1/chatbots/{bot}/ai-contexts`: knowledge given to the AI model when a message triggers
//! it (seed `001`): `static` text, or `api` content fetched from a URL and cached. Validated at
//! save (keywords, sizes, the URL and the fetch limits).

use actix_web::{web, HttpResponse};
use baton_actors::model::{now, AiContext, AiContextApi, AiContextId, AiContextType};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::app::AppState;
use crate::auth::{Principal, Scope};
use crate::error::ApiError;
use crate::extract::{merge_patch, Json};
use crate::routes::{deleted, max_chars, required_text, resource};

/// Longest `content`, in characters.
const MAX_CONTENT_CHARS: usize = 32_768;
/// Most trigger keywords per context.
const MAX_KEYWORDS: usize = 100;
/// Longest trigger keyword, in characters.
const MAX_KEYWORD_CHARS: usize = 200;
/// Longest `cache_ttl_secs` (a day).
const MAX_CACHE_TTL_SECS: u64 = 86_400;
/// Largest `max_bytes` (1 MiB).
const MAX_CONTENT_BYTES: usize = 1 << 20;
/// Longest `timeout_ms`.
const MAX_TIMEOUT_MS: u64 = 30_000;

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/chatbots/{bot}/ai-contexts").route(web::get().to(list)).route(web::post().to(create)))
        .service(
            resource("/v1/chatbots/{bot}/ai-contexts/{id}")
                .route(web::get().to(get))
                .route(web::put().to(update))
                .route(web::patch().to(update))
                .route(web::delete().to(delete)),
        );
}

/// A new context as clients send it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = CreateAiContext)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateContext {
    #[schema(pattern = r"\S")]
    name: String,
    trigger_keywords: Vec<String>,
    #[serde(default = "default_context_type")]
    context_type: AiContextType,
    #[serde(default)]
    content: String,
    #[serde(default)]
    api_config: Option<AiContextApi>,
    #[serde(default)]
    priority: i32,
    #[serde(default = "default_true")]
    enabled: bool,
}

fn default_context_type() -> AiContextType {
    AiContextType::Static
}

fn default_true() -> bool {
    true
}

/// Validates a context as it will be stored: 400 for missing text, 422 for what cannot be
/// used (blank or too many keywords, content too long, a bad URL or fetch limit). Trims the
/// name and keywords.
fn validate(context: &mut AiContext, allow_private: bool) -> Result<(), ApiError> {
    context.name = required_text("name", &context.name)?.to_string();
    max_chars("name", &context.name, 200)?;
    validate_keywords(&mut context.trigger_keywords)?;
    let content_chars = context.content.chars().count();
    if content_chars > MAX_CONTENT_CHARS {
        return Err(ApiError::unprocessable(
            "content",
            format!("content must be at most {MAX_CONTENT_CHARS} characters, got {content_chars}"),
        ));
    }
    match context.context_type {
        AiContextType::Static => {
            if context.content.trim().is_empty() {
                return Err(ApiError::bad_request("content", "content is required for a static context"));
            }
        }
        AiContextType::Api => {
            if context.api_config.is_none() {
                return Err(ApiError::bad_request("api_config", "api_config is required for an api context"));
            }
        }
    }
    if let Some(api) = &mut context.api_config {
        validate_api(api, allow_private)?;
    }
    Ok(())
}

fn validate_keywords(keywords: &mut [String]) -> Result<(), ApiError> {
    if keywords.is_empty() {
        return Err(ApiError::unprocessable("trigger_keywords", "trigger_keywords must list at least one keyword"));
    }
    if keywords.len() > MAX_KEYWORDS {
        return Err(ApiError::unprocessable(
            "trigger_keywords",
            format!("at most {MAX_KEYWORDS} trigger keywords per context"),
        ));
    }
    for (index, keyword) in keywords.iter_mut().enumerate() {
        let field = format!("trigger_keywords[{index}]");
        *keyword = keyword.trim().to_string();
        if keyword.is_empty() {
            return Err(ApiError::unprocessable(&field, format!("{field} must not be empty")));
        }
        if keyword.chars().count() > MAX_KEYWORD_CHARS {
            return Err(ApiError::unprocessable(
                &field,
                format!("{field} must be at most {MAX_KEYWORD_CHARS} characters"),
            ));
        }
    }
    Ok(())
}

fn validate_api(api: &mut AiContextApi, allow_private: bool) -> Result<(), ApiError> {
    api.url = api.url.trim().to_string();
    validate_url("api_config.url", &api.url, allow_private)?;
    for (name, value) in &api.headers {
        let field = format!("api_config.headers.{name}");
        if actix_web::http::header::HeaderName::try_from(name.as_str()).is_err() {
            return Err(ApiError::unprocessable(field, format!("{name:?} is not a valid header name")));
        }
        if actix_web::http::header::HeaderValue::try_from(value.as_str()).is_err() {
            return Err(ApiError::unprocessable(field, "not a valid header value"));
        }
    }
    if api.cache_ttl_secs > MAX_CACHE_TTL_SECS {
        return Err(ApiError::unprocessable(
            "api_config.cache_ttl_secs",
            format!("api_config.cache_ttl_secs must be between 0 and {MAX_CACHE_TTL_SECS}"),
        ));
    }
    if !(1..=MAX_CONTENT_BYTES).contains(&api.max_bytes) {
        return Err(ApiError::unprocessable(
            "api_config.max_bytes",
            format!("api_config.max_bytes must be between 1 and {MAX_CONTENT_BYTES}"),
        ));
    }
    if !(1..=MAX_TIMEOUT_MS).contains(&api.timeout_ms) {
        return Err(ApiError::unprocessable(
            "api_config.timeout_ms",
            format!("api_config.timeout_ms must be between 1 and {MAX_TIMEOUT_MS}"),
        ));
    }
    api.content_pointer = api.content_pointer.trim().to_string();
    if !api.content_pointer.is_empty() && !api.content_pointer.starts_with('/') {
        return Err(ApiError::unprocessable(
            "api_config.content_pointer",
            "api_config.content_pointer must be empty or a JSON pointer starting with \"/\"",
        ));
    }
    Ok(())
}

/// An http(s) URL with a host, not at a private or loopback address unless allowed.
fn validate_url(field: &str, raw: &str, allow_private: bool) -> Result<(), ApiError> {
    let url =
        url::Url::parse(raw).map_err(|e| ApiError::unprocessable(field, format!("{field} is not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::unprocessable(field, format!("{field} must be an http or https URL")));
    }
    let private = match url.host() {
        None => return Err(ApiError::unprocessable(field, format!("{field} has no host"))),
        Some(url::Host::Ipv4(ip)) => baton_actors::webhook::is_private(ip.into()),
        Some(url::Host::Ipv6(ip)) => baton_actors::webhook::is_private(ip.into()),
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost") || d.to_ascii_lowercase().ends_with(".localhost")
        }
    };
    if private && !allow_private {
        return Err(ApiError::unprocessable(field, format!("{field} points at a private or loopback address")));
    }
    Ok(())
}

#[utoipa::path(
    get,
    path = "/v1/chatbots/{bot}/ai-contexts",
    operation_id = "list_ai_contexts",
    tag = "ai-contexts",
    summary = "List AI contexts",
    params(("bot" = String, Path, description = "Chatbot id")),
    responses(
        (status = 200, description = "The AI contexts", body = crate::openapi::AiContextList),
        (status = 404, description = "No such chatbot", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["chatbot:config"])),
)]
async fn list(
    state: web::Data<AppState>,
    principal: Principal,
    bot: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(list_contexts(&state, &principal, &bot)?))
}

/// `{"items": [...]}`: chatbot `bot`'s AI contexts, highest priority first (ties: oldest first).
pub(crate) fn list_contexts(state: &AppState, principal: &Principal, bot: &str) -> Result<Value, ApiError> {
    principal.require(Scope::ChatbotConfig)?;
    let bot = state.chatbot(principal, bot)?;
    Ok(serde_json::json!({ "items": state.store.ai_contexts_of(bot.chatbot.id)? }))
}

#[utoipa::path(
    post,
    path = "/v1/chatbots/{bot}/ai-contexts",
    operation_id = "create_ai_context",
    tag = "ai-contexts",
    summary = "Create a AI context",
    params(("bot" = String, Path, description = "Chatbot id")),
    request_body = CreateContext,
    responses(
        (status = 201, description = "The AI context", body = AiContext),
        (status = 404, description = "No such chatbot", body = crate::openapi::ApiErrorBody),
        (
            status = 422,
            description = "Blank or too many keywords, content too long, a bad URL or fetch limit",
            body = crate::openapi::ApiErrorBody,
        ),
    ),
    security(("api_key" = ["chatbot:config"])),
)]
async fn create(
    state: web::Data<AppState>,
    principal: Principal,
    bot: web::Path<String>,
    body: Json<CreateContext>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Created().json(create_context(&state, &principal, &bot, body.0).await?))
}

/// Validates and stores a new AI context of chatbot `bot`.
pub(crate) async fn create_context(
    state: &AppState,
    principal: &Principal,
    bot: &str,
    body: CreateContext,
) -> Result<AiContext, ApiError> {
    principal.require(Scope::ChatbotConfig)?;
    let bot = state.chatbot(principal, bot)?;
    let at = now();
    let mut context = AiContext {
        id: AiContextId::new_random(),
        chatbot_id: bot.chatbot.id,
        name: body.name,
        trigger_keywords: body.trigger_keywords,
        context_type: body.context_type,
        content: body.content,
        api_config: body.api_config,
        priority: body.priority,
        enabled: body.enabled,
        created_at: at,
        updated_at: at,
    };
    validate(&mut context, state.settings.webhooks.allow_private_networks)?;
    save(state, &context).await?;
    Ok(context)
}

async fn save(state: &AppState, context: &AiContext) -> Result<(), ApiError> {
    let ticket = state.store.put_ai_context(context)?;
    state.config_written(context.chatbot_id, ticket).await
}

fn find(state: &AppState, principal: &Principal, bot: &str, id: &str) -> Result<AiContext, ApiError> {
    let bot = state.chatbot(principal, bot)?;
    let id: AiContextId = id.parse().map_err(|_| ApiError::not_found("AI context"))?;
    state.store.ai_context(bot.chatbot.id, id)?.ok_or_else(|| ApiError::not_found("AI context"))
}

#[utoipa::path(
    get,
    path = "/v1/chatbots/{bot}/ai-contexts/{id}",
    operation_id = "get_ai_context",
    tag = "ai-contexts",
    summary = "Get a AI context",
    params(
        ("bot" = String, Path, description = "Chatbot id"),
        ("id" = String, Path, description = "Ai context id"),
    ),
    responses(
        (status = 200, description = "The AI context", body = AiContext),
        (status = 404, description = "No such chatbot or AI context", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["chatbot:config"])),
)]
async fn get(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Scope::ChatbotConfig)?;
    Ok(HttpResponse::Ok().json(find(&state, &principal, &path.0, &path.1)?))
}

/// Partial update: the fields given replace the context's; the result is validated whole.
#[utoipa::path(
    method(put, patch),
    path = "/v1/chatbots/{bot}/ai-contexts/{id}",
    operation_id = "update_ai_context",
    tag = "ai-contexts",
    summary = "Change a AI context (only the fields given)",
    params(
        ("bot" = String, Path, description = "Chatbot id"),
        ("id" = String, Path, description = "Ai context id"),
    ),
    request_body = crate::openapi::AiContextPatch,
    responses(
        (status = 200, description = "The AI context", body = AiContext),
        (status = 404, description = "No such chatbot or AI context", body = crate::openapi::ApiErrorBody),
        (
            status = 422,
            description = "Blank or too many keywords, content too long, a bad URL or fetch limit",
            body = crate::openapi::ApiErrorBody,
        ),
    ),
    security(("api_key" = ["chatbot:config"])),
)]
async fn update(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String)>,
    body: Json<Map<String, Value>>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(update_context(&state, &principal, &path.0, &path.1, body.0).await?))
}

/// Applies a partial update (a JSON merge patch) to context `id` of chatbot `bot`.
pub(crate) async fn update_context(
    state: &AppState,
    principal: &Principal,
    bot: &str,
    id: &str,
    patch: Map<String, Value>,
) -> Result<AiContext, ApiError> {
    principal.require(Scope::ChatbotConfig)?;
    let current = find(state, principal, bot, id)?;
    let mut context: AiContext = merge_patch(&current, patch, &["id", "chatbot_id", "created_at", "updated_at"])?;
    validate(&mut context, state.settings.webhooks.allow_private_networks)?;
    context.updated_at = now();
    save(state, &context).await?;
    Ok(context)
}

#[utoipa::path(
    delete,
    path = "/v1/chatbots/{bot}/ai-contexts/{id}",
    operation_id = "delete_ai_context",
    tag = "ai-contexts",
    summary = "Delete a AI context",
    params(
        ("bot" = String, Path, description = "Chatbot id"),
        ("id" = String, Path, description = "Ai context id"),
    ),
    responses(
        (status = 200, description = "Deleted", body = crate::openapi::Deleted),
        (status = 404, description = "No such chatbot or AI context", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["chatbot:config"])),
)]
async fn delete(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    delete_context(&state, &principal, &path.0, &path.1).await?;
    Ok(deleted())
}

/// Deletes context `id` of chatbot `bot`.
pub(crate) async fn delete_context(
    state: &AppState,
    principal: &Principal,
    bot: &str,
    id: &str,
) -> Result<(), ApiError> {
    principal.require(Scope::ChatbotConfig)?;
    let context = find(state, principal, bot, id)?;
    let ticket = state
        .store
        .delete_ai_context(context.chatbot_id, context.id)?
        .ok_or_else(|| ApiError::not_found("AI context"))?;
    state.config_written(context.chatbot_id, ticket).await
}

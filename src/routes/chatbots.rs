//! `/v1/chatbots` and `/v1/chatbots/{bot}/settings`.

use actix_web::{web, HttpResponse};
use baton_actors::engine::buttons::normalize_buttons;
use baton_actors::model::{now, Chatbot, ChatbotId, Settings};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::app::AppState;
use crate::auth::{Principal, Scope};
use crate::error::ApiError;
use crate::extract::{merge_patch, Json};
use crate::routes::{deleted, max_chars, required_text, resource};

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/chatbots").route(web::post().to(create)).route(web::get().to(list)))
        .service(
            resource("/v1/chatbots/{bot}")
                .route(web::get().to(get))
                .route(web::patch().to(update))
                .route(web::delete().to(delete)),
        )
        .service(
            resource("/v1/chatbots/{bot}/settings")
                .route(web::get().to(get_settings))
                .route(web::put().to(put_settings)),
        );
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct CreateChatbot {
    #[schema(pattern = r"\S")]
    name: String,
    #[serde(default)]
    description: String,
    /// Initial settings (only the fields given; the rest default).
    #[serde(default)]
    #[schema(value_type = Option<Settings>)]
    settings: Option<Map<String, Value>>,
}

/// Validates settings and fills in button ids; 422 naming the field otherwise.
pub fn validate_settings(settings: &mut Settings) -> Result<(), ApiError> {
    let unprocessable =
        |e: baton_actors::engine::buttons::ButtonError| ApiError::unprocessable(e.field(), e.to_string());
    settings.greeting_buttons =
        normalize_buttons("greeting_buttons", std::mem::take(&mut settings.greeting_buttons)).map_err(unprocessable)?;
    settings.fallback_buttons =
        normalize_buttons("fallback_buttons", std::mem::take(&mut settings.fallback_buttons)).map_err(unprocessable)?;
    if !["openai", "anthropic"].contains(&settings.ai_provider.as_str()) {
        return Err(ApiError::unprocessable("ai_provider", "ai_provider must be \"openai\" or \"anthropic\""));
    }
    if !(0.0..=2.0).contains(&settings.ai_temperature) {
        return Err(ApiError::unprocessable("ai_temperature", "ai_temperature must be between 0 and 2"));
    }
    if settings.ai_max_tokens == 0 || settings.ai_max_tokens > 100_000 {
        return Err(ApiError::unprocessable("ai_max_tokens", "ai_max_tokens must be between 1 and 100000"));
    }
    if !(settings.session_timeout_minutes > 0.0 && settings.session_timeout_minutes <= 525_600.0) {
        return Err(ApiError::unprocessable(
            "session_timeout_minutes",
            "session_timeout_minutes must be more than 0 and at most 525600 (a year)",
        ));
    }
    baton_actors::engine::hours::validate(&settings.business_hours)
        .map_err(|e| ApiError::unprocessable(e.field.clone(), e.to_string()))?;
    for (i, keyword) in settings.transfer_keywords.iter().enumerate() {
        if keyword.trim().is_empty() {
            return Err(ApiError::unprocessable(
                format!("transfer_keywords[{i}]"),
                "transfer keywords must not be empty",
            ));
        }
    }
    for (field, text) in [
        ("greeting_message", &settings.greeting_message),
        ("fallback_message", &settings.fallback_message),
        ("transfer_message", &settings.transfer_message),
        ("system_prompt", &settings.system_prompt),
    ] {
        max_chars(field, text, 32_768).map_err(|e| ApiError {
            status: actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
            code: "unprocessable",
            ..e
        })?;
    }
    Ok(())
}

/// The settings as served: the fields plus the chatbot they belong to.
fn settings_view(bot: &Chatbot) -> Value {
    let mut view = serde_json::to_value(&bot.settings).unwrap_or_default();
    view["id"] = Value::String(bot.id.to_string());
    view["chatbot_id"] = Value::String(bot.id.to_string());
    view["account_id"] = Value::String(bot.tenant_id.to_string());
    view["updated_at"] = serde_json::to_value(bot.updated_at).unwrap_or_default();
    view
}

#[utoipa::path(
    post,
    path = "/v1/chatbots",
    operation_id = "create_chatbot",
    tag = "chatbots",
    summary = "Create a chatbot",
    request_body = CreateChatbot,
    responses(
        (status = 201, description = "The chatbot", body = Chatbot),
        (status = 400, description = "A blank name or a malformed setting", body = crate::openapi::ApiErrorBody),
        (
            status = 422,
            description = "Settings that cannot be used (buttons, AI, business hours)",
            body = crate::openapi::ApiErrorBody,
        ),
    ),
    security(("api_key" = ["chatbot:config"])),
)]
async fn create(
    state: web::Data<AppState>,
    principal: Principal,
    body: Json<CreateChatbot>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Scope::ChatbotConfig)?;
    let body = body.0;
    let name = required_text("name", &body.name)?;
    max_chars("name", name, 200)?;
    max_chars("description", &body.description, 2000)?;
    let mut settings = match body.settings {
        Some(patch) => merge_patch(&Settings::default(), patch, &[]).map_err(|e| prefix_field(e, "settings"))?,
        None => Settings::default(),
    };
    validate_settings(&mut settings).map_err(|e| prefix_field(e, "settings"))?;
    let at = now();
    let bot = Chatbot {
        id: ChatbotId::new_random(),
        tenant_id: principal.tenant_id,
        name: name.to_string(),
        description: body.description,
        settings,
        created_at: at,
        updated_at: at,
    };
    let ticket = state.store.put_chatbot(&bot)?;
    state.store.durable(ticket).await?;
    Ok(HttpResponse::Created().json(bot))
}

fn prefix_field(mut e: ApiError, prefix: &str) -> ApiError {
    if let Some(field) = &e.field {
        let field = format!("{prefix}.{field}");
        e.message = format!("{prefix}.{}", e.message);
        e.field = Some(field);
    }
    e
}

#[utoipa::path(
    get,
    path = "/v1/chatbots",
    operation_id = "list_chatbots",
    tag = "chatbots",
    summary = "List chatbots",
    responses((status = 200, description = "The chatbots", body = crate::openapi::ChatbotList)),
    security(("api_key" = ["chatbot:config"]), ("api_key" = ["conversations:read"])),
)]
async fn list(state: web::Data<AppState>, principal: Principal) -> Result<HttpResponse, ApiError> {
    principal.require(Scope::ChatbotConfig).or_else(|_| principal.require(Scope::ConversationsRead))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": state.store.chatbots_of(principal.tenant_id)? })))
}

#[utoipa::path(
    get,
    path = "/v1/chatbots/{bot}",
    operation_id = "get_chatbot",
    tag = "chatbots",
    summary = "Get a chatbot",
    params(("bot" = String, Path, description = "Chatbot id")),
    responses(
        (status = 200, description = "The chatbot", body = Chatbot),
        (status = 404, description = "No such chatbot", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["chatbot:config"]), ("api_key" = ["conversations:read"])),
)]
async fn get(
    state: web::Data<AppState>,
    principal: Principal,
    bot: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Scope::ChatbotConfig).or_else(|_| principal.require(Scope::ConversationsRead))?;
    Ok(HttpResponse::Ok().json(&state.chatbot(&principal, &bot)?.chatbot))
}

#[utoipa::path(
    patch,
    path = "/v1/chatbots/{bot}",
    operation_id = "update_chatbot",
    tag = "chatbots",
    summary = "Change a chatbot's name or description",
    params(("bot" = String, Path, description = "Chatbot id")),
    request_body = crate::openapi::ChatbotPatch,
    responses(
        (status = 200, description = "The chatbot", body = Chatbot),
        (
            status = 400,
            description = "An unknown or read-only field, or a blank name",
            body = crate::openapi::ApiErrorBody,
        ),
        (status = 404, description = "No such chatbot", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["chatbot:config"])),
)]
async fn update(
    state: web::Data<AppState>,
    principal: Principal,
    bot: web::Path<String>,
    body: Json<Map<String, Value>>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Scope::ChatbotConfig)?;
    let current = state.chatbot(&principal, &bot)?;
    let mut updated: Chatbot =
        merge_patch(&current.chatbot, body.0, &["id", "tenant_id", "created_at", "updated_at", "settings"])?;
    let name = required_text("name", &updated.name)?.to_string();
    max_chars("name", &name, 200)?;
    updated.name = name;
    updated.updated_at = now();
    save(&state, &updated).await?;
    Ok(HttpResponse::Ok().json(updated))
}

/// Stores a chatbot and forgets its cached configuration.
async fn save(state: &AppState, bot: &Chatbot) -> Result<(), ApiError> {
    let ticket = state.store.put_chatbot(bot)?;
    state.config_written(bot.id, ticket).await
}

#[utoipa::path(
    delete,
    path = "/v1/chatbots/{bot}",
    operation_id = "delete_chatbot",
    tag = "chatbots",
    summary = "Delete a chatbot and its conversations",
    params(("bot" = String, Path, description = "Chatbot id")),
    responses(
        (status = 200, description = "Deleted", body = crate::openapi::Deleted),
        (status = 404, description = "No such chatbot", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["chatbot:config"])),
)]
async fn delete(
    state: web::Data<AppState>,
    principal: Principal,
    bot: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Scope::ChatbotConfig)?;
    let current = state.chatbot(&principal, &bot)?;
    // Its conversations go first, each through its actor, taking their sessions and waiting
    // transfers with them.
    let mut ticket = baton_actors::store::CommitTicket::NONE;
    for id in state.store.conversation_ids_of(current.chatbot.id)? {
        match state.registry.send(id, baton_actors::conversation::DeleteConversation).await {
            Ok(deleted) => ticket = ticket.max(deleted),
            Err(baton_actors::conversation::ConversationError::NotFound) => {}
            Err(error) => return Err(error.into()),
        }
    }
    ticket = ticket.max(state.store.delete_chatbot(&current.chatbot)?);
    state.config_written(current.chatbot.id, ticket).await?;
    Ok(deleted())
}

#[utoipa::path(
    get,
    path = "/v1/chatbots/{bot}/settings",
    operation_id = "get_settings",
    tag = "chatbots",
    summary = "Get a chatbot's settings",
    params(("bot" = String, Path, description = "Chatbot id")),
    responses(
        (status = 200, description = "The settings", body = crate::openapi::SettingsView),
        (status = 404, description = "No such chatbot", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["chatbot:config"])),
)]
async fn get_settings(
    state: web::Data<AppState>,
    principal: Principal,
    bot: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(settings_of(&state, &principal, &bot)?))
}

/// Chatbot `bot`'s settings as served.
pub(crate) fn settings_of(state: &AppState, principal: &Principal, bot: &str) -> Result<Value, ApiError> {
    principal.require(Scope::ChatbotConfig)?;
    Ok(settings_view(&state.chatbot(principal, bot)?.chatbot))
}

/// Partial update: only the fields given change.
#[utoipa::path(
    put,
    path = "/v1/chatbots/{bot}/settings",
    operation_id = "update_settings",
    tag = "chatbots",
    summary = "Change settings (only the fields given)",
    params(("bot" = String, Path, description = "Chatbot id")),
    request_body = Settings,
    responses(
        (status = 200, description = "The settings", body = crate::openapi::SettingsView),
        (status = 400, description = "An unknown field or a wrong type", body = crate::openapi::ApiErrorBody),
        (status = 404, description = "No such chatbot", body = crate::openapi::ApiErrorBody),
        (
            status = 422,
            description = "Settings that cannot be used (buttons, AI, business hours)",
            body = crate::openapi::ApiErrorBody,
        ),
    ),
    security(("api_key" = ["chatbot:config"])),
)]
async fn put_settings(
    state: web::Data<AppState>,
    principal: Principal,
    bot: web::Path<String>,
    body: Json<Map<String, Value>>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(update_settings(&state, &principal, &bot, body.0).await?))
}

/// Applies a partial settings update to chatbot `bot`; answers the settings as served.
pub(crate) async fn update_settings(
    state: &AppState,
    principal: &Principal,
    bot: &str,
    mut patch: Map<String, Value>,
) -> Result<Value, ApiError> {
    principal.require(Scope::ChatbotConfig)?;
    let current = state.chatbot(principal, bot)?;
    for read_only in ["id", "chatbot_id", "account_id", "updated_at"] {
        patch.remove(read_only);
    }
    let mut settings: Settings = merge_patch(&current.chatbot.settings, patch, &[])?;
    validate_settings(&mut settings)?;
    let mut updated = current.chatbot.clone();
    updated.settings = settings;
    updated.updated_at = now();
    save(state, &updated).await?;
    Ok(settings_view(&updated))
}

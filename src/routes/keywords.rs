//! `/v1/chatbots/{bot}/keywords`: keyword rules, validated at save (regexes compiled,
//! buttons checked, ids generated).

use actix_web::{web, HttpResponse};
use baton_actors::engine::buttons::normalize_buttons;
use baton_actors::engine::rules::{CompiledRule, RuleError};
use baton_actors::model::{now, KeywordRule, MatchType, ResponseType, RuleId};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::app::AppState;
use crate::auth::{Principal, Scope};
use crate::error::ApiError;
use crate::extract::{merge_patch, Json};
use crate::routes::{deleted, max_chars, resource};

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/chatbots/{bot}/keywords").route(web::get().to(list)).route(web::post().to(create)))
        .service(
            resource("/v1/chatbots/{bot}/keywords/{id}")
                .route(web::get().to(get))
                .route(web::put().to(update))
                .route(web::patch().to(update))
                .route(web::delete().to(delete)),
        );
}

/// A new rule as clients send it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = CreateKeywordRule)]
pub(crate) struct CreateRule {
    #[serde(default)]
    name: Option<String>,
    keywords: Vec<String>,
    match_type: MatchType,
    #[serde(default)]
    response_type: Option<ResponseType>,
    response: String,
    #[serde(default)]
    buttons: Vec<baton_actors::model::Button>,
    #[serde(default)]
    priority: i32,
    #[serde(default = "default_true")]
    enabled: bool,
}

fn default_true() -> bool {
    true
}

/// Validates a rule as it will be stored: 400 for missing text, 422 for a regex that does
/// not compile or buttons over the limits. Fills in button ids and trims keywords.
fn validate(rule: &mut KeywordRule) -> Result<(), ApiError> {
    rule.name = rule.name.trim().to_string();
    if rule.name.is_empty() {
        rule.name = rule.keywords.first().map(|k| k.trim().to_string()).unwrap_or_default();
    }
    max_chars("name", &rule.name, 200)?;
    if rule.response.trim().is_empty() {
        return Err(ApiError::bad_request("response", "response must not be empty"));
    }
    max_chars("response", &rule.response, 4096)?;
    if rule.keywords.len() > 100 {
        return Err(ApiError::unprocessable("keywords", "at most 100 keywords per rule"));
    }
    rule.keywords = rule.keywords.iter().map(|k| k.trim().to_string()).collect();
    CompiledRule::compile(rule.clone()).map_err(|e| match &e {
        RuleError::NoKeywords => ApiError::bad_request("keywords", e.to_string()),
        RuleError::EmptyKeyword { index } => ApiError::bad_request(format!("keywords[{index}]"), e.to_string()),
        RuleError::InvalidRegex { index, .. } => ApiError::unprocessable(format!("keywords[{index}]"), e.to_string()),
    })?;
    rule.buttons = normalize_buttons("buttons", std::mem::take(&mut rule.buttons))
        .map_err(|e| ApiError::unprocessable(e.field(), e.to_string()))?;
    if rule.response_type == ResponseType::Buttons && rule.buttons.is_empty() {
        return Err(ApiError::unprocessable("buttons", "a buttons response needs at least one button"));
    }
    Ok(())
}

#[utoipa::path(
    get,
    path = "/v1/chatbots/{bot}/keywords",
    operation_id = "list_keyword_rules",
    tag = "keywords",
    summary = "List keyword rules",
    params(("bot" = String, Path, description = "Chatbot id")),
    responses(
        (status = 200, description = "The keyword rules", body = crate::openapi::KeywordRuleList),
        (status = 404, description = "No such chatbot", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["chatbot:config"])),
)]
async fn list(
    state: web::Data<AppState>,
    principal: Principal,
    bot: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(list_rules(&state, &principal, &bot)?))
}

/// `{"items": [...]}`: chatbot `bot`'s rules, highest priority first (ties: oldest first).
pub(crate) fn list_rules(state: &AppState, principal: &Principal, bot: &str) -> Result<Value, ApiError> {
    principal.require(Scope::ChatbotConfig)?;
    let bot = state.chatbot(principal, bot)?;
    let mut rules = state.store.rules_of(bot.chatbot.id)?;
    rules.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.created_at.cmp(&b.created_at)).then(a.id.cmp(&b.id)));
    Ok(serde_json::json!({ "items": rules }))
}

#[utoipa::path(
    post,
    path = "/v1/chatbots/{bot}/keywords",
    operation_id = "create_keyword_rule",
    tag = "keywords",
    summary = "Create a keyword rule",
    params(("bot" = String, Path, description = "Chatbot id")),
    request_body = CreateRule,
    responses(
        (status = 201, description = "The keyword rule", body = KeywordRule),
        (status = 404, description = "No such chatbot", body = crate::openapi::ApiErrorBody),
        (
            status = 422,
            description = "A regex that does not compile, too many keywords, or buttons over the limits",
            body = crate::openapi::ApiErrorBody,
        ),
    ),
    security(("api_key" = ["chatbot:config"])),
)]
async fn create(
    state: web::Data<AppState>,
    principal: Principal,
    bot: web::Path<String>,
    body: Json<CreateRule>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Created().json(create_rule(&state, &principal, &bot, body.0).await?))
}

/// Validates and stores a new rule of chatbot `bot`.
pub(crate) async fn create_rule(
    state: &AppState,
    principal: &Principal,
    bot: &str,
    body: CreateRule,
) -> Result<KeywordRule, ApiError> {
    principal.require(Scope::ChatbotConfig)?;
    let bot = state.chatbot(principal, bot)?;
    let at = now();
    let mut rule = KeywordRule {
        id: RuleId::new_random(),
        chatbot_id: bot.chatbot.id,
        name: body.name.unwrap_or_default(),
        keywords: body.keywords,
        match_type: body.match_type,
        response_type: body.response_type.unwrap_or(if body.buttons.is_empty() {
            ResponseType::Text
        } else {
            ResponseType::Buttons
        }),
        response: body.response,
        buttons: body.buttons,
        priority: body.priority,
        enabled: body.enabled,
        created_at: at,
        updated_at: at,
    };
    validate(&mut rule)?;
    save(state, &rule).await?;
    Ok(rule)
}

async fn save(state: &AppState, rule: &KeywordRule) -> Result<(), ApiError> {
    let ticket = state.store.put_rule(rule)?;
    state.config_written(rule.chatbot_id, ticket).await
}

fn find(state: &AppState, principal: &Principal, bot: &str, id: &str) -> Result<KeywordRule, ApiError> {
    let bot = state.chatbot(principal, bot)?;
    let id: RuleId = id.parse().map_err(|_| ApiError::not_found("keyword rule"))?;
    state.store.rule(bot.chatbot.id, id)?.ok_or_else(|| ApiError::not_found("keyword rule"))
}

#[utoipa::path(
    get,
    path = "/v1/chatbots/{bot}/keywords/{id}",
    operation_id = "get_keyword_rule",
    tag = "keywords",
    summary = "Get a keyword rule",
    params(
        ("bot" = String, Path, description = "Chatbot id"),
        ("id" = String, Path, description = "Keyword rule id"),
    ),
    responses(
        (status = 200, description = "The keyword rule", body = KeywordRule),
        (status = 404, description = "No such chatbot or keyword rule", body = crate::openapi::ApiErrorBody),
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

/// Partial update: the fields given replace the rule's; the result is validated whole.
#[utoipa::path(
    method(put, patch),
    path = "/v1/chatbots/{bot}/keywords/{id}",
    operation_id = "update_keyword_rule",
    tag = "keywords",
    summary = "Change a keyword rule (only the fields given)",
    params(
        ("bot" = String, Path, description = "Chatbot id"),
        ("id" = String, Path, description = "Keyword rule id"),
    ),
    request_body = crate::openapi::KeywordRulePatch,
    responses(
        (status = 200, description = "The keyword rule", body = KeywordRule),
        (status = 404, description = "No such chatbot or keyword rule", body = crate::openapi::ApiErrorBody),
        (
            status = 422,
            description = "A regex that does not compile, too many keywords, or buttons over the limits",
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
    Ok(HttpResponse::Ok().json(update_rule(&state, &principal, &path.0, &path.1, body.0).await?))
}

/// Applies a partial update to rule `id` of chatbot `bot`.
pub(crate) async fn update_rule(
    state: &AppState,
    principal: &Principal,
    bot: &str,
    id: &str,
    patch: Map<String, Value>,
) -> Result<KeywordRule, ApiError> {
    principal.require(Scope::ChatbotConfig)?;
    let current = find(state, principal, bot, id)?;
    let mut rule: KeywordRule = merge_patch(&current, patch, &["id", "chatbot_id", "created_at", "updated_at"])?;
    validate(&mut rule)?;
    rule.updated_at = now();
    save(state, &rule).await?;
    Ok(rule)
}

#[utoipa::path(
    delete,
    path = "/v1/chatbots/{bot}/keywords/{id}",
    operation_id = "delete_keyword_rule",
    tag = "keywords",
    summary = "Delete a keyword rule",
    params(
        ("bot" = String, Path, description = "Chatbot id"),
        ("id" = String, Path, description = "Keyword rule id"),
    ),
    responses(
        (status = 200, description = "Deleted", body = crate::openapi::Deleted),
        (status = 404, description = "No such chatbot or keyword rule", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["chatbot:config"])),
)]
async fn delete(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    delete_rule(&state, &principal, &path.0, &path.1).await?;
    Ok(deleted())
}

/// Deletes rule `id` of chatbot `bot`.
pub(crate) async fn delete_rule(state: &AppState, principal: &Principal, bot: &str, id: &str) -> Result<(), ApiError> {
    principal.require(Scope::ChatbotConfig)?;
    let rule = find(state, principal, bot, id)?;
    let ticket =
        state.store.delete_rule(rule.chatbot_id, rule.id)?.ok_or_else(|| ApiError::not_found("keyword rule"))?;
    state.config_written(rule.chatbot_id, ticket).await
}

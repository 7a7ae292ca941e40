//! `/v1/chatbots/{bot}/flows`: multi-step flows, validated at save (unique step names, known
//! step and input types, buttons, api_fetch and panel configuration), 422 naming the path.

use actix_web::{web, HttpResponse};
use baton_actors::engine::flow::validate;
use baton_actors::model::{now, Flow, FlowId, FlowStep, PanelConfig};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::app::AppState;
use crate::auth::{Principal, Scope};
use crate::error::ApiError;
use crate::extract::{merge_patch, Json};
use crate::routes::{deleted, resource};

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/chatbots/{bot}/flows").route(web::get().to(list)).route(web::post().to(create))).service(
        resource("/v1/chatbots/{bot}/flows/{id}")
            .route(web::get().to(get))
            .route(web::put().to(update))
            .route(web::patch().to(update))
            .route(web::delete().to(delete)),
    );
}

/// A flow as clients send it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowBody {
    #[schema(pattern = r"\S")]
    pub name: String,
    #[serde(default)]
    pub trigger_keywords: Vec<String>,
    #[serde(default)]
    pub initial_message: String,
    #[serde(default)]
    pub completion_message: String,
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default)]
    pub panel_config: Option<PanelConfig>,
    pub steps: Vec<FlowStep>,
}

fn default_true() -> bool {
    true
}

/// Validation failure → 422 naming the path.
fn checked(mut flow: Flow) -> Result<Flow, ApiError> {
    validate(&mut flow).map_err(|e| ApiError::unprocessable(e.path.clone(), e.to_string()))?;
    Ok(flow)
}

/// Every transfer step names a team of the flow's tenant (or the general queue).
fn check_teams(state: &AppState, flow: &Flow) -> Result<(), ApiError> {
    let Some(bot) = state.store.chatbot(flow.chatbot_id)? else { return Err(ApiError::not_found("chatbot")) };
    for (i, step) in flow.steps.iter().enumerate() {
        if let Some(team) = step.transfer_config.as_ref().and_then(|t| t.team_id) {
            if state.store.team(bot.tenant_id, team)?.is_none() {
                let field = format!("steps[{i}].transfer_config.team_id");
                return Err(ApiError::unprocessable(field.clone(), format!("{field}: no team {team}")));
            }
        }
    }
    Ok(())
}

/// Builds and validates a new flow of `bot` from a request body.
pub fn new_flow(bot: baton_actors::model::ChatbotId, body: FlowBody) -> Result<Flow, ApiError> {
    let at = now();
    checked(Flow {
        id: FlowId::new_random(),
        chatbot_id: bot,
        name: body.name,
        trigger_keywords: body.trigger_keywords,
        initial_message: body.initial_message,
        completion_message: body.completion_message,
        enabled: body.enabled,
        panel_config: body.panel_config,
        steps: body.steps,
        created_at: at,
        updated_at: at,
    })
}

#[utoipa::path(
    get,
    path = "/v1/chatbots/{bot}/flows",
    operation_id = "list_flows",
    tag = "flows",
    summary = "List flows",
    params(("bot" = String, Path, description = "Chatbot id")),
    responses(
        (status = 200, description = "The flows", body = crate::openapi::FlowList),
        (status = 404, description = "No such chatbot", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["chatbot:config"])),
)]
async fn list(
    state: web::Data<AppState>,
    principal: Principal,
    bot: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(list_flows(&state, &principal, &bot)?))
}

/// `{"items": [...]}`: chatbot `bot`'s flows.
pub(crate) fn list_flows(state: &AppState, principal: &Principal, bot: &str) -> Result<Value, ApiError> {
    principal.require(Scope::ChatbotConfig)?;
    let bot = state.chatbot(principal, bot)?;
    Ok(serde_json::json!({ "items": state.store.flows_of(bot.chatbot.id)? }))
}

#[utoipa::path(
    post,
    path = "/v1/chatbots/{bot}/flows",
    operation_id = "create_flow",
    tag = "flows",
    summary = "Create a flow",
    params(("bot" = String, Path, description = "Chatbot id")),
    request_body = FlowBody,
    responses(
        (status = 201, description = "The flow", body = Flow),
        (status = 404, description = "No such chatbot", body = crate::openapi::ApiErrorBody),
        (
            status = 422,
            description = "A flow that cannot run; field names the path (steps[1].buttons[0].title)",
            body = crate::openapi::ApiErrorBody,
        ),
    ),
    security(("api_key" = ["chatbot:config"])),
)]
async fn create(
    state: web::Data<AppState>,
    principal: Principal,
    bot: web::Path<String>,
    body: Json<FlowBody>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Created().json(create_flow(&state, &principal, &bot, body.0).await?))
}

/// Validates and stores a new flow of chatbot `bot`.
pub(crate) async fn create_flow(
    state: &AppState,
    principal: &Principal,
    bot: &str,
    body: FlowBody,
) -> Result<Flow, ApiError> {
    principal.require(Scope::ChatbotConfig)?;
    let bot = state.chatbot(principal, bot)?;
    let flow = new_flow(bot.chatbot.id, body)?;
    save(state, &flow).await?;
    Ok(flow)
}

/// Stores a flow and forgets the chatbot's cached configuration.
pub async fn save(state: &AppState, flow: &Flow) -> Result<(), ApiError> {
    check_teams(state, flow)?;
    let ticket = state.store.put_flow(flow)?;
    state.configs.invalidate(flow.chatbot_id);
    let reconciled = reconcile_sessions(state, flow).await?;
    state.store.durable(ticket.max(reconciled)).await?;
    Ok(())
}

/// After `flow` changed or went away, closes the sessions waiting at a step it no longer
/// has, through their conversations' actors, so no session points at a missing step.
async fn reconcile_sessions(state: &AppState, flow: &Flow) -> Result<baton_actors::store::CommitTicket, ApiError> {
    let Some(bot) = state.store.chatbot(flow.chatbot_id)? else { return Ok(baton_actors::store::CommitTicket::NONE) };
    let mut ticket = baton_actors::store::CommitTicket::NONE;
    for session in state.store.sessions_in_flow(bot.tenant_id, flow.id)? {
        match state.registry.send(session.conversation_id, baton_actors::conversation::ReconcileFlow).await {
            Ok(done) => ticket = ticket.max(done),
            Err(baton_actors::conversation::ConversationError::NotFound) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(ticket)
}

/// The caller's flow `id` of chatbot `bot`.
pub fn find(state: &AppState, principal: &Principal, bot: &str, id: &str) -> Result<Flow, ApiError> {
    let bot = state.chatbot(principal, bot)?;
    let id: FlowId = id.parse().map_err(|_| ApiError::not_found("flow"))?;
    state.store.flow(bot.chatbot.id, id)?.ok_or_else(|| ApiError::not_found("flow"))
}

#[utoipa::path(
    get,
    path = "/v1/chatbots/{bot}/flows/{id}",
    operation_id = "get_flow",
    tag = "flows",
    summary = "Get a flow",
    params(
        ("bot" = String, Path, description = "Chatbot id"),
        ("id" = String, Path, description = "Flow id"),
    ),
    responses(
        (status = 200, description = "The flow", body = Flow),
        (status = 404, description = "No such chatbot or flow", body = crate::openapi::ApiErrorBody),
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

/// Partial update: the fields given replace the flow's (`steps` as a whole); validated whole.
#[utoipa::path(
    method(put, patch),
    path = "/v1/chatbots/{bot}/flows/{id}",
    operation_id = "update_flow",
    tag = "flows",
    summary = "Change a flow (only the fields given)",
    params(
        ("bot" = String, Path, description = "Chatbot id"),
        ("id" = String, Path, description = "Flow id"),
    ),
    request_body = crate::openapi::FlowPatch,
    responses(
        (status = 200, description = "The flow", body = Flow),
        (status = 404, description = "No such chatbot or flow", body = crate::openapi::ApiErrorBody),
        (
            status = 422,
            description = "A flow that cannot run; field names the path (steps[1].buttons[0].title)",
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
    principal.require(Scope::ChatbotConfig)?;
    let current = find(&state, &principal, &path.0, &path.1)?;
    let mut flow = checked(merge_patch(&current, body.0, &["id", "chatbot_id", "created_at", "updated_at"])?)?;
    flow.updated_at = now();
    save(&state, &flow).await?;
    Ok(HttpResponse::Ok().json(flow))
}

#[utoipa::path(
    delete,
    path = "/v1/chatbots/{bot}/flows/{id}",
    operation_id = "delete_flow",
    tag = "flows",
    summary = "Delete a flow",
    params(
        ("bot" = String, Path, description = "Chatbot id"),
        ("id" = String, Path, description = "Flow id"),
    ),
    responses(
        (status = 200, description = "Deleted", body = crate::openapi::Deleted),
        (status = 404, description = "No such chatbot or flow", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["chatbot:config"])),
)]
async fn delete(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Scope::ChatbotConfig)?;
    let flow = find(&state, &principal, &path.0, &path.1)?;
    let ticket = state.store.delete_flow(flow.chatbot_id, flow.id)?.ok_or_else(|| ApiError::not_found("flow"))?;
    state.configs.invalidate(flow.chatbot_id);
    let reconciled = reconcile_sessions(&state, &flow).await?;
    state.store.durable(ticket.max(reconciled)).await?;
    Ok(deleted())
}

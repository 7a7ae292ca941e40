//! `/v1/teams` and `/v1/agents`: who picks up transfers.

use actix_web::{web, HttpResponse};
use baton_actors::model::{now, Agent, AgentId, Team, TeamId};
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::{Principal, Scope};
use crate::error::ApiError;
use crate::extract::Json;
use crate::routes::{max_chars, required_text, resource};

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/teams").route(web::post().to(create_team)).route(web::get().to(list_teams)))
        .service(resource("/v1/teams/{id}").route(web::get().to(get_team)))
        .service(resource("/v1/agents").route(web::post().to(create_agent)).route(web::get().to(list_agents)))
        .service(resource("/v1/agents/{id}").route(web::get().to(get_agent)));
}

/// Listing teams and agents is queue work; creating them is administration.
fn can_read(principal: &Principal) -> Result<(), ApiError> {
    principal.require(Scope::Transfers).or_else(|_| principal.require(Scope::ChatbotConfig))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct CreateTeam {
    #[schema(pattern = r"\S")]
    name: String,
}

#[utoipa::path(
    post,
    path = "/v1/teams",
    operation_id = "create_team",
    tag = "teams",
    summary = "Create a team",
    request_body = CreateTeam,
    responses(
        (status = 201, description = "The team", body = Team),
        (status = 400, description = "A blank name", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["admin"])),
)]
async fn create_team(
    state: web::Data<AppState>,
    principal: Principal,
    body: Json<CreateTeam>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Scope::Admin)?;
    let name = required_text("name", &body.0.name)?;
    max_chars("name", name, 200)?;
    let at = now();
    let team = Team {
        id: TeamId::new_random(),
        tenant_id: principal.tenant_id,
        name: name.to_string(),
        created_at: at,
        updated_at: at,
    };
    let ticket = state.store.put_team(&team)?;
    state.store.durable(ticket).await?;
    Ok(HttpResponse::Created().json(team))
}

#[utoipa::path(
    get,
    path = "/v1/teams",
    operation_id = "list_teams",
    tag = "teams",
    summary = "List teams",
    responses((status = 200, description = "The teams", body = crate::openapi::TeamList)),
    security(("api_key" = ["transfers"]), ("api_key" = ["chatbot:config"])),
)]
async fn list_teams(state: web::Data<AppState>, principal: Principal) -> Result<HttpResponse, ApiError> {
    can_read(&principal)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": state.store.teams_of(principal.tenant_id)? })))
}

/// The caller's team `id` as a parsed id, 404 otherwise.
pub fn find_team(state: &AppState, principal: &Principal, id: &str) -> Result<Team, ApiError> {
    let id: TeamId = id.parse().map_err(|_| ApiError::not_found("team"))?;
    state.store.team(principal.tenant_id, id)?.ok_or_else(|| ApiError::not_found("team"))
}

/// The caller's agent `id`, 404 otherwise.
pub fn find_agent(state: &AppState, principal: &Principal, id: &str) -> Result<Agent, ApiError> {
    let id: AgentId = id.parse().map_err(|_| ApiError::not_found("agent"))?;
    state.store.agent(principal.tenant_id, id)?.ok_or_else(|| ApiError::not_found("agent"))
}

#[utoipa::path(
    get,
    path = "/v1/teams/{id}",
    operation_id = "get_team",
    tag = "teams",
    summary = "Get a team",
    params(("id" = String, Path, description = "Team id")),
    responses(
        (status = 200, description = "The team", body = Team),
        (status = 404, description = "No such team", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["transfers"]), ("api_key" = ["chatbot:config"])),
)]
async fn get_team(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    can_read(&principal)?;
    Ok(HttpResponse::Ok().json(find_team(&state, &principal, &id)?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct CreateAgent {
    #[schema(pattern = r"\S")]
    name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    team_ids: Vec<String>,
}

#[utoipa::path(
    post,
    path = "/v1/agents",
    operation_id = "create_agent",
    tag = "teams",
    summary = "Create an agent",
    request_body = CreateAgent,
    responses(
        (status = 201, description = "The agent", body = Agent),
        (status = 400, description = "A blank name or a bad e-mail address", body = crate::openapi::ApiErrorBody),
        (
            status = 422,
            description = "An unknown team; field names it (team_ids[0])",
            body = crate::openapi::ApiErrorBody,
        ),
    ),
    security(("api_key" = ["admin"])),
)]
async fn create_agent(
    state: web::Data<AppState>,
    principal: Principal,
    body: Json<CreateAgent>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Scope::Admin)?;
    let body = body.0;
    let name = required_text("name", &body.name)?;
    max_chars("name", name, 200)?;
    let email = body.email.trim();
    if !email.is_empty() && !looks_like_email(email) {
        return Err(ApiError::bad_request("email", "email is not an e-mail address"));
    }
    let mut team_ids = Vec::with_capacity(body.team_ids.len());
    for (i, raw) in body.team_ids.iter().enumerate() {
        let team = find_team(&state, &principal, raw).map_err(|_| {
            ApiError::unprocessable(format!("team_ids[{i}]"), format!("team_ids[{i}]: no team {raw:?}"))
        })?;
        if !team_ids.contains(&team.id) {
            team_ids.push(team.id);
        }
    }
    let at = now();
    let agent = Agent {
        id: AgentId::new_random(),
        tenant_id: principal.tenant_id,
        name: name.to_string(),
        email: email.to_string(),
        team_ids,
        created_at: at,
        updated_at: at,
    };
    let ticket = state.store.put_agent(&agent)?;
    state.store.durable(ticket).await?;
    Ok(HttpResponse::Created().json(agent))
}

fn looks_like_email(email: &str) -> bool {
    match email.split_once('@') {
        Some((user, domain)) => {
            !user.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
        }
        None => false,
    }
}

#[utoipa::path(
    get,
    path = "/v1/agents",
    operation_id = "list_agents",
    tag = "teams",
    summary = "List agents",
    responses((status = 200, description = "The agents", body = crate::openapi::AgentList)),
    security(("api_key" = ["transfers"]), ("api_key" = ["chatbot:config"])),
)]
async fn list_agents(state: web::Data<AppState>, principal: Principal) -> Result<HttpResponse, ApiError> {
    can_read(&principal)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": state.store.agents_of(principal.tenant_id)? })))
}

#[utoipa::path(
    get,
    path = "/v1/agents/{id}",
    operation_id = "get_agent",
    tag = "teams",
    summary = "Get an agent",
    params(("id" = String, Path, description = "Agent id")),
    responses(
        (status = 200, description = "The agent", body = Agent),
        (status = 404, description = "No such agent", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["transfers"]), ("api_key" = ["chatbot:config"])),
)]
async fn get_agent(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    can_read(&principal)?;
    Ok(HttpResponse::Ok().json(find_agent(&state, &principal, &id)?))
}

//! `/v1/transfers`: hand-overs to humans. Opening and resuming go through the conversation's
//! actor (they pause and resume its bot); pickup and assignment change only the transfer, as
//! one serializable store transaction each, so two pickups never take the same transfer.

use actix_web::{web, HttpResponse};
use baton_actors::conversation::{OpenTransfer, ResumeTransfer};
use baton_actors::model::{ContactId, Conversation, ConversationId, TeamId, Transfer, TransferId, TransferStatus};
use baton_actors::store::Queue;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::{Principal, Scope};
use crate::error::ApiError;
use crate::extract::{Json, Query};
use crate::routes::teams::{find_agent, find_team};
use crate::routes::{max_chars, resource};

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/transfers").route(web::get().to(list)).route(web::post().to(create)))
        .service(resource("/v1/transfers/pickup").route(web::post().to(pickup)))
        .service(resource("/v1/transfers/{id}").route(web::get().to(get)))
        .service(resource("/v1/transfers/{id}/assign").route(web::put().to(assign)).route(web::post().to(assign)))
        .service(resource("/v1/transfers/{id}/resume").route(web::put().to(resume)).route(web::post().to(resume)));
}

/// A transfer as served: with its team's and agent's names.
pub fn transfer_view(state: &AppState, transfer: &Transfer) -> Result<Value, ApiError> {
    let team = transfer.team_id.map(|t| state.store.team(transfer.tenant_id, t)).transpose()?.flatten();
    let agent = transfer.agent_id.map(|a| state.store.agent(transfer.tenant_id, a)).transpose()?.flatten();
    let mut view = serde_json::to_value(transfer).map_err(|e| ApiError::internal(&e))?;
    view["team_name"] = json!(team.map(|t| t.name));
    view["agent_name"] = json!(agent.map(|a| a.name));
    Ok(view)
}

/// Which queue a `team_id` parameter names: a team, `general`, or (absent) every queue.
fn parse_queue(state: &AppState, principal: &Principal, raw: Option<&str>) -> Result<Queue, ApiError> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(Queue::Any),
        Some("general") => Ok(Queue::General),
        Some(id) => Ok(Queue::Team(find_team(state, principal, id)?.id)),
    }
}

/// The transfer list with queue counts, filtered by `status` and `team_id`.
pub fn list_transfers(state: &AppState, principal: &Principal, query: &Query) -> Result<Value, ApiError> {
    principal.require(Scope::Transfers)?;
    let status = match query.get("status").filter(|s| !s.is_empty()) {
        None => None,
        Some("active") => Some(TransferStatus::Active),
        Some("resumed") => Some(TransferStatus::Resumed),
        Some(other) => {
            return Err(ApiError::bad_request("status", format!("status must be active or resumed; got {other:?}")))
        }
    };
    let queue = parse_queue(state, principal, query.get("team_id"))?;
    let mut transfers = Vec::new();
    for transfer in state.store.transfers_of(principal.tenant_id)? {
        let in_queue = match queue {
            Queue::Any => true,
            Queue::General => transfer.team_id.is_none(),
            Queue::Team(team) => transfer.team_id == Some(team),
        };
        if in_queue && status.is_none_or(|s| transfer.status == s) {
            transfers.push(transfer_view(state, &transfer)?);
        }
    }
    let counts = state.store.queue_counts(principal.tenant_id)?;
    let teams: serde_json::Map<String, Value> = counts.teams.iter().map(|(t, n)| (t.to_string(), json!(n))).collect();
    Ok(json!({ "transfers": transfers, "general_queue_count": counts.general, "team_queue_counts": teams }))
}

#[utoipa::path(
    get,
    path = "/v1/transfers",
    operation_id = "list_transfers",
    tag = "transfers",
    summary = "List transfers with queue counts",
    params(
        ("status" = Option<TransferStatus>, Query, description = "Only this status"),
        ("team_id" = Option<String>, Query, description = "A team id, or general for the general queue"),
    ),
    responses(
        (status = 200, description = "The transfers", body = crate::openapi::TransferList),
        (status = 400, description = "An unknown status", body = crate::openapi::ApiErrorBody),
        (status = 404, description = "No such team", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["transfers"])),
)]
async fn list(state: web::Data<AppState>, principal: Principal, query: Query) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(list_transfers(&state, &principal, &query)?))
}

/// A transfer request body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTransfer {
    #[serde(default)]
    pub contact_id: Option<String>,
    #[serde(default)]
    pub conversation_id: Option<String>,
    #[serde(default)]
    pub team_id: Option<String>,
    #[serde(default)]
    pub notes: Option<String>,
}

/// The conversation a transfer request names: the conversation itself, or the contact's
/// most recently active one.
fn target_conversation(
    state: &AppState,
    principal: &Principal,
    body: &CreateTransfer,
) -> Result<Conversation, ApiError> {
    let mine = |c: &Conversation| c.tenant_id == principal.tenant_id;
    if let Some(raw) = body.conversation_id.as_deref().filter(|s| !s.trim().is_empty()) {
        let id: ConversationId = raw.trim().parse().map_err(|_| ApiError::not_found("conversation"))?;
        return state.store.conversation(id)?.filter(mine).ok_or_else(|| ApiError::not_found("conversation"));
    }
    let Some(raw) = body.contact_id.as_deref().filter(|s| !s.trim().is_empty()) else {
        return Err(ApiError::bad_request("contact_id", "contact_id or conversation_id is required"));
    };
    let id: ContactId = raw.trim().parse().map_err(|_| ApiError::not_found("contact"))?;
    let conversations = state.store.conversations_of_contact(id)?;
    conversations
        .into_iter()
        .filter(mine)
        .max_by_key(|c| (c.last_message_at, c.updated_at))
        .ok_or_else(|| ApiError::not_found("contact"))
}

/// Opens a transfer by hand; returns the transfer as served.
pub async fn open_transfer(state: &AppState, principal: &Principal, body: CreateTransfer) -> Result<Value, ApiError> {
    principal.require(Scope::Transfers)?;
    let notes = body.notes.clone().unwrap_or_default();
    max_chars("notes", &notes, 4000)?;
    let team_id: Option<TeamId> = match body.team_id.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None | Some("general") => None,
        Some(raw) => Some(
            find_team(state, principal, raw)
                .map_err(|_| ApiError::unprocessable("team_id", format!("team_id: no team {raw:?}")))?
                .id,
        ),
    };
    let conversation = target_conversation(state, principal, &body)?;
    let bot = state
        .chatbot(principal, &conversation.chatbot_id.to_string())
        .map_err(|_| ApiError::not_found("conversation"))?;
    let changed = state.registry.send(conversation.id, OpenTransfer { bot, team_id, notes }).await?;
    state.store.durable(changed.ticket).await?;
    transfer_view(state, &changed.transfer)
}

#[utoipa::path(
    post,
    path = "/v1/transfers",
    operation_id = "create_transfer",
    tag = "transfers",
    summary = "Hand a conversation to humans (pauses the bot)",
    request_body = CreateTransfer,
    responses(
        (status = 201, description = "The transfer", body = crate::openapi::TransferView),
        (status = 400, description = "Neither contact_id nor conversation_id", body = crate::openapi::ApiErrorBody),
        (status = 404, description = "No such conversation or contact", body = crate::openapi::ApiErrorBody),
        (status = 409, description = "The conversation is already with a human", body = crate::openapi::ApiErrorBody),
        (status = 422, description = "An unknown team", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["transfers"])),
)]
async fn create(
    state: web::Data<AppState>,
    principal: Principal,
    body: Json<CreateTransfer>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Created().json(open_transfer(&state, &principal, body.0).await?))
}

/// Takes the oldest waiting transfer of the queue named by `team_id` for `agent_id`.
pub async fn pick_up(state: &AppState, principal: &Principal, query: &Query) -> Result<Value, ApiError> {
    principal.require(Scope::Transfers)?;
    let queue = parse_queue(state, principal, query.get("team_id"))?;
    let agent = match query.get("agent_id").map(str::trim).filter(|s| !s.is_empty()) {
        Some(raw) => Some(
            find_agent(state, principal, raw)
                .map_err(|_| ApiError::unprocessable("agent_id", format!("agent_id: no agent {raw:?}")))?
                .id,
        ),
        None => None,
    };
    let (transfer, ticket) = state.store.pick_up(principal.tenant_id, queue, agent)?.ok_or_else(|| {
        let mut error = ApiError::not_found("transfer");
        error.message = "No transfer is waiting in this queue".into();
        error
    })?;
    state.store.durable(ticket).await?;
    publish_assigned(state, &transfer);
    transfer_view(state, &transfer)
}

#[utoipa::path(
    post,
    path = "/v1/transfers/pickup",
    operation_id = "pick_up_transfer",
    tag = "transfers",
    summary = "Take the oldest waiting transfer of a queue",
    params(
        ("team_id" = Option<String>, Query, description = "A team id, or general; absent: any queue"),
        ("agent_id" = Option<String>, Query, description = "The agent taking it"),
    ),
    responses(
        (status = 200, description = "The transfer, now assigned", body = crate::openapi::TransferView),
        (
            status = 404,
            description = "No transfer is waiting in this queue, or no such team",
            body = crate::openapi::ApiErrorBody,
        ),
        (status = 422, description = "An unknown agent", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["transfers"])),
)]
async fn pickup(state: web::Data<AppState>, principal: Principal, query: Query) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(pick_up(&state, &principal, &query).await?))
}

/// The caller's transfer `id`.
pub fn find(state: &AppState, principal: &Principal, id: &str) -> Result<Transfer, ApiError> {
    let id: TransferId = id.parse().map_err(|_| ApiError::not_found("transfer"))?;
    match state.store.transfer(id)? {
        Some(t) if t.tenant_id == principal.tenant_id => Ok(t),
        _ => Err(ApiError::not_found("transfer")),
    }
}

#[utoipa::path(
    get,
    path = "/v1/transfers/{id}",
    operation_id = "get_transfer",
    tag = "transfers",
    summary = "Get a transfer",
    params(("id" = String, Path, description = "Transfer id")),
    responses(
        (status = 200, description = "The transfer", body = crate::openapi::TransferView),
        (status = 404, description = "No such transfer", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["transfers"])),
)]
async fn get(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Scope::Transfers)?;
    Ok(HttpResponse::Ok().json(transfer_view(&state, &find(&state, &principal, &id)?)?))
}

/// An assignment body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = AssignTransfer)]
pub struct Assign {
    pub agent_id: String,
}

/// Assigns transfer `id` to an agent.
pub async fn assign_transfer(
    state: &AppState,
    principal: &Principal,
    id: &str,
    body: Assign,
) -> Result<Value, ApiError> {
    principal.require(Scope::Transfers)?;
    let transfer = find(state, principal, id)?;
    let agent = find_agent(state, principal, &body.agent_id)
        .map_err(|_| ApiError::unprocessable("agent_id", format!("agent_id: no agent {:?}", body.agent_id)))?;
    if transfer.status != TransferStatus::Active {
        return Err(ApiError::conflict("this transfer was already resumed"));
    }
    let (transfer, ticket) =
        state.store.assign_transfer(transfer.id, agent.id)?.ok_or_else(|| ApiError::not_found("transfer"))?;
    state.store.durable(ticket).await?;
    publish_assigned(state, &transfer);
    transfer_view(state, &transfer)
}

/// Tells live subscribers that a transfer was picked up or assigned.
fn publish_assigned(state: &AppState, transfer: &Transfer) {
    let data = || json!({ "transfer": transfer });
    state.registry.events().publish(transfer.tenant_id, "transfer.assigned", data, baton_actors::model::now());
}

#[utoipa::path(
    method(put, post),
    path = "/v1/transfers/{id}/assign",
    operation_id = "assign_transfer",
    tag = "transfers",
    summary = "Assign a transfer to an agent",
    params(("id" = String, Path, description = "Transfer id")),
    request_body = Assign,
    responses(
        (status = 200, description = "The transfer", body = crate::openapi::TransferView),
        (status = 404, description = "No such transfer", body = crate::openapi::ApiErrorBody),
        (status = 409, description = "The transfer was already resumed", body = crate::openapi::ApiErrorBody),
        (status = 422, description = "An unknown agent", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["transfers"])),
)]
async fn assign(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
    body: Json<Assign>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(assign_transfer(&state, &principal, &id, body.0).await?))
}

/// Hands transfer `id`'s conversation back to the bot.
pub async fn resume_transfer(state: &AppState, principal: &Principal, id: &str) -> Result<Value, ApiError> {
    principal.require(Scope::Transfers)?;
    let transfer = find(state, principal, id)?;
    let changed = state.registry.send(transfer.conversation_id, ResumeTransfer { transfer_id: transfer.id }).await?;
    state.store.durable(changed.ticket).await?;
    transfer_view(state, &changed.transfer)
}

#[utoipa::path(
    method(put, post),
    path = "/v1/transfers/{id}/resume",
    operation_id = "resume_transfer",
    tag = "transfers",
    summary = "Hand the conversation back to the bot (again: no change)",
    params(("id" = String, Path, description = "Transfer id")),
    responses(
        (status = 200, description = "The transfer, resumed", body = crate::openapi::TransferView),
        (status = 404, description = "No such transfer", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["transfers"])),
)]
async fn resume(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(resume_transfer(&state, &principal, &id).await?))
}

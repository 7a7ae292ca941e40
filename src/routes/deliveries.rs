//! `/v1/webhook-deliveries`: the outbox as operators see it, and manual retries.

use actix_web::{web, HttpResponse};
use baton_actors::model::{now, Delivery, DeliveryId, DeliveryStatus};
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::{Principal, Scope};
use crate::error::ApiError;
use crate::extract::Query;
use crate::routes::resource;

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 500;

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/webhook-deliveries").route(web::get().to(list)))
        .service(resource("/v1/webhook-deliveries/{id}").route(web::get().to(get)))
        .service(resource("/v1/webhook-deliveries/{id}/retry").route(web::post().to(retry)));
}

/// Operators of webhooks: admins and chatbot configurators.
fn require(principal: &Principal) -> Result<(), ApiError> {
    principal.require(Scope::ChatbotConfig)
}

/// A delivery as served (its signing secret never is).
pub fn delivery_view(d: &Delivery) -> Value {
    json!({
        "id": d.id,
        "kind": d.kind,
        "status": d.status,
        "chatbot_id": d.chatbot_id,
        "conversation_id": d.conversation_id,
        "channel_id": d.channel_id,
        "url": d.url,
        "method": d.method,
        "payload": d.body,
        "signed": d.secret.as_deref().is_some_and(|s| !s.is_empty()),
        "attempts": d.attempts,
        "next_attempt_at": (d.status == DeliveryStatus::Pending).then_some(d.next_attempt_at),
        "last_status": d.last_status,
        "last_error": d.last_error,
        "created_at": d.created_at,
        "updated_at": d.updated_at,
        "delivered_at": d.delivered_at,
    })
}

#[utoipa::path(
    get,
    path = "/v1/webhook-deliveries",
    operation_id = "list_webhook_deliveries",
    tag = "webhook-deliveries",
    summary = "List webhook deliveries, newest first",
    params(
        ("status" = Option<DeliveryStatus>, Query, description = "Only this status"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "At most this many (default 100)"),
    ),
    responses(
        (status = 200, description = "The deliveries", body = crate::openapi::DeliveryList),
        (status = 400, description = "A malformed parameter", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["chatbot:config"])),
)]
async fn list(state: web::Data<AppState>, principal: Principal, query: Query) -> Result<HttpResponse, ApiError> {
    require(&principal)?;
    let status = match query.get("status").filter(|s| !s.is_empty()) {
        None => None,
        Some("pending") => Some(DeliveryStatus::Pending),
        Some("delivered") => Some(DeliveryStatus::Delivered),
        Some("failed") => Some(DeliveryStatus::Failed),
        Some("cancelled") => Some(DeliveryStatus::Cancelled),
        Some(other) => {
            return Err(ApiError::bad_request(
                "status",
                format!("status must be pending, delivered, failed or cancelled; got {other:?}"),
            ))
        }
    };
    let limit = query.parse::<usize>("limit", "a number from 1 to 500")?.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request("limit", "limit must be a number from 1 to 500"));
    }
    let items = state.store.deliveries_of(principal.tenant_id, limit, |d| status.is_none_or(|s| d.status == s))?;
    Ok(HttpResponse::Ok().json(json!({ "items": items.iter().map(delivery_view).collect::<Vec<_>>() })))
}

fn find(state: &AppState, principal: &Principal, id: &str) -> Result<Delivery, ApiError> {
    let id: DeliveryId = id.parse().map_err(|_| ApiError::not_found("delivery"))?;
    match state.store.delivery(id)? {
        Some(d) if d.tenant_id == principal.tenant_id => Ok(d),
        _ => Err(ApiError::not_found("delivery")),
    }
}

#[utoipa::path(
    get,
    path = "/v1/webhook-deliveries/{id}",
    operation_id = "get_webhook_delivery",
    tag = "webhook-deliveries",
    summary = "Get a webhook delivery",
    params(("id" = String, Path, description = "Delivery id")),
    responses(
        (status = 200, description = "The delivery", body = crate::openapi::DeliveryView),
        (status = 404, description = "No such delivery", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["chatbot:config"])),
)]
async fn get(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require(&principal)?;
    Ok(HttpResponse::Ok().json(delivery_view(&find(&state, &principal, &id)?)))
}

/// Sends a failed (or still pending) delivery again now, with a fresh retry budget.
#[utoipa::path(
    post,
    path = "/v1/webhook-deliveries/{id}/retry",
    operation_id = "retry_webhook_delivery",
    tag = "webhook-deliveries",
    summary = "Send a failed or pending delivery again now",
    params(("id" = String, Path, description = "Delivery id")),
    responses(
        (status = 202, description = "Pending again, with a fresh retry budget", body = crate::openapi::DeliveryView),
        (status = 404, description = "No such delivery", body = crate::openapi::ApiErrorBody),
        (
            status = 409,
            description = "Already delivered, or cancelled by a human takeover",
            body = crate::openapi::ApiErrorBody,
        ),
    ),
    security(("api_key" = ["chatbot:config"])),
)]
async fn retry(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require(&principal)?;
    let mut delivery = find(&state, &principal, &id)?;
    match delivery.status {
        DeliveryStatus::Delivered => return Err(ApiError::conflict("this delivery was already delivered")),
        DeliveryStatus::Cancelled => {
            return Err(ApiError::conflict("this bot reply was dropped because a human took the conversation over"))
        }
        DeliveryStatus::Pending | DeliveryStatus::Failed => {}
    }
    let at = now();
    delivery.status = DeliveryStatus::Pending;
    delivery.attempts = 0;
    delivery.next_attempt_at = at;
    delivery.updated_at = at;
    let ticket = state.store.update_delivery(&delivery)?;
    state.store.durable(ticket).await?;
    state.webhooks.do_send(baton_actors::webhook::Wake);
    Ok(HttpResponse::Accepted().json(delivery_view(&delivery)))
}

//! `/v1/api-keys`: create (the key is shown once), list, revoke. Admin only.

use actix_web::{web, HttpResponse};
use baton_actors::model::KeyId;
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::{issue_key, parse_scopes, Principal, Scope};
use crate::error::ApiError;
use crate::extract::Json;
use crate::routes::{deleted, max_chars, required_text, resource};

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/api-keys").route(web::post().to(create)).route(web::get().to(list)))
        .service(resource("/v1/api-keys/{id}").route(web::delete().to(delete)));
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = CreateApiKey)]
struct CreateKey {
    #[schema(pattern = r"\S")]
    name: String,
    scopes: Vec<String>,
}

#[utoipa::path(
    post,
    path = "/v1/api-keys",
    operation_id = "create_api_key",
    tag = "api-keys",
    summary = "Create an API key (shown once)",
    request_body = CreateKey,
    responses(
        (status = 201, description = "The key, with the key itself", body = crate::openapi::CreatedApiKey),
        (status = 400, description = "A blank name or an unknown scope", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["admin"])),
)]
async fn create(
    state: web::Data<AppState>,
    principal: Principal,
    body: Json<CreateKey>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Scope::Admin)?;
    let name = required_text("name", &body.0.name)?;
    max_chars("name", name, 200)?;
    let scopes = parse_scopes("scopes", &body.0.scopes)?;
    let (key, secret, ticket) = issue_key(&state.store, principal.tenant_id, name, &scopes)?;
    state.store.durable(ticket).await?;
    let mut view = serde_json::to_value(&key).map_err(|e| ApiError::internal(&e))?;
    view["key"] = serde_json::Value::String(secret);
    Ok(HttpResponse::Created().json(view))
}

#[utoipa::path(
    get,
    path = "/v1/api-keys",
    operation_id = "list_api_keys",
    tag = "api-keys",
    summary = "List API keys",
    responses(
        (status = 200, description = "The keys (never the keys themselves)", body = crate::openapi::ApiKeyList),
    ),
    security(("api_key" = ["admin"])),
)]
async fn list(state: web::Data<AppState>, principal: Principal) -> Result<HttpResponse, ApiError> {
    principal.require(Scope::Admin)?;
    let keys = state.store.keys_of(principal.tenant_id)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": keys })))
}

#[utoipa::path(
    delete,
    path = "/v1/api-keys/{id}",
    operation_id = "delete_api_key",
    tag = "api-keys",
    summary = "Revoke an API key",
    params(("id" = String, Path, description = "API key id")),
    responses(
        (status = 200, description = "Revoked", body = crate::openapi::Deleted),
        (status = 404, description = "No such key", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["admin"])),
)]
async fn delete(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Scope::Admin)?;
    let id: KeyId = id.parse().map_err(|_| ApiError::not_found("API key"))?;
    let ticket = state.store.delete_key(principal.tenant_id, id)?.ok_or_else(|| ApiError::not_found("API key"))?;
    state.store.durable(ticket).await?;
    Ok(deleted())
}

//! HTTP routes, one file per resource. Handlers are thin: authenticate, parse, send one
//! message to a conversation actor or the store, wait for durability, answer.

pub mod ai_contexts;
pub mod api_keys;
pub mod channels;
pub mod chatbots;
pub mod conversations;
pub mod deliveries;
pub mod drafts;
pub mod flows;
pub mod health;
pub mod keywords;
pub mod live;
pub mod sessions;
pub mod teams;
pub mod transfers;

use actix_web::{web, HttpRequest, HttpResponse};

use crate::error::ApiError;

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    // The router tries resources in order: the hot ingestion route goes first.
    conversations::configure_ingestion(cfg);
    health::configure(cfg);
    api_keys::configure(cfg);
    chatbots::configure(cfg);
    keywords::configure(cfg);
    ai_contexts::configure(cfg);
    channels::configure(cfg);
    flows::configure(cfg);
    conversations::configure(cfg);
    sessions::configure(cfg);
    teams::configure(cfg);
    transfers::configure(cfg);
    deliveries::configure(cfg);
    drafts::configure(cfg);
    live::configure(cfg);
    crate::openapi::configure(cfg);
    crate::compat::configure(cfg);
    cfg.default_service(web::to(no_route));
}

/// A resource whose unsupported methods answer a JSON 405.
pub fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

async fn no_route(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let mut error = ApiError::not_found("route");
    error.message = format!("no route for {} {}", req.method(), req.path());
    Err(error)
}

async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    HttpResponse::MethodNotAllowed().json(serde_json::json!({
        "error": format!("{} is not allowed on {}", req.method(), req.path()),
        "code": "method_not_allowed",
    }))
}

/// `{"deleted": true}`.
pub fn deleted() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "deleted": true }))
}

/// Checks that a required string is present and not blank; returns it trimmed.
pub fn required_text<'a>(field: &str, value: &'a str) -> Result<&'a str, ApiError> {
    let value = value.trim();
    if value.is_empty() {
        Err(ApiError::bad_request(field, format!("{field} must not be empty")))
    } else {
        Ok(value)
    }
}

/// Checks a string's length in characters.
pub fn max_chars(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    let chars = value.chars().count();
    if chars > max {
        Err(ApiError::bad_request(field, format!("{field} must be at most {max} characters, got {chars}")))
    } else {
        Ok(())
    }
}

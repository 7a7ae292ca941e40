//! HTTP routes, one file per resource. Handlers are thin: authenticate, parse, send one
//! message to a conversation actor or the store, wait for durability, answer.

pub mod ai_contexts;
pub mod api_keys;
pub mod channels;
pub mod chatbots;
pub mod contacts;
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
    contacts::configure(cfg);
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

/// Methods of the seed routes, which the OpenAPI document does not list.
const COMPAT_METHODS: [(&str, &str); 21] = [
    ("/functions/v1/bot-control", "POST"),
    ("/functions/v1/rest-api-proxy/conversations", "GET"),
    ("/api/v1/conversations", "GET"),
    ("/api/v1/conversations/{id}", "GET"),
    ("/api/v1/conversations/{id}/messages", "GET"),
    ("/api/v1/conversations/{id}/status", "PUT"),
    ("/api/v1/conversations/{id}/ai-draft", "POST"),
    ("/api/v1/conversations/{id}/autoreply", "POST"),
    ("/api/chatbot/settings", "GET, PUT"),
    ("/api/chatbot/keywords", "GET, POST"),
    ("/api/chatbot/keywords/{id}", "PUT, PATCH, DELETE"),
    ("/api/chatbot/ai-contexts", "GET, POST"),
    ("/api/chatbot/ai-contexts/{id}", "PUT, PATCH, DELETE"),
    ("/api/chatbot/flows", "GET, POST"),
    ("/api/chatbot/transfers", "GET, POST"),
    ("/api/chatbot/transfers/pickup", "POST"),
    ("/api/chatbot/transfers/{id}/assign", "PUT"),
    ("/api/chatbot/transfers/{id}/resume", "PUT"),
    ("/api/chatbot/sessions", "GET"),
    ("/api/chatbot/sessions/{id}", "GET"),
    ("/api/v2/instance/{instance}/typebot-integration/session/{session}", "PATCH"),
];

/// The `Allow` header of a 405 on the resource `pattern`: its methods from the OpenAPI
/// document, or from the seed routes' list.
fn allowed_methods(pattern: &str) -> Option<String> {
    if let Some(item) = crate::openapi::document()["paths"].get(pattern).and_then(serde_json::Value::as_object) {
        let methods: Vec<String> = ["get", "put", "post", "patch", "delete"]
            .into_iter()
            .filter(|m| item.contains_key(*m))
            .map(str::to_uppercase)
            .collect();
        return Some(methods.join(", "));
    }
    COMPAT_METHODS.iter().find(|(path, _)| *path == pattern).map(|(_, methods)| methods.to_string())
}

async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    let mut response = HttpResponse::MethodNotAllowed();
    if let Some(allow) = req.match_pattern().and_then(|pattern| allowed_methods(&pattern)) {
        response.insert_header((actix_web::http::header::ALLOW, allow));
    }
    response.json(serde_json::json!({
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

//! The one error type of the HTTP layer: a status, a stable snake_case code and a message,
//! answered as `{"error": "...", "code": "...", "field"?: "..."}` (5xx bodies also get the
//! `request_id`, see [`crate::middleware`]). Internal causes are logged with their chain and
//! the request id, and never shown to clients.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use baton_actors::conversation::ConversationError;
use baton_actors::store::StoreError;
use serde_json::json;

use crate::middleware::current_request_id;

/// `Retry-After` when the store fails: a disk rarely recovers within a second.
const STORAGE_RETRY_AFTER_SECS: u64 = 5;

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The request field at fault, for 400 and 422.
    pub field: Option<String>,
    /// Seconds for `Retry-After` (429, 503).
    pub retry_after: Option<u64>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), field: None, retry_after: None }
    }

    /// 400: the request is malformed; `field` names what is wrong.
    pub fn bad_request(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: Some(field.into()), ..Self::new(StatusCode::BAD_REQUEST, "bad_request", message) }
    }

    /// 400 without a single field to blame (malformed JSON, for instance).
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 422: valid JSON that cannot be accepted; `field` names what is wrong.
    pub fn unprocessable(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: Some(field.into()), ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", message) }
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403 naming the missing scope.
    pub fn forbidden(scope: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", format!("this key lacks the `{scope}` scope"))
    }

    /// 404 for `what` ("chatbot", "conversation", …).
    pub fn not_found(what: &str) -> Self {
        let mut chars = what.chars();
        let capitalized: String = chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default();
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{capitalized} not found"))
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 413.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than {limit} bytes"),
        )
    }

    /// 415.
    pub fn unsupported_media_type(got: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("expected Content-Type application/json, got {got}"),
        )
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(message: impl Into<String>, retry_after: u64) -> Self {
        Self { retry_after: Some(retry_after), ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message) }
    }

    /// 503 because the store failed (an I/O error): nothing of the request was kept, and the
    /// same request may be sent again.
    pub fn storage_unavailable() -> Self {
        Self {
            retry_after: Some(STORAGE_RETRY_AFTER_SECS),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", "storage is unavailable, try again")
        }
    }

    /// 500 for a failure the client cannot fix; `cause` is logged, not shown.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(request_id = current_request_id().as_deref(), error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = json!({ "error": self.message, "code": self.code });
        if let Some(field) = &self.field {
            body["field"] = json!(field);
        }
        let mut response = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        response.json(body)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Encode(_) | StoreError::Corrupt { .. } => ApiError::internal(&error),
            StoreError::Sled(_) | StoreError::Io(_) | StoreError::Closed => {
                tracing::error!(request_id = current_request_id().as_deref(), %error, "store unavailable");
                ApiError::storage_unavailable()
            }
        }
    }
}

impl From<ConversationError> for ApiError {
    fn from(error: ConversationError) -> Self {
        match error {
            ConversationError::NotFound => ApiError::not_found("conversation"),
            ConversationError::Missing(what) => ApiError::not_found(what),
            ConversationError::Conflict(message) => ApiError::conflict(message),
            ConversationError::Store(e) => e.into(),
            ConversationError::Overloaded => ApiError::unavailable("this conversation is overloaded, retry shortly", 1),
            ConversationError::Unavailable | ConversationError::Passivated => {
                ApiError::unavailable("conversation is unavailable, retry shortly", 1)
            }
            ConversationError::Panicked(panic) => {
                ApiError::internal(&format!("a conversation turn panicked ({panic}); it was restarted from the store"))
            }
        }
    }
}

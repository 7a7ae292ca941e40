//! Request ids and panic containment, around every request.
//!
//! Every response carries `X-Request-Id`: the client's own when it sent a sane one, else a
//! fresh UUID. Every 5xx body carries it as `request_id` and every log line about the failure
//! names it, so a user reporting an error gives the id that finds its cause. A panic anywhere
//! inside (a handler, an extractor, an inner middleware) answers that request a JSON 500
//! instead of dropping the connection; the worker thread and other requests carry on.

use std::panic::AssertUnwindSafe;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError};
use baton_actors::conversation::panic_message;
use futures_util::FutureExt as _;
use serde_json::{json, Map, Value};

/// The header carrying the request id, both ways.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
/// Longest request id taken from a client.
const MAX_CLIENT_ID_LEN: usize = 128;

tokio::task_local! {
    /// The id of the request being handled on this task.
    static REQUEST_ID: String;
}

/// The id of the request being handled, when called while handling one.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// The middleware: gives the request its id, contains panics, and puts the id on the response.
/// Register it as the outermost `wrap`, so it covers every other middleware.
pub async fn request_id_and_panics(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let id = client_request_id(req.headers()).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    // For the log of a panic; the request itself must not be cloned before routing (actix
    // needs it unshared), which is why a panic answers through an error, not a response.
    let (method, path) = (req.method().clone(), req.path().to_string());
    // `next.call` runs inside the guarded future, so a panic in its synchronous part is caught too.
    let handled = AssertUnwindSafe(async move { next.call(req).await }).catch_unwind();
    match REQUEST_ID.scope(id.clone(), handled).await {
        Ok(Ok(response)) => {
            let (request, response) = response.map_into_boxed_body().into_parts();
            Ok(ServiceResponse::new(request, with_request_id(response, &id)))
        }
        Ok(Err(error)) => Err(Failed { request_id: id, inner: Some(error) }.into()),
        Err(panic) => {
            tracing::error!(
                request_id = %id,
                %method,
                %path,
                panic = %panic_message(panic.as_ref()),
                "a request handler panicked"
            );
            Err(Failed { request_id: id, inner: None }.into())
        }
    }
}

/// A request that ended without a response: a panic (`inner` is `None`), or an error an inner
/// middleware returned. Answered like any other, with the request id.
#[derive(Debug)]
struct Failed {
    request_id: String,
    inner: Option<actix_web::Error>,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Some(error) => error.fmt(f),
            None => f.write_str("the request handler panicked"),
        }
    }
}

impl ResponseError for Failed {
    fn status_code(&self) -> StatusCode {
        self.inner.as_ref().map_or(StatusCode::INTERNAL_SERVER_ERROR, |e| e.as_response_error().status_code())
    }

    fn error_response(&self) -> HttpResponse {
        let response = match &self.inner {
            Some(error) => error.error_response(),
            None => HttpResponse::InternalServerError().json(json!({ "error": "internal error", "code": "internal" })),
        };
        with_request_id(response, &self.request_id)
    }
}

/// `response` with the `X-Request-Id` header and, for a 5xx, `request_id` in its JSON body
/// (a body that is not a JSON object becomes API.md's error shape for its status).
fn with_request_id(response: HttpResponse, id: &str) -> HttpResponse {
    let mut response = if response.status().is_server_error() {
        let (head, body) = response.into_parts();
        let mut fields = match body.try_into_bytes().map(|bytes| serde_json::from_slice(&bytes)) {
            Ok(Ok(Value::Object(fields))) => fields,
            _ => error_shape(head.status()),
        };
        fields.insert("request_id".into(), json!(id));
        let mut response = head.set_body(BoxBody::new(Value::Object(fields).to_string()));
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    } else {
        response
    };
    if let Ok(value) = HeaderValue::from_str(id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// The client's `X-Request-Id` when it is one we can repeat safely in headers, bodies and
/// logs: 1 to 128 characters of `A-Z a-z 0-9 - _ . :`.
fn client_request_id(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let sane = !raw.is_empty()
        && raw.len() <= MAX_CLIENT_ID_LEN
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    sane.then(|| raw.to_string())
}

/// `{"error", "code"}` for a server error that came without a JSON body.
fn error_shape(status: StatusCode) -> Map<String, Value> {
    let (error, code) = match status {
        StatusCode::SERVICE_UNAVAILABLE => ("service unavailable, retry shortly", "unavailable"),
        _ => ("internal error", "internal"),
    };
    let mut fields = Map::new();
    fields.insert("error".into(), json!(error));
    fields.insert("code".into(), json!(code));
    fields
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderValue;

    use super::*;

    fn headers_with(id: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID_HEADER, HeaderValue::from_str(id).expect("valid header value"));
        headers
    }

    #[test]
    fn a_client_request_id_is_reused_only_when_it_is_short_and_plain() {
        assert_eq!(client_request_id(&headers_with("req-42_a.b:c")).as_deref(), Some("req-42_a.b:c"));
        assert_eq!(client_request_id(&headers_with(&"a".repeat(128))).map(|id| id.len()), Some(128));
        assert_eq!(client_request_id(&headers_with(&"a".repeat(129))), None, "too long");
        assert_eq!(client_request_id(&headers_with("")), None, "empty");
        assert_eq!(client_request_id(&headers_with("two words")), None, "spaces");
        assert_eq!(client_request_id(&headers_with("x\"}{")), None, "JSON or log injection");
        assert_eq!(client_request_id(&HeaderMap::new()), None, "absent");
    }
}

//! Request extractors that answer in baton's error shape: JSON bodies with a per-route size
//! limit, a content-type check and errors naming the field at fault.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Which body size limit of the configuration a route uses, set with `.app_data(BodyLimit::Handle)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLimit {
    /// `server.body_limit_bytes`.
    Default,
    /// `server.handle_body_limit_bytes` (ingestion carries captions and payloads).
    Handle,
}

/// A JSON body parsed into `T`.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let server = req.app_data::<actix_web::web::Data<crate::app::AppState>>().map(|s| &s.settings.server);
        let limit = match (req.app_data::<BodyLimit>(), server) {
            (Some(BodyLimit::Handle), Some(server)) => server.handle_body_limit_bytes,
            (_, Some(server)) => server.body_limit_bytes,
            (_, None) => 1 << 20,
        };
        let read_timeout = server.map_or(DEFAULT_BODY_READ_TIMEOUT, |server| server.body_read_timeout());
        let content_type = req.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("?").to_string());
        let declared_length = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            if let Some(content_type) = content_type {
                let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
                if essence != "application/json" && !essence.ends_with("+json") {
                    return Err(ApiError::unsupported_media_type(&content_type));
                }
            }
            if declared_length.is_some_and(|n| n > limit) {
                return Err(ApiError::too_large(limit));
            }
            let read = async {
                let mut body = web::BytesMut::new();
                while let Some(chunk) = payload.next().await {
                    let chunk =
                        chunk.map_err(|e| ApiError::malformed(format!("could not read the request body: {e}")))?;
                    if body.len() + chunk.len() > limit {
                        return Err(ApiError::too_large(limit));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(body)
            };
            // A client that stalls or trickles its body would otherwise hold the request open
            // for as long as it likes.
            let body = tokio::time::timeout(read_timeout, read).await.map_err(|_| body_timeout(read_timeout))??;
            parse_json(&body).map(Json)
        })
    }
}

/// The body read deadline when the application state is missing (unit tests).
const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(15);

/// 408: the body did not arrive within `deadline`; the connection is closed after it.
fn body_timeout(deadline: Duration) -> ApiError {
    ApiError {
        status: actix_web::http::StatusCode::REQUEST_TIMEOUT,
        code: "request_timeout",
        message: format!("the request body did not arrive within {} ms", deadline.as_millis()),
        field: None,
        retry_after: None,
    }
}

/// Parses `body` as `T`, naming the field at fault on error.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::malformed("request body is empty; expected a JSON object"));
    }
    // The plain parse is the fast path; only a body that fails is parsed again with its path
    // tracked, to name the field at fault.
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    let deserializer = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::malformed(format!("malformed JSON: {inner}"))
        } else {
            json_field_error(&path, &inner.to_string())
        }
    })
}

/// Turns a serde error at `path` into a 400 naming the field.
pub fn json_field_error(path: &str, message: &str) -> ApiError {
    // serde says "missing field `x`" at the parent's path; name the field itself.
    let message = strip_position(message);
    if let Some(missing) = message.strip_prefix("missing field `").and_then(|m| m.strip_suffix('`')) {
        let field = if path == "." || path.is_empty() { missing.to_string() } else { format!("{path}.{missing}") };
        return ApiError::bad_request(field.clone(), format!("{field} is required"));
    }
    let field = if path == "." || path.is_empty() { "body".to_string() } else { path.to_string() };
    ApiError::bad_request(field.clone(), format!("{field}: {message}"))
}

/// Drops serde_json's " at line 1 column 5" suffix.
fn strip_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(at) => &message[..at],
        None => message,
    }
}

/// Query-string values, parsed by name so errors can name the parameter.
#[derive(Debug)]
pub struct Query(pub Vec<(String, String)>);

impl Query {
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The first value of `name`, parsed; a parse failure is a 400 naming it.
    pub fn parse<T: std::str::FromStr>(&self, name: &str, expected: &str) -> Result<Option<T>, ApiError> {
        match self.get(name) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(name, format!("{name} must be {expected}, got {v:?}"))),
        }
    }
}

impl FromRequest for Query {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let pairs = url::form_urlencoded::parse(req.query_string().as_bytes()).into_owned().collect();
        std::future::ready(Ok(Query(pairs)))
    }
}

/// Applies a partial update as a JSON merge patch (RFC 7396): the fields of `patch` replace
/// those of `current`, nested objects merge field by field, `null` clears a nested field.
/// Unknown top-level fields are a 400 naming them; read-only fields may be sent back unchanged
/// (so a GET body can be PUT back) but not changed; `updated_at` is the server's own and is
/// ignored; type errors name the field
/// (`greeting_buttons[0].title`).
pub fn merge_patch<T>(
    current: &T,
    patch: serde_json::Map<String, serde_json::Value>,
    read_only: &[&str],
) -> Result<T, ApiError>
where
    T: serde::Serialize + DeserializeOwned,
{
    let mut merged = serde_json::to_value(current).map_err(|e| ApiError::internal(&e))?;
    let object = merged.as_object_mut().ok_or_else(|| ApiError::internal(&"patch target is not an object"))?;
    for (key, value) in patch {
        if key == "updated_at" {
            continue;
        }
        let Some(existing) = object.get_mut(&key) else {
            return Err(ApiError::bad_request(key.clone(), format!("unknown field {key:?}")));
        };
        if read_only.contains(&key.as_str()) {
            if *existing != value {
                return Err(ApiError::bad_request(key.clone(), format!("{key} cannot be changed")));
            }
            continue;
        }
        merge_value(existing, value);
    }
    serde_path_to_error::deserialize(merged).map_err(|error| {
        let path = error.path().to_string();
        json_field_error(&path, &error.into_inner().to_string())
    })
}

/// RFC 7396 merge of `patch` into `target`.
fn merge_value(target: &mut serde_json::Value, patch: serde_json::Value) {
    use serde_json::Value;
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(&key);
                } else {
                    merge_value(target.entry(key).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch,
    }
}

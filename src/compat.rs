//! Adapters that speak the documented APIs in `../shared/seeds/` verbatim, each a thin
//! translation onto the native handlers (one file per documented API):
//!
//! | seed  | file                | routes |
//! | ----- | ------------------- | ------ |
//! | `000` | `bot_control.rs`    | `POST /functions/v1/bot-control`, `GET /functions/v1/rest-api-proxy/conversations` |
//! | `001` | `chatbot_api.rs`    | `/api/chatbot/…` (settings, keywords, ai-contexts, flows, transfers, sessions) |
//! | `002` | none                | the native `/v1/chatbots/{chatbotId}/conversations…` routes already speak it |
//! | `003` | `callmissed.rs`     | `/api/v1/conversations…` |
//! | `004` | `typebot.rs`        | `PATCH /api/v2/instance/{instanceId}/typebot-integration/session/{sessionId}` |
//!
//! An adapter authenticates and parses with the native extractors, calls the native
//! function that does the work, and re-shapes the answer; native errors keep their status
//! and are answered in the surface's own error shape through `Reshaped`.

mod bot_control;
mod callmissed;
mod chatbot_api;
mod typebot;

use std::marker::PhantomData;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::Value;

use crate::error::ApiError;

/// Registers every compatible surface.
pub fn configure(cfg: &mut actix_web::web::ServiceConfig) {
    bot_control::configure(cfg);
    chatbot_api::configure(cfg);
    callmissed::configure(cfg);
    typebot::configure(cfg);
}

/// How a compatible surface spells an error body.
trait ErrorShape {
    /// The body answered for `error` (its status is kept).
    fn body(error: &ApiError) -> Value;
}

/// A native error answered in surface `S`'s error shape, with the native status and
/// `Retry-After`.
#[derive(Debug)]
struct Reshaped<S>(ApiError, PhantomData<S>);

impl<S> From<ApiError> for Reshaped<S> {
    fn from(error: ApiError) -> Self {
        Self(error, PhantomData)
    }
}

impl<S> std::fmt::Display for Reshaped<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<S: ErrorShape + std::fmt::Debug> ResponseError for Reshaped<S> {
    fn status_code(&self) -> StatusCode {
        self.0.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.0.status);
        if let Some(secs) = self.0.retry_after {
            response.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        response.json(S::body(&self.0))
    }
}

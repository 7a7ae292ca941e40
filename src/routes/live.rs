//! Live events over WebSocket: `GET /v1/ws?token=KEY` (and `/ws/conversations?token=` for
//! seed `003`). Each connection gets its tenant's events as JSON text frames
//! (`{"type", "data", "at"}`) and a heartbeat every `HEARTBEAT_EVERY`. A client that falls
//! too far behind is disconnected rather than buffered without bound.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::Message;
use futures_util::StreamExt as _;
use tokio::sync::broadcast::error::RecvError;

use crate::app::AppState;
use crate::auth::{Principal, Scope};
use crate::error::ApiError;
use crate::routes::resource;

/// How often a heartbeat goes out.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(15);
/// A client silent (no pong, no frame) this long is disconnected.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(45);

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/ws").route(web::get().to(connect)))
        .service(resource("/ws/conversations").route(web::get().to(connect)));
}

#[utoipa::path(
    get,
    path = "/v1/ws",
    operation_id = "live_events",
    tag = "live",
    summary = "Live events over WebSocket: JSON text frames {type, data, at}",
    params(
        ("token" = Option<String>, Query, description = "The API key, for clients that cannot set headers"),
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket upgrade", body = crate::openapi::ApiErrorBody),
    ),
    security(("api_key" = ["conversations:read"]), ("token" = ["conversations:read"])),
)]
async fn connect(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    principal: Principal,
) -> Result<HttpResponse, ApiError> {
    principal.require(Scope::ConversationsRead)?;
    let (response, mut session, mut incoming) =
        actix_ws::handle(&req, body).map_err(|e| ApiError::malformed(format!("not a WebSocket upgrade: {e}")))?;
    let mut events = state.registry.events().subscribe();
    let tenant = principal.tenant_id;
    actix_rt::spawn(async move {
        let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
        let mut last_heard = tokio::time::Instant::now();
        let reason = loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(event) if event.tenant_id == tenant => {
                        if session.text(event.json.clone()).await.is_err() {
                            break None;
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(missed)) => {
                        tracing::info!(missed, "dropping a WebSocket client that fell behind");
                        break Some(actix_ws::CloseReason {
                            code: actix_ws::CloseCode::Policy,
                            description: Some(format!("too slow: {missed} events missed")),
                        });
                    }
                    Err(RecvError::Closed) => break Some(actix_ws::CloseCode::Away.into()),
                },
                frame = incoming.next() => match frame {
                    Some(Ok(Message::Ping(bytes))) => {
                        last_heard = tokio::time::Instant::now();
                        if session.pong(&bytes).await.is_err() {
                            break None;
                        }
                    }
                    Some(Ok(Message::Close(reason))) => break reason,
                    Some(Ok(_)) => last_heard = tokio::time::Instant::now(),
                    Some(Err(_)) | None => break None,
                },
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > CLIENT_TIMEOUT {
                        break Some(actix_ws::CloseCode::Normal.into());
                    }
                    let beat = serde_json::json!({ "type": "heartbeat", "at": chrono::Utc::now() }).to_string();
                    if session.text(beat).await.is_err() || session.ping(b"").await.is_err() {
                        break None;
                    }
                }
            }
        };
        let _ = session.close(reason).await;
    });
    Ok(response)
}

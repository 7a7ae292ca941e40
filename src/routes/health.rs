//! Operations routes without authentication: liveness and readiness.

use actix_web::{web, HttpResponse};

use crate::app::AppState;
use crate::routes::resource;

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/healthz").route(web::get().to(healthz)))
        .service(resource("/readyz").route(web::get().to(readyz)));
}

/// 200 while the server serves.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// 200 when the store answers reads.
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.store.has_any_key() {
        Ok(_) => HttpResponse::Ok().json(serde_json::json!({ "status": "ready" })),
        Err(_) => HttpResponse::ServiceUnavailable().json(serde_json::json!({ "status": "unavailable" })),
    }
}

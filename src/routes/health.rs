//! Operations routes without authentication: liveness, readiness and metrics.

use actix_web::{web, HttpResponse};

use crate::app::AppState;
use crate::routes::resource;

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/healthz").route(web::get().to(healthz)))
        .service(resource("/readyz").route(web::get().to(readyz)))
        .service(resource("/metrics").route(web::get().to(metrics)));
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

/// Prometheus text exposition.
async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.metrics.render(&state))
}

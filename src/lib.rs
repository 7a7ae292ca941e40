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
pub mod routes;
pub mod telemetry;

pub use app::Application;
pub use config::Settings;

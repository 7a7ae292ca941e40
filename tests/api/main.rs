//! End-to-end tests: each starts a real server on a loopback port with its own data dir.

mod auth;
mod chatbots;
mod cli;
mod conversations;
mod crash;
mod handle;
mod helpers;

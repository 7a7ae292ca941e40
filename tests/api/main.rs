//! End-to-end tests: each starts a real server on a loopback port with its own data dir.

// Items shared between test modules are `pub` inside this one binary.
#![allow(unreachable_pub)]

mod auth;
mod chatbots;
mod cli;
mod conversations;
mod crash;
mod flows;
mod handle;
mod helpers;
mod sessions;
mod transfers;

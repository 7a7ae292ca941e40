//! End-to-end tests: each starts a real server on a loopback port with its own data dir.

// Items shared between test modules are `pub` inside this one binary.
#![allow(unreachable_pub)]

mod ai;
mod ai_contexts;
mod auth;
mod chatbots;
mod cli;
mod conversations;
mod crash;
mod faults;
mod flows;
mod fuzz;
mod handle;
mod helpers;
mod lifecycle;
mod limits;
mod live;
mod openapi;
mod seed_000;
mod seed_001;
mod seed_002;
mod seed_003;
mod seed_004;
mod sessions;
mod transfers;
mod webhooks;

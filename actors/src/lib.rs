//! baton's core: conversation actors, the registry that places them, the pure engine that
//! decides what the bot says, and the durable sled store underneath.

pub mod ai;
pub mod botconfig;
pub mod conversation;
pub mod engine;
pub mod events;
pub mod histogram;
pub mod model;
pub mod registry;
pub mod store;
pub mod webhook;

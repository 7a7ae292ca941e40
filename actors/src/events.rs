//! The event bus: tenant-scoped live events (`message.created`, `bot.paused`, …) broadcast to
//! WebSocket subscribers.
//!
//! Events are serialized once when published. The channel is bounded: a subscriber that falls
//! behind by more than its capacity is told it lagged and is dropped by its connection, so a
//! slow client never grows memory or slows the actors that publish.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::model::TenantId;

/// Events kept for subscribers that are momentarily behind.
pub const EVENT_BUFFER: usize = 4096;

/// One published event, already serialized.
#[derive(Debug)]
pub struct Event {
    pub tenant_id: TenantId,
    /// `message.created`, `conversation.updated`, `bot.paused`, …
    pub kind: &'static str,
    /// `{"type": kind, "data": …, "at": …}`.
    pub json: String,
}

/// The bus; cheap to clone.
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(EVENT_BUFFER)
    }
}

impl EventBus {
    /// A bus keeping `capacity` events for slow subscribers.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self { tx }
    }

    /// Publishes an event of `tenant`. `data` is only called when someone listens, so an event
    /// nobody subscribes to costs nothing to build.
    pub fn publish(&self, tenant: TenantId, kind: &'static str, data: impl FnOnce() -> Value, at: DateTime<Utc>) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let json = json!({ "type": kind, "data": data(), "at": at }).to_string();
        let _ = self.tx.send(Arc::new(Event { tenant_id: tenant, kind, json }));
    }

    /// A new subscription (every tenant's events; subscribers filter their own).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// Live subscriptions.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }
}

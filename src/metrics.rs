//! Operational metrics, served as Prometheus text at `GET /metrics`.
//!
//! Counters are plain atomics updated on the hot path; gauges (live actors, pending
//! deliveries) are read from their owners when scraped.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

pub use baton_actors::histogram::Histogram;

/// Writes a histogram in the exposition format.
fn render_histogram(out: &mut String, histogram: &Histogram, name: &str, help: &str) {
    let snapshot = histogram.snapshot();
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (le, cumulative) in &snapshot.cumulative {
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", snapshot.count);
    let _ = writeln!(out, "{name}_sum {}", snapshot.sum_seconds);
    let _ = writeln!(out, "{name}_count {}", snapshot.count);
}

/// How a `handle` request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleOutcome {
    /// The bot answered.
    Replied,
    /// The bot had nothing to say (disabled chatbot, empty greeting, async, …).
    Silent,
    /// The bot is paused on the conversation.
    Paused,
    /// A retried provider message id.
    Duplicate,
    /// Refused (bad input, auth, overload).
    Rejected,
}

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    handled: [AtomicU64; 5],
    pub handle_latency: Histogram,
}

impl Metrics {
    /// Counts one `handle` request and its latency.
    pub fn handled(&self, outcome: HandleOutcome, took: Duration) {
        self.handled[outcome as usize].fetch_add(1, Relaxed);
        self.handle_latency.observe(took);
    }

    /// The Prometheus text exposition of these counters plus the gauges in `state`.
    pub fn render(&self, state: &crate::app::AppState) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(out, "# HELP baton_messages_handled_total Messages posted to handle, by outcome.");
        let _ = writeln!(out, "# TYPE baton_messages_handled_total counter");
        for (outcome, name) in [
            (HandleOutcome::Replied, "replied"),
            (HandleOutcome::Silent, "silent"),
            (HandleOutcome::Paused, "paused"),
            (HandleOutcome::Duplicate, "duplicate"),
            (HandleOutcome::Rejected, "rejected"),
        ] {
            let _ = writeln!(
                out,
                "baton_messages_handled_total{{outcome=\"{name}\"}} {}",
                self.handled[outcome as usize].load(Relaxed)
            );
        }
        render_histogram(
            &mut out,
            &self.handle_latency,
            "baton_handle_latency_seconds",
            "Time to answer handle, durable write included.",
        );
        let registry = state.registry.stats();
        gauge(
            &mut out,
            "baton_live_actors",
            "Conversation actors in memory.",
            registry.live_actors.load(Relaxed) as f64,
        );
        counter(
            &mut out,
            "baton_passivations_total",
            "Idle conversation actors stopped.",
            registry.passivations.load(Relaxed),
        );
        counter(
            &mut out,
            "baton_mailbox_full_total",
            "Requests refused because a conversation's mailbox was full.",
            registry.mailbox_full.load(Relaxed),
        );
        let commits = state.store.commit_stats();
        let rounds = commits.rounds.load(Relaxed);
        counter(&mut out, "baton_store_commits_total", "Group-commit rounds (flush + fsync).", rounds);
        counter(
            &mut out,
            "baton_store_committed_writes_total",
            "Writes made durable by those rounds.",
            commits.tickets.load(Relaxed),
        );
        counter(
            &mut out,
            "baton_store_commit_failures_total",
            "Group-commit rounds that failed.",
            commits.failures.load(Relaxed),
        );
        let batch = if rounds == 0 { 0.0 } else { commits.tickets.load(Relaxed) as f64 / rounds as f64 };
        gauge(&mut out, "baton_store_commit_batch_size_mean", "Mean writes per group-commit round.", batch);
        let micros = commits.micros.load(Relaxed) as f64;
        counter(&mut out, "baton_store_commit_seconds_total", "Time spent in flush + fsync.", micros / 1e6);
        let latency = if rounds == 0 { 0.0 } else { micros / rounds as f64 / 1e6 };
        gauge(&mut out, "baton_store_commit_latency_seconds_mean", "Mean time of one group-commit round.", latency);
        let webhooks = &state.webhook_stats;
        let _ = writeln!(out, "# HELP baton_webhook_deliveries_total Webhook delivery outcomes.\n# TYPE baton_webhook_deliveries_total counter");
        for (name, value) in [
            ("delivered", &webhooks.delivered),
            ("retried", &webhooks.retried),
            ("failed", &webhooks.failed),
            ("cancelled", &webhooks.cancelled),
        ] {
            let _ = writeln!(out, "baton_webhook_deliveries_total{{status=\"{name}\"}} {}", value.load(Relaxed));
        }
        gauge(
            &mut out,
            "baton_webhook_deliveries_pending",
            "Deliveries waiting in the outbox.",
            state.store.pending_deliveries() as f64,
        );
        gauge(
            &mut out,
            "baton_websocket_subscribers",
            "Live event subscribers.",
            state.registry.events().subscribers() as f64,
        );
        render_histogram(&mut out, &registry.ai_latency, "baton_ai_call_seconds", "Time of AI model calls.");
        counter(
            &mut out,
            "baton_ai_failures_total",
            "AI calls that failed (answered with the fallback).",
            registry.ai_failures.load(Relaxed),
        );
        out
    }
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
}

fn counter(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_with_inf_equal_to_count() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        render_histogram(&mut out, &h, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.0005\"} 1"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.005\"} 2"), "{out}");
        assert!(out.contains("x_bucket{le=\"10\"} 2"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3"), "{out}");
        assert!(out.contains("x_count 3"), "{out}");
    }
}

//! HTTP load generator (placeholder).

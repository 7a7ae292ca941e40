//! Logging: `tracing` to stderr, filtered by `RUST_LOG` or the configured level (`log.level`,
//! `BATON_LOG__LEVEL`).
//!
//! sled's own log lines are muted unless the filter names sled: they repeat what baton reports
//! itself (a corrupted data directory would otherwise print sled's warnings before baton's one
//! clear line), and at trace level they would dump store internals.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// Crates muted unless the filter names them.
const MUTED: &[&str] = &["sled"];

/// Installs the global subscriber once; later calls do nothing (tests call it per app).
pub fn init(level: &str) {
    let directives =
        std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| level.to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(&directives))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

/// The filter for `directives` with the [`MUTED`] crates off unless named; an invalid filter
/// falls back to `info` rather than logging nothing.
fn filter(directives: &str) -> EnvFilter {
    let mut filter = EnvFilter::try_new(directives).unwrap_or_else(|_| EnvFilter::new("info"));
    for name in MUTED {
        if !directives.contains(name) {
            if let Ok(directive) = format!("{name}=off").parse() {
                filter = filter.add_directive(directive);
            }
        }
    }
    filter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sled_is_muted_unless_the_filter_names_it() {
        assert!(filter("trace").to_string().contains("sled=off"));
        assert!(!filter("info,sled=debug").to_string().contains("sled=off"));
    }
}

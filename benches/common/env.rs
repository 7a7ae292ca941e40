//! The benches' settings from environment variables: a variable that is unset or blank
//! takes its default; anything else must be a number.

use anyhow::Context as _;

/// The variable `name`, unless unset or blank.
pub(crate) fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The number in `name`, or `default` when it is unset.
pub(crate) fn number(name: &str, default: f64) -> anyhow::Result<f64> {
    var(name).map_or(Ok(default), |v| v.trim().parse().with_context(|| format!("{name}={v:?} is not a number")))
}

/// The number in `name`, or `None` when it is unset (the setting then keeps baton's value).
pub(crate) fn optional(name: &str) -> anyhow::Result<Option<f64>> {
    var(name).map(|_| number(name, 0.0)).transpose()
}

//! The error collector validation writes into, and the bounded readers of
//! values every section shares: typed sub-tables, durations, counts and
//! socket addresses.
//!
//! Every reader records a problem at its TOML path and carries on with a
//! default, so one pass reports every error. Every duration is capped at
//! [`MAX_DURATION`] and every count at an explicit range, so no value that
//! passes can overflow `Instant + Duration` or an allocation later. It
//! never decides what a key means: the section validators do.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::ConfigError;

/// The longest duration any key accepts: 30 days. Far above any sensible
/// timeout, far below what overflows `Instant::now() + d` (or Pingora's and
/// tokio's timers) on any platform.
pub(super) const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Whether a duration may be zero.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Span {
    /// `"0s"` is meaningful (e.g. "at once", "off").
    ZeroOk,
    /// Zero would mean "never" or "always fail": rejected.
    Positive,
}

/// Collects errors as validation goes, so one pass reports them all.
#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<ConfigError>);

impl Problems {
    /// Record one problem at `path`.
    pub(super) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Whether any problem was recorded at `path` or below it.
    pub(super) fn any_under(&self, path: &str) -> bool {
        self.0.iter().any(|e| e.path.starts_with(path))
    }

    /// Deserialize `value` (found at `path`) into `T`, recording a failure
    /// at the precise path inside it.
    pub(super) fn typed<T: DeserializeOwned>(
        &mut self,
        path: &str,
        value: toml::Value,
    ) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(t) => Some(t),
            Err(e) => {
                let inner = e.path().to_string();
                // toml appends context lines ("in `servers`"); the path says it better.
                let message = e.inner().to_string();
                let message = message.lines().next().unwrap_or_default();
                let message = message.replacen("unknown field", "unknown key", 1);
                let at = match inner.as_str() {
                    "." => path.to_owned(),
                    p if p.starts_with('[') => format!("{path}{p}"),
                    p => format!("{path}.{p}"),
                };
                self.add(at, message);
                None
            }
        }
    }

    /// A duration such as `"2s"` at `path`, at most [`MAX_DURATION`] and,
    /// for [`Span::Positive`], above zero. `None` when absent or invalid
    /// (the error is recorded).
    pub(super) fn duration_opt(
        &mut self,
        path: &str,
        text: Option<&str>,
        span: Span,
    ) -> Option<Duration> {
        let text = text?;
        let d = match humantime::parse_duration(text) {
            Ok(d) => d,
            Err(e) => {
                self.add(
                    path,
                    format!(
                        "invalid duration {text:?}: {e} (write e.g. \"500ms\", \"2s\", \"1h\")"
                    ),
                );
                return None;
            }
        };
        if d > MAX_DURATION {
            self.add(
                path,
                format!("{text:?} is longer than the maximum of 30 days (\"720h\")"),
            );
            return None;
        }
        if span == Span::Positive && d.is_zero() {
            self.add(path, "must be greater than zero");
            return None;
        }
        Some(d)
    }

    /// [`Problems::duration_opt`] with a default for an absent or invalid value.
    pub(super) fn duration(
        &mut self,
        path: &str,
        text: Option<&str>,
        span: Span,
        default: Duration,
    ) -> Duration {
        self.duration_opt(path, text, span).unwrap_or(default)
    }

    /// An integer at `path` within `range`; `None` when absent or out of
    /// range (the error is recorded, followed by `why` when not empty).
    pub(super) fn count_opt_why<T: TryFrom<i64>>(
        &mut self,
        path: &str,
        value: Option<i64>,
        range: RangeInclusive<i64>,
        why: &str,
    ) -> Option<T> {
        let v = value?;
        if range.contains(&v) {
            return T::try_from(v).ok();
        }
        let (lo, hi) = (range.start(), range.end());
        let mut message = format!("{v} is out of range: must be between {lo} and {hi}");
        if !why.is_empty() {
            message.push_str(" (");
            message.push_str(why);
            message.push(')');
        }
        self.add(path, message);
        None
    }

    /// [`Problems::count_opt_why`] without an explanation.
    pub(super) fn count_opt<T: TryFrom<i64>>(
        &mut self,
        path: &str,
        value: Option<i64>,
        range: RangeInclusive<i64>,
    ) -> Option<T> {
        self.count_opt_why(path, value, range, "")
    }

    /// [`Problems::count_opt`] with a default for an absent or invalid value.
    pub(super) fn count<T: TryFrom<i64>>(
        &mut self,
        path: &str,
        value: Option<i64>,
        range: RangeInclusive<i64>,
        default: T,
    ) -> T {
        self.count_opt(path, value, range).unwrap_or(default)
    }

    /// A literal `IP:PORT` at `path`.
    pub(super) fn addr(&mut self, path: &str, text: &str) -> Option<SocketAddr> {
        match text.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.add(path, format!("invalid address {text:?}: expected a literal IP:PORT such as \"127.0.0.1:9001\" or \"[::1]:9001\""));
                None
            }
        }
    }
}

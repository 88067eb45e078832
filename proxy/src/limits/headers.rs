//! The response fields that tell a client its rate limit:
//! `RateLimit-Policy` and `RateLimit` of draft-ietf-httpapi-ratelimit-headers
//! revision **-10** (September 2025; structured fields, RFC 9651), plus
//! `Retry-After` (RFC 9110 §10.2.3) on a refusal.
//!
//! Owns the mapping of a token bucket onto the draft's quota model and the
//! rendering of the field values. Pure: values in, header values out.
//!
//! Mapping. A bucket of `burst` tokens refilled at `per_second` admits
//! `burst` requests every `burst / per_second` seconds, all at once or
//! spread, so the policy is `q = burst`, `w = ceil(burst / per_second)`
//! (rounded up, so it never promises more than the bucket gives):
//! `RateLimit-Policy: "requests";q=400;w=2`. `RateLimit` carries `r`, the
//! requests the client may send at once, and `t`, the draft's "seconds until
//! additional quota is made available": the time to the next token, rounded
//! up. On a 429, `r=0` and `t` equals `Retry-After`, which is the time until
//! the next request would pass, in whole seconds and at least 1 (the draft
//! says `Retry-After` should not point earlier than `t`).
//!
//! When to send them ([`RateLimitFields::advertise`]): on every refusal, and
//! on an allowed response only once the client has used nine tenths of its
//! burst — the draft's advice for implementers who mind the cost, and the
//! point where a client can still slow down before it is refused. A client
//! far from its limit pays no bytes.

use std::time::Duration;

use http::header::{HeaderName, HeaderValue, RETRY_AFTER};

use super::rate::Decision;
use crate::config::RateLimit;

/// `RateLimit-Policy`.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// How one limiter presents itself: its policy name and its constant
/// `RateLimit-Policy` value, built once.
#[derive(Debug, Clone)]
pub struct RateLimitFields {
    /// The policy name as a structured-field string, quotes included.
    name: String,
    policy: HeaderValue,
    burst: u32,
}

/// The fields of one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFields {
    /// `RateLimit-Policy`.
    pub policy: HeaderValue,
    /// `RateLimit`.
    pub ratelimit: HeaderValue,
    /// `Retry-After`, on a refusal only.
    pub retry_after: Option<HeaderValue>,
}

impl RenderedFields {
    /// The fields as `(name, value)` pairs, to add to a response head.
    pub fn iter(&self) -> impl Iterator<Item = (HeaderName, &HeaderValue)> {
        [
            Some((RATELIMIT_POLICY, &self.policy)),
            Some((RATELIMIT, &self.ratelimit)),
            self.retry_after.as_ref().map(|v| (RETRY_AFTER, v)),
        ]
        .into_iter()
        .flatten()
    }
}

impl RateLimitFields {
    /// Fields for a limiter enforcing `limit` under the policy name `name`
    /// (e.g. `requests`, `websocket-upgrades`). Characters a structured-field
    /// string cannot hold are dropped from the name.
    pub fn new(name: &str, limit: RateLimit) -> Self {
        let mut quoted = String::with_capacity(name.len() + 2);
        quoted.push('"');
        for c in name.chars().filter(|c| (' '..='~').contains(c)) {
            if c == '"' || c == '\\' {
                quoted.push('\\');
            }
            quoted.push(c);
        }
        quoted.push('"');
        let window = limit.burst.div_ceil(limit.per_second.max(1)).max(1);
        let policy = header_value(format!("{quoted};q={};w={window}", limit.burst));
        Self {
            name: quoted,
            policy,
            burst: limit.burst,
        }
    }

    /// The constant `RateLimit-Policy` value.
    pub fn policy(&self) -> &HeaderValue {
        &self.policy
    }

    /// The fields for `decision`.
    pub fn render(&self, decision: &Decision) -> RenderedFields {
        match *decision {
            Decision::Allowed { remaining, reset } => RenderedFields {
                policy: self.policy.clone(),
                ratelimit: header_value(format!(
                    "{};r={remaining};t={}",
                    self.name,
                    whole_seconds(reset, 0)
                )),
                retry_after: None,
            },
            Decision::Limited { retry_after } => {
                let secs = whole_seconds(retry_after, 1);
                RenderedFields {
                    policy: self.policy.clone(),
                    ratelimit: header_value(format!("{};r=0;t={secs}", self.name)),
                    retry_after: Some(HeaderValue::from(secs)),
                }
            }
        }
    }

    /// The fields to send with `decision`, or `None` for an allowed request
    /// with more than a tenth of its burst left (see the module doc).
    pub fn advertise(&self, decision: &Decision) -> Option<RenderedFields> {
        let low = u64::from(decision.remaining()) * 10 < u64::from(self.burst);
        (!decision.is_allowed() || low).then(|| self.render(decision))
    }
}

/// `d` in whole seconds, rounded up, at least `min`.
fn whole_seconds(d: Duration, min: u64) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(min)
}

/// A header value from text built here (printable ASCII only).
fn header_value(text: String) -> HeaderValue {
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> RateLimitFields {
        RateLimitFields::new(
            "requests",
            RateLimit {
                per_second: 200,
                burst: 400,
            },
        )
    }

    #[test]
    fn policy_is_the_bucket_as_a_quota_per_window() {
        assert_eq!(fields().policy(), "\"requests\";q=400;w=2");
        let odd = RateLimitFields::new(
            "websocket-upgrades",
            RateLimit {
                per_second: 2,
                burst: 5,
            },
        );
        assert_eq!(odd.policy(), "\"websocket-upgrades\";q=5;w=3");
    }

    #[test]
    fn a_refusal_carries_retry_after_in_whole_seconds() {
        let f = fields().render(&Decision::Limited {
            retry_after: Duration::from_millis(1200),
        });
        assert_eq!(f.ratelimit, "\"requests\";r=0;t=2");
        assert_eq!(f.retry_after, Some(HeaderValue::from_static("2")));
        let short = fields().render(&Decision::Limited {
            retry_after: Duration::from_millis(5),
        });
        assert_eq!(short.retry_after, Some(HeaderValue::from_static("1")));
        assert_eq!(short.ratelimit, "\"requests\";r=0;t=1");
        let names: Vec<HeaderName> = short.iter().map(|(n, _)| n).collect();
        assert_eq!(names, [RATELIMIT_POLICY, RATELIMIT, RETRY_AFTER]);
    }

    #[test]
    fn allowed_responses_advertise_only_when_quota_runs_low() {
        let f = fields();
        let plenty = Decision::Allowed {
            remaining: 300,
            reset: Duration::from_millis(5),
        };
        assert_eq!(f.advertise(&plenty), None);
        let low = Decision::Allowed {
            remaining: 39,
            reset: Duration::from_millis(5),
        };
        let rendered = f.advertise(&low).expect("low quota is advertised");
        assert_eq!(rendered.ratelimit, "\"requests\";r=39;t=1");
        assert_eq!(rendered.retry_after, None);
        assert!(f
            .advertise(&Decision::Limited {
                retry_after: Duration::from_secs(3)
            })
            .is_some());
    }

    #[test]
    fn names_are_made_valid_strings() {
        let f = RateLimitFields::new(
            "a\"b\\c\nd",
            RateLimit {
                per_second: 1,
                burst: 1,
            },
        );
        assert_eq!(f.policy(), "\"a\\\"b\\\\cd\";q=1;w=1");
    }
}

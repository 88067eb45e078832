//! Idempotent publishing: the key under which a publish is remembered, so
//! that the same publish sent again (an ack lost with its connection, a
//! timeout, a client retry) is stored once and answered with the position
//! it got the first time.
//!
//! A key is a publisher's namespace plus the publisher's own request id.
//! A WebSocket session's namespace is its sid (an `id` is remembered per
//! session and room); other publishers (an HTTP API, say) pick their own
//! namespace, so their ids never meet a session's. The broker keeps a key
//! for [`REMEMBER`] inside the same atomic step that stores the message.
//! Pure: this module only names keys.

use std::time::Duration;

/// How long a publish is remembered under its key: a retry within this
/// window is answered with the original position and stores nothing.
pub const REMEMBER: Duration = Duration::from_secs(300);

/// Who published, and their request id: together, one publish.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The key of request `id` (verbatim, as the publisher sent it) in
    /// `namespace`. Namespaces must not contain `|`, so that two
    /// (namespace, id) pairs never render the same.
    pub fn new(namespace: &str, id: &str) -> IdempotencyKey {
        debug_assert!(!namespace.contains('|'));
        IdempotencyKey(format!("{namespace}|{id}"))
    }

    /// The key of a client frame's `id` (its raw JSON text) in session `sid`.
    pub fn for_session(sid: &str, id: &str) -> IdempotencyKey {
        IdempotencyKey::new(&format!("session:{sid}"), id)
    }

    /// The key as text (part of a Redis key name).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_different_sessions_or_ids_differ() {
        let a = IdempotencyKey::for_session("s1", "\"7\"");
        assert_eq!(a, IdempotencyKey::for_session("s1", "\"7\""));
        assert_ne!(a, IdempotencyKey::for_session("s2", "\"7\""));
        assert_ne!(
            a,
            IdempotencyKey::for_session("s1", "7"),
            "string and number ids differ"
        );
        assert_ne!(
            IdempotencyKey::new("api", "x"),
            IdempotencyKey::for_session("api", "x"),
            "namespaces never collide"
        );
    }

    #[test]
    fn remembered_for_at_least_five_minutes() {
        assert!(REMEMBER >= Duration::from_secs(300));
    }
}

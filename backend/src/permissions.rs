//! Which rooms a user may join and publish into: the token's `rooms`
//! claim, `{"join": [patterns], "publish": [patterns]}`, where a pattern is
//! a room name (`lobby`) or a prefix ending in `*` (`team/42/*`; `*` alone
//! is every ordinary room). Without the claim a token grants no ordinary
//! room: only the user's own inbox and the broadcast room, which every
//! connection has. Dev mode (no `JWT_SECRET`) grants everything.
//!
//! Inboxes (`@user`) and the broadcast room (`*`) are never granted by
//! patterns: an inbox belongs to its user alone, `*` to everyone (written
//! by `broadcast`, which needs the `broadcast` claim). Pure: no I/O.

use serde::Deserialize;

use crate::protocol::{self, RoomKind};

/// One grant: an exact room name, or a prefix (the pattern's trailing `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// Exactly this room.
    Exact(String),
    /// Every ordinary room whose name starts with this (empty: every room).
    Prefix(String),
}

impl Pattern {
    /// Read a pattern: a room name with an optional trailing `*`; a `*`
    /// anywhere else, an inbox (`@…`) or an empty pattern is refused.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let bad = || format!("room pattern `{text}`: a room name with an optional trailing `*`");
        let (name, prefix) = match text.strip_suffix('*') {
            Some(stem) => (stem, true),
            None => (text, false),
        };
        if name.contains('*') || name.starts_with('@') || (!prefix && name.is_empty()) {
            return Err(bad());
        }
        // The stem of a prefix may be partial (`team-`): check its characters only.
        let probe = if name.is_empty() { "x" } else { name };
        match protocol::room_kind(probe) {
            Ok(RoomKind::Plain) => {}
            _ => return Err(bad()),
        }
        Ok(if prefix {
            Pattern::Prefix(name.to_owned())
        } else {
            Pattern::Exact(name.to_owned())
        })
    }

    /// Whether this pattern grants the ordinary room `room`.
    pub fn matches(&self, room: &str) -> bool {
        match self {
            Pattern::Exact(name) => name == room,
            Pattern::Prefix(stem) => room.starts_with(stem.as_str()),
        }
    }
}

/// The token's `rooms` claim, as sent.
#[derive(Debug, Default, Deserialize)]
pub struct RoomsClaim {
    /// Patterns of rooms the user may join (and ask the presence of).
    #[serde(default)]
    pub join: Vec<String>,
    /// Patterns of rooms the user may publish into.
    #[serde(default)]
    pub publish: Vec<String>,
}

/// What one connection may do with ordinary rooms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    all: bool,
    join: Vec<Pattern>,
    publish: Vec<Pattern>,
}

impl Permissions {
    /// Everything (dev mode).
    pub fn all() -> Permissions {
        Permissions {
            all: true,
            join: Vec::new(),
            publish: Vec::new(),
        }
    }

    /// No ordinary room at all (a token without `rooms`).
    pub fn none() -> Permissions {
        Permissions {
            all: false,
            join: Vec::new(),
            publish: Vec::new(),
        }
    }

    /// The grants of a `rooms` claim; a malformed pattern refuses the token.
    pub fn from_claim(claim: &RoomsClaim) -> Result<Permissions, String> {
        let parse = |list: &[String]| -> Result<Vec<Pattern>, String> {
            list.iter().map(|p| Pattern::parse(p)).collect()
        };
        Ok(Permissions {
            all: false,
            join: parse(&claim.join)?,
            publish: parse(&claim.publish)?,
        })
    }

    /// May the user join (and see the presence of) ordinary room `room`?
    pub fn may_join(&self, room: &str) -> bool {
        self.all || self.join.iter().any(|p| p.matches(room))
    }

    /// May the user publish into ordinary room `room`?
    pub fn may_publish(&self, room: &str) -> bool {
        self.all || self.publish.iter().any(|p| p.matches(room))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perms(join: &[&str], publish: &[&str]) -> Permissions {
        let claim = RoomsClaim {
            join: join.iter().map(|s| s.to_string()).collect(),
            publish: publish.iter().map(|s| s.to_string()).collect(),
        };
        Permissions::from_claim(&claim).unwrap()
    }

    #[test]
    fn exact_names_and_prefixes() {
        let p = perms(&["lobby", "team/42/*"], &["team/42/chat"]);
        assert!(p.may_join("lobby"));
        assert!(!p.may_join("lobby2"), "an exact name is not a prefix");
        assert!(p.may_join("team/42/chat"));
        assert!(p.may_join("team/42/"));
        assert!(!p.may_join("team/4"));
        assert!(!p.may_join("team/43/chat"));
        assert!(p.may_publish("team/42/chat"));
        assert!(!p.may_publish("lobby"), "join does not grant publish");
    }

    #[test]
    fn a_lone_star_is_every_ordinary_room() {
        let p = perms(&["*"], &[]);
        assert!(p.may_join("anything/at:all"));
        assert!(!p.may_publish("anything"));
    }

    #[test]
    fn no_claim_grants_nothing_and_dev_mode_everything() {
        assert!(!Permissions::none().may_join("lobby"));
        assert!(!Permissions::none().may_publish("lobby"));
        assert!(Permissions::all().may_join("lobby"));
        assert!(Permissions::all().may_publish("lobby"));
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for bad in ["", "a*b", "**", "@alice", "@*", "a b", "x{y}*"] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Pattern::parse("*").unwrap(), Pattern::Prefix(String::new()));
        assert_eq!(
            Pattern::parse("team-*").unwrap(),
            Pattern::Prefix("team-".into())
        );
    }
}

//! Room history as clients see it: positions (`epoch`, `offset`), the
//! all-or-nothing recovery rule, and the per-connection ordering rule that
//! turns at-most-once pub/sub into in-order, exactly-once delivery.
//!
//! Every message of a room gets the next offset when it is stored; the
//! epoch names one unbroken numbering (a new one starts when the room's
//! history is lost). The broker stores and numbers; this module decides.
//! Pure: no I/O.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A place in a room's stream: the last message seen, or the top.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Position {
    /// Which numbering the offset belongs to.
    pub epoch: String,
    /// Offset of the last message (0 before the first).
    pub offset: u64,
}

/// One stored message: its offset and its rendered body
/// (see [`crate::protocol::message_body`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The message's offset in its epoch.
    pub offset: u64,
    /// `"from":…,"ts":…,"data":…`.
    pub body: Arc<str>,
}

/// What recovering from a client's position takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gap {
    /// The client has everything up to the top.
    None,
    /// Messages with offsets in `(after, upto]` must be replayed.
    Range {
        /// The client's last offset.
        after: u64,
        /// The room's top offset.
        upto: u64,
    },
    /// Continuity cannot be proven: another epoch, a position past the
    /// top, or a gap bigger than `max`.
    Lost,
}

/// The gap between a client's `since` and the room's `top`, if it may be
/// replayed at all (at most `max` messages).
pub fn gap(since: &Position, top: &Position, max: usize) -> Gap {
    if since.epoch != top.epoch || since.offset > top.offset {
        return Gap::Lost;
    }
    match top.offset - since.offset {
        0 => Gap::None,
        n if n <= max as u64 => Gap::Range {
            after: since.offset,
            upto: top.offset,
        },
        _ => Gap::Lost,
    }
}

/// Are `messages` exactly the offsets `after+1 ..= upto`, in order? A
/// replay is all or nothing: anything trimmed or expired means no replay.
pub fn is_complete(messages: &[StoredMessage], after: u64, upto: u64) -> bool {
    messages.len() as u64 == upto.saturating_sub(after)
        && messages
            .iter()
            .zip(after + 1..)
            .all(|(m, want)| m.offset == want)
}

/// What a connection does with a live message, given the last position it
/// delivered for that room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The next one: send it.
    Deliver,
    /// Already delivered (replayed, or a duplicate): drop it.
    Skip,
    /// Offsets `(after, offset)` were missed: fetch them first, then send it.
    Fill {
        /// The last offset delivered.
        after: u64,
    },
    /// Another epoch: the room's history was reset; continuity is broken.
    Restart,
}

/// The ordering rule for one live message at `(epoch, offset)`.
pub fn verdict(delivered: &Position, epoch: &str, offset: u64) -> Verdict {
    if epoch != delivered.epoch {
        Verdict::Restart
    } else if offset <= delivered.offset {
        Verdict::Skip
    } else if offset == delivered.offset + 1 {
        Verdict::Deliver
    } else {
        Verdict::Fill {
            after: delivered.offset,
        }
    }
}

/// A fresh random epoch name.
pub fn new_epoch() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..8)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(epoch: &str, offset: u64) -> Position {
        Position {
            epoch: epoch.into(),
            offset,
        }
    }

    fn msgs(offsets: &[u64]) -> Vec<StoredMessage> {
        offsets
            .iter()
            .map(|&offset| StoredMessage {
                offset,
                body: Arc::from(""),
            })
            .collect()
    }

    #[test]
    fn gaps() {
        assert_eq!(gap(&pos("a", 5), &pos("a", 5), 10), Gap::None);
        assert_eq!(
            gap(&pos("a", 5), &pos("a", 9), 10),
            Gap::Range { after: 5, upto: 9 }
        );
        assert_eq!(gap(&pos("a", 5), &pos("b", 9), 10), Gap::Lost);
        assert_eq!(gap(&pos("a", 10), &pos("a", 9), 10), Gap::Lost);
        assert_eq!(gap(&pos("a", 0), &pos("a", 11), 10), Gap::Lost);
        assert_eq!(
            gap(&pos("a", 1), &pos("a", 11), 10),
            Gap::Range { after: 1, upto: 11 }
        );
    }

    #[test]
    fn replays_are_all_or_nothing() {
        assert!(is_complete(&msgs(&[6, 7, 8]), 5, 8));
        assert!(is_complete(&msgs(&[]), 5, 5));
        assert!(!is_complete(&msgs(&[7, 8]), 5, 8), "trimmed head");
        assert!(!is_complete(&msgs(&[6, 8, 9]), 5, 8), "hole");
        assert!(!is_complete(&msgs(&[6, 7]), 5, 8), "short tail");
    }

    #[test]
    fn live_ordering() {
        let at = pos("a", 5);
        assert_eq!(verdict(&at, "a", 6), Verdict::Deliver);
        assert_eq!(verdict(&at, "a", 5), Verdict::Skip);
        assert_eq!(verdict(&at, "a", 2), Verdict::Skip);
        assert_eq!(verdict(&at, "a", 9), Verdict::Fill { after: 5 });
        assert_eq!(verdict(&at, "b", 1), Verdict::Restart);
    }

    #[test]
    fn epochs_differ() {
        assert_ne!(new_epoch(), new_epoch());
        assert_eq!(new_epoch().len(), 8);
    }
}

//! The chaos run's judge: from what one client saw of one room and what
//! publishers were acked, count messages lost, duplicated, out of order,
//! and the resets the client was told about. Pure.
//!
//! A client owes nothing for the stretch a reset covers: `joined …
//! recovered:false` says continuity broke there. Between resets (and from
//! its first join to the end) it must hold every offset, each once, in
//! order, with the content the publisher was acked for.

use std::collections::{HashMap, HashSet};

/// A position in a room.
pub type Pos = (String, u64);

/// What a client saw of one room, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Delivery starts after this position (the answer to a first join).
    Start(Pos),
    /// Continuity broke; delivery goes on after this position
    /// (`recovered:false` on a resume, or an unprompted reset).
    Reset(Pos),
    /// A message: its position and its publisher's sequence number.
    Message(Pos, u64),
}

/// The counts for one client and room (or summed over many).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tally {
    /// Messages received.
    pub delivered: u64,
    /// Stored messages the client should hold and does not, or holds with
    /// another content than was acked at that position.
    pub lost: u64,
    /// Messages received more than once.
    pub duplicated: u64,
    /// Messages received after a later offset of their epoch.
    pub out_of_order: u64,
    /// Resets the client was told about.
    pub resets: u64,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, o: Tally) {
        self.delivered += o.delivered;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.out_of_order += o.out_of_order;
        self.resets += o.resets;
    }
}

/// Judge one client's view of a room. `acked` maps each acked position
/// to its sequence number; `top` is the room's last position.
pub fn judge(seen: &[Seen], acked: &HashMap<Pos, u64>, top: &Pos) -> Tally {
    let mut t = Tally::default();
    let mut at: Option<Pos> = None;
    let mut got = HashSet::new();
    for s in seen {
        match s {
            Seen::Start(p) => at = Some(p.clone()),
            Seen::Reset(p) => {
                t.resets += 1;
                at = Some(p.clone());
            }
            Seen::Message((epoch, offset), n) => {
                t.delivered += 1;
                if !got.insert(*n) {
                    t.duplicated += 1;
                    continue;
                }
                if acked.get(&(epoch.clone(), *offset)).is_some_and(|a| a != n) {
                    t.lost += 1; // the acked message at this position is not this one
                }
                match &mut at {
                    Some((e, last)) if e == epoch => {
                        if *offset <= *last {
                            t.out_of_order += 1;
                        } else {
                            t.lost += *offset - *last - 1;
                            *last = *offset;
                        }
                    }
                    // Another epoch without being told: continuity broke silently.
                    _ => {
                        t.lost += 1;
                        at = Some((epoch.clone(), *offset));
                    }
                }
            }
        }
    }
    match at {
        Some((e, last)) if e == top.0 => t.lost += top.1.saturating_sub(last),
        // Never told of the last epoch: everything in it is missing.
        Some(_) => t.lost += top.1,
        None => {}
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(e: &str, o: u64) -> Pos {
        (e.to_owned(), o)
    }

    fn m(e: &str, o: u64, n: u64) -> Seen {
        Seen::Message(p(e, o), n)
    }

    fn acked(items: &[(&str, u64, u64)]) -> HashMap<Pos, u64> {
        items.iter().map(|(e, o, n)| (p(e, *o), *n)).collect()
    }

    #[test]
    fn everything_once_in_order_is_clean() {
        let a = acked(&[("a", 1, 1), ("a", 2, 2), ("a", 3, 3)]);
        let seen = [
            Seen::Start(p("a", 0)),
            m("a", 1, 1),
            m("a", 2, 2),
            m("a", 3, 3),
        ];
        let t = judge(&seen, &a, &p("a", 3));
        assert_eq!(
            t,
            Tally {
                delivered: 3,
                ..Tally::default()
            }
        );
    }

    #[test]
    fn holes_and_a_missing_tail_are_lost() {
        let a = acked(&[("a", 1, 1), ("a", 2, 2), ("a", 3, 3), ("a", 4, 4)]);
        let seen = [Seen::Start(p("a", 0)), m("a", 1, 1), m("a", 3, 3)];
        assert_eq!(judge(&seen, &a, &p("a", 4)).lost, 2);
    }

    #[test]
    fn repeats_and_reorders_are_counted() {
        let a = acked(&[("a", 1, 1), ("a", 2, 2)]);
        let seen = [
            Seen::Start(p("a", 0)),
            m("a", 2, 2),
            m("a", 1, 1),
            m("a", 2, 2),
        ];
        let t = judge(&seen, &a, &p("a", 2));
        assert_eq!((t.duplicated, t.out_of_order, t.lost), (1, 1, 1));
    }

    #[test]
    fn another_content_at_an_acked_position_is_a_loss() {
        let a = acked(&[("a", 1, 7)]);
        let seen = [Seen::Start(p("a", 0)), m("a", 1, 8)];
        assert_eq!(judge(&seen, &a, &p("a", 1)).lost, 1);
    }

    #[test]
    fn a_reset_excuses_what_it_covers() {
        let a = acked(&[("a", 1, 1), ("a", 2, 2), ("b", 1, 3)]);
        let seen = [
            Seen::Start(p("a", 0)),
            m("a", 1, 1),
            Seen::Reset(p("b", 0)),
            m("b", 1, 3),
        ];
        let t = judge(&seen, &a, &p("b", 1));
        assert_eq!((t.lost, t.resets), (0, 1));
    }

    #[test]
    fn a_silent_epoch_change_is_a_loss() {
        let a = acked(&[("a", 1, 1), ("b", 1, 2)]);
        let seen = [Seen::Start(p("a", 0)), m("a", 1, 1), m("b", 1, 2)];
        assert_eq!(judge(&seen, &a, &p("b", 1)).lost, 1);
        let never_told = [Seen::Start(p("a", 0)), m("a", 1, 1)];
        assert_eq!(judge(&never_told, &a, &p("b", 1)).lost, 1);
    }
}

//! The per-room ordering machine of one connection: what the writer does
//! with each live message, join, check and history fetch so that a client
//! sees every room in offset order, each message once, or is told plainly
//! (`joined … recovered:false`) that continuity broke.
//!
//! Pure: it never touches a socket or Redis. The writer feeds it events and
//! carries out what it answers — frames to send, and at most one history
//! fetch at a time, whose result it feeds back with [`Ordering::fetched`].
//!
//! Per room the state is one of: absent (live messages are dropped),
//! *joining* (a join is reading history; live messages are held), *active*
//! at a position (the last offset delivered), or *filling* (a fetch of
//! missed offsets is out; later live messages queue behind it).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::history::{self, Position, StoredMessage, Verdict};

/// A live message as the machine needs to see it: its room position.
pub trait Numbered {
    /// The epoch it was published in.
    fn epoch(&self) -> &str;
    /// Its offset in that epoch.
    fn offset(&self) -> u64;
}

/// What the writer must send, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Emit<D> {
    /// A `joined` frame: the answer to a join (`reset: false`), or an
    /// unprompted one telling that continuity broke (`reset: true`,
    /// always with `recovered: false`).
    Joined {
        /// The room.
        room: Arc<str>,
        /// The position delivery continues after.
        position: Position,
        /// Whether the client's `since` gap was replayed whole.
        recovered: bool,
        /// Unprompted: the room's history was reset or could not be filled.
        reset: bool,
    },
    /// Stored messages of `epoch`, in offset order.
    Stored {
        /// The room.
        room: Arc<str>,
        /// Their epoch.
        epoch: Arc<str>,
        /// The messages.
        messages: Vec<StoredMessage>,
    },
    /// A live message.
    Live(D),
    /// A `left` frame.
    Left(Arc<str>),
}

/// Missed offsets `(after, upto]` of `epoch` to read from history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    /// The room.
    pub room: Arc<str>,
    /// The epoch to read.
    pub epoch: Arc<str>,
    /// The last offset the client has (0 for a new epoch).
    pub after: u64,
    /// The last offset to read.
    pub upto: u64,
}

/// The machine's answer to one event.
#[derive(Debug, PartialEq, Eq)]
pub struct Step<D> {
    /// Frames to send now, in order.
    pub emits: Vec<Emit<D>>,
    /// A history read to do next; its result goes to [`Ordering::fetched`].
    pub fetch: Option<Fetch>,
}

impl<D> Default for Step<D> {
    fn default() -> Self {
        Step {
            emits: Vec::new(),
            fetch: None,
        }
    }
}

/// More live messages of a joining room were held than the limit allows:
/// the client reads too slowly and must be closed (1013).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

enum Room<D> {
    /// A join is reading history. `before` is where the room was if it
    /// was already active.
    Joining {
        held: Vec<D>,
        before: Option<Position>,
    },
    /// Delivering; the last position sent.
    Active(Position),
    /// A fetch of `(at, upto]` is out; `queued` wait behind it.
    Filling {
        fetch: Fetch,
        /// A new epoch: announce it before its messages.
        restart: bool,
        queued: VecDeque<D>,
    },
}

/// The ordering state of one connection's rooms.
pub struct Ordering<D> {
    rooms: HashMap<Arc<str>, Room<D>>,
    /// Where each room was when a check of its top began ([`Ordering::mark`]).
    marks: HashMap<Arc<str>, Position>,
    /// Most live messages held per joining room.
    hold_limit: usize,
}

impl<D: Numbered> Ordering<D> {
    /// No rooms yet; a joining room may hold `hold_limit` live messages.
    pub fn new(hold_limit: usize) -> Self {
        Ordering {
            rooms: HashMap::new(),
            marks: HashMap::new(),
            hold_limit,
        }
    }

    /// A live message of `room`.
    pub fn live(&mut self, room: &Arc<str>, d: D) -> Result<Step<D>, Overflow> {
        match self.rooms.get_mut(room) {
            None => Ok(Step::default()),
            Some(Room::Joining { held, .. }) => {
                if held.len() >= self.hold_limit {
                    return Err(Overflow);
                }
                held.push(d);
                Ok(Step::default())
            }
            Some(Room::Filling { queued, .. }) => {
                if queued.len() >= self.hold_limit {
                    return Err(Overflow);
                }
                queued.push_back(d);
                Ok(Step::default())
            }
            Some(Room::Active(_)) => {
                let mut step = Step::default();
                self.deliver(room, d, &mut step);
                Ok(step)
            }
        }
    }

    /// A join of `room` began: hold its live messages until it is done.
    pub fn joining(&mut self, room: &Arc<str>) {
        let before = match self.rooms.remove(room) {
            Some(Room::Active(p)) => Some(p),
            Some(Room::Joining { before, .. }) => before,
            Some(Room::Filling { fetch, .. }) => Some(Position {
                epoch: fetch.epoch.to_string(),
                offset: fetch.after,
            }),
            None => None,
        };
        self.rooms.insert(
            room.clone(),
            Room::Joining {
                held: Vec::new(),
                before,
            },
        );
    }

    /// The join is done: `joined`, its replay, then what was held.
    pub fn joined(
        &mut self,
        room: &Arc<str>,
        top: Position,
        recovered: bool,
        replay: Vec<StoredMessage>,
    ) -> Step<D> {
        let held = match self.rooms.remove(room) {
            Some(Room::Joining { held, .. }) => held,
            _ => Vec::new(),
        };
        let mut step = Step::default();
        step.emits.push(Emit::Joined {
            room: room.clone(),
            position: top.clone(),
            recovered,
            reset: false,
        });
        if !replay.is_empty() {
            step.emits.push(Emit::Stored {
                room: room.clone(),
                epoch: Arc::from(top.epoch.as_str()),
                messages: replay,
            });
        }
        self.rooms.insert(room.clone(), Room::Active(top));
        self.deliver_all(room, held, &mut step);
        step
    }

    /// The join failed: back to where the room was (its held messages
    /// then go out), or forgotten if it was not joined before.
    pub fn join_failed(&mut self, room: &Arc<str>) -> Step<D> {
        let mut step = Step::default();
        if let Some(Room::Joining {
            held,
            before: Some(before),
        }) = self.rooms.remove(room)
        {
            self.rooms.insert(room.clone(), Room::Active(before));
            self.deliver_all(room, held, &mut step);
        }
        step
    }

    /// The room was left: forget it, send `left`.
    pub fn left(&mut self, room: &Arc<str>) -> Step<D> {
        self.rooms.remove(room);
        Step {
            emits: vec![Emit::Left(room.clone())],
            fetch: None,
        }
    }

    /// A check of the room's top begins (after the broker's link came
    /// back): remember what was delivered so far. Everything delivered
    /// before this was stored before the top is read.
    pub fn mark(&mut self, room: &Arc<str>) {
        match self.rooms.get(room) {
            Some(Room::Active(at)) => {
                self.marks.insert(room.clone(), at.clone());
            }
            _ => {
                self.marks.remove(room);
            }
        }
    }

    /// The room's top, read after [`Ordering::mark`]: catch up to it. If
    /// it is behind what was delivered before the mark, the room's history
    /// went backwards (an older copy of Redis came back under the same
    /// epoch): say so and continue from it. A check whose room changed
    /// epoch since its mark, or was not active then, is stale: ignored.
    pub fn check(&mut self, room: &Arc<str>, top: Position) -> Step<D> {
        let mut step = Step::default();
        let mark = self.marks.remove(room);
        let (Some(Room::Active(at)), Some(mark)) = (self.rooms.get(room), mark) else {
            return step;
        };
        if at.epoch != mark.epoch {
            return step;
        }
        if at.epoch != top.epoch {
            let epoch = Arc::from(top.epoch.as_str());
            self.start_fill(room, epoch, top.offset, true, None, &mut step);
        } else if at.offset < top.offset {
            let epoch = Arc::from(top.epoch.as_str());
            self.start_fill(room, epoch, top.offset, false, None, &mut step);
        } else if mark.offset > top.offset {
            step.emits.push(Emit::Joined {
                room: room.clone(),
                position: top.clone(),
                recovered: false,
                reset: true,
            });
            self.rooms.insert(room.clone(), Room::Active(top));
        }
        step
    }

    /// The result of the step's [`Fetch`]: the messages, if every one was
    /// still kept. Sends them (announcing a new epoch first), or — when
    /// they cannot be had whole — says `recovered:false` at `upto`; then
    /// what queued behind the fetch.
    pub fn fetched(&mut self, fetch: &Fetch, found: Option<Vec<StoredMessage>>) -> Step<D> {
        let mut step = Step::default();
        let (restart, queued) = match self.rooms.remove(&fetch.room) {
            Some(Room::Filling {
                fetch: pending,
                restart,
                queued,
            }) if &pending == fetch => (restart, queued),
            other => {
                // Not the fetch this room waits for (cannot happen while the
                // writer awaits each fetch); leave the room as it was.
                if let Some(other) = other {
                    self.rooms.insert(fetch.room.clone(), other);
                }
                return step;
            }
        };
        let room = &fetch.room;
        match found {
            Some(messages) => {
                if restart {
                    step.emits.push(Emit::Joined {
                        room: room.clone(),
                        position: Position {
                            epoch: fetch.epoch.to_string(),
                            offset: fetch.after,
                        },
                        recovered: false,
                        reset: true,
                    });
                }
                if !messages.is_empty() {
                    step.emits.push(Emit::Stored {
                        room: room.clone(),
                        epoch: fetch.epoch.clone(),
                        messages,
                    });
                }
            }
            None => step.emits.push(Emit::Joined {
                room: room.clone(),
                position: Position {
                    epoch: fetch.epoch.to_string(),
                    offset: fetch.upto,
                },
                recovered: false,
                reset: true,
            }),
        }
        self.rooms.insert(
            room.clone(),
            Room::Active(Position {
                epoch: fetch.epoch.to_string(),
                offset: fetch.upto,
            }),
        );
        self.deliver_all(room, queued, &mut step);
        step
    }

    /// The position last delivered in `room`, if it is active.
    pub fn position(&self, room: &str) -> Option<&Position> {
        match self.rooms.get(room) {
            Some(Room::Active(p)) => Some(p),
            _ => None,
        }
    }

    /// Deliver `ds` in order; stop at the first that needs a fetch and
    /// queue the rest behind it.
    fn deliver_all(
        &mut self,
        room: &Arc<str>,
        ds: impl IntoIterator<Item = D>,
        step: &mut Step<D>,
    ) {
        for d in ds {
            if let Some(Room::Filling { queued, .. }) = self.rooms.get_mut(room) {
                queued.push_back(d);
                continue;
            }
            self.deliver(room, d, step);
        }
    }

    /// One live message of an active room, by [`history::verdict`].
    fn deliver(&mut self, room: &Arc<str>, d: D, step: &mut Step<D>) {
        let Some(Room::Active(at)) = self.rooms.get_mut(room) else {
            return;
        };
        match history::verdict(at, d.epoch(), d.offset()) {
            Verdict::Skip => {}
            Verdict::Deliver => {
                at.offset = d.offset();
                step.emits.push(Emit::Live(d));
            }
            Verdict::Fill { .. } => {
                let (epoch, upto) = (Arc::from(d.epoch()), d.offset() - 1);
                self.start_fill(room, epoch, upto, false, Some(d), step);
            }
            Verdict::Restart => {
                let (epoch, upto) = (Arc::from(d.epoch()), d.offset().saturating_sub(1));
                self.start_fill(room, epoch, upto, true, Some(d), step);
            }
        }
    }

    /// Catch up to `upto` of `epoch` from history before `then`. Nothing
    /// to read (a new epoch starting at 1) completes at once.
    fn start_fill(
        &mut self,
        room: &Arc<str>,
        epoch: Arc<str>,
        upto: u64,
        restart: bool,
        then: Option<D>,
        step: &mut Step<D>,
    ) {
        let after = match self.rooms.get(room) {
            Some(Room::Active(at)) if !restart => at.offset,
            _ => 0,
        };
        let fetch = Fetch {
            room: room.clone(),
            epoch,
            after,
            upto,
        };
        self.rooms.insert(
            room.clone(),
            Room::Filling {
                fetch: fetch.clone(),
                restart,
                queued: then.into_iter().collect(),
            },
        );
        if upto <= after {
            let done = self.fetched(&fetch, Some(Vec::new()));
            step.emits.extend(done.emits);
            step.fetch = done.fetch;
        } else {
            step.fetch = Some(fetch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A live message for the tests: its position and nothing else.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct L(&'static str, u64);

    impl Numbered for L {
        fn epoch(&self) -> &str {
            self.0
        }
        fn offset(&self) -> u64 {
            self.1
        }
    }

    fn room() -> Arc<str> {
        Arc::from("r")
    }

    fn pos(epoch: &str, offset: u64) -> Position {
        Position {
            epoch: epoch.into(),
            offset,
        }
    }

    fn stored(offsets: &[u64]) -> Vec<StoredMessage> {
        offsets
            .iter()
            .map(|&offset| StoredMessage {
                offset,
                body: Arc::from(format!("m{offset}")),
            })
            .collect()
    }

    fn joined(epoch: &str, offset: u64, recovered: bool, reset: bool) -> Emit<L> {
        Emit::Joined {
            room: room(),
            position: pos(epoch, offset),
            recovered,
            reset,
        }
    }

    fn stored_emit(epoch: &str, offsets: &[u64]) -> Emit<L> {
        Emit::Stored {
            room: room(),
            epoch: Arc::from(epoch),
            messages: stored(offsets),
        }
    }

    fn fetch(epoch: &str, after: u64, upto: u64) -> Fetch {
        Fetch {
            room: room(),
            epoch: Arc::from(epoch),
            after,
            upto,
        }
    }

    /// A machine with room `r` active at `(epoch, offset)`.
    fn active(epoch: &str, offset: u64) -> Ordering<L> {
        let mut o = Ordering::new(4);
        o.joining(&room());
        o.joined(&room(), pos(epoch, offset), false, Vec::new());
        o
    }

    fn emits(step: Result<Step<L>, Overflow>) -> Vec<Emit<L>> {
        let step = step.expect("no overflow");
        assert_eq!(step.fetch, None, "unexpected fetch");
        step.emits
    }

    #[test]
    fn a_room_not_joined_drops_live_messages() {
        let mut o: Ordering<L> = Ordering::new(4);
        assert_eq!(emits(o.live(&room(), L("a", 1))), vec![]);
        assert_eq!(o.position("r"), None);
    }

    #[test]
    fn the_next_offset_is_delivered() {
        let mut o = active("a", 5);
        assert_eq!(
            emits(o.live(&room(), L("a", 6))),
            vec![Emit::Live(L("a", 6))]
        );
        assert_eq!(o.position("r"), Some(&pos("a", 6)));
    }

    #[test]
    fn delivered_offsets_are_skipped() {
        let mut o = active("a", 5);
        assert_eq!(emits(o.live(&room(), L("a", 5))), vec![]);
        assert_eq!(emits(o.live(&room(), L("a", 2))), vec![]);
        assert_eq!(o.position("r"), Some(&pos("a", 5)));
    }

    #[test]
    fn a_gap_is_filled_from_history_before_the_message() {
        let mut o = active("a", 5);
        let step = o.live(&room(), L("a", 8)).unwrap();
        assert_eq!(step.emits, vec![]);
        assert_eq!(step.fetch, Some(fetch("a", 5, 7)));
        let done = o.fetched(&fetch("a", 5, 7), Some(stored(&[6, 7])));
        assert_eq!(
            done.emits,
            vec![stored_emit("a", &[6, 7]), Emit::Live(L("a", 8))]
        );
        assert_eq!(done.fetch, None);
        assert_eq!(o.position("r"), Some(&pos("a", 8)));
    }

    #[test]
    fn a_gap_history_no_longer_holds_is_told_then_delivery_goes_on() {
        let mut o = active("a", 5);
        let f = o.live(&room(), L("a", 8)).unwrap().fetch.unwrap();
        let done = o.fetched(&f, None);
        assert_eq!(
            done.emits,
            vec![joined("a", 7, false, true), Emit::Live(L("a", 8))]
        );
        assert_eq!(o.position("r"), Some(&pos("a", 8)));
    }

    #[test]
    fn messages_queue_behind_a_fill_in_order() {
        let mut o = active("a", 5);
        let f = o.live(&room(), L("a", 8)).unwrap().fetch.unwrap();
        assert_eq!(emits(o.live(&room(), L("a", 9))), vec![]);
        assert_eq!(
            emits(o.live(&room(), L("a", 8))),
            vec![],
            "queued, not judged yet"
        );
        let done = o.fetched(&f, Some(stored(&[6, 7])));
        assert_eq!(
            done.emits,
            vec![
                stored_emit("a", &[6, 7]),
                Emit::Live(L("a", 8)),
                Emit::Live(L("a", 9))
            ]
        );
    }

    #[test]
    fn a_full_fill_queue_overflows() {
        let mut o = active("a", 5);
        o.live(&room(), L("a", 8)).unwrap();
        for i in 9..12 {
            o.live(&room(), L("a", i)).unwrap();
        }
        assert_eq!(o.live(&room(), L("a", 12)), Err(Overflow));
    }

    #[test]
    fn a_new_epoch_from_its_start_is_announced_then_delivered() {
        let mut o = active("a", 5);
        assert_eq!(
            emits(o.live(&room(), L("b", 1))),
            vec![joined("b", 0, false, true), Emit::Live(L("b", 1))]
        );
        assert_eq!(o.position("r"), Some(&pos("b", 1)));
    }

    #[test]
    fn a_new_epoch_joined_late_is_announced_and_read_from_its_start() {
        let mut o = active("a", 5);
        let step = o.live(&room(), L("b", 3)).unwrap();
        assert_eq!(step.fetch, Some(fetch("b", 0, 2)));
        let done = o.fetched(&fetch("b", 0, 2), Some(stored(&[1, 2])));
        assert_eq!(
            done.emits,
            vec![
                joined("b", 0, false, true),
                stored_emit("b", &[1, 2]),
                Emit::Live(L("b", 3))
            ]
        );
    }

    #[test]
    fn a_new_epoch_whose_start_is_gone_is_announced_at_the_message() {
        let mut o = active("a", 5);
        let f = o.live(&room(), L("b", 3)).unwrap().fetch.unwrap();
        let done = o.fetched(&f, None);
        assert_eq!(
            done.emits,
            vec![joined("b", 2, false, true), Emit::Live(L("b", 3))]
        );
    }

    #[test]
    fn a_join_holds_live_messages_until_its_replay_is_out() {
        let mut o: Ordering<L> = Ordering::new(4);
        o.joining(&room());
        for i in 3..6 {
            assert_eq!(emits(o.live(&room(), L("a", i))), vec![]);
        }
        let step = o.joined(&room(), pos("a", 4), true, stored(&[3, 4]));
        assert_eq!(
            step.emits,
            vec![
                joined("a", 4, true, false),
                stored_emit("a", &[3, 4]),
                Emit::Live(L("a", 5))
            ],
            "held 3 and 4 were in the replay; 5 follows it"
        );
        assert_eq!(o.position("r"), Some(&pos("a", 5)));
    }

    #[test]
    fn a_join_holds_no_more_than_its_limit() {
        let mut o: Ordering<L> = Ordering::new(2);
        o.joining(&room());
        o.live(&room(), L("a", 1)).unwrap();
        o.live(&room(), L("a", 2)).unwrap();
        assert_eq!(o.live(&room(), L("a", 3)), Err(Overflow));
    }

    #[test]
    fn a_held_message_past_the_top_is_filled_first() {
        let mut o: Ordering<L> = Ordering::new(4);
        o.joining(&room());
        o.live(&room(), L("a", 7)).unwrap();
        let step = o.joined(&room(), pos("a", 4), false, Vec::new());
        assert_eq!(step.emits, vec![joined("a", 4, false, false)]);
        assert_eq!(step.fetch, Some(fetch("a", 4, 6)));
        let done = o.fetched(&fetch("a", 4, 6), Some(stored(&[5, 6])));
        assert_eq!(
            done.emits,
            vec![stored_emit("a", &[5, 6]), Emit::Live(L("a", 7))]
        );
    }

    #[test]
    fn a_failed_rejoin_returns_to_the_old_position_with_what_was_held() {
        let mut o = active("a", 5);
        o.joining(&room());
        o.live(&room(), L("a", 6)).unwrap();
        let step = o.join_failed(&room());
        assert_eq!(step.emits, vec![Emit::Live(L("a", 6))]);
        assert_eq!(o.position("r"), Some(&pos("a", 6)));
    }

    #[test]
    fn a_failed_first_join_forgets_the_room() {
        let mut o: Ordering<L> = Ordering::new(4);
        o.joining(&room());
        o.live(&room(), L("a", 1)).unwrap();
        assert_eq!(o.join_failed(&room()).emits, vec![]);
        assert_eq!(emits(o.live(&room(), L("a", 2))), vec![]);
        assert_eq!(o.position("r"), None);
    }

    #[test]
    fn a_rejoin_during_a_fill_remembers_where_the_fill_started() {
        let mut o = active("a", 5);
        o.live(&room(), L("a", 8)).unwrap();
        o.joining(&room());
        o.join_failed(&room());
        assert_eq!(o.position("r"), Some(&pos("a", 5)));
    }

    #[test]
    fn a_fetch_the_room_no_longer_waits_for_changes_nothing() {
        let mut o = active("a", 5);
        let done = o.fetched(&fetch("a", 5, 7), Some(stored(&[6, 7])));
        assert_eq!(done.emits, vec![]);
        assert_eq!(o.position("r"), Some(&pos("a", 5)));
    }

    #[test]
    fn leaving_says_left_and_drops_later_messages() {
        let mut o = active("a", 5);
        assert_eq!(o.left(&room()).emits, vec![Emit::Left(room())]);
        assert_eq!(emits(o.live(&room(), L("a", 6))), vec![]);
    }

    /// [`Ordering::mark`] then [`Ordering::check`].
    fn mark_and_check(o: &mut Ordering<L>, top: Position) -> Step<L> {
        o.mark(&room());
        o.check(&room(), top)
    }

    #[test]
    fn a_check_behind_the_top_catches_up() {
        let mut o = active("a", 5);
        let step = mark_and_check(&mut o, pos("a", 7));
        assert_eq!(step.fetch, Some(fetch("a", 5, 7)));
        let done = o.fetched(&fetch("a", 5, 7), Some(stored(&[6, 7])));
        assert_eq!(done.emits, vec![stored_emit("a", &[6, 7])]);
        assert_eq!(o.position("r"), Some(&pos("a", 7)));
    }

    #[test]
    fn a_check_at_the_top_does_nothing() {
        let mut o = active("a", 5);
        assert_eq!(mark_and_check(&mut o, pos("a", 5)), Step::default());
    }

    #[test]
    fn a_check_finding_a_new_epoch_resets_the_room() {
        let mut o = active("a", 5);
        let step = mark_and_check(&mut o, pos("b", 0));
        assert_eq!(step.emits, vec![joined("b", 0, false, true)]);
        assert_eq!(o.position("r"), Some(&pos("b", 0)));
        assert_eq!(
            emits(o.live(&room(), L("b", 1))),
            vec![Emit::Live(L("b", 1))]
        );
    }

    #[test]
    fn a_check_finding_the_top_went_backwards_resets_the_room() {
        let mut o = active("a", 9);
        let step = mark_and_check(&mut o, pos("a", 4));
        assert_eq!(step.emits, vec![joined("a", 4, false, true)]);
        assert_eq!(
            emits(o.live(&room(), L("a", 5))),
            vec![Emit::Live(L("a", 5))],
            "offsets after the reset are new messages"
        );
    }

    #[test]
    fn messages_delivered_after_the_mark_do_not_make_a_check_look_backwards() {
        let mut o = active("a", 5);
        o.mark(&room());
        o.live(&room(), L("a", 6)).unwrap();
        o.live(&room(), L("a", 7)).unwrap();
        assert_eq!(
            o.check(&room(), pos("a", 5)),
            Step::default(),
            "read before 6 and 7"
        );
        assert_eq!(o.position("r"), Some(&pos("a", 7)));
    }

    #[test]
    fn a_check_whose_room_changed_epoch_since_the_mark_is_stale() {
        let mut o = active("a", 5);
        o.mark(&room());
        emits(o.live(&room(), L("b", 1)));
        assert_eq!(o.check(&room(), pos("a", 9)), Step::default());
        assert_eq!(o.position("r"), Some(&pos("b", 1)));
    }

    #[test]
    fn a_check_without_a_mark_is_ignored() {
        let mut o = active("a", 5);
        assert_eq!(o.check(&room(), pos("a", 9)), Step::default());
    }

    #[test]
    fn a_check_of_a_joining_room_waits_for_the_join() {
        let mut o: Ordering<L> = Ordering::new(4);
        o.joining(&room());
        o.mark(&room());
        assert_eq!(o.check(&room(), pos("a", 3)), Step::default());
    }
}

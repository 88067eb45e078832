//! The broker: where room messages are numbered, kept and fanned out to
//! every node. Two implementations behind one trait:
//!
//! - [`memory`]: in process. One node alone, or several nodes of one
//!   process (the dev cluster without Redis), sharing a [`MemoryBus`].
//! - [`redis`]: Redis streams + pub/sub, so nodes on many machines share
//!   rooms, and history survives any one of them.
//!
//! The contract both keep (and `tests/tests/backend_traits.rs` checks on
//! both): a publish stores the message at the next offset of the room's
//! epoch and delivers it to every subscribed node *in offset order*, in one
//! atomic step (remembering its idempotency key, if any, in the same step);
//! history holds the last `HISTORY_SIZE` messages for
//! `HISTORY_TTL`; live delivery is at-most-once (a node can miss messages
//! while its link is down), which [`crate::history::verdict`] and
//! [`Events::resubscribed`] turn into exactly-once per client.

pub mod memory;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::history::{Position, StoredMessage};
use crate::idempotency::IdempotencyKey;

pub use memory::{MemoryBroker, MemoryBus};
pub use redis::RedisBroker;

/// Why a broker call failed. Callers turn it into `unavailable` for clients.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The call certainly did nothing: the backing store could not be
    /// reached, or refused the call before running it.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The call was sent but its answer never came (a timeout, a
    /// connection lost mid-call): it may or may not have taken effect.
    #[error("broker outcome unknown: {0}")]
    Unknown(String),
}

impl BrokerError {
    /// Whether the call is known to have done nothing.
    pub fn did_nothing(&self) -> bool {
        matches!(self, BrokerError::Unavailable(_))
    }
}

impl From<::redis::RedisError> for BrokerError {
    fn from(e: ::redis::RedisError) -> Self {
        use ::redis::{ErrorKind, ServerErrorKind as S};
        // Refused before anything ran: nothing was done. Anything else
        // (a timeout, a dropped connection, a script that failed part-way)
        // may have happened after the call took effect.
        let refused = e.is_connection_refusal()
            || matches!(
                e.kind(),
                ErrorKind::Server(
                    S::BusyLoading
                        | S::NoScript
                        | S::Moved
                        | S::Ask
                        | S::TryAgain
                        | S::ClusterDown
                        | S::CrossSlot
                        | S::MasterDown
                        | S::ReadOnly
                        | S::NoPerm
                )
            );
        if refused {
            BrokerError::Unavailable(e.to_string())
        } else {
            BrokerError::Unknown(e.to_string())
        }
    }
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Where the message is stored.
    pub position: Position,
    /// The idempotency key was already used: this is the position the
    /// first publish under it got, and nothing was stored now.
    pub repeated: bool,
}

/// A message as it arrives live on a subscribed node.
#[derive(Debug, Clone)]
pub struct LiveMessage {
    /// The room it was published to.
    pub room: Arc<str>,
    /// The room's epoch at publish time.
    pub epoch: Arc<str>,
    /// Its offset in that epoch.
    pub offset: u64,
    /// The rendered body (`"from":…,"ts":…,"data":…`).
    pub body: Arc<str>,
    /// When the publisher handed it over, Unix microseconds (for the
    /// publish-to-deliver histogram).
    pub published_us: u64,
}

/// Node-to-node instructions, sent to one node by its worker id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Close the local connection of this session: it was resumed elsewhere.
    Kick {
        /// The session id.
        sid: String,
    },
}

/// What a broker hands to its node. Called from the broker's own tasks;
/// implementations must not block.
pub trait Events: Send + Sync + 'static {
    /// A live message for a subscribed room.
    fn message(&self, message: LiveMessage);
    /// A control message addressed to this node.
    fn control(&self, control: Control);
    /// The broker's subscriptions were re-established after a loss of its
    /// link: live messages may have been missed, so every subscribed room's
    /// position must be checked again.
    fn resubscribed(&self);
}

/// The outcome of a `join` with or without `since`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The room's position when the replay was read: live delivery
    /// continues after it.
    pub top: Position,
    /// The messages after `since`, all of them in order, or `None` when the
    /// gap cannot be replayed whole (or no `since` was given).
    pub replay: Option<Vec<StoredMessage>>,
}

/// Stores, numbers and fans out room messages.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Store `body` at the room's next offset and deliver it to every
    /// subscribed node, atomically. `published_us` travels with the live
    /// copy. With a `key`, the publish is remembered for
    /// [`crate::idempotency::REMEMBER`] in the same step: a publish under a
    /// key already used in this room stores nothing and answers the
    /// original position.
    async fn publish(
        &self,
        room: &str,
        body: &str,
        published_us: u64,
        key: Option<&IdempotencyKey>,
    ) -> Result<Published, BrokerError>;

    /// The room's epoch and top offset (a room never published to gets a
    /// fresh epoch at offset 0).
    async fn position(&self, room: &str) -> Result<Position, BrokerError>;

    /// The room's top and, when `since` is given, every message after it —
    /// read in one atomic step, all or nothing (see [`crate::history::gap`]).
    async fn recover(
        &self,
        room: &str,
        since: Option<&Position>,
        max: usize,
    ) -> Result<Recovery, BrokerError>;

    /// Messages with offsets in `(after, upto]` of `epoch`, if every one of
    /// them is still kept; `None` otherwise.
    async fn range(
        &self,
        room: &str,
        epoch: &str,
        after: u64,
        upto: u64,
    ) -> Result<Option<Vec<StoredMessage>>, BrokerError>;

    /// Start receiving the room's live messages on this node. Counted:
    /// every call needs one [`Broker::unsubscribe`]. When it returns `Ok`,
    /// every message published afterwards will be delivered.
    async fn subscribe(&self, room: &str) -> Result<(), BrokerError>;

    /// Undo one [`Broker::subscribe`].
    async fn unsubscribe(&self, room: &str);

    /// Send a control message to the node named `worker`.
    async fn send_control(&self, worker: &str, control: Control) -> Result<(), BrokerError>;

    /// A real round trip through the live path: publish a probe to this
    /// node and wait for it to come back. The time it took.
    async fn probe(&self) -> Result<Duration, BrokerError>;

    /// Whether the live link is up now (cheap; for headers and metrics,
    /// not for `/health`, which probes).
    fn is_connected(&self) -> bool;
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// How old a published message is, by its publisher's clock.
pub fn age(published_us: u64) -> Duration {
    Duration::from_micros(now_us().saturating_sub(published_us))
}

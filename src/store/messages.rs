//! The outbox of messages to customers (`domain::message`): queued once, leased by one worker
//! at a time, their outcome recorded. Whether and when a failed send is tried again is
//! `domain::message::retry_at`'s to say.

use async_trait::async_trait;

use super::{StoreError, UnixTime};
use crate::domain::message::{Channel, Message, MessageKind, MessageState};

/// A message to queue.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// A receipt's id names its order and address, so it is queued once.
    pub id: String,
    pub order_id: String,
    pub kind: MessageKind,
    pub channel: Channel,
    pub to: String,
    pub now: UnixTime,
}

/// A send's outcome.
#[derive(Debug, Clone)]
pub struct SendOutcome<'a> {
    pub state: MessageState,
    pub provider_id: Option<&'a str>,
    pub error: Option<&'a str>,
    /// When a message left pending is tried again.
    pub next_attempt_at: Option<UnixTime>,
    pub now: UnixTime,
}

#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Queues a message, due at once; `false` if one with its id stands.
    async fn queue_message(&self, m: &NewMessage) -> Result<bool, StoreError>;

    /// Takes up to `limit` pending messages due at `now`, each counted as tried once more and
    /// not due again before `lease_until`, so that two workers never send one at once.
    async fn lease_messages(
        &self,
        now: UnixTime,
        lease_until: UnixTime,
        limit: i64,
    ) -> Result<Vec<Message>, StoreError>;

    /// Records how a leased message's send went.
    async fn message_outcome(&self, id: &str, outcome: &SendOutcome<'_>) -> Result<(), StoreError>;

    /// Twilio's later report on an SMS, found by its SID, if [`MessageState::may_become`]
    /// allows it (callbacks come in any order); `false` if no message moved.
    async fn message_delivery(
        &self,
        provider_id: &str,
        state: MessageState,
        error: Option<&str>,
        now: UnixTime,
    ) -> Result<bool, StoreError>;

    /// The order's messages, oldest first.
    async fn messages_for_order(&self, order_id: &str) -> Result<Vec<Message>, StoreError>;

    /// Newest first.
    async fn list_messages(&self, limit: i64) -> Result<Vec<Message>, StoreError>;

    /// The orders whose receipts went to this address, oldest first.
    async fn orders_receipted(&self, channel: Channel, to: &str)
        -> Result<Vec<String>, StoreError>;

    /// Messages of `kind` queued to this address from `since` on.
    async fn count_messages_to(
        &self,
        to: &str,
        kind: MessageKind,
        since: UnixTime,
    ) -> Result<i64, StoreError>;
}

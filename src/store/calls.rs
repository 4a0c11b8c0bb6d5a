//! Calls, with their holds on an order, their stream tokens, metering, transcript and
//! settlement (the one place seconds leave an allowance).

use async_trait::async_trait;
use serde::Serialize;

use super::{
    Call, CallState, Charge, DayTotal, EndReason, Listing, Order, Refusal, Speaker, StoreError,
    TwilioStatus, UnixTime,
};
use crate::domain::money::{Rounding, Seconds};

/// What asking to hold an order for a call found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// The call holds the order's code now; the order as it stands.
    Held(Box<Order>),
    /// Another live call holds it.
    InUse,
    /// Another call held it, but its hold lapsed (its instance is gone): that call must be
    /// settled first, which frees the code.
    Lapsed(String),
    /// The call has ended or was settled already: it may not hold anything.
    CallOver,
}

impl Hold {
    /// Why a hold was refused when the call was still live: the order as it now stands
    /// (`None` if it is gone) tells a lapsed hold from one in use.
    pub(crate) fn refused(order: Option<Order>, now: UnixTime) -> Hold {
        match order {
            Some(Order {
                active_call_sid: Some(holder),
                active_call_until: Some(until),
                ..
            }) if until < now => Hold::Lapsed(holder),
            _ => Hold::InUse,
        }
    }
}

/// What settling a call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Not ended yet, or its bridge is still live (its hold has not lapsed).
    NotReady,
    /// Settled before (a duplicate or late callback): nothing changed.
    AlreadySettled,
    Settled {
        seconds: Seconds,
        overage: Seconds,
        /// The charge due, when overage was consented to and there was any.
        charge: Option<Box<Charge>>,
    },
}

impl Settlement {
    /// A call that could not be claimed for settlement, as it now stands.
    pub(crate) fn unclaimed(call: Option<Call>) -> Settlement {
        match call {
            Some(c) if c.settled_at.is_some() => Settlement::AlreadySettled,
            _ => Settlement::NotReady,
        }
    }

    /// A call settled that held no order: nothing to debit.
    pub(crate) fn without_order(seconds: Seconds) -> Settlement {
        Settlement::Settled {
            seconds,
            overage: Seconds(0),
            charge: None,
        }
    }
}

/// One line of what was said on a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct TranscriptLine {
    pub seq: i64,
    pub speaker: Speaker,
    pub text: String,
    pub at: UnixTime,
}

/// The end of a call, as Twilio's status callback (or the bridge) reports it.
#[derive(Debug, Clone)]
pub struct EndCall {
    pub call_sid: String,
    pub from_number: String,
    pub to_number: String,
    /// Twilio's final `CallStatus`.
    pub twilio_status: TwilioStatus,
    /// Twilio's `CallDuration`, when present and numeric.
    pub duration: Option<i64>,
    pub reason: EndReason,
    pub now: UnixTime,
}

impl EndCall {
    /// The call as first reported, for storing it if its earlier webhooks never arrived (the
    /// SQL engines store it in the statement that ends it).
    #[cfg(feature = "mongodb")]
    pub(crate) fn as_new_call(&self) -> NewCall {
        NewCall {
            call_sid: self.call_sid.clone(),
            from_number: self.from_number.clone(),
            to_number: self.to_number.clone(),
            now: self.now,
        }
    }
}

/// A one-time media stream token: the secret goes into the code step's TwiML (a `<Parameter>`
/// of the stream), only its hash is stored, and the bridge hashes what Twilio presents the same
/// way. Minted and hashed here alone.
pub struct StreamToken(String);

impl StreamToken {
    /// A fresh token: 256 random bits, hex.
    pub fn mint() -> StreamToken {
        StreamToken(crate::crypto::random_hex(32))
    }

    /// The token itself, for the TwiML only (never logged, never stored).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the store keeps of this token.
    pub fn hash(&self) -> String {
        StreamToken::hash_of(&self.0)
    }

    /// What the store keeps of a token presented on `/media`.
    pub fn hash_of(presented: &str) -> String {
        crate::crypto::sha256_hex(presented)
    }
}

/// A stream token to store with a hold (see [`CallStore::hold_and_grant`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIssue {
    pub token_hash: String,
    pub expires_at: UnixTime,
}

/// What a valid stream token grants: the media stream of this call, on this order.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StreamGrant {
    pub call_sid: String,
    pub order_id: String,
}

/// A stream token used up, with what the bridge needs to decide whether the stream may
/// open, read in the same transaction that consumed it: the call as it stands and its order.
/// The store only reports them; [`crate::domain::call::stream_refusal`] decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOpening {
    pub grant: StreamGrant,
    /// `None` if the call's row is missing.
    pub call: Option<Call>,
    /// `None` if the order is gone.
    pub order: Option<Order>,
}

#[derive(Debug, Clone)]
pub struct NewCall {
    pub call_sid: String,
    pub from_number: String,
    pub to_number: String,
    pub now: UnixTime,
}

/// Calls: recorded, holding their order, bridged, metered, ended and settled once.
#[async_trait]
pub trait CallStore: Send + Sync {
    /// Lets `call_sid` use the order's code unless another call holds it (even a lapsed hold is
    /// only freed by settling its call) or `call_sid` has ended; the hold lapses at `until`
    /// unless the bridge renews it. Also links the call to the order.
    async fn hold_order_for_call(
        &self,
        order_id: &str,
        call_sid: &str,
        until: UnixTime,
        now: UnixTime,
    ) -> Result<Hold, StoreError>;

    /// [`CallStore::hold_order_for_call`], and, when the call holds the code, its stream token
    /// stored in the same write: the code step waits once. A store that cannot take both
    /// together writes the hold, then the token.
    async fn hold_and_grant(
        &self,
        order_id: &str,
        call_sid: &str,
        until: UnixTime,
        now: UnixTime,
        token: &TokenIssue,
    ) -> Result<Hold, StoreError> {
        let hold = self
            .hold_order_for_call(order_id, call_sid, until, now)
            .await?;
        if let Hold::Held(_) = &hold {
            let grant = StreamGrant {
                call_sid: call_sid.to_string(),
                order_id: order_id.to_string(),
            };
            self.insert_stream_token(&token.token_hash, &grant, token.expires_at)
                .await?;
        }
        Ok(hold)
    }

    /// Records a call's start, or returns the call already recorded under that sid.
    async fn upsert_call(&self, call: &NewCall) -> Result<Call, StoreError>;

    /// Records the starts of calls not stored yet, several in one write where the engine
    /// allows (the greetings' arrivals are grouped by [`crate::write_behind::arrivals::ArrivalLog`]);
    /// a call already stored is left as it is.
    async fn record_calls(&self, calls: &[NewCall]) -> Result<(), StoreError> {
        for call in calls {
            self.upsert_call(call).await?;
        }
        Ok(())
    }

    /// Closes a call (creating its record if the start was never seen). A call that never
    /// reached the agent releases its order's hold; a bridged one keeps it until settlement
    /// debits it. Idempotent: the first end time and reason stay; a later duration fills in a
    /// missing one.
    async fn end_call(&self, end: &EndCall) -> Result<Call, StoreError>;

    /// The media bridge is up on instance `carrier`: the call is `bridged`, carried by it, and
    /// its hold renewed to `hold_until`, if the call has not ended, is not settled and still
    /// holds its order. `false` otherwise: the bridge must not run.
    async fn bridge_started(
        &self,
        call_sid: &str,
        conversation_id: Option<&str>,
        hold_until: UnixTime,
        now: UnixTime,
        carrier: &str,
    ) -> Result<bool, StoreError>;

    /// Records agent seconds metered so far (never lowers the figure).
    async fn record_metering(
        &self,
        call_sid: &str,
        seconds: Seconds,
        now: UnixTime,
    ) -> Result<(), StoreError>;

    /// Records many live calls' metering at once (the bridge's batched persistence) and renews
    /// their holds to `hold_until`. Returns the calls that must stop now: their order is no
    /// longer paid (refunded, disputed, revoked), they lost their hold, or they were settled.
    async fn record_metering_many(
        &self,
        figures: &[(String, Seconds)],
        hold_until: UnixTime,
        now: UnixTime,
    ) -> Result<Vec<String>, StoreError>;

    /// The bridge is done: final metering and why it ended (the first reason recorded stays).
    /// The hold stays until [`CallStore::settle_call`] debits the call.
    async fn bridge_finished(
        &self,
        call_sid: &str,
        seconds: Seconds,
        reason: EndReason,
        now: UnixTime,
    ) -> Result<(), StoreError>;

    /// Appends transcript lines (their `seq` must be new for the call).
    async fn append_transcript(
        &self,
        call_sid: &str,
        lines: &[TranscriptLine],
    ) -> Result<(), StoreError>;

    async fn transcript(&self, call_sid: &str) -> Result<Vec<TranscriptLine>, StoreError>;

    /// Stores a one-time media stream token (its hash) for a call on an order.
    async fn insert_stream_token(
        &self,
        token_hash: &str,
        grant: &StreamGrant,
        expires_at: UnixTime,
    ) -> Result<(), StoreError>;

    /// Uses up a token for `call_sid` and reads its call and order in the same step: `None`
    /// if the token is unknown, expired, used, or for another call.
    async fn consume_stream_token(
        &self,
        token_hash: &str,
        call_sid: &str,
        now: UnixTime,
    ) -> Result<Option<StreamOpening>, StoreError>;

    /// Agent seconds of bridged calls ([`Call::billable_seconds`]) per day they started, from
    /// `since` on.
    async fn agent_seconds_per_day(&self, since: UnixTime) -> Result<Vec<DayTotal>, StoreError>;
    /// Calls whose end has not been reported.
    async fn count_live_calls(&self) -> Result<i64, StoreError>;
    async fn call(&self, call_sid: &str) -> Result<Option<Call>, StoreError>;

    /// A page of calls, newest first by when they started (see [`Listing`]).
    async fn page_calls(&self, listing: &Listing<CallState>) -> Result<Vec<Call>, StoreError>;
    /// The newest `limit` calls.
    async fn list_calls(&self, limit: i64) -> Result<Vec<Call>, StoreError> {
        self.page_calls(&Listing::newest(limit)).await
    }

    /// The calls made on an order's code, newest first.
    async fn calls_for_order(&self, order_id: &str, limit: i64) -> Result<Vec<Call>, StoreError>;

    /// The calls from a number, newest first.
    async fn calls_from(&self, from: &str, limit: i64) -> Result<Vec<Call>, StoreError>;

    /// Settles a call exactly once, applying [`crate::domain::ledger::debit`] atomically: its metered
    /// seconds are added to the order's used allowance, the order's hold is released in the
    /// same step, and the charge due (if any) is recorded. A call is ready once its bridge has
    /// finished; or, never bridged, once it ended; or once its hold has lapsed or gone (its
    /// bridge's instance died).
    async fn settle_call(
        &self,
        call_sid: &str,
        rounding: Rounding,
        charge_id: &str,
        now: UnixTime,
    ) -> Result<Settlement, StoreError>;

    /// The status callback's two writes: [`CallStore::end_call`], then [`CallStore::settle_call`] at the
    /// end's time. A store that can take them together (SQLite's writer) waits once for both.
    /// The end stands whatever the settlement does; the settlement's own result comes beside it.
    async fn end_and_settle(
        &self,
        end: &EndCall,
        rounding: Rounding,
        charge_id: &str,
    ) -> Result<(Call, Result<Settlement, StoreError>), StoreError> {
        let call = self.end_call(end).await?;
        let settled = self
            .settle_call(&end.call_sid, rounding, charge_id, end.now)
            .await;
        Ok((call, settled))
    }

    /// Calls ready for settlement at `now` (oldest first).
    async fn calls_to_settle(&self, limit: i64, now: UnixTime) -> Result<Vec<String>, StoreError>;

    /// Whether `from` opened an earlier call (not `except_call`) on a code: on `order_id`'s
    /// code when given, else on any. Such a caller is still admitted while code entry is
    /// paused for everyone else (see `voice::flow`).
    async fn caller_has_used_code(
        &self,
        from: &str,
        order_id: Option<&str>,
        except_call: &str,
    ) -> Result<bool, StoreError>;

    /// The menu refused the code typed on `call_sid` (it matched `order_id`), and told the
    /// caller `why`.
    async fn record_refusal(
        &self,
        call_sid: &str,
        order_id: &str,
        why: Refusal,
        now: UnixTime,
    ) -> Result<(), StoreError>;
}

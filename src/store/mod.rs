//! The storage interface: one trait, its record types, and one implementation per backend.
//!
//! Every backend passes the same conformance suite (`tests/store_conformance.rs`). Methods
//! that can race (fulfilment, charge creation, claims) are single atomic statements or
//! transactions, so the outcome is the same whatever the interleaving.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

use crate::config::DatabaseConfig;
use crate::domain::codes::StoredCode;
use crate::domain::money::{Cents, Currency, Rounding, Seconds};

#[cfg(feature = "mongodb")]
mod mongo;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(feature = "sqlite")]
mod sqlite_writer;

#[cfg(feature = "mongodb")]
pub use mongo::MongoStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

/// Unix time in whole seconds, from one clock.
pub use crate::domain::call::{Call, CallState, EndReason, Speaker, TwilioStatus};
pub use crate::domain::charge::{ChargeState, OverageBlock};
pub use crate::domain::clock::UnixTime;
pub use crate::domain::order::{Order, OrderSource, OrderStatus};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused the write (e.g. a code or PaymentIntent already stored).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database cannot be reached or timed out; the operation may be retried.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A stored value is not one callgate writes.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(String),
    #[error("cannot open the database: {0}")]
    Open(String),
    #[error("migration failed: {0}")]
    Migrate(String),
    /// The configuration names an engine this build left out (see the cargo features).
    #[error("this callgate was built without the {0} feature")]
    NotBuilt(&'static str),
}

impl From<crate::domain::UnknownSpelling> for StoreError {
    fn from(e: crate::domain::UnknownSpelling) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

/// An order to store. With `code` it is stored paid; without, pending payment.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub id: String,
    pub source: OrderSource,
    pub plan: String,
    pub amount: Cents,
    pub currency: Currency,
    pub seconds_included: Seconds,
    pub overage_consent: bool,
    pub overage_price: Cents,
    pub stripe_payment_intent: Option<String>,
    pub stripe_customer: Option<String>,
    pub stripe_payment_method: Option<String>,
    pub client_secret_hash: Option<String>,
    pub code: Option<StoredCode>,
    pub now: UnixTime,
}

/// A successful payment to turn into a paid order with a code.
#[derive(Debug, Clone)]
pub struct Fulfilment {
    pub payment_intent: String,
    /// The fresh code; used only if this call is the one that fulfils the order.
    pub code: StoredCode,
    pub customer: Option<String>,
    pub payment_method: Option<String>,
    pub now: UnixTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fulfilled {
    /// This call paid the order and set the code.
    Now(Order),
    /// The order had already been fulfilled (a duplicate or racing event); nothing changed.
    Already(Order),
    /// No order callgate created names this PaymentIntent: nothing was stored.
    NoOrder,
}

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

/// How a charge attempt ended, for [`Store::finish_charge`].
#[derive(Debug, Clone)]
pub struct ChargeUpdate {
    pub state: ChargeState,
    pub stripe_payment_intent: Option<String>,
    pub last_error: Option<String>,
    /// For a charge left pending: when to try again.
    pub next_attempt_at: Option<UnixTime>,
    pub pay_token: Option<String>,
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
    /// The call as first reported, for storing it if its earlier webhooks never arrived.
    pub(crate) fn as_new_call(&self) -> NewCall {
        NewCall {
            call_sid: self.call_sid.clone(),
            from_number: self.from_number.clone(),
            to_number: self.to_number.clone(),
            now: self.now,
        }
    }
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Charge {
    pub id: String,
    pub call_sid: String,
    pub order_id: String,
    #[sqlx(rename = "amount_cents", try_from = "i64")]
    pub amount: Cents,
    #[sqlx(try_from = "String")]
    pub currency: Currency,
    #[sqlx(try_from = "i64")]
    pub seconds_billed: Seconds,
    pub state: ChargeState,
    pub attempts: i64,
    pub next_attempt_at: UnixTime,
    pub lease_owner: Option<String>,
    pub lease_until: Option<UnixTime>,
    pub stripe_payment_intent: Option<String>,
    pub last_error: Option<String>,
    #[serde(skip)]
    pub pay_token: Option<String>,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
    /// Bumped by an operator's retry after Stripe refused: the idempotency key's suffix.
    pub key_generation: i64,
}

#[derive(Debug, Clone)]
pub struct NewCharge {
    pub id: String,
    pub call_sid: String,
    pub order_id: String,
    pub amount: Cents,
    pub currency: Currency,
    pub seconds_billed: Seconds,
    pub now: UnixTime,
}

/// One code typed at the phone menu.
#[derive(Debug, Clone)]
pub struct CodeAttempt {
    pub caller: String,
    /// The keyed hash of the digits typed (never the digits).
    pub code_hash: String,
    pub ok: bool,
    pub at: UnixTime,
}

/// Whose failed attempts to count.
#[derive(Debug, Clone, Copy)]
pub enum AttemptScope<'a> {
    Caller(&'a str),
    Code(&'a str),
    Global,
}

/// What the code-check webhook needs to judge the digits typed, read together.
#[derive(Debug, Clone, Copy)]
pub struct CodeCheckQuery<'a> {
    pub call_sid: &'a str,
    pub caller: &'a str,
    /// The keyed hash of the digits; `None` when they cannot be a code (nothing is looked up).
    pub code_hash: Option<&'a str>,
    /// Failures at or after this time count.
    pub since: UnixTime,
    /// The caller's failures are counted up to this many (see [`Store::count_failures`]).
    pub caller_up_to: i64,
    /// The code's failures are counted up to this many.
    pub code_up_to: i64,
}

/// The answer to a [`CodeCheckQuery`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeCheckFacts {
    /// Whether the call is stored (the incoming webhook stores it; a lost request did not).
    pub call_known: bool,
    pub caller_failures: i64,
    pub code_failures: i64,
    /// The order the code belongs to, whatever its status.
    pub order: Option<Order>,
}

/// The storage interface every backend implements.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// "sqlite", "postgres" or "mongodb".
    fn backend(&self) -> &'static str;
    /// Brings the schema up to date (embedded migrations; idempotent).
    async fn migrate(&self) -> Result<(), StoreError>;
    /// Succeeds when the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Stores a new order; `Conflict` if its id, PaymentIntent or code exists.
    async fn insert_order(&self, order: &NewOrder) -> Result<Order, StoreError>;
    /// Turns the pending (or failed) order of a PaymentIntent into a paid order with a code,
    /// exactly once. Never creates an order.
    async fn fulfil_order(&self, f: &Fulfilment) -> Result<Fulfilled, StoreError>;
    async fn order(&self, id: &str) -> Result<Option<Order>, StoreError>;
    async fn order_by_payment_intent(&self, pi: &str) -> Result<Option<Order>, StoreError>;
    async fn order_by_code(&self, code_hash: &str) -> Result<Option<Order>, StoreError>;
    /// Newest first.
    async fn list_orders(&self, limit: i64) -> Result<Vec<Order>, StoreError>;
    /// Remembers the client secret's hash for an order that lacked it.
    async fn set_client_secret_hash(&self, id: &str, hash: &str) -> Result<(), StoreError>;
    /// Moves an order to `to` if it is in one of `from`; returns the updated order if it moved.
    async fn set_order_status(
        &self,
        id: &str,
        from: &[OrderStatus],
        to: OrderStatus,
        now: UnixTime,
    ) -> Result<Option<Order>, StoreError>;

    /// Adds agent seconds to an order's used allowance.
    async fn add_seconds_used(
        &self,
        order_id: &str,
        seconds: Seconds,
        now: UnixTime,
    ) -> Result<(), StoreError>;
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

    /// Records a call's start, or returns the call already recorded under that sid.
    async fn upsert_call(&self, call: &NewCall) -> Result<Call, StoreError>;
    /// Records the starts of calls not stored yet, several in one write where the engine
    /// allows (the greetings' arrivals are grouped by [`crate::menu::arrivals::ArrivalLog`]);
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

    /// The media bridge is up: the call is `bridged` and its hold renewed to `hold_until`, if
    /// the call has not ended, is not settled and still holds its order. `false` otherwise:
    /// the bridge must not run.
    async fn bridge_started(
        &self,
        call_sid: &str,
        conversation_id: Option<&str>,
        hold_until: UnixTime,
        now: UnixTime,
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
    /// The hold stays until [`Store::settle_call`] debits the call.
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
    async fn call(&self, call_sid: &str) -> Result<Option<Call>, StoreError>;
    /// Newest first.
    async fn list_calls(&self, limit: i64) -> Result<Vec<Call>, StoreError>;

    /// Records a charge for a call; one per call. Returns the stored charge and whether this
    /// call created it.
    async fn insert_charge(&self, charge: &NewCharge) -> Result<(Charge, bool), StoreError>;
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
    /// The status callback's two writes: [`Store::end_call`], then [`Store::settle_call`] at the
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
    /// Leases the next due pending charge to `owner` until `lease_until`, counting an attempt.
    async fn claim_charge(
        &self,
        owner: &str,
        lease_until: UnixTime,
        now: UnixTime,
    ) -> Result<Option<Charge>, StoreError>;
    /// Records an attempt's outcome if `owner` still holds the lease; `false` if it does not.
    async fn finish_charge(
        &self,
        id: &str,
        owner: &str,
        update: &ChargeUpdate,
        now: UnixTime,
    ) -> Result<bool, StoreError>;
    async fn charge(&self, id: &str) -> Result<Option<Charge>, StoreError>;
    async fn charge_by_pay_token(&self, token: &str) -> Result<Option<Charge>, StoreError>;
    /// The charge Stripe's PaymentIntent `pi` paid, if it is one of callgate's overage charges.
    async fn charge_by_payment_intent(&self, pi: &str) -> Result<Option<Charge>, StoreError>;
    /// Moves a charge to `to` if it is in one of `from`; the updated charge if it moved.
    async fn set_charge_state(
        &self,
        id: &str,
        from: &[ChargeState],
        to: ChargeState,
        now: UnixTime,
    ) -> Result<Option<Charge>, StoreError>;
    /// Marks a charge paid after the customer completed it on-session (from `from` states).
    async fn charge_paid(
        &self,
        id: &str,
        payment_intent: &str,
        now: UnixTime,
    ) -> Result<bool, StoreError>;
    /// Cancels an order's charges not yet paid (refund or dispute); returns how many.
    async fn cancel_open_charges(&self, order_id: &str, now: UnixTime) -> Result<u64, StoreError>;
    /// How many charges are in each state (every state listed, zeros included).
    async fn count_charges_by_state(&self) -> Result<Vec<(ChargeState, i64)>, StoreError>;
    /// Adds to an order's allowance (an operator's goodwill); `None` if there is no such order.
    async fn add_seconds_included(
        &self,
        order_id: &str,
        seconds: Seconds,
        now: UnixTime,
    ) -> Result<Option<Order>, StoreError>;
    /// Queues a declined, requires_action or failed charge again, due now with its attempts
    /// reset; `new_key` moves it to the next idempotency key generation. `None` if the charge
    /// is in no such state (already paid, pending, canceled) or does not exist.
    async fn retry_charge(
        &self,
        id: &str,
        new_key: bool,
        now: UnixTime,
    ) -> Result<Option<Charge>, StoreError>;
    /// Suspends (`Some(reason)`) or resumes (`None`) overage on an order.
    async fn set_overage_blocked(
        &self,
        order_id: &str,
        reason: Option<OverageBlock>,
        now: UnixTime,
    ) -> Result<(), StoreError>;
    /// An order's charges, oldest first.
    async fn charges_for_order(&self, order_id: &str) -> Result<Vec<Charge>, StoreError>;
    /// Newest first, optionally only those in one state.
    async fn list_charges(
        &self,
        state: Option<ChargeState>,
        limit: i64,
    ) -> Result<Vec<Charge>, StoreError>;

    /// Marks a webhook event processed; `false` if it had been already.
    async fn record_event(&self, id: &str, kind: &str, now: UnixTime) -> Result<bool, StoreError>;
    async fn event_seen(&self, id: &str) -> Result<bool, StoreError>;

    /// Records attempts, several in one write where the engine allows (the voice webhooks'
    /// attempts are grouped by [`crate::menu::attempts::AttemptLog`]).
    async fn record_attempts(&self, attempts: &[CodeAttempt]) -> Result<(), StoreError>;
    async fn record_attempt(&self, attempt: &CodeAttempt) -> Result<(), StoreError> {
        self.record_attempts(std::slice::from_ref(attempt)).await
    }
    /// The call, the failures and the order a code check reads. The SQL backends answer in
    /// one statement; this composition of the single reads is what it must equal.
    async fn code_check(&self, q: &CodeCheckQuery<'_>) -> Result<CodeCheckFacts, StoreError> {
        let code_failures = async {
            match q.code_hash {
                Some(h) => {
                    self.count_failures(AttemptScope::Code(h), q.since, q.code_up_to)
                        .await
                }
                None => Ok(0),
            }
        };
        let order = async {
            match q.code_hash {
                Some(h) => self.order_by_code(h).await,
                None => Ok(None),
            }
        };
        let (call, caller_failures, code_failures, order) = tokio::try_join!(
            self.call(q.call_sid),
            self.count_failures(AttemptScope::Caller(q.caller), q.since, q.caller_up_to),
            code_failures,
            order,
        )?;
        Ok(CodeCheckFacts {
            call_known: call.is_some(),
            caller_failures,
            code_failures,
            order,
        })
    }
    /// Failed attempts in the scope at or after `since`, counted up to `up_to` (a larger
    /// count reads as `up_to`). The throttles only ask whether a limit is reached, so the
    /// count stops there: its cost is bounded by the limit, not by the attempts stored for a
    /// code or a caller, which an attacker can pile up.
    async fn count_failures(
        &self,
        scope: AttemptScope<'_>,
        since: UnixTime,
        up_to: i64,
    ) -> Result<i64, StoreError>;
    /// Forgets attempts older than `before`; returns how many.
    async fn prune_attempts(&self, before: UnixTime) -> Result<u64, StoreError>;

    /// Whether `from` opened an earlier call (not `except_call`) on a code: on `order_id`'s
    /// code when given, else on any. Such a caller is still admitted while code entry is
    /// paused for everyone else (see `voice::flow`).
    async fn caller_has_used_code(
        &self,
        from: &str,
        order_id: Option<&str>,
        except_call: &str,
    ) -> Result<bool, StoreError>;

    /// Pending orders (PaymentIntents never paid) created before `before`, oldest first.
    async fn stale_pending_orders(
        &self,
        before: UnixTime,
        limit: i64,
    ) -> Result<Vec<Order>, StoreError>;

    /// Deletes an order if it is still pending; `false` if it was paid (or gone) meanwhile.
    async fn delete_pending_order(&self, id: &str) -> Result<bool, StoreError>;
}

/// A shared handle to whichever backend the configuration names.
pub type DynStore = Arc<dyn Store>;

/// Opens the configured backend (without migrating).
pub async fn open(db: &DatabaseConfig) -> Result<DynStore, StoreError> {
    match db {
        #[cfg(feature = "sqlite")]
        DatabaseConfig::Sqlite { path } => Ok(Arc::new(SqliteStore::open(path).await?)),
        #[cfg(feature = "postgres")]
        DatabaseConfig::Postgres { url } => Ok(Arc::new(PostgresStore::open(url.expose()).await?)),
        #[cfg(feature = "mongodb")]
        DatabaseConfig::Mongo { uri } => Ok(Arc::new(MongoStore::open(uri.expose()).await?)),
        #[allow(unreachable_patterns)]
        other => Err(StoreError::NotBuilt(other.engine())),
    }
}

/// A fresh random identifier such as `ord_3f9c...`: 80 bits, hex.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", crate::crypto::random_hex(10))
}

/// Maps a driver error onto the store's categories.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn classify(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(db.message().to_string())
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
            StoreError::Unavailable(e.to_string())
        }
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
            StoreError::Corrupt(e.to_string())
        }
        _ => StoreError::Database(e.to_string()),
    }
}

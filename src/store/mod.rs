//! The storage interface: one trait per aggregate (orders, calls with their holds and tokens,
//! charges, code attempts, webhook events), each beside its record types; [`Store`] is their
//! sum. One implementation per engine, each split the same way: `sql/` (SQLite and
//! PostgreSQL), `sqlite/`, `postgres.rs`, `mongo/`. An engine stores and compares-and-sets; the
//! rules it applies are `domain`'s.
//!
//! Every backend passes the same conformance suite (`tests/store_conformance.rs`). Methods
//! that can race (fulfilment, charge creation, claims) are single atomic statements or
//! transactions, so the outcome is the same whatever the interleaving.

use std::sync::Arc;

use crate::config::DatabaseConfig;
use async_trait::async_trait;

pub(crate) mod attempts;
mod audit;
mod callers;
mod calls;
mod charges;
mod entries;
mod events;
mod instances;
mod listing;
mod messages;
mod money;
mod orders;
mod reports;

#[cfg(feature = "mongodb")]
mod mongo;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "mongodb")]
pub use mongo::MongoStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

/// Unix time in whole seconds, from one clock.
pub use crate::domain::call::{Call, CallState, EndReason, Refusal, Speaker, TwilioStatus};
pub use crate::domain::charge::{ChargeState, OverageBlock};
pub use crate::domain::clock::UnixTime;
pub use crate::domain::codes::StoredCode;
pub use crate::domain::money::{Cents, Currency, Rounding, Seconds};
pub use crate::domain::order::{Order, OrderSource, OrderStatus};

pub use crate::domain::entry::{Balance, Entry, EntryKind};
pub use crate::domain::message::{Channel, Message, MessageKind, MessageState};
pub use attempts::{
    AttemptGroup, AttemptScope, AttemptStore, CodeAttempt, CodeCheckFacts, CodeCheckQuery, SlotWant,
};
pub use audit::{AuditAction, AuditEntry, AuditResult, AuditStore};
pub use callers::{CallerStore, RememberedCaller};
pub use calls::{
    CallStore, EndCall, Hold, NewCall, Settlement, StreamGrant, StreamOpening, StreamToken,
    TokenIssue, TranscriptLine,
};
pub use charges::{Charge, ChargeStore, ChargeUpdate, NewCharge};
pub use entries::{EntryStore, Recorded};
pub use events::EventStore;
pub use instances::{Instance, InstanceStore, Signals};
pub use listing::{Cursor, Listing};
pub use messages::{MessageStore, NewMessage, SendOutcome};
pub use orders::{Fulfilled, Fulfilment, NewOrder, OrderStore, PlanTotal};
pub use reports::{ConversationReport, ReportStore};

/// The aggregates' traits, for calling a store's methods: `use crate::store::prelude::*`.
pub mod prelude {
    pub use super::{
        AttemptStore, AuditStore, CallStore, CallerStore, ChargeStore, EntryStore, EventStore,
        InstanceStore, MessageStore, OrderStore, ReportStore, Signals, Store,
    };
}

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

/// A sum over one UTC day: `day` counts days since 1970-01-01 (`t / 86_400`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayTotal {
    pub day: i64,
    pub total: i64,
}

impl DayTotal {
    /// The day `t` falls on.
    pub fn day_of(t: UnixTime) -> i64 {
        t.div_euclid(86_400)
    }
}

/// The storage interface every backend implements: the sum of one trait per aggregate.
/// Callers name the aggregate's trait (`use crate::store::prelude::*` brings them all).
#[async_trait]
pub trait Store:
    OrderStore
    + CallStore
    + ChargeStore
    + AttemptStore
    + EventStore
    + CallerStore
    + EntryStore
    + MessageStore
    + ReportStore
    + InstanceStore
    + AuditStore
    + Signals
    + Send
    + Sync
    + 'static
{
    /// "sqlite", "postgres" or "mongodb".
    fn backend(&self) -> &'static str;

    /// Brings the schema up to date (embedded migrations; idempotent).
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Succeeds when the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// The call, the failures, the order and the caller's remembered order a code check
    /// reads. The SQL backends answer in one statement; this composition of the single reads
    /// is what it must equal.
    async fn code_check(&self, q: &CodeCheckQuery<'_>) -> Result<CodeCheckFacts, StoreError> {
        let code_failures = async {
            match q.code_hash {
                Some(h) => {
                    self.count_failures_written(
                        AttemptScope::Code(h),
                        q.since,
                        q.code_up_to,
                        q.written_up_to,
                    )
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
        let (call, caller_failures, code_failures, order, remembered) = tokio::try_join!(
            self.call(q.call_sid),
            self.count_failures_written(
                AttemptScope::Caller(q.caller),
                q.since,
                q.caller_up_to,
                q.written_up_to
            ),
            code_failures,
            order,
            self.remembered_order(q.caller),
        )?;
        Ok(CodeCheckFacts {
            call_known: call.is_some(),
            caller_failures,
            code_failures,
            order,
            remembered_order_id: remembered.map(|o| o.id),
        })
    }

    /// The code check's reads and the wrong-code gate's slots for `wants` (taken at `now`, an
    /// hour after `q.since`; see [`AttemptStore::take_slots`]) in one step, for the attempt
    /// about to be judged. PostgreSQL answers in one statement; this composition of the two
    /// is what it must equal. The slots are taken whatever the facts say: a caller that then
    /// refuses the attempt gives them back.
    async fn check_and_take(
        &self,
        q: &CodeCheckQuery<'_>,
        wants: &[SlotWant<'_>],
        now: UnixTime,
    ) -> Result<(CodeCheckFacts, Vec<Option<i64>>), StoreError> {
        check_then_take(self, q, wants, now).await
    }
}

/// [`Store::check_and_take`] as two steps at once: the code check, and the slots taken.
pub(crate) async fn check_then_take<S: Store + ?Sized>(
    store: &S,
    q: &CodeCheckQuery<'_>,
    wants: &[SlotWant<'_>],
    now: UnixTime,
) -> Result<(CodeCheckFacts, Vec<Option<i64>>), StoreError> {
    tokio::try_join!(store.code_check(q), store.take_slots(wants, q.since, now))
}

/// A shared handle to whichever backend the configuration names.
pub type DynStore = Arc<dyn Store>;

/// Opens the configured backend (without migrating).
pub async fn open(db: &DatabaseConfig) -> Result<DynStore, StoreError> {
    match db {
        #[cfg(feature = "sqlite")]
        DatabaseConfig::Sqlite { path } => Ok(Arc::new(SqliteStore::open(path).await?)),
        #[cfg(feature = "postgres")]
        DatabaseConfig::Postgres { url, connections } => Ok(Arc::new(
            PostgresStore::open(url.expose(), *connections).await?,
        )),
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

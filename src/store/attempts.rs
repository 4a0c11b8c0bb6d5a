//! Codes typed at the phone menu, and the failure counts the throttles read.

use async_trait::async_trait;

use super::{Order, StoreError, UnixTime};

/// One code typed at the phone menu.
#[derive(Debug, Clone)]
pub struct CodeAttempt {
    pub caller: String,
    /// The keyed hash of the digits typed (never the digits).
    pub code_hash: String,
    pub ok: bool,
    pub at: UnixTime,
}

/// A group of attempts written together by one process's attempt writer (`writer`, drawn at
/// random when the process starts), numbered from 1 in the order its groups are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptGroup {
    pub writer: i64,
    pub number: i64,
}

impl AttemptGroup {
    /// The `writer` and `batch` columns for `group` (both NULL for attempts written outside
    /// a group, and for a count that leaves none out).
    pub fn columns(group: Option<AttemptGroup>) -> (Option<i64>, Option<i64>) {
        (group.map(|g| g.writer), group.map(|g| g.number))
    }
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
    /// The caller's failures are counted up to this many (see [`AttemptStore::count_failures`]).
    pub caller_up_to: i64,
    /// The code's failures are counted up to this many.
    pub code_up_to: i64,
    /// Attempts left out of the counts: the groups of this writer numbered above this one
    /// (its attempt log counts them from memory).
    pub written_up_to: Option<AttemptGroup>,
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
    /// The order the caller's number is remembered for, if it is.
    pub remembered_order_id: Option<String>,
}

/// Code attempts: recorded in groups, counted up to a limit, pruned.
#[async_trait]
pub trait AttemptStore: Send + Sync {
    /// Records attempts, several in one write where the engine allows (the voice webhooks'
    /// attempts are grouped by [`crate::write_behind::attempts::AttemptLog`]), marked with
    /// their group when they are one.
    async fn record_group(
        &self,
        attempts: &[CodeAttempt],
        group: Option<AttemptGroup>,
    ) -> Result<(), StoreError>;

    async fn record_attempts(&self, attempts: &[CodeAttempt]) -> Result<(), StoreError> {
        self.record_group(attempts, None).await
    }

    async fn record_attempt(&self, attempt: &CodeAttempt) -> Result<(), StoreError> {
        self.record_attempts(std::slice::from_ref(attempt)).await
    }

    /// Failed attempts in the scope at or after `since`, counted up to `up_to` (a larger
    /// count reads as `up_to`), leaving out the groups of `written_up_to`'s writer numbered
    /// above it. The throttles only ask whether a limit is reached, so the count stops there:
    /// its cost is bounded by the limit, not by the attempts stored for a code or a caller,
    /// which an attacker can pile up.
    async fn count_failures_written(
        &self,
        scope: AttemptScope<'_>,
        since: UnixTime,
        up_to: i64,
        written_up_to: Option<AttemptGroup>,
    ) -> Result<i64, StoreError>;

    /// Every stored failed attempt in the scope at or after `since`, counted up to `up_to`.
    async fn count_failures(
        &self,
        scope: AttemptScope<'_>,
        since: UnixTime,
        up_to: i64,
    ) -> Result<i64, StoreError> {
        self.count_failures_written(scope, since, up_to, None).await
    }

    /// Forgets attempts older than `before`; returns how many. Slots whose every failure is
    /// older go too.
    async fn prune_attempts(&self, before: UnixTime) -> Result<u64, StoreError>;

    /// Takes one of the `limit` slots of each wanted key for an attempt at `now`, the limits'
    /// exact gate across instances: a slot is free when it was never taken, or last taken
    /// before `since`. A compare-and-set per key: two takers never share a slot, so however
    /// many attempts arrive at once, at most `limit` hold one. Each key's slot number, or
    /// `None` when all of its slots are taken (the keys are independent: a full one does not
    /// stop the others). The keys are distinct.
    async fn take_slots(
        &self,
        wants: &[SlotWant<'_>],
        since: UnixTime,
        now: UnixTime,
    ) -> Result<Vec<Option<i64>>, StoreError>;

    /// Frees each slot (a key and a slot number; the attempt it was taken for was right).
    async fn free_slots(&self, slots: &[(String, i64)]) -> Result<(), StoreError>;
}

/// A key whose slot an attempt wants, and how many slots the key has.
#[derive(Debug, Clone, Copy)]
pub struct SlotWant<'a> {
    pub key: &'a str,
    pub limit: i64,
}

/// How often a slot is sought again after another taker won the race for it (each lost race
/// means a slot changed hands, so a few suffice).
pub(crate) const SLOT_TRIES: usize = 16;

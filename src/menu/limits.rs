//! The wrong-code limits' exact gate. Before the digits are judged, the attempt takes a slot
//! of its caller's limit, and of its code's, in the store (`AttemptStore::take_slots`, a
//! compare-and-set per key), in the round trip that reads the code check's facts
//! (`Store::check_and_take`; while code entry is paused for everyone, the facts are read
//! alone). However many attempts arrive at once, on however many instances, no more are
//! judged than the limits allow. A right code gives its slots back; a wrong one keeps them
//! until they age out of the hour, and one refused before judging gives them back at once.

use super::answer::FAILURES_PER_CODE_PER_HOUR;
use crate::store::{CodeCheckFacts, CodeCheckQuery, SlotWant, StoreError, UnixTime};
use crate::App;

/// What the gate let through.
#[derive(Debug, Default)]
pub(super) struct Taken {
    slots: Vec<(String, i64)>,
}

/// The gate's answer for one attempt.
#[derive(Debug)]
pub(super) enum Gate {
    /// Judge the digits.
    Open(Taken),
    /// The caller's limit is reached: refuse, as over the limit.
    CallerFull,
    /// The code's limit is reached: the code is locked for the hour (judged wrong).
    CodeFull(Taken),
}

/// Reads what the code check needs (`query`) and takes a slot of the caller's limit and, for
/// digits that can be a code, of `query.code_hash`'s, in one round trip to the store.
pub(super) async fn check_and_take(
    app: &App,
    query: &CodeCheckQuery<'_>,
    now: UnixTime,
) -> Result<(CodeCheckFacts, Gate), StoreError> {
    let caller_key = format!("caller:{}", query.caller);
    let code_key = query.code_hash.map(|hash| format!("code:{hash}"));
    let mut wants = vec![SlotWant {
        key: &caller_key,
        limit: app.config.voice.failures_per_caller_per_hour,
    }];
    if let Some(key) = &code_key {
        wants.push(SlotWant {
            key,
            limit: FAILURES_PER_CODE_PER_HOUR,
        });
    }
    let (facts, got) = app
        .attempts
        .check_and_take(&app.store, query, &wants, now)
        .await?;
    let code = match (code_key, got.get(1).copied().flatten()) {
        (Some(key), Some(slot)) => Some((key, slot)),
        _ => None,
    };
    let Some(slot) = got.first().copied().flatten() else {
        tracing::warn!("caller over the wrong-code limit: refused");
        // Refused before the digits count: the code's slot, if taken, is not spent.
        if let Some(code) = code {
            app.store.free_slots(&[code]).await?;
        }
        return Ok((facts, Gate::CallerFull));
    };
    let mut taken = Taken {
        slots: vec![(caller_key, slot)],
    };
    let gate = match code {
        Some(code) => {
            taken.slots.push(code);
            Gate::Open(taken)
        }
        None if query.code_hash.is_some() => Gate::CodeFull(taken),
        None => Gate::Open(taken),
    };
    Ok((facts, gate))
}

/// The attempt was right: its slots are free again.
pub(super) async fn give_back(app: &App, taken: Taken) -> Result<(), StoreError> {
    app.store.free_slots(&taken.slots).await
}

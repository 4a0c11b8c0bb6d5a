//! The wrong-code limits' exact gate. The counts the menu reads first (`write_behind::attempts`)
//! refuse a caller already over a limit without a write; under it, before the digits are
//! judged, the attempt takes a slot of its caller's limit, and of its code's, in the store
//! (`AttemptStore::take_slots`, a compare-and-set per key). However many attempts arrive at once, on
//! however many instances, no more are judged than the limits allow. A right code gives its
//! slots back; a wrong one keeps them until they age out of the hour.

use super::answer::FAILURES_PER_CODE_PER_HOUR;
use crate::store::{SlotWant, StoreError, UnixTime};
use crate::App;

const HOUR: i64 = 3600;

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

/// Takes a slot of `caller`'s limit and, for digits that can be a code, of `code_hash`'s, in
/// one round trip to the store.
pub(super) async fn take(
    app: &App,
    caller: &str,
    code_hash: Option<&str>,
    now: UnixTime,
) -> Result<Gate, StoreError> {
    let since = now - HOUR;
    let caller_key = format!("caller:{caller}");
    let code_key = code_hash.map(|hash| format!("code:{hash}"));
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
    let got = app.store.take_slots(&wants, since, now).await?;
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
        return Ok(Gate::CallerFull);
    };
    let mut taken = Taken {
        slots: vec![(caller_key, slot)],
    };
    match code {
        Some(code) => taken.slots.push(code),
        None if code_hash.is_some() => return Ok(Gate::CodeFull(taken)),
        None => {}
    }
    Ok(Gate::Open(taken))
}

/// The attempt was right: its slots are free again.
pub(super) async fn give_back(app: &App, taken: Taken) -> Result<(), StoreError> {
    app.store.free_slots(&taken.slots).await
}

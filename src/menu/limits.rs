//! The wrong-code limits' exact gate. The counts the menu reads first (`write_behind::attempts`)
//! refuse a caller already over a limit without a write; under it, before the digits are
//! judged, the attempt takes a slot of its caller's limit, and of its code's, in the store
//! (`AttemptStore::take_slot`, a compare-and-set). However many attempts arrive at once, on
//! however many instances, no more are judged than the limits allow. A right code gives its
//! slots back; a wrong one keeps them until they age out of the hour.

use super::answer::FAILURES_PER_CODE_PER_HOUR;
use crate::store::{StoreError, UnixTime};
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

/// Takes a slot of `caller`'s limit and, for digits that can be a code, of `code_hash`'s.
pub(super) async fn take(
    app: &App,
    caller: &str,
    code_hash: Option<&str>,
    now: UnixTime,
) -> Result<Gate, StoreError> {
    let since = now - HOUR;
    let caller_key = format!("caller:{caller}");
    let limit = app.config.voice.failures_per_caller_per_hour;
    let Some(slot) = app.store.take_slot(&caller_key, limit, since, now).await? else {
        tracing::warn!("caller over the wrong-code limit: refused");
        return Ok(Gate::CallerFull);
    };
    let mut taken = Taken {
        slots: vec![(caller_key, slot)],
    };
    if let Some(hash) = code_hash {
        let code_key = format!("code:{hash}");
        match app
            .store
            .take_slot(&code_key, FAILURES_PER_CODE_PER_HOUR, since, now)
            .await?
        {
            Some(slot) => taken.slots.push((code_key, slot)),
            None => return Ok(Gate::CodeFull(taken)),
        }
    }
    Ok(Gate::Open(taken))
}

/// The attempt was right: its slots are free again.
pub(super) async fn give_back(app: &App, taken: Taken) -> Result<(), StoreError> {
    for (key, slot) in taken.slots {
        app.store.free_slot(&key, slot).await?;
    }
    Ok(())
}

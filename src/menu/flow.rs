//! The call flow, as one state machine: greeting -> code entry (up to 3 tries) -> connect,
//! with every way out of it. Each function answers the TwiML for one step.
//!
//! Rules:
//! - Three wrong codes in one call end the call.
//! - Across calls, wrong codes are counted in the database per caller number, per code typed
//!   and for everyone; past a limit the menu refuses before looking at the code. The caller's
//!   and the code's limits are exact under concurrent attempts (`limits`).
//! - One live call per code: a second call with a code that is in use hears so and is ended.
//!   The hold lapses by itself after the longest possible call, should Twilio's end-of-call
//!   callback never arrive.

use tracing::Instrument;

use super::answer::{
    apology, farewell, judge, new_call, refusal, speech, Verdict, FAILURES_PER_CODE_PER_HOUR,
};
use super::limits::{self, Gate};
use super::returning;
use crate::domain::call::{EndReason, Farewell};
use crate::domain::codes::AccessCode;
use crate::domain::money::Seconds;
use crate::domain::prompt::Prompt;
use crate::store::{
    AttemptScope, CodeAttempt, CodeCheckQuery, EndCall, NewCall, Order, StoreError,
};
use crate::telemetry::call_span;
use crate::telephony::twilio::twiml::{Gather, Speech, Twiml};
use crate::telephony::twilio::webhook::{StatusCallback, VoiceRequest};
use crate::telephony::twilio::{CODE_PATH, TRANSFER_ENDED_PATH};
use crate::App;

/// Wrong codes allowed in one call.
pub const TRIES_PER_CALL: u32 = 3;
/// Seconds the caller has to type each digit before Twilio gives up on the Gather.
const GATHER_TIMEOUT_SECS: u32 = 8;
const HOUR: i64 = 3600;

/// A keypad prompt for try `attempt`, then one re-prompt, then goodbye.
fn ask_for_code(app: &App, lead: &[Prompt], attempt: u32) -> String {
    let gather = Gather {
        action: app.public_url(&format!("{CODE_PATH}?try={attempt}")),
        num_digits: app.config.access_code_digits,
        timeout_secs: GATHER_TIMEOUT_SECS,
    };
    let mut first: Vec<Speech> = lead.iter().map(|p| speech(app, *p)).collect();
    first.push(speech(app, Prompt::EnterCode));
    let first_refs: Vec<&Speech> = first.iter().collect();
    let again = speech(app, Prompt::EnterCode);
    Twiml::new()
        .gather(&gather, &first_refs)
        .gather(&gather, &[&again])
        .speak(&speech(app, Prompt::NoInput))
        .speak(&speech(app, Prompt::Goodbye))
        .hangup()
        .finish()
}

/// The digits of a code entry: what earlier Gathers of this try collected (`sofar`), then the
/// digits of this one; or this one's alone when they are a whole code (the caller started
/// over). Keypad noise (`*`, `#`, spaces) is dropped, so it never costs a try.
fn keyed_digits(sofar: &str, digits: &str, want: usize) -> String {
    let new: String = digits
        .chars()
        .filter(char::is_ascii_digit)
        .take(64)
        .collect();
    if new.len() >= want {
        return new;
    }
    let sofar = sofar.chars().filter(char::is_ascii_digit).take(want);
    sofar.chain(new.chars()).take(64).collect()
}

/// Asks for the rest of a code the caller paused in: a Gather for the missing digits, whose
/// action carries the digits so far (signed by Twilio with the URL; never logged).
fn ask_for_rest(app: &App, attempt: u32, sofar: &str) -> String {
    let want = app.config.access_code_digits;
    let gather = Gather {
        action: app.public_url(&format!("{CODE_PATH}?try={attempt}&sofar={sofar}")),
        num_digits: want.saturating_sub(sofar.len()).max(1),
        timeout_secs: GATHER_TIMEOUT_SECS,
    };
    Twiml::new()
        .gather(&gather, &[&speech(app, Prompt::CodeRest)])
        .speak(&speech(app, Prompt::NoInput))
        .speak(&speech(app, Prompt::Goodbye))
        .hangup()
        .finish()
}

/// The answer to a voice webhook without a usable `CallSid`.
pub fn no_call(app: &App) -> String {
    farewell(app, &[Prompt::AgentUnavailable])
}
/// Step 1: the call arrives. Greeting at once, inside the Gather so digits can come early.
pub async fn incoming(app: &App, req: &VoiceRequest) -> String {
    let call = new_call(app, req);
    async {
        if app.lifecycle.draining() {
            tracing::info!("draining: new call turned away");
            return farewell(app, &[Prompt::AgentUnavailable, Prompt::Goodbye]);
        }
        // Independent: recorded and read at once. The call's row is written behind the
        // answer (see `arrivals`); the code check writes it if it is not there yet.
        let (stored, mine) = tokio::join!(
            app.arrivals.record(&app.store, call.clone()),
            app.attempts.failures(
                &app.store,
                AttemptScope::Caller(&call.from_number),
                call.now - HOUR,
                app.config.voice.failures_per_caller_per_hour,
            )
        );
        if let Err(e) = stored {
            return apology(app, &e);
        }
        let throttle = match mine {
            Ok(mine) => crate::orders::code_entry_refused(app, mine).await,
            Err(e) => Err(e),
        };
        // A number that opened a call on a code before may still type it: its code alone
        // will be admitted (see `code_step`).
        let throttle = match throttle {
            Ok(true) => app
                .store
                .caller_has_used_code(&call.from_number, None, &call.call_sid)
                .await
                .map(|known| !known),
            other => other,
        };
        match throttle {
            Ok(true) => farewell(app, &[Prompt::TryLater, Prompt::Goodbye]),
            Ok(false) => match returning::recognised(app, req, &call).await {
                Ok(Some(twiml)) => twiml,
                Ok(None) => {
                    tracing::info!("call answered");
                    ask_for_code(app, &[Prompt::Greeting], 1)
                }
                Err(e) => apology(app, &e),
            },
            Err(e) => apology(app, &e),
        }
    }
    .instrument(call_span(&call.call_sid))
    .await
}

/// Step 2: the Gather posts the digits.
pub async fn code(app: &App, req: &VoiceRequest, attempt: u32, sofar: &str) -> String {
    let call = new_call(app, req);
    match code_step(app, req, &call, attempt, sofar)
        .instrument(call_span(&call.call_sid))
        .await
    {
        Ok(twiml) => twiml,
        Err(e) => apology(app, &e),
    }
}

async fn code_step(
    app: &App,
    req: &VoiceRequest,
    call: &NewCall,
    attempt: u32,
    sofar: &str,
) -> Result<String, StoreError> {
    let attempt = attempt.clamp(1, TRIES_PER_CALL);
    if app.lifecycle.draining() {
        return Ok(farewell(app, &[Prompt::AgentUnavailable, Prompt::Goodbye]));
    }
    let want = app.config.access_code_digits;
    let typed = keyed_digits(sofar, req.digits.as_deref().unwrap_or_default(), want);
    let typed = typed.as_str();
    if typed.is_empty() {
        // Only keypad noise (`*`, `#`): not a try.
        return Ok(ask_for_code(app, &[], attempt));
    }
    let complete = typed.len() >= want;
    let well_formed = AccessCode::parse(typed).is_ok();
    if !complete && !well_formed {
        // Too short to be any code: the caller paused. Not a try; ask for the rest.
        return Ok(ask_for_rest(app, attempt, typed));
    }
    let hash = app.vault.fingerprint_digits(typed);
    let query = CodeCheckQuery {
        call_sid: &call.call_sid,
        caller: &call.from_number,
        code_hash: well_formed.then_some(hash.as_str()),
        since: call.now - HOUR,
        caller_up_to: app.config.voice.failures_per_caller_per_hour,
        code_up_to: FAILURES_PER_CODE_PER_HOUR,
        // Filled in by the attempt log, which knows what it has not written yet.
        written_up_to: None,
    };
    // Everything to judge the digits read, and the attempt's slots of the exact gate (see
    // `limits`) taken, in one round trip; while code entry is paused for everyone, only read.
    let paused = crate::orders::code_entry_paused(app).await?;
    let (facts, mut gate) = if paused {
        (app.attempts.code_check(&app.store, &query).await?, None)
    } else {
        let (facts, gate) = limits::check_and_take(app, &query, call.now).await?;
        (facts, Some(gate))
    };
    let (caller_failures, code_failures) = (facts.caller_failures, facts.code_failures);
    let remembered = facts.remembered_order_id.clone();
    // The incoming webhook stored the call; a write only if it did not (a lost request).
    if !facts.call_known {
        app.store.upsert_call(call).await?;
    }
    let refused = paused
        || matches!(gate, Some(Gate::CallerFull))
        || crate::orders::caller_over_limit(app, caller_failures);
    if refused {
        // Refused before the digits count: slots taken are not spent.
        if let Some(Gate::Open(taken) | Gate::CodeFull(taken)) = gate.take() {
            limits::give_back(app, taken).await?;
        }
        // During a pause (everyone's, or this number's after a spoofer's guesses) a caller is
        // still admitted with a code their number has opened a call on before. Any other
        // digits hear the same refusal, so a guesser learns nothing.
        let known = match &facts.order {
            Some(order) => {
                app.store
                    .caller_has_used_code(&call.from_number, Some(&order.id), &call.call_sid)
                    .await?
            }
            None => false,
        };
        if !known {
            return Ok(farewell(app, &[Prompt::TryLater, Prompt::Goodbye]));
        }
        tracing::info!("paused code entry: admitting this number's own code");
    }
    if !complete && facts.order.is_none() {
        // Shorter than a code, and no shorter (imported) code either: most likely a pause.
        // Counted for the throttles (a guess at a short code is still a guess), but not as
        // one of this call's tries; the rest of the code completes it.
        app.attempts
            .record(
                &app.store,
                CodeAttempt {
                    caller: call.from_number.clone(),
                    code_hash: hash,
                    ok: false,
                    at: call.now,
                },
            )
            .await?;
        return Ok(ask_for_rest(app, attempt, typed));
    }
    // A code whose own limit is reached is judged locked, as past its counted failures.
    let code_failures = match gate {
        Some(Gate::CodeFull(_)) => code_failures.max(FAILURES_PER_CODE_PER_HOUR),
        _ => code_failures,
    };
    let typed_order = facts.order.as_ref().map(|o| o.id.clone());
    let verdict = match facts.order {
        Some(order) => judge(app, code_failures, order, call).await?,
        None => Verdict::Wrong,
    };
    // A code that matched an order it cannot open: the console says what the caller heard,
    // and which order's code it was.
    if let (Some(why), Some(order_id)) = (verdict.refusal(), &typed_order) {
        app.store
            .record_refusal(&call.call_sid, order_id, why, call.now)
            .await?;
    }
    let ok = !matches!(verdict, Verdict::Wrong | Verdict::Revoked);
    if ok {
        if let Some(Gate::Open(taken) | Gate::CodeFull(taken)) = gate {
            limits::give_back(app, taken).await?;
        }
    }
    let typed = CodeAttempt {
        caller: call.from_number.clone(),
        code_hash: hash,
        ok,
        at: call.now,
    };
    app.attempts.record(&app.store, typed).await?;
    let twiml = match verdict {
        Verdict::Connect(order, token) => {
            return Ok(returning::connect_after_code(
                app,
                req,
                call,
                &order,
                &token,
                remembered.as_deref(),
            ))
        }
        Verdict::Wrong if attempt >= TRIES_PER_CALL => {
            tracing::info!(attempt, "wrong code: last try, ending the call");
            farewell(app, &[Prompt::TooManyAttempts, Prompt::Goodbye])
        }
        Verdict::Wrong => {
            tracing::info!(attempt, "wrong code");
            ask_for_code(app, &[Prompt::InvalidCode], attempt + 1)
        }
        refused => refusal(app, refused),
    };
    Ok(twiml)
}

/// After the media stream closes: the closing words depend on why it closed.
pub async fn after_stream(app: &App, req: &VoiceRequest) -> String {
    let reason = match app.store.call(req.call_sid.as_str()).await {
        Ok(Some(call)) => {
            // Twilio moved on: a bridge that has not ended may have died with its instance.
            if let Err(e) = crate::liveness::twilio_moved_on(app, &call).await {
                tracing::warn!(error = %e, "cannot cut the hold of a bridge that did not end");
            }
            call.end_reason
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read call after stream");
            None
        }
    };
    let prompts: &[Prompt] = match reason.map(EndReason::farewell) {
        Some(Farewell::Transfer) => return transfer(app, req).await,
        Some(Farewell::TimeUp) => &[Prompt::TimeUp, Prompt::Goodbye],
        Some(Farewell::AgentUnavailable) => &[Prompt::AgentUnavailable, Prompt::Goodbye],
        Some(Farewell::CodeRevoked) => &[Prompt::CodeRevoked, Prompt::Goodbye],
        Some(Farewell::Goodbye) | None => &[Prompt::Goodbye],
        Some(Farewell::Silent) => &[],
    };
    farewell(app, prompts)
}

/// The caller pressed `0`: dial the operator. With `TRANSFER_METERED` the time with them is
/// limited to the code's included minutes left and taken from them when Twilio reports it
/// ([`transfer_ended`]); otherwise it is free.
async fn transfer(app: &App, req: &VoiceRequest) -> String {
    let Some(number) = app.config.voice.operator_number.as_deref() else {
        return farewell(app, &[Prompt::Goodbye]);
    };
    if !app.config.voice.transfer_metered {
        return Twiml::new()
            .speak(&speech(app, Prompt::Transferring))
            .dial(number, None, None)
            .hangup()
            .finish();
    }
    let left = match order_of_call(app, req.call_sid.as_str()).await {
        Ok(Some(order)) => order.seconds_left().0,
        Ok(None) => 0,
        Err(e) => return apology(app, &e),
    };
    if left <= 0 {
        return farewell(app, &[Prompt::NoMinutesLeft, Prompt::Goodbye]);
    }
    let action = app.public_url(TRANSFER_ENDED_PATH);
    Twiml::new()
        .speak(&speech(app, Prompt::Transferring))
        .dial(number, Some(left), Some(&action))
        .finish()
}

/// Twilio's report that the `<Dial>` to the operator ended: with `TRANSFER_METERED`, its
/// `DialCallDuration` comes off the code's included minutes, once per call.
pub async fn transfer_ended(app: &App, req: &VoiceRequest) -> String {
    if let (true, Some(seconds)) = (app.config.voice.transfer_metered, req.dial_call_duration) {
        match order_of_call(app, req.call_sid.as_str()).await {
            Ok(Some(order)) => {
                let call_sid = req.call_sid.as_str();
                if let Err(e) =
                    crate::orders::ledger::transfer_time(app, &order, call_sid, Seconds(seconds))
                        .await
                {
                    tracing::error!(error = %e, "transfer time not recorded");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "transfer time not recorded"),
        }
    }
    Twiml::new().hangup().finish()
}

async fn order_of_call(app: &App, call_sid: &str) -> Result<Option<Order>, StoreError> {
    let Some(order_id) = app.store.call(call_sid).await?.and_then(|c| c.order_id) else {
        return Ok(None);
    };
    app.store.order(&order_id).await
}

/// Twilio's status callback: records progress, and on a final status closes the call, which
/// leaves it unsettled in the store for billing to pick up (a durable hand-over).
pub async fn status(app: &App, cb: &StatusCallback) -> Result<(), StoreError> {
    end_step(app, cb)
        .instrument(call_span(cb.call.call_sid.as_str()))
        .await
}

async fn end_step(app: &App, cb: &StatusCallback) -> Result<(), StoreError> {
    let call = new_call(app, &cb.call);
    let status = match &cb.status {
        Ok(status) => *status,
        Err(raw) => {
            tracing::warn!(
                status = %raw,
                "status callback with an unknown CallStatus: kept the call as it is"
            );
            app.store.upsert_call(&call).await?;
            return Ok(());
        }
    };
    let Some(reason) = EndReason::from_twilio(status) else {
        app.store.upsert_call(&call).await?;
        return Ok(());
    };
    let duration = match &cb.duration {
        None => None,
        Some(Ok(d)) => Some(*d),
        Some(Err(raw)) => {
            tracing::warn!(%raw, "status callback with a malformed CallDuration: ignored it");
            None
        }
    };
    let end = EndCall {
        call_sid: call.call_sid,
        from_number: call.from_number,
        to_number: call.to_number,
        twilio_status: status,
        duration,
        reason,
        now: call.now,
    };
    // Settled at once if the call is ready; otherwise the billing worker's next pass does it.
    let ended = crate::settlement::end_and_settle(app, &end).await?;
    tracing::info!(%status, duration = ?ended.twilio_duration, "call ended");
    // Its bridge, if it has not ended, may have died with its instance.
    crate::liveness::twilio_moved_on(app, &ended).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::keyed_digits;

    #[test]
    fn keypad_noise_is_dropped_and_pauses_are_joined() {
        assert_eq!(keyed_digits("", "*123456789012", 12), "123456789012");
        assert_eq!(keyed_digits("", "#*", 12), "");
        assert_eq!(keyed_digits("12345", "6789012#", 12), "123456789012");
        assert_eq!(keyed_digits("1 2*3", "4", 12), "1234");
        assert_eq!(
            keyed_digits(&"9".repeat(40), "1", 12).len(),
            13,
            "sofar is bounded"
        );
        assert_eq!(
            keyed_digits("1", "123456789012", 12),
            "123456789012",
            "started over"
        );
    }
}

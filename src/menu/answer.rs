//! What every step of the phone menu answers with: prompts spoken or played, the goodbye,
//! the judgement of an order's code for a call (holding it with a fresh stream token), and
//! the TwiML that connects the call to the agent. Used by the code entry (`flow`) and by the
//! returning callers' way in (`returning`).

use crate::domain::ledger::{self, NoOverage};
use crate::domain::money::Seconds;
use crate::domain::prompt::Prompt;
use crate::store::{
    Hold, NewCall, Order, OrderStatus, Refusal, StoreError, StreamToken, TokenIssue,
};
use crate::telephony::twilio::twiml::{Speech, Twiml};
use crate::telephony::twilio::webhook::VoiceRequest;
use crate::telephony::twilio::AFTER_STREAM_PATH;
use crate::App;

/// Wrong entries of one same code per hour before that code is locked for the hour.
pub(super) const FAILURES_PER_CODE_PER_HOUR: i64 = 5;
/// How long a stream token stays usable: Twilio opens the stream within a second or two.
const STREAM_TOKEN_TTL_SECS: i64 = 120;

pub(super) fn speech(app: &App, prompt: Prompt) -> Speech {
    match app.audio.file(prompt) {
        Some(file) => Speech::Play {
            url: app.public_url(&format!("/audio/{file}")),
        },
        None => Speech::Say {
            text: app.config.voice.text(prompt).to_string(),
            voice: app.config.voice.say_voice.clone(),
            language: app.config.voice.say_language.clone(),
        },
    }
}

/// Plays the prompts and hangs up.
pub(super) fn farewell(app: &App, prompts: &[Prompt]) -> String {
    let mut doc = Twiml::new();
    for p in prompts {
        doc = doc.speak(&speech(app, *p));
    }
    doc.hangup().finish()
}

pub(super) fn apology(app: &App, e: &StoreError) -> String {
    tracing::error!(error = %e, "call flow failed");
    farewell(app, &[Prompt::AgentUnavailable, Prompt::Goodbye])
}

pub(super) fn new_call(app: &App, req: &VoiceRequest) -> NewCall {
    NewCall {
        call_sid: req.call_sid.as_str().to_string(),
        from_number: req.from.as_str().to_string(),
        to_number: req.to.clone(),
        now: app.clock.now(),
    }
}

/// What the digits typed turned out to be.
pub(super) enum Verdict {
    Wrong,
    Revoked,
    NoMinutes,
    OverageSuspended,
    InUse,
    Unavailable,
    /// The call holds the code; its stream token was stored with the hold.
    Connect(Box<Order>, StreamToken),
}

impl Verdict {
    /// What the caller is told for a code that matched an order but may not connect.
    pub(super) fn refusal(&self) -> Option<Refusal> {
        match self {
            Verdict::Revoked => Some(Refusal::Revoked),
            Verdict::NoMinutes => Some(Refusal::NoMinutes),
            Verdict::OverageSuspended => Some(Refusal::OverageSuspended),
            Verdict::InUse => Some(Refusal::InUse),
            Verdict::Wrong | Verdict::Unavailable | Verdict::Connect(..) => None,
        }
    }
}

/// The goodbye for a code that may not connect (a wrong one is asked again by the caller of
/// this).
pub(super) fn refusal(app: &App, verdict: Verdict) -> String {
    let why = verdict
        .refusal()
        .map_or(Prompt::AgentUnavailable, Refusal::prompt);
    farewell(app, &[why, Prompt::Goodbye])
}

/// What a well-formed code that matches `order` opens, given the code's recent failures.
pub(super) async fn judge(
    app: &App,
    code_failures: i64,
    order: Order,
    call: &NewCall,
) -> Result<Verdict, StoreError> {
    // A code typed wrong too often is locked for the hour, even for its owner.
    if code_failures >= FAILURES_PER_CODE_PER_HOUR {
        tracing::warn!("code locked after repeated failures");
        return Ok(Verdict::Wrong);
    }
    tracing::Span::current().record("order_id", order.id.as_str());
    match order.status {
        OrderStatus::Paid => {}
        OrderStatus::Revoked => return Ok(Verdict::Revoked),
        OrderStatus::Pending | OrderStatus::Failed => return Ok(Verdict::Wrong),
    }
    if let Some(refused) = no_minutes(&order) {
        return Ok(refused);
    }
    if app.config.elevenlabs.is_none() {
        tracing::error!("a valid code was entered but ELEVENLABS_AGENT_ID is not set");
        return Ok(Verdict::Unavailable);
    }
    // Long enough for Twilio to open the stream; from then on the bridge renews it.
    let until = call.now + STREAM_TOKEN_TTL_SECS + ledger::HOLD_LEASE_SECS;
    // Minted only here, where the code may be held: the call holds its code and has its token
    // stored in one write. Unused (judged again below and refused), it expires unseen.
    let token = StreamToken::mint();
    let issue = TokenIssue {
        token_hash: token.hash(),
        expires_at: call.now + STREAM_TOKEN_TTL_SECS,
    };
    let mut hold = hold(app, &order.id, call, until, &issue).await?;
    if let Hold::Lapsed(holder) = &hold {
        // The call holding the code died with its instance: settle it (debiting what its
        // bridge metered, which frees the code), then try once more.
        tracing::info!(holder = %holder, "code held by a lapsed call: settling it first");
        crate::settlement::settle(app, holder).await?;
        hold = self::hold(app, &order.id, call, until, &issue).await?;
    }
    match hold {
        // Judged again on the order as it stands now that the code is ours.
        Hold::Held(order) => Ok(no_minutes(&order).unwrap_or(Verdict::Connect(order, token))),
        Hold::CallOver => {
            tracing::info!("code typed on a call that has already ended: not connected");
            Ok(Verdict::Unavailable)
        }
        Hold::InUse | Hold::Lapsed(_) => {
            tracing::info!("code already in use on another call");
            Ok(Verdict::InUse)
        }
    }
}

/// Holds the order's code for the call and stores its stream token, in one write.
async fn hold(
    app: &App,
    order_id: &str,
    call: &NewCall,
    until: i64,
    token: &TokenIssue,
) -> Result<Hold, StoreError> {
    app.store
        .hold_and_grant(order_id, &call.call_sid, until, call.now, token)
        .await
}

/// Why an order with no allowance left cannot connect, if it cannot.
fn no_minutes(order: &Order) -> Option<Verdict> {
    if order.seconds_left() > Seconds(0) {
        return None;
    }
    match ledger::overage_allowed(order) {
        Ok(()) => None,
        Err(NoOverage::Suspended) => Some(Verdict::OverageSuspended),
        Err(NoOverage::NotPaid) => Some(Verdict::Revoked),
        Err(NoOverage::NoConsent | NoOverage::NoCard) => Some(Verdict::NoMinutes),
    }
}

/// The answer that connects the call: `lead`, then its stream, with the token held with the
/// code.
pub(super) fn connect(
    app: &App,
    call: &NewCall,
    order: &Order,
    token: &StreamToken,
    lead: Twiml,
) -> String {
    tracing::info!(order_id = %order.id, "code accepted: connecting to the agent");
    lead.speak(&speech(app, Prompt::Connecting))
        .connect_stream(
            &app.stream_url(),
            &[
                ("token", token.expose()),
                ("call_sid", call.call_sid.as_str()),
            ],
        )
        .redirect(&app.public_url(AFTER_STREAM_PATH))
        .finish()
}

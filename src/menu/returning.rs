//! Returning callers: the offer, after a code is accepted, to remember the caller's number for
//! it; a remembered number's way in without the code (only when its caller ID is fully
//! attested: `domain::caller`); and forgetting the number from the menu.
//!
//! Each offer is a one-key `<Gather>` in front of the connection: no key, and Twilio goes on
//! to the stream the same document connects; a key, and the offer's action answers with the
//! connection again (the code held again by the same call, a fresh stream token).

use tracing::Instrument;

use super::answer::{self, connect, farewell, judge, new_call, speech, Verdict};
use crate::domain::caller::{self, FORGET_KEY, REMEMBER_KEY};
use crate::domain::prompt::Prompt;
use crate::store::{NewCall, Order, StoreError, StreamToken};
use crate::telemetry::call_span;
use crate::telephony::twilio::twiml::{Gather, Speech, Twiml};
use crate::telephony::twilio::webhook::{Caller, VoiceRequest};
use crate::telephony::twilio::{FORGET_PATH, REMEMBER_PATH};
use crate::App;

/// Seconds an offer waits for its key before the call goes on to the agent.
const OFFER_TIMEOUT_SECS: u32 = 3;

/// `lead`, then a one-key offer in front of the connection.
fn offer(app: &App, lead: Twiml, action: &str, prompt: Prompt) -> Twiml {
    let gather = Gather {
        action: app.public_url(action),
        num_digits: 1,
        timeout_secs: OFFER_TIMEOUT_SECS,
    };
    lead.gather(&gather, &[&speech(app, prompt)])
}

/// After a code was accepted: the connection, offering first to remember the number, when the
/// caller is a phone number not yet remembered for this code (`remembered`: the order it is
/// remembered for, read with the code check).
pub(super) fn connect_after_code(
    app: &App,
    req: &VoiceRequest,
    call: &NewCall,
    order: &Order,
    token: &StreamToken,
    remembered: Option<&str>,
) -> String {
    let offered = matches!(req.from, Caller::Number(_)) && remembered != Some(order.id.as_str());
    let lead = if offered {
        offer(app, Twiml::new(), REMEMBER_PATH, Prompt::RememberOffer)
    } else {
        Twiml::new()
    };
    connect(app, call, order, token, lead)
}

/// A call from a remembered number whose caller ID is fully attested: welcomed back, told its
/// minutes, offered to forget the number, and connected without the code. `None`: the menu
/// asks for a code as on any call (not attested, not remembered, or its code cannot connect
/// now: used up, revoked, in use).
pub(super) async fn recognised(
    app: &App,
    req: &VoiceRequest,
    call: &NewCall,
) -> Result<Option<String>, StoreError> {
    let Caller::Number(number) = &req.from else {
        return Ok(None);
    };
    if !caller::may_skip_code(true, req.stir_verstat.as_deref()) {
        return Ok(None);
    }
    let Some(order) = app.store.remembered_order(number.as_str()).await? else {
        return Ok(None);
    };
    // The hold links the call to the order: its row must be there now, not behind the answer.
    app.store.upsert_call(call).await?;
    match judge(app, 0, order, call).await? {
        Verdict::Connect(order, token) => {
            tracing::info!(order_id = %order.id, "recognised caller: no code asked");
            let welcome = Twiml::new()
                .speak(&speech(app, Prompt::WelcomeBack))
                .speak(&minutes_left(app, &order));
            let lead = offer(app, welcome, FORGET_PATH, Prompt::ForgetOffer);
            Ok(Some(connect(app, call, &order, &token, lead)))
        }
        _ => Ok(None),
    }
}

/// "You have 12 minutes left.", spoken in the prompts' voice.
fn minutes_left(app: &App, order: &Order) -> Speech {
    let left = order.seconds_left().0;
    let text = match left / 60 {
        0 if left > 0 => "You have less than a minute left.".to_string(),
        0 => "Your minutes are used up; extra minutes are charged to your card.".to_string(),
        1 => "You have 1 minute left.".to_string(),
        n => format!("You have {n} minutes left."),
    };
    Speech::Say {
        text,
        voice: app.config.voice.say_voice.clone(),
        language: app.config.voice.say_language.clone(),
    }
}

/// Which offer a key answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Offer {
    Remember,
    Forget,
}

/// The remember offer's key: `1` remembers the number for the call's code (any other key
/// nothing); either way the call goes on to the agent.
pub async fn remember(app: &App, req: &VoiceRequest) -> String {
    answer_offer(app, req, Offer::Remember).await
}

/// The forget offer's key: `9` forgets the number (any other key nothing); either way the call
/// goes on to the agent.
pub async fn forget(app: &App, req: &VoiceRequest) -> String {
    answer_offer(app, req, Offer::Forget).await
}

/// An offer answered: the call must still be live and on its code (checked before anything is
/// changed); then, when the key was the offer's, the change and its prompt; then the
/// connection, with the code held again by this call.
async fn answer_offer(app: &App, req: &VoiceRequest, offer: Offer) -> String {
    let call = new_call(app, req);
    async {
        let stored = app.store.call(&call.call_sid).await?;
        let Some(order_id) = stored.filter(|c| !c.is_over()).and_then(|c| c.order_id) else {
            return Ok(farewell(app, &[Prompt::Goodbye]));
        };
        let Some(order) = app.store.order(&order_id).await? else {
            return Ok(farewell(app, &[Prompt::AgentUnavailable, Prompt::Goodbye]));
        };
        let mut lead = Twiml::new();
        if let Caller::Number(number) = &req.from {
            let key = req.digits.as_deref();
            let done = match offer {
                Offer::Remember if key == Some(REMEMBER_KEY) => {
                    app.store
                        .remember_caller(number.as_str(), &order.id, call.now)
                        .await?;
                    Some(Prompt::Remembered)
                }
                Offer::Forget if key == Some(FORGET_KEY) => {
                    app.store.forget_caller(number.as_str(), None).await?;
                    Some(Prompt::Forgotten)
                }
                _ => None,
            };
            if let Some(done) = done {
                tracing::info!(?offer, "caller's number changed");
                lead = lead.speak(&speech(app, done));
            }
        }
        Ok::<_, StoreError>(match judge(app, 0, order, &call).await? {
            Verdict::Connect(order, token) => connect(app, &call, &order, &token, lead),
            refused => answer::refusal(app, refused),
        })
    }
    .instrument(call_span(&call.call_sid))
    .await
    .unwrap_or_else(|e| answer::apology(app, &e))
}

//! What callgate itself tells a caller during the call, and the agent with it: audio played
//! into the Twilio stream (never spoken by the agent), and the same news given to the agent
//! as a `contextual_update` so it can help the caller wrap up or go on.

use axum::extract::ws::{Message as TwMessage, WebSocket};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use crate::config::Plan;
use crate::domain::money::Cents;
use crate::domain::prompt::Prompt;
use crate::store::Order;
use crate::telephony::twilio::stream as tw;
use crate::App;

/// Plays `prompts` in turn into the call: what Twilio has queued is cleared first (the
/// agent is cut for it, as for the caller's own interruption), then each in 20 ms frames,
/// then a mark named after the last, which Twilio echoes once it has been heard.
pub async fn play(
    app: &App,
    twilio: &mut WebSocket,
    stream_sid: &str,
    prompts: &[Prompt],
) -> Result<(), axum::Error> {
    let parts: Vec<&[u8]> = prompts.iter().map(|&p| app.stream_audio.get(p)).collect();
    let last = prompts.last().map_or("prompt", |p| p.name());
    play_audio(twilio, stream_sid, &parts, last).await
}

/// Plays audio `parts` in turn (each in 20 ms frames of its own), then the mark `mark`.
pub async fn play_audio(
    twilio: &mut WebSocket,
    stream_sid: &str,
    parts: &[&[u8]],
    mark: &str,
) -> Result<(), axum::Error> {
    twilio.send(TwMessage::text(tw::clear(stream_sid))).await?;
    for part in parts {
        for frame in part.chunks(160) {
            twilio
                .send(TwMessage::text(tw::media(stream_sid, &B64.encode(frame))))
                .await?;
        }
    }
    twilio
        .send(TwMessage::text(tw::mark(stream_sid, mark)))
        .await
}

/// What `*` tells: the included minutes left ("<n> minutes left", a started minute counted
/// whole), or in paid time its price ("You are in paid time, at <d> dollars <c> cents a
/// minute"): the audio parts, the mark named after the last prompt, and the agent's words.
pub fn time_left(
    app: &App,
    order: &Order,
    included_left: i64,
    paid: bool,
) -> (Vec<Vec<u8>>, &'static str, String) {
    let audio = &app.stream_audio;
    let prompt = |p: Prompt| audio.get(p).to_vec();
    if included_left > 0 || !paid {
        let minutes = ((included_left.max(0) + 59) / 60) as u32;
        let parts = vec![audio.number(minutes), prompt(Prompt::TimeLeft)];
        let words = format!("The caller asked: about {minutes} minutes of included time are left.");
        return (parts, Prompt::TimeLeft.name(), words);
    }
    let price = order.overage_price.0.max(0);
    let unit = 10i64.pow(order.currency.decimals());
    let (major, minor) = (price / unit, price % unit);
    let mut parts = vec![prompt(Prompt::InPaidTime)];
    if major > 0 || minor == 0 {
        parts.extend([audio.number(major as u32), prompt(Prompt::CurrencyMajor)]);
    }
    if minor > 0 {
        parts.extend([audio.number(minor as u32), prompt(Prompt::CurrencyMinor)]);
    }
    parts.push(prompt(Prompt::PerMinute));
    let words = format!(
        "The caller asked: they are in paid time, at {} a minute.",
        money(order, order.overage_price)
    );
    (parts, Prompt::PerMinute.name(), words)
}

fn money(order: &Order, amount: Cents) -> String {
    order.currency.format(amount)
}

fn pack_words(order: &Order, pack: &Plan) -> String {
    format!(
        "{} more minutes for {}",
        pack.minutes_included,
        money(order, pack.price)
    )
}

/// What the agent is told at the warning before the included time ends.
pub fn warning(order: &Order, left: i64, then_paid: bool, offer: Option<&Plan>) -> String {
    let mut text = format!(
        "The caller has about {} seconds of included talk time left.",
        left
    );
    if then_paid {
        text.push_str(&format!(
            " After that the call goes on in paid time at {} a minute on their saved card.",
            money(order, order.overage_price)
        ));
    } else {
        text.push_str(" Then the call ends: help them wrap up.");
    }
    if let Some(pack) = offer {
        text.push_str(&format!(
            " They can buy {} by pressing the pound key twice on their keypad.",
            pack_words(order, pack)
        ));
    }
    text
}

/// What the agent is told when paid time starts.
pub fn paid_time(order: &Order) -> String {
    format!(
        "The caller's included time is used up; the call now goes on in paid time at {} a minute.",
        money(order, order.overage_price)
    )
}

/// What the agent is told when a top-up bought with the keys is credited.
pub fn top_up_added(order: &Order, pack: &Plan, left_secs: i64) -> String {
    format!(
        "The caller just bought {}. They now have about {} minutes of included time left.",
        pack_words(order, pack),
        (left_secs + 59) / 60
    )
}

/// What the agent is told when a top-up bought with the keys was not charged.
pub fn top_up_failed(needs_authentication: bool) -> String {
    if needs_authentication {
        "The caller tried to buy more minutes, but their bank asks them to confirm the payment \
         online; a link was sent to them. No minutes were added."
            .into()
    } else {
        "The caller tried to buy more minutes, but the purchase did not go through. No minutes \
         were added."
            .into()
    }
}

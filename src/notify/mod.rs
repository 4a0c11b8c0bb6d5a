//! Messages to customers: the receipt after a purchase (the code, the number to call, the
//! account link) by SMS and by email, and a lost code sent again to the address it first went
//! to. Each is queued in the outbox (`store::MessageStore`) in the step that decides it and
//! sent by the worker's pass, retried with backoff (`domain::message::retry_at`) when the
//! relay is down, and shown in `/admin`. A message's text is made as it is sent; no code is
//! ever stored in the outbox or written to a log.

pub mod transport;

use serde::Serialize;

use crate::domain::message::{retry_at, Address, Channel, Message, MessageKind, MessageState};
use crate::store::{new_id, NewMessage, Order, OrderStatus, SendOutcome, StoreError};
use crate::App;
use transport::SendError;

/// Messages leased per pass, and how long a lease holds.
const BATCH: i64 = 50;
const LEASE_SECS: i64 = 120;
/// Codes sent again per address per hour, at most (each code of a request counts).
pub const FINDS_PER_ADDRESS_PER_HOUR: i64 = 3;

/// Queues the purchase's receipt to each address the customer gave, once per address (a
/// replayed webhook queues nothing more), and wakes the worker.
pub async fn queue_receipts(app: &App, order: &Order, to: &[Address]) -> Result<(), StoreError> {
    for address in to {
        let message = NewMessage {
            id: format!("receipt:{}:{}:{}", order.id, address.channel, address.to),
            order_id: order.id.clone(),
            kind: MessageKind::Receipt,
            channel: address.channel,
            to: address.to.clone(),
            now: app.clock.now(),
        };
        if app.store.queue_message(&message).await? {
            tracing::info!(order_id = %order.id, channel = %address.channel, "receipt queued");
        }
    }
    if !to.is_empty() {
        app.billing_wakeup.notify_one();
    }
    Ok(())
}

/// A top-up chosen during a call needs the customer's bank to confirm it: the top-up page's
/// link goes to each address the receipt went to, once per payment and address.
pub async fn queue_top_up_link(
    app: &App,
    order_id: &str,
    payment_intent: &str,
) -> Result<(), StoreError> {
    let mut sent_to: Vec<(Channel, String)> = Vec::new();
    for m in app.store.messages_for_order(order_id).await? {
        if m.kind == MessageKind::Receipt && !sent_to.contains(&(m.channel, m.to.clone())) {
            sent_to.push((m.channel, m.to));
        }
    }
    for (channel, to) in &sent_to {
        let message = NewMessage {
            id: format!("top_up_link:{payment_intent}:{channel}:{to}"),
            order_id: order_id.to_string(),
            kind: MessageKind::TopUpLink,
            channel: *channel,
            to: to.clone(),
            now: app.clock.now(),
        };
        if app.store.queue_message(&message).await? {
            tracing::info!(%order_id, %channel, "top-up link queued");
        }
    }
    if !sent_to.is_empty() {
        app.billing_wakeup.notify_one();
    }
    Ok(())
}

/// What the find-my-code page is told: the same whatever the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Find {
    /// The codes this address received are on their way to it (or it received none).
    Accepted,
    /// Not an email address or a phone number.
    Invalid,
}

/// A lost code asked for by `raw` (an email address or a mobile number): every code whose
/// receipt went to that address is sent to it again, never shown. Beyond
/// [`FINDS_PER_ADDRESS_PER_HOUR`] codes sent again an address gets nothing more that hour; the
/// answer does not say so, nor whether the address is known.
pub async fn find_codes(app: &App, raw: &str) -> Result<Find, StoreError> {
    let Some(address) = Address::parse(raw) else {
        return Ok(Find::Invalid);
    };
    let now = app.clock.now();
    let asked = app
        .store
        .count_messages_to(&address.to, MessageKind::Codes, now - 3600)
        .await?;
    if asked >= FINDS_PER_ADDRESS_PER_HOUR {
        tracing::warn!(channel = %address.channel, "lost-code requests over the limit for one address: ignored");
        return Ok(Find::Accepted);
    }
    let orders = app
        .store
        .orders_receipted(address.channel, &address.to)
        .await?;
    for order_id in &orders {
        app.store
            .queue_message(&NewMessage {
                id: new_id("msg"),
                order_id: order_id.clone(),
                kind: MessageKind::Codes,
                channel: address.channel,
                to: address.to.clone(),
                now,
            })
            .await?;
    }
    tracing::info!(channel = %address.channel, codes = orders.len(), "lost codes asked for");
    if !orders.is_empty() {
        app.billing_wakeup.notify_one();
    }
    Ok(Find::Accepted)
}

/// What a pass sent.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct SendReport {
    pub sent: usize,
    pub retrying: usize,
    pub failed: usize,
}

/// Sends every message due: each leased, sent, and its outcome recorded.
pub async fn send_due(app: &App) -> Result<SendReport, StoreError> {
    let mut report = SendReport::default();
    loop {
        let now = app.clock.now();
        let batch = app
            .store
            .lease_messages(now, now + LEASE_SECS, BATCH)
            .await?;
        if batch.is_empty() {
            return Ok(report);
        }
        for message in &batch {
            let outcome = send(app, message).await?;
            match outcome {
                Ok(provider_id) => {
                    report.sent += 1;
                    let done = SendOutcome {
                        state: MessageState::Sent,
                        provider_id: provider_id.as_deref(),
                        error: None,
                        next_attempt_at: None,
                        now: app.clock.now(),
                    };
                    app.store.message_outcome(&message.id, &done).await?;
                }
                Err(e) => {
                    let now = app.clock.now();
                    let again = match &e {
                        SendError::Transient(_) => retry_at(message.tries, now),
                        SendError::Permanent(_) | SendError::NotConfigured(_) => None,
                    };
                    let why = e.to_string();
                    tracing::warn!(message_id = %message.id, channel = %message.channel, tries = message.tries, retry = again.is_some(), error = %why, "message not sent");
                    let (state, counted) = match again {
                        Some(_) => (MessageState::Pending, &mut report.retrying),
                        None => (MessageState::Failed, &mut report.failed),
                    };
                    *counted += 1;
                    let failed = SendOutcome {
                        state,
                        provider_id: None,
                        error: Some(&why),
                        next_attempt_at: again,
                        now,
                    };
                    app.store.message_outcome(&message.id, &failed).await?;
                }
            }
        }
    }
}

/// One send: the text made from the order now, then the relay.
async fn send(app: &App, m: &Message) -> Result<Result<Option<String>, SendError>, StoreError> {
    let Some(order) = app.store.order(&m.order_id).await? else {
        return Ok(Err(SendError::Permanent("its order is gone".into())));
    };
    let Some(text) = text(app, &order, m.kind) else {
        return Ok(Err(SendError::Permanent(
            "its code is no longer valid".into(),
        )));
    };
    Ok(match m.channel {
        Channel::Email => {
            transport::email(app.config.mail.as_ref(), &m.to, &text.subject, text.body)
                .await
                .map(|()| None)
        }
        Channel::Sms => {
            let callback = app.public_url(crate::telephony::twilio::SMS_STATUS_PATH);
            transport::sms(app.config.twilio.as_ref(), callback, &m.to, text.body)
                .await
                .map(Some)
        }
    })
}

/// A message's words.
struct Text {
    subject: String,
    body: String,
}

/// The words of a receipt or a lost code for `order`: `None` once the code is not valid.
fn text(app: &App, order: &Order, kind: MessageKind) -> Option<Text> {
    if order.status != OrderStatus::Paid {
        return None;
    }
    let code = crate::orders::code_of(app, order)?;
    let number = app
        .config
        .twilio
        .as_ref()
        .map(|t| t.phone_number.clone())
        .unwrap_or_else(|| "our number".into());
    let account = app.public_url(&crate::orders::account::path(app, &order.id));
    let left = order.seconds_left().0 / 60;
    let (subject, opening) = match kind {
        MessageKind::Receipt => ("Your access code", "Thank you for your purchase."),
        MessageKind::Codes => ("Your access code, again", "You asked for your code again."),
        MessageKind::TopUpLink => {
            let top_up = app.public_url(&crate::orders::account::top_up_path(app, &order.id));
            return Some(Text {
                subject: "Confirm your minutes".into(),
                body: format!(
                    "Your bank asked to confirm the minutes you chose during your call, so \
                     they were not charged. You can add them here, where your bank can ask: \
                     {top_up}\n"
                ),
            });
        }
    };
    let body = format!(
        "{opening}\n\nYour access code: {}\nCall {number} and type it on the keypad. \
         {left} minutes left.\n\nYour account (minutes, calls, payments, more minutes): {account}\n",
        code.grouped()
    );
    Some(Text {
        subject: subject.into(),
        body,
    })
}

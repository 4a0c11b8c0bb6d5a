//! Top-ups: minutes bought onto a code the customer holds. The page (reached by the account
//! link) starts a PaymentIntent for a configured pack, its metadata naming the order and the
//! minutes; the signed webhook credits them once, as the entry `top_up:<PaymentIntent>`,
//! however often or late it comes, or races the page. A refund or dispute of the top-up takes
//! back exactly its minutes (`orders::ledger::reverse_payment`), never the code.

use crate::config::Plan;
use crate::domain::entry::Entry;
use crate::domain::money::Currency;
use crate::domain::money::{Cents, Seconds};
use crate::store::{Order, OrderStatus, Recorded, StoreError};
use crate::stripe::client::{kind_param, param, Form, PaymentIntent, PaymentKind, StripeError};
use crate::stripe::intent::IntentStatus;
use crate::App;

/// Why a top-up cannot start.
#[derive(Debug, thiserror::Error)]
pub enum TopUpError {
    #[error("payments are not configured")]
    NotConfigured,
    #[error("there is no such top-up")]
    UnknownPack,
    /// An unknown order, a wrong link and an unpaid order alike.
    #[error("not found")]
    NoSuchCode,
    #[error("this code is no longer valid")]
    Revoked,
    #[error(transparent)]
    Stripe(#[from] StripeError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A top-up under way: what the browser needs to confirm it.
#[derive(Debug, Clone)]
pub struct Started {
    pub payment_intent: String,
    pub client_secret: String,
    pub pack: Plan,
}

/// The order behind an account link, if it is paid (a revoked code is told so).
pub async fn order_for_link(app: &App, order_id: &str, token: &str) -> Result<Order, TopUpError> {
    match super::account::order_for_link(app, order_id, token).await? {
        Some(order) if order.status == OrderStatus::Revoked => Err(TopUpError::Revoked),
        Some(order) => Ok(order),
        None => Err(TopUpError::NoSuchCode),
    }
}

/// Starts the PaymentIntent for `pack_id` on the order behind the link. The amount and
/// minutes come from configuration; nothing is stored until the payment succeeds.
pub async fn start(
    app: &App,
    order_id: &str,
    token: &str,
    pack_id: &str,
) -> Result<Started, TopUpError> {
    let stripe = app.stripe.as_ref().ok_or(TopUpError::NotConfigured)?;
    let pack = app
        .config
        .top_ups
        .find(pack_id)
        .ok_or(TopUpError::UnknownPack)?
        .clone();
    let order = order_for_link(app, order_id, token).await?;
    let mut form: Form = vec![
        param("amount", pack.price.0),
        param("currency", pack.currency.code()),
        param("automatic_payment_methods[enabled]", "true"),
        param(
            "description",
            format!("{} ({} more minutes)", pack.name, pack.minutes_included),
        ),
        kind_param(PaymentKind::TopUp),
        param("metadata[order_id]", &order.id),
        param("metadata[pack_id]", &pack.id),
        param("metadata[minutes]", pack.minutes_included),
    ];
    if let Some(customer) = &order.stripe_customer {
        form.push(param("customer", customer));
    }
    let pi = stripe
        .create_payment_intent(&form, &super::checkout::idempotency_key())
        .await?;
    let client_secret = pi
        .client_secret
        .clone()
        .ok_or_else(|| StripeError::Decode("payment intent without client_secret".into()))?;
    tracing::info!(order_id = %order.id, payment_intent = %pi.id, pack = %pack.id, "top-up started");
    Ok(Started {
        payment_intent: pi.id,
        client_secret,
        pack,
    })
}

/// What crediting a succeeded top-up did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credited {
    Now {
        order_id: String,
    },
    Already {
        order_id: String,
    },
    /// Its metadata names no order callgate has (or no minutes): nothing was stored.
    NoOrder,
}

/// Credits a succeeded top-up PaymentIntent to its order, once. The minutes are what the
/// server put in its metadata; the money what Stripe took.
pub async fn credit(app: &App, pi: &PaymentIntent) -> Result<Credited, StoreError> {
    let order_id = pi.metadata.get("order_id");
    let minutes = pi
        .metadata
        .get("minutes")
        .and_then(|m| m.parse::<i64>().ok());
    let currency = Currency::parse(&pi.currency);
    let (Some(order_id), Some(minutes), Some(currency)) = (order_id, minutes, currency) else {
        return Ok(Credited::NoOrder);
    };
    if pi.status != IntentStatus::Succeeded {
        return Ok(Credited::NoOrder);
    }
    let entry = Entry::top_up(
        order_id,
        &pi.id,
        Seconds::from_minutes(minutes.max(0)),
        Cents(pi.amount),
        currency,
        app.clock.now(),
    );
    let order_id = order_id.clone();
    Ok(match super::ledger::record(app, &entry).await? {
        Recorded::Now => {
            tracing::info!(order_id = %order_id, payment_intent = %pi.id, minutes, "top-up credited");
            Credited::Now { order_id }
        }
        Recorded::Already => Credited::Already { order_id },
        Recorded::NoOrder => Credited::NoOrder,
    })
}

/// Whether the top-up paid by `payment_intent` has been credited to the order.
pub async fn credited(app: &App, order_id: &str, payment_intent: &str) -> Result<bool, StoreError> {
    Ok(app
        .store
        .entry_paid_by(payment_intent)
        .await?
        .is_some_and(|e| e.order_id == order_id))
}

/// How a top-up bought during a call went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InCall {
    /// Charged and credited: this much more time.
    Added(Seconds),
    /// Charged, still processing at Stripe: its webhook credits it; the call goes on as it was.
    Processing,
    /// The card was declined.
    Declined,
    /// The bank asks the customer to confirm the payment: it is not charged (its
    /// PaymentIntent, if Stripe made one, is canceled); the customer is sent the top-up link.
    NeedsAuthentication { payment_intent: Option<String> },
    /// Not tried, or Stripe could not be reached: nothing was charged.
    Unavailable,
}

impl InCall {
    /// Whether the card can be tried again later in the call.
    pub fn card_works(&self) -> bool {
        matches!(
            self,
            InCall::Added(_) | InCall::Processing | InCall::Unavailable
        )
    }
}

/// The pack a call's `#` buys: the first configured top-up.
pub fn in_call_pack(app: &App) -> &Plan {
    app.config.top_ups.first()
}

/// Whether a call on `order` may buy a top-up with its keys: a saved card and payments.
pub fn in_call_possible(app: &App, order: &Order) -> bool {
    app.stripe.is_some()
        && order.status == OrderStatus::Paid
        && order.stripe_customer.is_some()
        && order.stripe_payment_method.is_some()
}

/// Buys one pack for the order on its saved card, off-session, during call `call_sid`: its
/// `nth` top-up, so the idempotency key (`top_up:<call>:<nth>`) makes a repeat of the same
/// purchase one charge. Credited here when Stripe says it succeeded; the webhook credits
/// the same entry otherwise (a restart in between, a slow answer), never twice.
pub async fn charge_in_call(app: &App, order_id: &str, call_sid: &str, nth: u32) -> InCall {
    match try_charge_in_call(app, order_id, call_sid, nth).await {
        Ok(outcome) => outcome,
        Err(e) => {
            tracing::warn!(error = %e, %order_id, "in-call top-up not charged");
            InCall::Unavailable
        }
    }
}

async fn try_charge_in_call(
    app: &App,
    order_id: &str,
    call_sid: &str,
    nth: u32,
) -> Result<InCall, TopUpError> {
    let stripe = app.stripe.as_ref().ok_or(TopUpError::NotConfigured)?;
    let order = app
        .store
        .order(order_id)
        .await?
        .ok_or(TopUpError::NoSuchCode)?;
    // Checked before Stripe is asked: a code revoked since the call began buys nothing.
    if order.status != OrderStatus::Paid {
        return Err(TopUpError::Revoked);
    }
    let (Some(customer), Some(payment_method)) =
        (&order.stripe_customer, &order.stripe_payment_method)
    else {
        return Ok(InCall::Unavailable);
    };
    let pack = in_call_pack(app).clone();
    let form: Form = vec![
        param("amount", pack.price.0),
        param("currency", pack.currency.code()),
        param("customer", customer),
        param("payment_method", payment_method),
        param("off_session", "true"),
        param("confirm", "true"),
        param(
            "description",
            format!(
                "{} during a call ({} more minutes)",
                pack.name, pack.minutes_included
            ),
        ),
        kind_param(PaymentKind::TopUp),
        param("metadata[order_id]", &order.id),
        param("metadata[pack_id]", &pack.id),
        param("metadata[minutes]", pack.minutes_included),
        param("metadata[call_sid]", call_sid),
    ];
    let key = format!("top_up:{call_sid}:{nth}");
    let pi = match stripe.create_payment_intent(&form, &key).await {
        Ok(pi) => pi,
        Err(StripeError::Api {
            status: 402,
            code,
            payment_intent,
            ..
        }) => {
            let needs_auth = code.as_deref() == Some("authentication_required");
            tracing::info!(order_id = %order.id, %call_sid, code = code.as_deref().unwrap_or("card_error"), "in-call top-up refused");
            if !needs_auth {
                return Ok(InCall::Declined);
            }
            return Ok(needs_authentication(app, payment_intent.map(|pi| pi.id)).await);
        }
        Err(e) => return Err(e.into()),
    };
    match pi.status {
        IntentStatus::Succeeded => {
            credit(app, &pi).await?;
            tracing::info!(order_id = %order.id, %call_sid, payment_intent = %pi.id, "in-call top-up charged");
            Ok(InCall::Added(Seconds::from_minutes(pack.minutes_included)))
        }
        IntentStatus::Processing => Ok(InCall::Processing),
        // Stripe answers 402 for this off-session; a Stripe-compatible server may return the
        // intent instead.
        IntentStatus::RequiresAction | IntentStatus::RequiresConfirmation => {
            Ok(needs_authentication(app, Some(pi.id)).await)
        }
        _ => Ok(InCall::Declined),
    }
}

/// The bank wants the customer present: the intent is canceled, so nothing is left to be
/// completed by surprise later; the customer buys on the web page, where the bank can ask.
async fn needs_authentication(app: &App, payment_intent: Option<String>) -> InCall {
    if let (Some(stripe), Some(pi)) = (app.stripe.as_ref(), payment_intent.as_deref()) {
        if let Err(e) = stripe.cancel_payment_intent(pi).await {
            tracing::warn!(error = %e, payment_intent = %pi, "in-call top-up needing authentication not canceled");
        }
    }
    InCall::NeedsAuthentication { payment_intent }
}

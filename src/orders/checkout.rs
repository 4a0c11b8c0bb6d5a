//! A purchase from the storefront: the Stripe customer (with overage consent, so the card is
//! saved for off-session use), the PaymentIntent for the configured plan, and the pending order
//! its webhook will pay; and the success page's proof that it may see an order.

use crate::crypto::constant_time_eq;
use crate::domain::money::Seconds;
use crate::store::{new_id, NewOrder, Order, OrderSource, StoreError};
use crate::stripe::client::{kind_param, param, Form, PaymentKind, StripeError};
use crate::App;

/// Why a checkout could not start, or an order could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("payments are not configured")]
    NotConfigured,
    #[error("there is no such plan")]
    UnknownPlan,
    #[error(transparent)]
    Stripe(#[from] StripeError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the customer asked for: the browser names only these, never a price or minutes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purchase {
    /// The plan's id; `None` buys the first plan (the storefront before plans, old clients).
    pub plan: Option<String>,
    pub overage_accepted: bool,
    /// Where the receipts go (checked by the route: an email address, an E.164 number).
    pub email: Option<String>,
    pub phone: Option<String>,
}

/// A checkout under way: what the browser needs to confirm the payment.
#[derive(Debug, Clone)]
pub struct Started {
    pub order: Order,
    pub payment_intent: String,
    pub client_secret: String,
}

/// SHA-256 of a client secret, hex: what the store keeps.
pub fn secret_hash(client_secret: &str) -> String {
    crate::crypto::sha256_hex(client_secret)
}

/// A fresh `Idempotency-Key` for one Stripe creation.
pub(crate) fn idempotency_key() -> String {
    format!("callgate-{}", crate::crypto::random_hex(16))
}

/// Creates the customer (with consent), the PaymentIntent for the chosen plan and the
/// pending order. The amount and minutes come from configuration, found by the plan's id.
pub async fn start(app: &App, purchase: &Purchase) -> Result<Started, CheckoutError> {
    let Some(stripe) = app.stripe.as_ref() else {
        return Err(CheckoutError::NotConfigured);
    };
    let plans = &app.config.plans;
    let plan = match purchase.plan.as_deref() {
        Some(id) => plans.find(id).ok_or(CheckoutError::UnknownPlan)?,
        None => plans.first(),
    };
    let overage = purchase.overage_accepted;
    let customer = if overage {
        let mut form: Form = vec![param("metadata[source]", "callgate")];
        if let Some(email) = &purchase.email {
            form.push(param("email", email));
        }
        Some(stripe.create_customer(&form, &idempotency_key()).await?)
    } else {
        None
    };

    let mut form: Form = vec![
        param("amount", plan.price.0),
        param("currency", plan.currency.code()),
        param("automatic_payment_methods[enabled]", "true"),
        param(
            "description",
            format!("{} ({} minutes)", plan.name, plan.minutes_included),
        ),
        kind_param(PaymentKind::Purchase),
        param("metadata[plan]", &plan.name),
        param("metadata[plan_id]", &plan.id),
        param("metadata[minutes]", plan.minutes_included),
        param("metadata[overage_consent]", overage),
        param(
            "metadata[overage_price_per_minute]",
            plan.overage_per_minute.0,
        ),
    ];
    if let Some(customer) = &customer {
        form.push(param("customer", customer));
        // Saves the card for the overage charged after the call.
        form.push(param("setup_future_usage", "off_session"));
    }
    if let Some(email) = &purchase.email {
        form.push(param("receipt_email", email));
        form.push(param("metadata[receipt_email]", email));
    }
    if let Some(phone) = &purchase.phone {
        form.push(param("metadata[receipt_phone]", phone));
    }
    let pi = stripe
        .create_payment_intent(&form, &idempotency_key())
        .await?;
    let client_secret = pi
        .client_secret
        .clone()
        .ok_or_else(|| StripeError::Decode("payment intent without client_secret".into()))?;

    let order = app
        .store
        .insert_order(&NewOrder {
            id: new_id("ord"),
            source: OrderSource::Stripe,
            plan: plan.name.clone(),
            amount: plan.price,
            currency: plan.currency.clone(),
            seconds_included: Seconds::from_minutes(plan.minutes_included),
            overage_consent: overage,
            overage_price: plan.overage_per_minute,
            stripe_payment_intent: Some(pi.id.clone()),
            stripe_customer: customer,
            stripe_payment_method: None,
            client_secret_hash: Some(secret_hash(&client_secret)),
            code: None,
            now: app.clock.now(),
        })
        .await?;
    tracing::info!(order_id = %order.id, payment_intent = %pi.id, overage, "checkout started");
    Ok(Started {
        order,
        payment_intent: pi.id,
        client_secret,
    })
}

/// The order of PaymentIntent `pi`, to whoever holds its client secret; `None` for an unknown
/// id and for a wrong secret alike. An order created from the webhook alone (no secret kept)
/// asks Stripe once, then remembers.
pub async fn proven_order(
    app: &App,
    pi: &str,
    secret: &str,
) -> Result<Option<Order>, CheckoutError> {
    let Some(order) = app.store.order_by_payment_intent(pi).await? else {
        return Ok(None);
    };
    let proven = match &order.client_secret_hash {
        Some(hash) => constant_time_eq(hash.as_bytes(), secret_hash(secret).as_bytes()),
        None => match app.stripe.as_ref() {
            Some(stripe) => match stripe.retrieve_payment_intent(pi).await {
                Ok(remote) => {
                    let ok = remote
                        .client_secret
                        .as_deref()
                        .is_some_and(|s| constant_time_eq(s.as_bytes(), secret.as_bytes()));
                    if ok {
                        app.store
                            .set_client_secret_hash(&order.id, &secret_hash(secret))
                            .await?;
                    }
                    ok
                }
                Err(StripeError::Api { status: 404, .. }) => false,
                Err(e) => return Err(e.into()),
            },
            None => false,
        },
    };
    Ok(proven.then_some(order))
}

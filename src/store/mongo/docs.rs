//! The documents callgate stores in MongoDB, and their mapping onto the store's records.

use serde::{Deserialize, Serialize};

use super::{parse, parse_opt};
use crate::store::*;

crate::domain::text_enum!(
    /// Where MongoDB's multi-step settlement of a call stands (SQL settles in one
    /// transaction and needs no such mark): claimed, its debit and charge not yet all written;
    /// done.
    SettleStep {
        Claimed = "claimed",
        Done = "done",
    }
);

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct OrderDoc {
    #[serde(rename = "_id")]
    pub(super) id: String,
    pub(super) status: String,
    pub(super) source: String,
    pub(super) plan: String,
    pub(super) amount_cents: i64,
    pub(super) currency: String,
    pub(super) seconds_included: i64,
    pub(super) seconds_used: i64,
    pub(super) overage_consent: bool,
    pub(super) overage_price_cents: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) overage_blocked: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) stripe_payment_intent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) stripe_customer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) stripe_payment_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) code_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) code_sealed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code_last4: Option<String>,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) paid_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) revoked_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) active_call_sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) active_call_until: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) client_secret_hash: Option<String>,
}

impl OrderDoc {
    pub(super) fn from_new(o: &NewOrder) -> OrderDoc {
        let paid = o.code.is_some();
        OrderDoc {
            id: o.id.clone(),
            status: if paid {
                OrderStatus::Paid
            } else {
                OrderStatus::Pending
            }
            .as_str()
            .into(),
            source: o.source.as_str().into(),
            plan: o.plan.clone(),
            amount_cents: o.amount.0,
            currency: o.currency.code().to_string(),
            seconds_included: o.seconds_included.0,
            seconds_used: 0,
            overage_consent: o.overage_consent,
            overage_price_cents: o.overage_price.0,
            overage_blocked: None,
            stripe_payment_intent: o.stripe_payment_intent.clone(),
            stripe_customer: o.stripe_customer.clone(),
            stripe_payment_method: o.stripe_payment_method.clone(),
            code_hash: o.code.as_ref().map(|c| c.hash.clone()),
            code_sealed: o.code.as_ref().map(|c| c.sealed.clone()),
            code_last4: o.code.as_ref().map(|c| c.last4.clone()),
            created_at: o.now,
            updated_at: o.now,
            paid_at: paid.then_some(o.now),
            revoked_at: None,
            active_call_sid: None,
            active_call_until: None,
            client_secret_hash: o.client_secret_hash.clone(),
        }
    }

    pub(super) fn into_record(self) -> Result<Order, StoreError> {
        Ok(Order {
            id: self.id,
            status: parse(&self.status)?,
            source: parse(&self.source)?,
            plan: self.plan,
            amount: Cents(self.amount_cents),
            currency: parse(&self.currency)?,
            seconds_included: Seconds(self.seconds_included),
            seconds_used: Seconds(self.seconds_used),
            overage_consent: self.overage_consent,
            overage_price: Cents(self.overage_price_cents),
            overage_blocked: parse_opt(self.overage_blocked)?,
            stripe_payment_intent: self.stripe_payment_intent,
            stripe_customer: self.stripe_customer,
            stripe_payment_method: self.stripe_payment_method,
            code_hash: self.code_hash,
            code_sealed: self.code_sealed,
            code_last4: self.code_last4,
            created_at: self.created_at,
            updated_at: self.updated_at,
            paid_at: self.paid_at,
            revoked_at: self.revoked_at,
            active_call_sid: self.active_call_sid,
            active_call_until: self.active_call_until,
            client_secret_hash: self.client_secret_hash,
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct CallDoc {
    #[serde(rename = "_id")]
    pub(super) call_sid: String,
    #[serde(default)]
    pub(super) order_id: Option<String>,
    pub(super) from_number: String,
    pub(super) to_number: String,
    pub(super) status: String,
    pub(super) started_at: i64,
    #[serde(default)]
    pub(super) bridged_at: Option<i64>,
    #[serde(default)]
    pub(super) ended_at: Option<i64>,
    pub(super) seconds_metered: i64,
    #[serde(default)]
    pub(super) twilio_duration: Option<i64>,
    #[serde(default)]
    pub(super) end_reason: Option<String>,
    pub(super) updated_at: i64,
    #[serde(default)]
    pub(super) twilio_status: Option<String>,
    #[serde(default)]
    pub(super) settled_at: Option<i64>,
    /// Where a settlement stands ([`SettleStep`]): a claimed one is not settled yet.
    #[serde(default)]
    pub(super) settle_step: Option<String>,
    #[serde(default)]
    pub(super) bridge_ended_at: Option<i64>,
    #[serde(default)]
    pub(super) conversation_id: Option<String>,
    #[serde(default)]
    pub(super) settled_seconds: Option<i64>,
    #[serde(default)]
    pub(super) refused: Option<String>,
    #[serde(default)]
    pub(super) refused_order_id: Option<String>,
}

impl CallDoc {
    pub(super) fn into_record(self) -> Result<Call, StoreError> {
        Ok(Call {
            call_sid: self.call_sid,
            order_id: self.order_id,
            from_number: self.from_number,
            to_number: self.to_number,
            status: parse(&self.status)?,
            started_at: self.started_at,
            bridged_at: self.bridged_at,
            ended_at: self.ended_at,
            seconds_metered: Seconds(self.seconds_metered),
            twilio_duration: self.twilio_duration,
            end_reason: parse_opt(self.end_reason)?,
            updated_at: self.updated_at,
            twilio_status: parse_opt(self.twilio_status)?,
            // Settled once every step is written, as SQL readers see it (its claim, debit and
            // charge commit together there): a claim still under way shows as unsettled.
            settled_at: match parse_opt::<SettleStep>(self.settle_step)? {
                Some(SettleStep::Claimed) => None,
                Some(SettleStep::Done) | None => self.settled_at,
            },
            bridge_ended_at: self.bridge_ended_at,
            conversation_id: self.conversation_id,
            settled_seconds: self.settled_seconds,
            refused: parse_opt(self.refused)?,
            refused_order_id: self.refused_order_id,
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ChargeDoc {
    #[serde(rename = "_id")]
    pub(super) id: String,
    pub(super) call_sid: String,
    pub(super) order_id: String,
    pub(super) amount_cents: i64,
    pub(super) currency: String,
    pub(super) seconds_billed: i64,
    pub(super) state: String,
    pub(super) attempts: i64,
    pub(super) next_attempt_at: i64,
    #[serde(default)]
    pub(super) lease_owner: Option<String>,
    #[serde(default)]
    pub(super) lease_until: Option<i64>,
    #[serde(default)]
    pub(super) stripe_payment_intent: Option<String>,
    #[serde(default)]
    pub(super) last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) pay_token: Option<String>,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
    #[serde(default)]
    pub(super) key_generation: i64,
}

impl ChargeDoc {
    /// A new charge's document: pending, due now.
    pub(super) fn from_new(c: &NewCharge) -> ChargeDoc {
        ChargeDoc {
            id: c.id.clone(),
            call_sid: c.call_sid.clone(),
            order_id: c.order_id.clone(),
            amount_cents: c.amount.0,
            currency: c.currency.code().to_string(),
            seconds_billed: c.seconds_billed.0,
            state: ChargeState::Pending.as_str().into(),
            attempts: 0,
            next_attempt_at: c.now,
            lease_owner: None,
            lease_until: None,
            stripe_payment_intent: None,
            last_error: None,
            pay_token: None,
            created_at: c.now,
            updated_at: c.now,
            key_generation: 0,
        }
    }

    pub(super) fn into_record(self) -> Result<Charge, StoreError> {
        Ok(Charge {
            id: self.id,
            call_sid: self.call_sid,
            order_id: self.order_id,
            amount: Cents(self.amount_cents),
            currency: parse(&self.currency)?,
            seconds_billed: Seconds(self.seconds_billed),
            state: parse(&self.state)?,
            attempts: self.attempts,
            next_attempt_at: self.next_attempt_at,
            lease_owner: self.lease_owner,
            lease_until: self.lease_until,
            stripe_payment_intent: self.stripe_payment_intent,
            last_error: self.last_error,
            pay_token: self.pay_token,
            created_at: self.created_at,
            updated_at: self.updated_at,
            key_generation: self.key_generation,
        })
    }
}

//! MongoDB backend, for operators of the old deployment (`MONGODB_URI`).
//!
//! Documents mirror the SQL rows; `_id` is the record's id. The racing cases rest on what a
//! single MongoDB server guarantees: unique indexes (order PaymentIntent, code hash, one
//! charge per call), and single-document atomic updates (`findOneAndUpdate` with a filter on
//! the state being left: fulfilment, holds, leases, the settlement claim). No step needs a
//! multi-document transaction, so the guarantees are the same on a standalone server and on a
//! replica set such as Atlas: settlement claims the call, adds its seconds to the order with a
//! compare-and-set that records the call (so it is never added twice), inserts the charge
//! (unique per call), then marks the call done; a claim a crash left unfinished is completed by
//! the next billing pass, with the same figures.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::{ClientOptions, IndexOptions, ReturnDocument};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use super::*;
use crate::domain::ledger::{self, Debit};
use crate::domain::settlement;

pub struct MongoStore {
    db: Database,
}

/// The spellings of some states, for a filter's `$in`.
fn spellings(states: &[ChargeState]) -> Vec<&'static str> {
    states.iter().map(|s| s.as_str()).collect()
}

/// A field callgate writes that a stored document lacks.
fn corrupt(e: mongodb::bson::document::ValueAccessError) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn err(e: mongodb::error::Error) -> StoreError {
    use mongodb::error::{ErrorKind, WriteFailure};
    let duplicate = match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == 11000,
        ErrorKind::Command(c) => c.code == 11000,
        ErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()
            .is_some_and(|errs| errs.iter().any(|w| w.code == 11000)),
        _ => false,
    };
    if duplicate {
        return StoreError::Conflict(e.to_string());
    }
    match e.kind.as_ref() {
        ErrorKind::Io(_)
        | ErrorKind::ServerSelection { .. }
        | ErrorKind::ConnectionPoolCleared { .. } => StoreError::Unavailable(e.to_string()),
        ErrorKind::BsonDeserialization(_) => StoreError::Corrupt(e.to_string()),
        _ => StoreError::Database(e.to_string()),
    }
}

crate::domain::text_enum!(
    /// Where MongoDB's multi-step settlement of a call stands (SQL settles in one
    /// transaction and needs no such mark): claimed, its debit and charge not yet all written;
    /// done.
    SettleStep {
        Claimed = "claimed",
        Done = "done",
    }
);

/// Reads a stored spelling through its `text_enum!` table (or a currency code).
fn parse<T: TryFrom<String, Error = crate::domain::UnknownSpelling>>(
    s: &str,
) -> Result<T, StoreError> {
    Ok(T::try_from(s.to_string())?)
}

/// An optional stored spelling.
fn parse_opt<T: TryFrom<String, Error = crate::domain::UnknownSpelling>>(
    s: Option<String>,
) -> Result<Option<T>, StoreError> {
    s.map(|s| Ok(T::try_from(s)?)).transpose()
}

#[derive(Debug, Serialize, Deserialize)]
struct OrderDoc {
    #[serde(rename = "_id")]
    id: String,
    status: String,
    source: String,
    plan: String,
    amount_cents: i64,
    currency: String,
    seconds_included: i64,
    seconds_used: i64,
    overage_consent: bool,
    overage_price_cents: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    overage_blocked: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stripe_payment_intent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stripe_customer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stripe_payment_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code_sealed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code_last4: Option<String>,
    created_at: i64,
    updated_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    paid_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    active_call_sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    active_call_until: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_secret_hash: Option<String>,
}

impl OrderDoc {
    fn from_new(o: &NewOrder) -> OrderDoc {
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

    fn into_record(self) -> Result<Order, StoreError> {
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
struct CallDoc {
    #[serde(rename = "_id")]
    call_sid: String,
    #[serde(default)]
    order_id: Option<String>,
    from_number: String,
    to_number: String,
    status: String,
    started_at: i64,
    #[serde(default)]
    bridged_at: Option<i64>,
    #[serde(default)]
    ended_at: Option<i64>,
    seconds_metered: i64,
    #[serde(default)]
    twilio_duration: Option<i64>,
    #[serde(default)]
    end_reason: Option<String>,
    updated_at: i64,
    #[serde(default)]
    twilio_status: Option<String>,
    #[serde(default)]
    settled_at: Option<i64>,
    #[serde(default)]
    bridge_ended_at: Option<i64>,
    #[serde(default)]
    conversation_id: Option<String>,
    #[serde(default)]
    settled_seconds: Option<i64>,
}

impl CallDoc {
    fn into_record(self) -> Result<Call, StoreError> {
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
            settled_at: self.settled_at,
            bridge_ended_at: self.bridge_ended_at,
            conversation_id: self.conversation_id,
            settled_seconds: self.settled_seconds,
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct ChargeDoc {
    #[serde(rename = "_id")]
    id: String,
    call_sid: String,
    order_id: String,
    amount_cents: i64,
    currency: String,
    seconds_billed: i64,
    state: String,
    attempts: i64,
    next_attempt_at: i64,
    #[serde(default)]
    lease_owner: Option<String>,
    #[serde(default)]
    lease_until: Option<i64>,
    #[serde(default)]
    stripe_payment_intent: Option<String>,
    #[serde(default)]
    last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pay_token: Option<String>,
    created_at: i64,
    updated_at: i64,
    #[serde(default)]
    key_generation: i64,
}

impl ChargeDoc {
    fn into_record(self) -> Result<Charge, StoreError> {
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

/// `Some(v)` as a BSON value, `None` as null.
fn opt<T: Into<Bson>>(v: Option<T>) -> Bson {
    v.map(Into::into).unwrap_or(Bson::Null)
}

impl MongoStore {
    /// Connects to the server named by a `mongodb://` or `mongodb+srv://` URI; the database
    /// is the URI's path, `callgate` if it names none.
    pub async fn open(uri: &str) -> Result<MongoStore, StoreError> {
        let mut options = ClientOptions::parse(uri)
            .await
            .map_err(|e| StoreError::Open(format!("MONGODB_URI: {e}")))?;
        options.app_name = Some("callgate".into());
        options.server_selection_timeout = Some(Duration::from_secs(5));
        options.connect_timeout = Some(Duration::from_secs(5));
        let name = options
            .default_database
            .clone()
            .unwrap_or_else(|| "callgate".into());
        let client = Client::with_options(options)
            .map_err(|e| StoreError::Open(format!("MONGODB_URI: {e}")))?;
        let db = client.database(&name);
        db.run_command(doc! { "ping": 1 })
            .await
            .map_err(|e| StoreError::Open(format!("MongoDB: {e}")))?;
        Ok(MongoStore { db })
    }

    fn orders(&self) -> Collection<OrderDoc> {
        self.db.collection(&collection_name("orders"))
    }
    fn calls(&self) -> Collection<CallDoc> {
        self.db.collection(&collection_name("calls"))
    }
    fn charges(&self) -> Collection<ChargeDoc> {
        self.db.collection(&collection_name("charges"))
    }
    fn raw(&self, name: &str) -> Collection<Document> {
        self.db.collection(&collection_name(name))
    }

    async fn order_where(&self, filter: Document) -> Result<Option<Order>, StoreError> {
        first(&self.orders(), filter)
            .await?
            .map(OrderDoc::into_record)
            .transpose()
    }

    async fn charge_where(&self, filter: Document) -> Result<Option<Charge>, StoreError> {
        first(&self.charges(), filter)
            .await?
            .map(ChargeDoc::into_record)
            .transpose()
    }

    async fn release_hold(&self, call_sid: &str) -> Result<(), StoreError> {
        self.orders()
            .update_many(
                doc! { "active_call_sid": call_sid },
                doc! { "$unset": { "active_call_sid": "", "active_call_until": "" } },
            )
            .await
            .map(|_| ())
            .map_err(err)
    }

    /// Renews the hold of a call that still has it on a paid order; `false` if it has not.
    async fn renew_hold(&self, call_sid: &str, until: UnixTime) -> Result<bool, StoreError> {
        self.orders()
            .update_one(
                doc! { "active_call_sid": call_sid, "status": OrderStatus::Paid.as_str() },
                doc! { "$set": { "active_call_until": until } },
            )
            .await
            .map(|r| r.matched_count == 1)
            .map_err(err)
    }

    /// Sets `field` only where it is still unset (SQL's `COALESCE(field, value)`).
    async fn set_once(
        &self,
        collection: &str,
        id: &str,
        field: &str,
        value: Bson,
    ) -> Result<(), StoreError> {
        if value == Bson::Null {
            return Ok(());
        }
        self.raw(collection)
            .update_one(
                doc! { "_id": id, field: Bson::Null },
                doc! { "$set": { field: value } },
            )
            .await
            .map(|_| ())
            .map_err(err)
    }

    /// Debits a claimed call from its order once, releasing the call's hold in the same
    /// single-document write: the order records each settled call with the usage total right
    /// after it, so a retry after a crash finds the same debit. Returns the order as it stood
    /// before the debit, and the debit.
    async fn apply_usage(
        &self,
        order_id: &str,
        call_sid: &str,
        used: Seconds,
        rounding: Rounding,
        now: UnixTime,
    ) -> Result<(Order, Debit), StoreError> {
        for _ in 0..100 {
            let raw = first(&self.raw("orders"), doc! { "_id": order_id })
                .await?
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("call {call_sid} names a missing order"))
                })?;
            let recorded = raw
                .get_array("settled_calls")
                .ok()
                .and_then(|calls| {
                    calls
                        .iter()
                        .filter_map(Bson::as_document)
                        .find(|c| c.get_str("sid") == Ok(call_sid))
                })
                .and_then(|c| c.get_i64("after").ok());
            let order: OrderDoc = mongodb::bson::from_document(raw)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let mut order = order.into_record()?;
            if let Some(after) = recorded {
                // Debited by an earlier, interrupted run: the same figures, and the hold goes.
                self.release_hold(call_sid).await?;
                order.seconds_used = Seconds(after - used.0);
                let debit = ledger::debit(&order, used, rounding);
                return Ok((order, debit));
            }
            let debit = ledger::debit(&order, used, rounding);
            let holder = match order.active_call_sid.as_deref() {
                Some(sid) => Bson::String(sid.to_string()),
                None => Bson::Null,
            };
            let mut update = doc! {
                "$set": { "seconds_used": debit.used_after.0, "updated_at": now },
                "$push": { "settled_calls": { "sid": call_sid, "after": debit.used_after.0 } },
            };
            if order.active_call_sid.as_deref() == Some(call_sid) {
                update.insert(
                    "$unset",
                    doc! { "active_call_sid": "", "active_call_until": "" },
                );
            }
            // Compare-and-set on what the debit read: a racing write retries.
            let swapped = self
                .raw("orders")
                .update_one(
                    doc! { "_id": order_id, "seconds_used": order.seconds_used.0,
                    "status": order.status.as_str(), "active_call_sid": holder,
                    "settled_calls.sid": { "$ne": call_sid } },
                    update,
                )
                .await
                .map_err(err)?
                .modified_count
                == 1;
            if swapped {
                return Ok((order, debit));
            }
        }
        Err(StoreError::Unavailable(
            "order usage kept changing; settlement will be retried".into(),
        ))
    }

    /// The settlement after its claim: usage, then the charge, then the call marked done.
    /// Each step can be repeated without effect, so a claim left by a crash is finished later.
    async fn settle_claimed(
        &self,
        call: &Call,
        rounding: Rounding,
        charge_id: &str,
        now: UnixTime,
    ) -> Result<Settlement, StoreError> {
        let used = call.billable_seconds();
        self.calls()
            .update_one(
                doc! { "_id": &call.call_sid },
                doc! { "$set": { "settled_seconds": used.0 } },
            )
            .await
            .map_err(err)?;
        let mut outcome = Settlement::Settled {
            seconds: used,
            overage: Seconds(0),
            charge: None,
        };
        if let Some(order_id) = call.order_id.as_deref() {
            let (order, debit) = self
                .apply_usage(order_id, &call.call_sid, used, rounding, now)
                .await?;
            let charge = match debit.charge {
                Some(amount) => {
                    let doc = ChargeDoc {
                        id: charge_id.into(),
                        call_sid: call.call_sid.clone(),
                        order_id: order.id.clone(),
                        amount_cents: amount.0,
                        currency: order.currency.code().to_string(),
                        seconds_billed: debit.overage.0,
                        state: ChargeState::Pending.as_str().into(),
                        attempts: 0,
                        next_attempt_at: now,
                        lease_owner: None,
                        lease_until: None,
                        stripe_payment_intent: None,
                        last_error: None,
                        pay_token: None,
                        created_at: now,
                        updated_at: now,
                        key_generation: 0,
                    };
                    match self.charges().insert_one(&doc).await.map_err(err) {
                        Ok(_) => Some(Box::new(doc.into_record()?)),
                        // Inserted by an earlier, interrupted run of this settlement.
                        Err(StoreError::Conflict(_)) => self
                            .charge_where(doc! { "call_sid": &call.call_sid })
                            .await?
                            .map(Box::new),
                        Err(e) => return Err(e),
                    }
                }
                None => None,
            };
            outcome = Settlement::Settled {
                seconds: used,
                overage: debit.overage,
                charge,
            };
        }
        self.calls()
            .update_one(
                doc! { "_id": &call.call_sid },
                doc! { "$set": { "settle_step": SettleStep::Done.as_str() } },
            )
            .await
            .map_err(err)?;
        Ok(outcome)
    }

    /// Whether a stored call is ready for settlement at `now` (the SQL `SETTLE_READY`).
    async fn settle_ready(&self, call: &Call, now: UnixTime) -> Result<bool, StoreError> {
        // The hold matters only for a call with an order that the other rules leave open.
        let hold_until = match call.order_id.as_deref() {
            Some(order_id) if !settlement::ready(call, Some(UnixTime::MAX), now) => query(
                &self.orders(),
                doc! { "_id": order_id, "active_call_sid": &call.call_sid },
                None,
                Some(1),
            )
            .await?
            .into_iter()
            .next()
            .and_then(|o| o.active_call_until),
            _ => None,
        };
        Ok(settlement::ready(call, hold_until, now))
    }
}

/// Documents matching `filter`, sorted, at most `limit`: an aggregation whose `$limit` is a
/// 32-bit integer, which every server speaking the wire protocol accepts (some refuse the
/// 64-bit `limit` the driver's `find` sends).
async fn query<T>(
    coll: &Collection<T>,
    filter: Document,
    sort: Option<Document>,
    limit: Option<i64>,
) -> Result<Vec<T>, StoreError>
where
    T: serde::de::DeserializeOwned + Send + Sync,
{
    let mut pipeline = vec![doc! { "$match": filter }];
    if let Some(sort) = sort {
        pipeline.push(doc! { "$sort": sort });
    }
    if let Some(limit) = limit {
        pipeline.push(doc! { "$limit": limit.clamp(0, i32::MAX as i64) as i32 });
    }
    let docs: Vec<Document> = coll
        .clone_with_type::<Document>()
        .aggregate(pipeline)
        .await
        .map_err(err)?
        .try_collect()
        .await
        .map_err(err)?;
    docs.into_iter()
        .map(|d| mongodb::bson::from_document(d).map_err(|e| StoreError::Corrupt(e.to_string())))
        .collect()
}

/// callgate's collections carry a prefix: during a cut-over callgate may share a database
/// with the old deployment, whose `orders` (and any other plain name) are not callgate's.
const COLLECTION_PREFIX: &str = "callgate_";

fn collection_name(name: &str) -> String {
    format!("{COLLECTION_PREFIX}{name}")
}

/// The first document matching `filter`.
async fn first<T>(coll: &Collection<T>, filter: Document) -> Result<Option<T>, StoreError>
where
    T: serde::de::DeserializeOwned + Send + Sync,
{
    Ok(query(coll, filter, None, Some(1)).await?.into_iter().next())
}

async fn collect<T, R>(
    cursor: mongodb::Cursor<T>,
    f: impl Fn(T) -> Result<R, StoreError>,
) -> Result<Vec<R>, StoreError>
where
    T: serde::de::DeserializeOwned + Send + Sync + Unpin,
{
    let docs: Vec<T> = cursor.try_collect().await.map_err(err)?;
    docs.into_iter().map(f).collect()
}

#[async_trait]
impl Store for MongoStore {
    fn backend(&self) -> &'static str {
        "mongodb"
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let unique = |keys: Document, sparse: bool| {
            IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::builder().unique(true).sparse(sparse).build())
                .build()
        };
        let plain = |keys: Document| IndexModel::builder().keys(keys).build();
        let created = async {
            self.raw("orders")
                .create_index(unique(doc! { "stripe_payment_intent": 1 }, true))
                .await?;
            self.raw("orders")
                .create_index(unique(doc! { "code_hash": 1 }, true))
                .await?;
            self.raw("orders")
                .create_index(plain(doc! { "created_at": -1 }))
                .await?;
            self.raw("calls")
                .create_index(plain(doc! { "settled_at": 1, "status": 1 }))
                .await?;
            self.raw("charges")
                .create_index(unique(doc! { "call_sid": 1 }, false))
                .await?;
            self.raw("charges")
                .create_index(unique(doc! { "pay_token": 1 }, true))
                .await?;
            self.raw("charges")
                .create_index(plain(doc! { "state": 1, "next_attempt_at": 1 }))
                .await?;
            self.raw("charges")
                .create_index(plain(doc! { "order_id": 1 }))
                .await?;
            self.raw("code_attempts")
                .create_index(plain(doc! { "caller": 1, "at": 1 }))
                .await?;
            self.raw("code_attempts")
                .create_index(plain(doc! { "code_hash": 1, "at": 1 }))
                .await?;
            self.raw("call_transcript")
                .create_index(plain(doc! { "call_sid": 1, "seq": 1 }))
                .await?;
            self.raw("calls")
                .create_index(plain(doc! { "from_number": 1, "order_id": 1 }))
                .await?;
            self.raw("orders")
                .create_index(plain(doc! { "status": 1, "created_at": 1 }))
                .await?;
            Ok::<_, mongodb::error::Error>(())
        };
        created
            .await
            .map_err(|e| StoreError::Migrate(e.to_string()))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.db
            .run_command(doc! { "ping": 1 })
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn insert_order(&self, order: &NewOrder) -> Result<Order, StoreError> {
        let doc = OrderDoc::from_new(order);
        self.orders().insert_one(&doc).await.map_err(err)?;
        doc.into_record()
    }

    async fn fulfil_order(&self, f: &Fulfilment) -> Result<Fulfilled, StoreError> {
        let update = {
            let mut set = doc! {
                "status": OrderStatus::Paid.as_str(), "code_hash": &f.code.hash, "code_sealed": &f.code.sealed,
                "code_last4": &f.code.last4, "paid_at": f.now, "updated_at": f.now,
            };
            if let Some(c) = &f.customer {
                set.insert("stripe_customer", c);
            }
            if let Some(pm) = &f.payment_method {
                set.insert("stripe_payment_method", pm);
            }
            doc! { "$set": set }
        };
        let updated = self
            .orders()
            .find_one_and_update(
                doc! { "stripe_payment_intent": &f.payment_intent, "status": { "$in": [OrderStatus::Pending.as_str(), OrderStatus::Failed.as_str()] } },
                update,
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(err)?;
        if let Some(order) = updated {
            return Ok(Fulfilled::Now(order.into_record()?));
        }
        Ok(
            match self.order_by_payment_intent(&f.payment_intent).await? {
                Some(order) => Fulfilled::Already(order),
                None => Fulfilled::NoOrder,
            },
        )
    }

    async fn order(&self, id: &str) -> Result<Option<Order>, StoreError> {
        self.order_where(doc! { "_id": id }).await
    }

    async fn order_by_payment_intent(&self, pi: &str) -> Result<Option<Order>, StoreError> {
        self.order_where(doc! { "stripe_payment_intent": pi }).await
    }

    async fn order_by_code(&self, code_hash: &str) -> Result<Option<Order>, StoreError> {
        self.order_where(doc! { "code_hash": code_hash }).await
    }

    async fn list_orders(&self, limit: i64) -> Result<Vec<Order>, StoreError> {
        query(
            &self.orders(),
            doc! {},
            Some(doc! { "created_at": -1, "_id": -1 }),
            Some(limit),
        )
        .await?
        .into_iter()
        .map(OrderDoc::into_record)
        .collect()
    }

    async fn set_client_secret_hash(&self, id: &str, hash: &str) -> Result<(), StoreError> {
        self.orders()
            .update_one(
                doc! { "_id": id },
                doc! { "$set": { "client_secret_hash": hash } },
            )
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn set_order_status(
        &self,
        id: &str,
        from: &[OrderStatus],
        to: OrderStatus,
        now: UnixTime,
    ) -> Result<Option<Order>, StoreError> {
        if from.is_empty() {
            return Ok(None);
        }
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let mut set = doc! { "status": to.as_str(), "updated_at": now };
        if to == OrderStatus::Revoked {
            set.insert("revoked_at", now);
        }
        self.orders()
            .find_one_and_update(
                doc! { "_id": id, "status": { "$in": from } },
                doc! { "$set": set },
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(err)?
            .map(OrderDoc::into_record)
            .transpose()
    }

    async fn add_seconds_used(
        &self,
        order_id: &str,
        seconds: Seconds,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        self.orders()
            .update_one(
                doc! { "_id": order_id },
                doc! { "$inc": { "seconds_used": seconds.0.max(0) }, "$set": { "updated_at": now } },
            )
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn hold_order_for_call(
        &self,
        order_id: &str,
        call_sid: &str,
        until: UnixTime,
        now: UnixTime,
    ) -> Result<Hold, StoreError> {
        // Compare-and-set on the order; a lapsed hold is freed only by settling its call.
        let held = self
            .orders()
            .find_one_and_update(
                doc! { "_id": order_id, "$or": [
                    { "active_call_sid": Bson::Null }, { "active_call_sid": call_sid } ] },
                doc! { "$set": { "active_call_sid": call_sid, "active_call_until": until, "updated_at": now } },
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(err)?;
        let Some(held) = held else {
            return Ok(match self.order(order_id).await? {
                Some(Order {
                    active_call_sid: Some(holder),
                    active_call_until: Some(until),
                    ..
                }) if until < now => Hold::Lapsed(holder),
                _ => Hold::InUse,
            });
        };
        // Then the call: one that has ended or was settled gives the hold straight back (an
        // end racing this finds either the hold, and releases it, or the link refused).
        let linked = self
            .calls()
            .update_one(
                doc! { "_id": call_sid, "status": { "$ne": CallState::Ended.as_str() }, "settled_at": Bson::Null },
                doc! { "$set": { "order_id": order_id, "updated_at": now } },
            )
            .await
            .map_err(err)?
            .matched_count
            == 1;
        if !linked {
            self.release_hold(call_sid).await?;
            return Ok(Hold::CallOver);
        }
        Ok(Hold::Held(Box::new(held.into_record()?)))
    }

    async fn upsert_call(&self, call: &NewCall) -> Result<Call, StoreError> {
        let insert = doc! {
            "from_number": &call.from_number, "to_number": &call.to_number, "status": CallState::Menu.as_str(),
            "started_at": call.now, "seconds_metered": 0i64, "updated_at": call.now,
        };
        match self
            .calls()
            .update_one(
                doc! { "_id": &call.call_sid },
                doc! { "$setOnInsert": insert },
            )
            .upsert(true)
            .await
            .map_err(err)
        {
            // Two racing upserts: the loser's insert hits the _id index; the call exists.
            Ok(_) | Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        self.call(&call.call_sid)
            .await?
            .ok_or_else(|| StoreError::Database("call vanished after upsert".into()))
    }

    async fn end_call(&self, end: &EndCall) -> Result<Call, StoreError> {
        self.upsert_call(&NewCall {
            call_sid: end.call_sid.clone(),
            from_number: end.from_number.clone(),
            to_number: end.to_number.clone(),
            now: end.now,
        })
        .await?;
        self.set_once("calls", &end.call_sid, "ended_at", end.now.into())
            .await?;
        self.set_once("calls", &end.call_sid, "twilio_duration", opt(end.duration))
            .await?;
        self.set_once(
            "calls",
            &end.call_sid,
            "end_reason",
            end.reason.as_str().into(),
        )
        .await?;
        self.calls()
            .update_one(
                doc! { "_id": &end.call_sid },
                doc! { "$set": { "status": CallState::Ended.as_str(), "twilio_status": end.twilio_status.as_str(), "updated_at": end.now } },
            )
            .await
            .map_err(err)?;
        let call = self
            .call(&end.call_sid)
            .await?
            .ok_or_else(|| StoreError::Database("call vanished after end".into()))?;
        // A bridged call keeps its hold until settlement debits it in the same step.
        if call.bridged_at.is_none() {
            self.release_hold(&end.call_sid).await?;
        }
        Ok(call)
    }

    async fn bridge_started(
        &self,
        call_sid: &str,
        conversation_id: Option<&str>,
        hold_until: UnixTime,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let started = self
            .calls()
            .update_one(
                doc! { "_id": call_sid, "status": { "$ne": CallState::Ended.as_str() }, "settled_at": Bson::Null },
                doc! { "$set": { "status": CallState::Bridged.as_str(), "updated_at": now } },
            )
            .await
            .map_err(err)?
            .matched_count
            == 1;
        if !started || !self.renew_hold(call_sid, hold_until).await? {
            return Ok(false);
        }
        self.set_once("calls", call_sid, "bridged_at", now.into())
            .await?;
        if let Some(c) = conversation_id {
            self.calls()
                .update_one(
                    doc! { "_id": call_sid },
                    doc! { "$set": { "conversation_id": c } },
                )
                .await
                .map_err(err)?;
        }
        Ok(true)
    }

    async fn record_metering_many(
        &self,
        figures: &[(String, Seconds)],
        hold_until: UnixTime,
        now: UnixTime,
    ) -> Result<Vec<String>, StoreError> {
        let mut stop = Vec::new();
        for (call_sid, seconds) in figures {
            self.record_metering(call_sid, *seconds, now).await?;
            if !self.renew_hold(call_sid, hold_until).await? {
                stop.push(call_sid.clone());
            }
        }
        Ok(stop)
    }

    async fn record_metering(
        &self,
        call_sid: &str,
        seconds: Seconds,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        self.calls()
            .update_one(
                doc! { "_id": call_sid },
                doc! { "$max": { "seconds_metered": seconds.0 }, "$set": { "updated_at": now } },
            )
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn bridge_finished(
        &self,
        call_sid: &str,
        seconds: Seconds,
        reason: EndReason,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        self.record_metering(call_sid, seconds, now).await?;
        self.set_once("calls", call_sid, "end_reason", reason.as_str().into())
            .await?;
        self.set_once("calls", call_sid, "bridge_ended_at", now.into())
            .await
    }

    async fn append_transcript(
        &self,
        call_sid: &str,
        lines: &[TranscriptLine],
    ) -> Result<(), StoreError> {
        for line in lines {
            let d = doc! {
                "_id": format!("{call_sid}:{}", line.seq), "call_sid": call_sid, "seq": line.seq,
                "speaker": line.speaker.as_str(), "text": &line.text, "at": line.at,
            };
            match self.raw("call_transcript").insert_one(d).await.map_err(err) {
                Ok(_) | Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn transcript(&self, call_sid: &str) -> Result<Vec<TranscriptLine>, StoreError> {
        let cursor = self
            .raw("call_transcript")
            .find(doc! { "call_sid": call_sid })
            .sort(doc! { "seq": 1 })
            .await
            .map_err(err)?;
        collect(cursor, |d: Document| {
            Ok(TranscriptLine {
                seq: d
                    .get_i64("seq")
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                speaker: parse(d.get_str("speaker").unwrap_or_default())?,
                text: d.get_str("text").unwrap_or_default().to_string(),
                at: d.get_i64("at").unwrap_or_default(),
            })
        })
        .await
    }

    async fn insert_stream_token(
        &self,
        token_hash: &str,
        grant: &StreamGrant,
        expires_at: UnixTime,
    ) -> Result<(), StoreError> {
        self.raw("stream_tokens")
            .insert_one(doc! {
                "_id": token_hash, "call_sid": &grant.call_sid, "order_id": &grant.order_id,
                "expires_at": expires_at, "used_at": Bson::Null,
            })
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn consume_stream_token(
        &self,
        token_hash: &str,
        call_sid: &str,
        now: UnixTime,
    ) -> Result<Option<StreamOpening>, StoreError> {
        let found = self
            .raw("stream_tokens")
            .find_one_and_update(
                doc! { "_id": token_hash, "call_sid": call_sid, "used_at": Bson::Null, "expires_at": { "$gt": now } },
                doc! { "$set": { "used_at": now } },
            )
            .await
            .map_err(err)?;
        let Some(d) = found else { return Ok(None) };
        let grant = StreamGrant {
            call_sid: d.get_str("call_sid").map_err(corrupt)?.to_string(),
            order_id: d.get_str("order_id").map_err(corrupt)?.to_string(),
        };
        // Read after the token is spent: the call and order as they stand now, no older.
        let (call, order) =
            tokio::try_join!(self.call(&grant.call_sid), self.order(&grant.order_id))?;
        Ok(Some(StreamOpening { grant, call, order }))
    }

    async fn call(&self, call_sid: &str) -> Result<Option<Call>, StoreError> {
        first(&self.calls(), doc! { "_id": call_sid })
            .await?
            .map(CallDoc::into_record)
            .transpose()
    }

    async fn list_calls(&self, limit: i64) -> Result<Vec<Call>, StoreError> {
        query(
            &self.calls(),
            doc! {},
            Some(doc! { "started_at": -1, "_id": -1 }),
            Some(limit),
        )
        .await?
        .into_iter()
        .map(CallDoc::into_record)
        .collect()
    }

    async fn insert_charge(&self, c: &NewCharge) -> Result<(Charge, bool), StoreError> {
        if self.call(&c.call_sid).await?.is_none() {
            return Err(StoreError::Database(format!("no call {}", c.call_sid)));
        }
        let doc = ChargeDoc {
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
        };
        match self.charges().insert_one(&doc).await.map_err(err) {
            Ok(_) => Ok((doc.into_record()?, true)),
            Err(StoreError::Conflict(_)) => self
                .charge_where(doc! { "call_sid": &c.call_sid })
                .await?
                .map(|charge| (charge, false))
                .ok_or_else(|| StoreError::Conflict(format!("charge id {} already used", c.id))),
            Err(e) => Err(e),
        }
    }

    async fn settle_call(
        &self,
        call_sid: &str,
        rounding: Rounding,
        charge_id: &str,
        now: UnixTime,
    ) -> Result<Settlement, StoreError> {
        let Some(stored) = self.call(call_sid).await? else {
            return Ok(Settlement::NotReady);
        };
        // The claim is the gate: one single-document update, so one settlement per call.
        let claimed = if self.settle_ready(&stored, now).await? {
            self.calls()
                .find_one_and_update(
                    doc! { "_id": call_sid, "settled_at": Bson::Null },
                    doc! { "$set": { "settled_at": now, "settle_step": SettleStep::Claimed.as_str(), "updated_at": now } },
                )
                .return_document(ReturnDocument::After)
                .await
                .map_err(err)?
        } else {
            None
        };
        // A claim left unfinished by a crash is taken over once it is a minute old.
        let claimed = match claimed {
            Some(c) => Some(c),
            None => self
                .calls()
                .find_one_and_update(
                    doc! { "_id": call_sid, "settle_step": SettleStep::Claimed.as_str(), "settled_at": { "$lt": now - 60 } },
                    doc! { "$set": { "settled_at": now, "updated_at": now } },
                )
                .return_document(ReturnDocument::After)
                .await
                .map_err(err)?,
        };
        let Some(call) = claimed else {
            return Ok(match self.call(call_sid).await? {
                Some(c) if c.settled_at.is_some() => Settlement::AlreadySettled,
                _ => Settlement::NotReady,
            });
        };
        self.settle_claimed(&call.into_record()?, rounding, charge_id, now)
            .await
    }

    async fn calls_to_settle(&self, limit: i64, now: UnixTime) -> Result<Vec<String>, StoreError> {
        let candidates = doc! { "$or": [
        { "settled_at": Bson::Null, "$or": [
            { "status": CallState::Ended.as_str() }, { "bridge_ended_at": { "$ne": Bson::Null } },
            { "order_id": { "$ne": Bson::Null } } ] },
        { "settle_step": SettleStep::Claimed.as_str() } ] };
        let mut ready = Vec::new();
        for doc in query(
            &self.calls(),
            candidates,
            Some(doc! { "updated_at": 1 }),
            None,
        )
        .await?
        {
            let claimed_unfinished = doc.settled_at.is_some();
            let call = doc.into_record()?;
            if claimed_unfinished || self.settle_ready(&call, now).await? {
                ready.push(call.call_sid);
                if ready.len() as i64 >= limit {
                    break;
                }
            }
        }
        Ok(ready)
    }

    async fn claim_charge(
        &self,
        owner: &str,
        lease_until: UnixTime,
        now: UnixTime,
    ) -> Result<Option<Charge>, StoreError> {
        self.charges()
            .find_one_and_update(
                doc! { "state": ChargeState::Pending.as_str(), "next_attempt_at": { "$lte": now },
                       "$or": [ { "lease_until": Bson::Null }, { "lease_until": { "$lt": now } } ] },
                doc! { "$set": { "lease_owner": owner, "lease_until": lease_until, "updated_at": now }, "$inc": { "attempts": 1i64 } },
            )
            .sort(doc! { "next_attempt_at": 1, "_id": 1 })
            .return_document(ReturnDocument::After)
            .await
            .map_err(err)?
            .map(ChargeDoc::into_record)
            .transpose()
    }

    async fn finish_charge(
        &self,
        id: &str,
        owner: &str,
        u: &ChargeUpdate,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let mut set = doc! {
            "state": u.state.as_str(), "last_error": opt(u.last_error.clone()),
            "lease_owner": Bson::Null, "lease_until": Bson::Null, "updated_at": now,
        };
        if let Some(pi) = &u.stripe_payment_intent {
            set.insert("stripe_payment_intent", pi);
        }
        if let Some(at) = u.next_attempt_at {
            set.insert("next_attempt_at", at);
        }
        if let Some(t) = &u.pay_token {
            set.insert("pay_token", t);
        }
        Ok(self
            .charges()
            .update_one(
                doc! { "_id": id, "lease_owner": owner, "state": ChargeState::Pending.as_str() },
                doc! { "$set": set },
            )
            .await
            .map_err(err)?
            .modified_count
            == 1)
    }

    async fn charge(&self, id: &str) -> Result<Option<Charge>, StoreError> {
        self.charge_where(doc! { "_id": id }).await
    }

    async fn charge_by_pay_token(&self, token: &str) -> Result<Option<Charge>, StoreError> {
        self.charge_where(doc! { "pay_token": token }).await
    }

    async fn charge_by_payment_intent(&self, pi: &str) -> Result<Option<Charge>, StoreError> {
        self.charge_where(doc! { "stripe_payment_intent": pi })
            .await
    }

    async fn set_charge_state(
        &self,
        id: &str,
        from: &[ChargeState],
        to: ChargeState,
        now: UnixTime,
    ) -> Result<Option<Charge>, StoreError> {
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        self.charges()
            .find_one_and_update(
                doc! { "_id": id, "state": { "$in": from } },
                doc! { "$set": { "state": to.as_str(), "updated_at": now } },
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(err)?
            .map(ChargeDoc::into_record)
            .transpose()
    }

    async fn charge_paid(
        &self,
        id: &str,
        payment_intent: &str,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        Ok(self
            .charges()
            .update_one(
                doc! { "_id": id, "state": { "$in": spellings(ChargeState::PAYABLE_ON_SESSION) } },
                doc! { "$set": { "state": ChargeState::Succeeded.as_str(), "stripe_payment_intent": payment_intent, "last_error": Bson::Null, "updated_at": now } },
            )
            .await
            .map_err(err)?
            .modified_count
            == 1)
    }

    async fn cancel_open_charges(&self, order_id: &str, now: UnixTime) -> Result<u64, StoreError> {
        Ok(self
            .charges()
            .update_many(
                doc! { "order_id": order_id, "$or": [
                    { "state": ChargeState::RequiresAction.as_str() },
                    { "state": ChargeState::Pending.as_str(), "$or": [ { "lease_until": Bson::Null }, { "lease_until": { "$lt": now } } ] } ] },
                doc! { "$set": { "state": ChargeState::Canceled.as_str(), "updated_at": now } },
            )
            .await
            .map_err(err)?
            .modified_count)
    }

    async fn count_charges_by_state(&self) -> Result<Vec<(ChargeState, i64)>, StoreError> {
        let mut out = Vec::with_capacity(ChargeState::ALL.len());
        for state in ChargeState::ALL {
            let n = self
                .raw("charges")
                .count_documents(doc! { "state": state.as_str() })
                .await
                .map_err(err)?;
            out.push((*state, n as i64));
        }
        Ok(out)
    }

    async fn add_seconds_included(
        &self,
        order_id: &str,
        seconds: Seconds,
        now: UnixTime,
    ) -> Result<Option<Order>, StoreError> {
        self.orders()
            .find_one_and_update(
                doc! { "_id": order_id },
                doc! { "$inc": { "seconds_included": seconds.0 }, "$set": { "updated_at": now } },
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(err)?
            .map(OrderDoc::into_record)
            .transpose()
    }

    async fn retry_charge(
        &self,
        id: &str,
        new_key: bool,
        now: UnixTime,
    ) -> Result<Option<Charge>, StoreError> {
        self.charges()
            .find_one_and_update(
                doc! { "_id": id, "state": { "$in": spellings(ChargeState::RETRYABLE) } },
                doc! {
                    "$set": { "state": ChargeState::Pending.as_str(), "next_attempt_at": now, "attempts": 0_i64,
                        "last_error": Bson::Null, "lease_owner": Bson::Null,
                        "lease_until": Bson::Null, "updated_at": now },
                    "$inc": { "key_generation": i64::from(new_key) },
                },
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(err)?
            .map(ChargeDoc::into_record)
            .transpose()
    }

    async fn set_overage_blocked(
        &self,
        order_id: &str,
        reason: Option<OverageBlock>,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let update = match reason {
            Some(r) => doc! { "$set": { "overage_blocked": r.as_str(), "updated_at": now } },
            None => doc! { "$unset": { "overage_blocked": "" }, "$set": { "updated_at": now } },
        };
        self.orders()
            .update_one(doc! { "_id": order_id }, update)
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn charges_for_order(&self, order_id: &str) -> Result<Vec<Charge>, StoreError> {
        let cursor = self
            .charges()
            .find(doc! { "order_id": order_id })
            .sort(doc! { "created_at": 1, "_id": 1 })
            .await
            .map_err(err)?;
        collect(cursor, ChargeDoc::into_record).await
    }

    async fn list_charges(
        &self,
        state: Option<ChargeState>,
        limit: i64,
    ) -> Result<Vec<Charge>, StoreError> {
        let filter = match state {
            Some(s) => doc! { "state": s.as_str() },
            None => doc! {},
        };
        query(
            &self.charges(),
            filter,
            Some(doc! { "created_at": -1, "_id": -1 }),
            Some(limit),
        )
        .await?
        .into_iter()
        .map(ChargeDoc::into_record)
        .collect()
    }

    async fn record_event(&self, id: &str, kind: &str, now: UnixTime) -> Result<bool, StoreError> {
        match self
            .raw("webhook_events")
            .insert_one(doc! { "_id": id, "kind": kind, "received_at": now })
            .await
            .map_err(err)
        {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn event_seen(&self, id: &str) -> Result<bool, StoreError> {
        Ok(first(&self.raw("webhook_events"), doc! { "_id": id })
            .await?
            .is_some())
    }

    async fn record_attempts(&self, attempts: &[CodeAttempt]) -> Result<(), StoreError> {
        if attempts.is_empty() {
            return Ok(());
        }
        let docs = attempts.iter().map(
            |a| doc! { "caller": &a.caller, "code_hash": &a.code_hash, "ok": a.ok, "at": a.at },
        );
        self.raw("code_attempts")
            .insert_many(docs)
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn count_failures(
        &self,
        scope: AttemptScope<'_>,
        since: UnixTime,
        up_to: i64,
    ) -> Result<i64, StoreError> {
        if up_to <= 0 {
            return Ok(0);
        }
        let mut filter = doc! { "ok": false, "at": { "$gte": since } };
        match scope {
            AttemptScope::Caller(c) => {
                filter.insert("caller", c);
            }
            AttemptScope::Code(h) => {
                filter.insert("code_hash", h);
            }
            AttemptScope::Global => {}
        }
        // `$limit` as a 32-bit integer, as everywhere here; a bound past that is a whole count.
        let mut pipeline = vec![doc! { "$match": filter }];
        if let Ok(up_to) = i32::try_from(up_to) {
            pipeline.push(doc! { "$limit": up_to });
        }
        pipeline.push(doc! { "$count": "n" });
        let counted: Vec<Document> = self
            .raw("code_attempts")
            .aggregate(pipeline)
            .await
            .map_err(err)?
            .try_collect()
            .await
            .map_err(err)?;
        Ok(counted
            .first()
            .and_then(|d| match d.get("n") {
                Some(mongodb::bson::Bson::Int32(n)) => Some(i64::from(*n)),
                Some(mongodb::bson::Bson::Int64(n)) => Some(*n),
                _ => None,
            })
            .unwrap_or(0))
    }

    async fn caller_has_used_code(
        &self,
        from: &str,
        order_id: Option<&str>,
        except_call: &str,
    ) -> Result<bool, StoreError> {
        let order = match order_id {
            Some(id) => Bson::from(id),
            None => Bson::Document(doc! { "$type": "string" }),
        };
        let filter = doc! {
            "from_number": from,
            "order_id": order,
            "_id": { "$ne": except_call },
        };
        first(&self.raw("calls"), filter).await.map(|d| d.is_some())
    }

    async fn stale_pending_orders(
        &self,
        before: UnixTime,
        limit: i64,
    ) -> Result<Vec<Order>, StoreError> {
        query(
            &self.orders(),
            doc! { "status": OrderStatus::Pending.as_str(), "created_at": { "$lt": before } },
            Some(doc! { "created_at": 1, "_id": 1 }),
            Some(limit),
        )
        .await?
        .into_iter()
        .map(OrderDoc::into_record)
        .collect()
    }

    async fn delete_pending_order(&self, id: &str) -> Result<bool, StoreError> {
        self.orders()
            .delete_one(doc! { "_id": id, "status": OrderStatus::Pending.as_str() })
            .await
            .map(|r| r.deleted_count == 1)
            .map_err(err)
    }

    async fn prune_attempts(&self, before: UnixTime) -> Result<u64, StoreError> {
        self.raw("code_attempts")
            .delete_many(doc! { "at": { "$lt": before } })
            .await
            .map(|r| r.deleted_count)
            .map_err(err)
    }
}

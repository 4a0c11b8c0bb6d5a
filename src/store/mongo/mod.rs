//! MongoDB backend, for operators of the old deployment (`MONGODB_URI`).
//!
//! Documents mirror the SQL rows; `_id` is the record's id. The racing cases rest on what a
//! single MongoDB server guarantees: unique indexes (order PaymentIntent, code hash, one
//! charge per call), and single-document atomic updates (`findOneAndUpdate` with a filter on
//! the state being left: fulfilment, holds, leases, the settlement claim). No step needs a
//! multi-document transaction, so the guarantees are the same on a standalone server and on a
//! replica set such as Atlas. The money path is `store::money`'s sequences over this engine's
//! single-document steps (`money.rs`): settlement claims the call, adds its seconds to the order
//! with a compare-and-set that records the call (so it is never added twice), inserts the
//! charge (unique per call), then marks the call done; a claim a crash left unfinished is
//! completed by the next billing pass, with the same figures.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};

use crate::store::*;
use docs::{CallDoc, ChargeDoc, OrderDoc};

mod attempts;
mod audit;
mod callers;
mod calls;
mod charges;
mod docs;
mod entries;
mod events;
mod instances;
mod messages;
mod money;
mod orders;
mod reports;

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

/// A whole number a document (or an aggregation's sum) holds, 32 or 64 bits.
fn whole(d: &Document, field: &str) -> Result<i64, StoreError> {
    match d.get(field) {
        Some(Bson::Int64(n)) => Ok(*n),
        Some(Bson::Int32(n)) => Ok(i64::from(*n)),
        other => Err(StoreError::Corrupt(format!("{field}: {other:?}"))),
    }
}

/// `Some(v)` as a BSON value, `None` as null.
fn opt<T: Into<Bson>>(v: Option<T>) -> Bson {
    v.map(Into::into).unwrap_or(Bson::Null)
}

/// Sums the whole number `amount` (never below zero) per day of `at`, over every document of
/// `coll` that `filter` finds: read through a cursor with just those two fields, so every
/// matching document counts, however many there are.
async fn day_totals(
    coll: Collection<Document>,
    filter: Document,
    at: &str,
    amount: &str,
) -> Result<Vec<DayTotal>, StoreError> {
    let mut cursor = coll
        .find(filter)
        .projection(doc! { at: 1, amount: 1, "_id": 0 })
        .await
        .map_err(err)?;
    let mut totals = std::collections::BTreeMap::<i64, i64>::new();
    while let Some(d) = cursor.try_next().await.map_err(err)? {
        *totals.entry(DayTotal::day_of(whole(&d, at)?)).or_default() += whole(&d, amount)?.max(0);
    }
    Ok(totals
        .into_iter()
        .map(|(day, total)| DayTotal { day, total })
        .collect())
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

/// A page of `coll` (see [`Listing`]) newest first by the time field `at`, then `_id`;
/// `state` (already spelled) is matched against the field `state_field`.
async fn page<T, S>(
    coll: &Collection<T>,
    l: &Listing<S>,
    (state_field, state): (&str, Option<&str>),
    at: &str,
) -> Result<Vec<T>, StoreError>
where
    T: serde::de::DeserializeOwned + Send + Sync,
{
    let mut filter = doc! {};
    if let Some(state) = state {
        filter.insert(state_field, state);
    }
    let mut range = doc! {};
    if let Some(from) = l.from {
        range.insert("$gte", from);
    }
    if let Some(until) = l.until {
        range.insert("$lt", until);
    }
    if !range.is_empty() {
        filter.insert(at, range);
    }
    if let Some(c) = &l.after {
        filter.insert(
            "$or",
            vec![
                doc! { at: { "$lt": c.at } },
                doc! { at: c.at, "_id": { "$lt": &c.id } },
            ],
        );
    }
    query(
        coll,
        filter,
        Some(doc! { at: -1, "_id": -1 }),
        Some(l.limit),
    )
    .await
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

impl MongoStore {
    /// Once per database: each order paid before the ledger gets its opening entry (and an
    /// import its earlier usage), as the SQL engines' migration 0010 does.
    async fn open_ledger(&self) -> Result<(), StoreError> {
        const MARK: &str = "ledger_entries_opened";
        if first(&self.raw("meta"), doc! { "_id": MARK })
            .await?
            .is_some()
        {
            return Ok(());
        }
        let orders = query(
            &self.orders(),
            doc! { "paid_at": { "$ne": null } },
            None,
            None,
        )
        .await?;
        for doc in orders {
            let order = doc.into_record()?;
            let mut entries = vec![Entry::opening(
                &order,
                &[],
                order.paid_at.unwrap_or_default(),
            )];
            if order.source == OrderSource::Import {
                let settled: i64 = self
                    .calls_for_order(&order.id, i64::MAX)
                    .await?
                    .iter()
                    .filter_map(|c| c.settled_seconds)
                    .sum();
                if order.seconds_used.0 > settled {
                    let prior = Seconds(order.seconds_used.0 - settled);
                    entries.push(Entry::prior_use(&order, prior, order.created_at));
                }
            }
            for e in &entries {
                self.insert_entry(e).await?;
                self.raw("orders")
                    .update_one(
                        doc! { "_id": &order.id },
                        doc! { "$addToSet": { "entries": &e.id } },
                    )
                    .await
                    .map_err(err)?;
            }
        }
        self.raw("meta")
            .update_one(doc! { "_id": MARK }, doc! { "$set": { "done": true } })
            .upsert(true)
            .await
            .map(|_| ())
            .map_err(err)
    }

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
            // The order a call holds, by the call (the metering flush renews each live call's
            // hold every interval): a lookup, not a walk over every paid order.
            self.raw("orders")
                .create_index(plain(doc! { "active_call_sid": 1 }))
                .await?;
            self.raw("remembered_callers")
                .create_index(plain(doc! { "order_id": 1 }))
                .await?;
            // Replaces the index on `created_at` alone, which every insert kept up beside it.
            self.raw("orders")
                .create_index(plain(doc! { "created_at": -1, "_id": -1 }))
                .await?;
            let _ = self.raw("orders").drop_index("created_at_-1").await;
            self.raw("calls")
                .create_index(plain(doc! { "started_at": -1, "_id": -1 }))
                .await?;
            self.raw("charges")
                .create_index(plain(doc! { "created_at": -1, "_id": -1 }))
                .await?;
            for keys in [
                doc! { "order_id": 1, "at": -1 },
                doc! { "subject": 1, "at": -1 },
                doc! { "at": -1, "_id": -1 },
            ] {
                self.raw("audit_log").create_index(plain(keys)).await?;
            }
            self.raw("ledger_entries")
                .create_index(plain(doc! { "order_id": 1, "created_at": 1 }))
                .await?;
            self.raw("ledger_entries")
                .create_index(plain(doc! { "stripe_payment_intent": 1 }))
                .await?;
            self.raw("ledger_entries")
                .create_index(unique(doc! { "reverses": 1 }, true))
                .await?;
            self.raw("messages")
                .create_index(plain(doc! { "state": 1, "next_attempt_at": 1 }))
                .await?;
            self.raw("messages")
                .create_index(plain(doc! { "to_address": 1, "kind": 1, "created_at": 1 }))
                .await?;
            self.raw("messages")
                .create_index(plain(doc! { "provider_id": 1 }))
                .await?;
            self.raw("conversation_reports")
                .create_index(plain(doc! { "call_sid": 1 }))
                .await?;
            self.raw("conversation_reports")
                .create_index(plain(doc! { "caller": 1, "received_at": -1 }))
                .await?;
            self.raw("calls")
                .create_index(plain(doc! { "instance_id": 1, "bridge_ended_at": 1 }))
                .await?;
            // A signal matters for the seconds it takes to reach the live calls.
            self.raw(instances::SIGNALS)
                .create_index(
                    IndexModel::builder()
                        .keys(doc! { "at": 1 })
                        .options(
                            IndexOptions::builder()
                                .expire_after(std::time::Duration::from_secs(3600))
                                .build(),
                        )
                        .build(),
                )
                .await?;
            Ok::<_, mongodb::error::Error>(())
        };
        created
            .await
            .map_err(|e| StoreError::Migrate(e.to_string()))?;
        self.open_ledger().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.db
            .run_command(doc! { "ping": 1 })
            .await
            .map(|_| ())
            .map_err(err)
    }
}

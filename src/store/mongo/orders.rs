//! Orders in MongoDB.

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::doc;
use mongodb::options::ReturnDocument;

use super::docs::*;
use super::*;

/// The spellings of the states an order may move to `to` from, for a filter's `$in`.
fn sources(to: OrderStatus) -> Vec<&'static str> {
    OrderStatus::sources(to).map(|s| s.as_str()).collect()
}

#[async_trait]
impl OrderStore for MongoStore {
    async fn insert_order(&self, order: &NewOrder) -> Result<Order, StoreError> {
        let doc = OrderDoc::from_new(order);
        self.orders().insert_one(&doc).await.map_err(err)?;
        doc.into_record()
    }

    async fn mark_paid(&self, f: &Fulfilment) -> Result<Option<Order>, StoreError> {
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
                doc! { "stripe_payment_intent": &f.payment_intent, "status": { "$in": sources(OrderStatus::Paid) } },
                update,
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(err)?;
        updated.map(OrderDoc::into_record).transpose()
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

    async fn paid_per_day(&self, since: UnixTime) -> Result<Vec<DayTotal>, StoreError> {
        day_totals(
            self.raw("orders"),
            doc! { "status": OrderStatus::Paid.as_str(), "paid_at": { "$gte": since } },
            "paid_at",
            "amount_cents",
        )
        .await
    }

    async fn orders_by_plan(&self) -> Result<Vec<PlanTotal>, StoreError> {
        let pipeline = vec![
            doc! { "$group": {
                "_id": { "plan": "$plan", "status": "$status" },
                "orders": { "$sum": 1i64 },
                "amount": { "$sum": "$amount_cents" },
            } },
            doc! { "$sort": { "_id.plan": 1, "_id.status": 1 } },
        ];
        let rows: Vec<mongodb::bson::Document> = self
            .raw("orders")
            .aggregate(pipeline)
            .await
            .map_err(err)?
            .try_collect()
            .await
            .map_err(err)?;
        rows.into_iter()
            .map(|row| {
                let key = row.get_document("_id").map_err(corrupt)?;
                Ok(PlanTotal {
                    plan: key.get_str("plan").map_err(corrupt)?.to_string(),
                    status: parse(key.get_str("status").map_err(corrupt)?)?,
                    orders: whole(&row, "orders")?,
                    amount: whole(&row, "amount")?,
                })
            })
            .collect()
    }

    async fn page_orders(&self, l: &Listing<OrderStatus>) -> Result<Vec<Order>, StoreError> {
        page(
            &self.orders(),
            l,
            ("status", l.state.map(|s| s.as_str())),
            "created_at",
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

    async fn move_order(
        &self,
        id: &str,
        to: OrderStatus,
        now: UnixTime,
    ) -> Result<Option<Order>, StoreError> {
        let mut set = doc! { "status": to.as_str(), "updated_at": now };
        if to == OrderStatus::Revoked {
            set.insert("revoked_at", now);
        }
        self.orders()
            .find_one_and_update(
                doc! { "_id": id, "status": { "$in": sources(to) } },
                doc! { "$set": set },
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(err)?
            .map(OrderDoc::into_record)
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
}

//! Remembered callers in MongoDB.

use async_trait::async_trait;
use mongodb::bson::{doc, Document};

use super::*;

fn remembered(d: Document) -> Result<RememberedCaller, StoreError> {
    Ok(RememberedCaller {
        caller: d.get_str("_id").map_err(corrupt)?.to_string(),
        order_id: d.get_str("order_id").map_err(corrupt)?.to_string(),
        remembered_at: whole(&d, "remembered_at")?,
    })
}

#[async_trait]
impl CallerStore for MongoStore {
    async fn remember_caller(
        &self,
        caller: &str,
        order_id: &str,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        self.raw("remembered_callers")
            .update_one(
                doc! { "_id": caller },
                doc! { "$set": { "order_id": order_id, "remembered_at": now } },
            )
            .upsert(true)
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn remembered_order(&self, caller: &str) -> Result<Option<Order>, StoreError> {
        match first(&self.raw("remembered_callers"), doc! { "_id": caller }).await? {
            Some(d) => self.order(d.get_str("order_id").map_err(corrupt)?).await,
            None => Ok(None),
        }
    }

    async fn forget_caller(
        &self,
        caller: &str,
        order_id: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut filter = doc! { "_id": caller };
        if let Some(order_id) = order_id {
            filter.insert("order_id", order_id);
        }
        self.raw("remembered_callers")
            .delete_one(filter)
            .await
            .map(|r| r.deleted_count > 0)
            .map_err(err)
    }

    async fn remembered_callers(
        &self,
        order_id: Option<&str>,
    ) -> Result<Vec<RememberedCaller>, StoreError> {
        let filter = match order_id {
            Some(id) => doc! { "order_id": id },
            None => doc! {},
        };
        query(
            &self.raw("remembered_callers"),
            filter,
            Some(doc! { "remembered_at": 1, "_id": 1 }),
            None,
        )
        .await?
        .into_iter()
        .map(remembered)
        .collect()
    }
}

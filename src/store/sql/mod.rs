//! The SQL shared by the SQLite and PostgreSQL backends.
//!
//! Both engines accept `$N` placeholders, `ON CONFLICT` and `RETURNING`, so one text serves
//! both; `sql_store!` expands the same method bodies once per driver, with concrete types, so
//! neither pays for a runtime-generic driver. One file per aggregate, each holding its
//! statements and the body of its trait (`orders.rs`, `calls.rs`, `charges.rs`,
//! `entries.rs`, `messages.rs`, `attempts.rs`, `events.rs`, `callers.rs`, `reports.rs`, `instances.rs`); `hot.rs`
//! is PostgreSQL's side of the money path's writes.

/// A statement built once, its state values taken from the enums' spelling tables: the
/// template names variants (`'{paid}'` with `paid = OrderStatus::Paid`), never their spellings,
/// so a renamed spelling changes every statement with it (`tests/api/architecture.rs` refuses
/// a spelling typed into SQL).
macro_rules! statement {
    ($($fmt:tt)*) => {
        LazyLock::new(|| format!($($fmt)*))
    };
}

/// `'a', 'b'` for an `IN (...)` of state spellings: callgate's own constants (the
/// `text_enum!` tables), so they can be written into the SQL text.
pub(crate) fn spelling_list<'a>(spellings: impl Iterator<Item = &'a str>) -> String {
    spellings
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A page of `table` newest first (see `store::Listing`): `$1` the state, `$2` from, `$3`
/// until, `$4` and `$5` the cursor's time and id, `$6` the limit; bound by [`bind_listing`].
pub(crate) fn listing(table: &str, at: &str, id: &str, state: &str) -> String {
    format!(
        "SELECT * FROM {table} WHERE ($1 IS NULL OR {state} = $1) \
         AND ($2 IS NULL OR {at} >= $2) AND ($3 IS NULL OR {at} < $3) \
         AND ($4 IS NULL OR {at} < $4 OR ({at} = $4 AND {id} < $5)) \
         ORDER BY {at} DESC, {id} DESC LIMIT $6"
    )
}

/// Binds a `store::Listing` to a [`listing`] statement.
macro_rules! bind_listing {
    ($query:expr, $l:expr) => {
        $query
            .bind($l.state.map(|s| s.as_str()))
            .bind($l.from)
            .bind($l.until)
            .bind($l.after_at())
            .bind($l.after_id())
            .bind($l.limit)
    };
}
pub(crate) use bind_listing;

/// Runs a `day, total` statement whose `$1` is the first time counted.
pub(crate) async fn day_totals<DB>(
    pool: &sqlx::Pool<DB>,
    sql: &str,
    since: crate::store::UnixTime,
) -> Result<Vec<crate::store::DayTotal>, crate::store::StoreError>
where
    DB: sqlx::Database,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB> + for<'r> sqlx::Decode<'r, DB>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'c> &'c mut <DB as sqlx::Database>::Connection: sqlx::Executor<'c, Database = DB>,
    usize: sqlx::ColumnIndex<<DB as sqlx::Database>::Row>,
{
    let rows: Vec<(i64, i64)> = sqlx::query_as::<DB, (i64, i64)>(sql)
        .bind(since)
        .fetch_all(pool)
        .await
        .map_err(crate::store::classify)?;
    Ok(rows
        .into_iter()
        .map(|(day, total)| crate::store::DayTotal { day, total })
        .collect())
}

/// A connection inside a transaction, for the money path's primitives (`store::money`).
#[cfg(feature = "postgres")]
pub(crate) struct SqlxTx<'c, C>(pub &'c mut C);

mod attempts;
mod audit;
mod callers;
mod calls;
mod charges;
mod entries;
mod events;
#[cfg(feature = "postgres")]
mod hot;
mod instances;
mod messages;
mod orders;
mod reports;

pub(crate) use attempts::*;
pub(crate) use audit::*;
pub(crate) use callers::*;
pub(crate) use calls::*;
pub(crate) use charges::*;
pub(crate) use entries::*;
pub(crate) use events::*;
#[cfg(feature = "postgres")]
pub(crate) use hot::*;
pub(crate) use instances::*;
pub(crate) use messages::*;
pub(crate) use orders::*;
pub(crate) use reports::*;

/// Implements [`crate::store::Store`] and every aggregate's trait for a struct with `pool`
/// and `writer` fields (both `sqlx::Pool<$db>`): reads go to `pool`, writes to `writer` (today
/// the same pool for both engines; the split lets a backend give its writers their own
/// connections). `$own` items are the engine's own versions of `CallStore`'s provided methods.
macro_rules! sql_store {
    ($store:ty, $db:ty, $backend:literal, $migrator:expr $(, $own:item)* $(,)?) => {
        use $crate::store::sql::*;
        use $crate::store::*;

        $crate::store::sql::sql_orders!($store, $db);
        $crate::store::sql::sql_calls!($store, $db $(, $own)*);
        $crate::store::sql::sql_charges!($store, $db);
        $crate::store::sql::sql_attempts!($store, $db);
        $crate::store::sql::sql_events!($store, $db);
        $crate::store::sql::sql_callers!($store, $db);
        $crate::store::sql::sql_entries!($store, $db);
        $crate::store::sql::sql_messages!($store, $db);
        $crate::store::sql::sql_reports!($store, $db);
        $crate::store::sql::sql_instances!($store, $db);
        $crate::store::sql::sql_audit!($store, $db);

        #[async_trait::async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn migrate(&self) -> Result<(), StoreError> {
                $migrator
                    .run(&self.pool)
                    .await
                    .map_err(|e| StoreError::Migrate(e.to_string()))?;
                self.migrated();
                Ok(())
            }

            async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query::<$db>("SELECT 1")
                    .execute(&self.pool)
                    .await
                    .map(|_| ())
                    .map_err(classify)
            }

            async fn code_check(&self, q: &CodeCheckQuery<'_>) -> Result<CodeCheckFacts, StoreError> {
                Ok(code_check_facts(self.code_check_row(q).await?))
            }

            async fn check_and_take(
                &self,
                q: &CodeCheckQuery<'_>,
                wants: &[SlotWant<'_>],
                now: UnixTime,
            ) -> Result<(CodeCheckFacts, Vec<Option<i64>>), StoreError> {
                self.check_and_take_here(q, wants, now).await
            }
        }
    };
}

pub(crate) use sql_store;

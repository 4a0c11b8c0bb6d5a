//! PostgreSQL backend: for several instances behind a load balancer.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

pub struct PostgresStore {
    pool: PgPool,
    /// The same pool: PostgreSQL runs concurrent writers itself.
    writer: PgPool,
    /// Writes whose loss in a crash of the database server costs no money (the wrong-code
    /// gate's slots, code attempts, calls' first rows, heartbeats): connections with
    /// `synchronous_commit = off`, so such a commit does not wait for the WAL to reach the
    /// disk. Other sessions see it at once, as any commit (the gate stays exact across
    /// instances); only a crash of PostgreSQL itself can lose the last few hundred
    /// milliseconds of them (`wal_writer_delay` three times over), never a payment or a debit.
    lax: PgPool,
}

/// Connections each instance opens for reads and durable writes, unless configured.
const CONNECTIONS: u32 = crate::config::settings::DEFAULT_DATABASE_CONNECTIONS;

/// The channel instances tell each other on that an order changed; the payload is its id.
const ORDERS_CHANNEL: &str = "callgate_orders";

/// Instances tell each other through PostgreSQL itself: `NOTIFY` on one, `LISTEN` on a
/// connection of its own on each. A notification sent while a listener reconnects is lost;
/// the live call's periodic re-check covers that gap.
#[async_trait::async_trait]
impl super::Signals for PostgresStore {
    async fn publish_order_changed(&self, order_id: &str) -> Result<(), super::StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(ORDERS_CHANNEL)
            .bind(order_id)
            .execute(&self.writer)
            .await
            .map(|_| ())
            .map_err(super::classify)
    }

    async fn order_changes(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<String>>, super::StoreError> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool)
            .await
            .map_err(super::classify)?;
        listener
            .listen(ORDERS_CHANNEL)
            .await
            .map_err(super::classify)?;
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                // `recv` reconnects (and listens again) by itself after a lost connection.
                match listener.recv().await {
                    Ok(n) => {
                        if tx.send(n.payload().to_string()).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "order signals interrupted; reconnecting");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(Some(rx))
    }
}

impl PostgresStore {
    /// Connects to the server named by a `postgres://` URL, with a pool of `connections`.
    pub async fn open(url: &str, connections: u32) -> Result<PostgresStore, super::StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| super::StoreError::Open(format!("DATABASE_URL: {e}")))?;
        PostgresStore::connect_sized(options, connections).await
    }

    /// Connects with ready-made options (tests use this to pick a schema).
    pub async fn connect(options: PgConnectOptions) -> Result<PostgresStore, super::StoreError> {
        PostgresStore::connect_sized(options, CONNECTIONS).await
    }

    async fn connect_sized(
        options: PgConnectOptions,
        connections: u32,
    ) -> Result<PostgresStore, super::StoreError> {
        let lax = pool_options(connections)
            .connect_lazy_with(options.clone().options([("synchronous_commit", "off")]));
        let pool = pool_options(connections)
            .connect_with(options)
            .await
            .map_err(|e| super::StoreError::Open(format!("PostgreSQL: {e}")))?;
        Ok(PostgresStore {
            writer: pool.clone(),
            pool,
            lax,
        })
    }
}

/// Both pools' options: as many connections as for requests (under a guessing attack every
/// code check takes slots on `lax`: with 4, they queued for its connections at 4,000 checks a
/// second), and a ping before use only for a connection that sat idle for
/// [`PostgresStore::PING_AFTER_IDLE`]. sqlx pings every connection it hands out unless told
/// otherwise: one more round trip to PostgreSQL for each statement (it also pings each one
/// given back, which cannot be turned off). A connection in steady use was answered moments
/// ago; a connection whose statement failed is closed when it is given back (that ping
/// fails). What is left exposed: a connection the server closed less than a second after its
/// last use (a restart that quick, `pg_terminate_backend`) fails one statement, as a query in
/// flight would.
fn pool_options(connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PostgresStore::PING_AFTER_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

impl PostgresStore {
    /// A connection idle this long is pinged before it is handed out (see `pool_options`).
    pub const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

    /// Nothing to start once the schema is in place.
    fn migrated(&self) {}

    /// The order whose `column` (one of callgate's own column names) is `value`.
    async fn order_where(
        &self,
        column: &str,
        value: &str,
    ) -> Result<Option<super::Order>, super::StoreError> {
        let sql = format!("SELECT * FROM orders WHERE {column} = $1");
        sqlx::query_as::<sqlx::Postgres, super::Order>(&sql)
            .bind(value)
            .fetch_optional(&self.pool)
            .await
            .map_err(super::classify)
    }

    async fn code_check_row(
        &self,
        q: &super::CodeCheckQuery<'_>,
    ) -> Result<super::sql::CodeCheckRow, super::StoreError> {
        let row = bind_code_check(sqlx::query(super::sql::CODE_CHECK), q)
            .fetch_one(&self.pool)
            .await
            .map_err(super::classify)?;
        code_check_columns(&row).map_err(super::classify)
    }

    /// The code check and the gate's slots in one statement, on the connections whose writes
    /// cost no money if lost (the slots'). A key that lost a race for its slot (none taken,
    /// fewer held than its limit) is sought again as `take_slots` does.
    async fn check_and_take_here(
        &self,
        q: &super::CodeCheckQuery<'_>,
        wants: &[super::SlotWant<'_>],
        now: super::UnixTime,
    ) -> Result<(super::CodeCheckFacts, Vec<Option<i64>>), super::StoreError> {
        use sqlx::Row;
        let sql = super::sql::code_check_taking(wants.len());
        let mut query = bind_code_check(sqlx::query(&sql), q).bind(now);
        for want in wants {
            query = query.bind(want.key).bind(want.limit);
        }
        let row = query.fetch_one(&self.lax).await.map_err(super::classify)?;
        let facts = code_check_columns(&row).map_err(super::classify)?;
        let mut taken = Vec::with_capacity(wants.len());
        let mut raced = Vec::new();
        for (i, want) in wants.iter().enumerate() {
            let slot: Option<i64> = row
                .try_get(format!("slot_{i}").as_str())
                .map_err(super::classify)?;
            let held: i64 = row
                .try_get(format!("held_{i}").as_str())
                .map_err(super::classify)?;
            if slot.is_none() && held < want.limit {
                raced.push(i);
            }
            taken.push(slot);
        }
        if !raced.is_empty() {
            use super::AttemptStore;
            let again: Vec<super::SlotWant<'_>> = raced.iter().map(|&i| wants[i]).collect();
            let got = self.take_slots(&again, q.since, now).await?;
            for (&i, slot) in raced.iter().zip(got) {
                taken[i] = slot;
            }
        }
        Ok((super::sql::code_check_facts(facts), taken))
    }

    async fn count_failures_row(
        &self,
        scope: super::AttemptScope<'_>,
        since: super::UnixTime,
        up_to: i64,
        written_up_to: Option<super::AttemptGroup>,
    ) -> Result<i64, super::StoreError> {
        let (sql, value) = super::sql::failure_count(scope);
        let (writer, batch) = super::AttemptGroup::columns(written_up_to);
        sqlx::query_scalar(sql)
            .bind(since)
            .bind(value)
            .bind(up_to.max(0))
            .bind(writer)
            .bind(batch)
            .fetch_one(&self.pool)
            .await
            .map_err(super::classify)
    }
}

/// Binds the code check's `$1` to `$8`.
fn bind_code_check<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    q: &super::CodeCheckQuery<'q>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let (writer, batch) = super::AttemptGroup::columns(q.written_up_to);
    query
        .bind(q.call_sid)
        .bind(q.caller)
        .bind(q.code_hash)
        .bind(q.since)
        .bind(q.caller_up_to.max(0))
        .bind(q.code_up_to.max(0))
        .bind(writer)
        .bind(batch)
}

/// A [`super::sql::CODE_CHECK`] row's columns (in [`super::sql::code_check_taking`]'s too).
fn code_check_columns(
    row: &sqlx::postgres::PgRow,
) -> Result<super::sql::CodeCheckRow, sqlx::Error> {
    use sqlx::{FromRow, Row};
    let order = match row.try_get::<Option<String>, _>(super::sql::CODE_CHECK_ORDER_ID)? {
        Some(_) => Some(super::Order::from_row(row)?),
        None => None,
    };
    Ok((
        row.try_get("call_known")?,
        row.try_get("caller_failures")?,
        row.try_get("code_failures")?,
        order,
        row.try_get("remembered_order_id")?,
    ))
}

super::sql::sql_store!(
    PostgresStore,
    sqlx::Postgres,
    "postgres",
    MIGRATOR,
    // The status callback's end and settlement go together, in one transaction.
    async fn end_and_settle(
        &self,
        end: &super::EndCall,
        rounding: crate::domain::money::Rounding,
        charge_id: &str,
    ) -> Result<(super::Call, Result<super::Settlement, super::StoreError>), super::StoreError>
    {
        self.write_end_and_settlement(end, rounding, charge_id)
            .await
    }
);
super::sql::sqlx_hot_writes!(PostgresStore, sqlx::Postgres);

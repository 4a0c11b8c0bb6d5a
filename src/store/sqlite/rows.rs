//! Rows read on the writer's connection through rusqlite, decoded into the same records
//! sqlx's `FromRow` gives (`money.rs`'s tests compare the two), and SQLite errors as store errors.

use rusqlite::{named_params, OptionalExtension, Row};

use crate::store::{Call, Cents, Charge, Order, Seconds, StoreError};

pub(super) fn order_by_id(db: &rusqlite::Connection, id: &str) -> rusqlite::Result<Option<Order>> {
    db.prepare_cached("SELECT * FROM orders WHERE id = $1")?
        .query_row(named_params! { "$1": id }, order_row)
        .optional()
}

/// A column stored as text and parsed (a state's spelling, a currency): an unknown spelling
/// is a corrupt row, as it is through sqlx.
struct Parsed<T>(T);

impl<T> rusqlite::types::FromSql for Parsed<T>
where
    T: TryFrom<String>,
    T::Error: std::error::Error + Send + Sync + 'static,
{
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let text = String::column_result(value)?;
        T::try_from(text)
            .map(Parsed)
            .map_err(|e| rusqlite::types::FromSqlError::Other(Box::new(e)))
    }
}

fn parsed<T>(row: &Row<'_>, column: &str) -> rusqlite::Result<T>
where
    T: TryFrom<String>,
    T::Error: std::error::Error + Send + Sync + 'static,
{
    Ok(row.get::<_, Parsed<T>>(column)?.0)
}

fn parsed_opt<T>(row: &Row<'_>, column: &str) -> rusqlite::Result<Option<T>>
where
    T: TryFrom<String>,
    T::Error: std::error::Error + Send + Sync + 'static,
{
    Ok(row.get::<_, Option<Parsed<T>>>(column)?.map(|p| p.0))
}

// Rows by column name, as `sqlx::FromRow` maps them (`tests` compares the two on the same rows).

pub(super) fn call_row(row: &Row<'_>) -> rusqlite::Result<Call> {
    Ok(Call {
        call_sid: row.get("call_sid")?,
        order_id: row.get("order_id")?,
        from_number: row.get("from_number")?,
        to_number: row.get("to_number")?,
        status: parsed(row, "status")?,
        started_at: row.get("started_at")?,
        bridged_at: row.get("bridged_at")?,
        ended_at: row.get("ended_at")?,
        seconds_metered: Seconds(row.get("seconds_metered")?),
        twilio_duration: row.get("twilio_duration")?,
        end_reason: parsed_opt(row, "end_reason")?,
        updated_at: row.get("updated_at")?,
        twilio_status: parsed_opt(row, "twilio_status")?,
        settled_at: row.get("settled_at")?,
        bridge_ended_at: row.get("bridge_ended_at")?,
        conversation_id: row.get("conversation_id")?,
        settled_seconds: row.get("settled_seconds")?,
        refused: parsed_opt(row, "refused")?,
        refused_order_id: row.get("refused_order_id")?,
    })
}

pub(super) fn order_row(row: &Row<'_>) -> rusqlite::Result<Order> {
    Ok(Order {
        id: row.get("id")?,
        status: parsed(row, "status")?,
        source: parsed(row, "source")?,
        plan: row.get("plan")?,
        amount: Cents(row.get("amount_cents")?),
        currency: parsed(row, "currency")?,
        seconds_included: Seconds(row.get("seconds_included")?),
        seconds_used: Seconds(row.get("seconds_used")?),
        overage_consent: row.get("overage_consent")?,
        overage_price: Cents(row.get("overage_price_cents")?),
        overage_blocked: parsed_opt(row, "overage_blocked")?,
        stripe_payment_intent: row.get("stripe_payment_intent")?,
        stripe_customer: row.get("stripe_customer")?,
        stripe_payment_method: row.get("stripe_payment_method")?,
        code_hash: row.get("code_hash")?,
        code_sealed: row.get("code_sealed")?,
        code_last4: row.get("code_last4")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
        paid_at: row.get("paid_at")?,
        revoked_at: row.get("revoked_at")?,
        active_call_sid: row.get("active_call_sid")?,
        active_call_until: row.get("active_call_until")?,
        client_secret_hash: row.get("client_secret_hash")?,
    })
}

pub(super) fn charge_row(row: &Row<'_>) -> rusqlite::Result<Charge> {
    Ok(Charge {
        id: row.get("id")?,
        call_sid: row.get("call_sid")?,
        order_id: row.get("order_id")?,
        amount: Cents(row.get("amount_cents")?),
        currency: parsed(row, "currency")?,
        seconds_billed: Seconds(row.get("seconds_billed")?),
        state: parsed(row, "state")?,
        attempts: row.get("attempts")?,
        next_attempt_at: row.get("next_attempt_at")?,
        lease_owner: row.get("lease_owner")?,
        lease_until: row.get("lease_until")?,
        stripe_payment_intent: row.get("stripe_payment_intent")?,
        last_error: row.get("last_error")?,
        pay_token: row.get("pay_token")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
        key_generation: row.get("key_generation")?,
    })
}

pub(crate) fn sqlite_error(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::FromSqlConversionFailure(..) | rusqlite::Error::InvalidColumnType(..) =
        e
    {
        return StoreError::Corrupt(e.to_string());
    }
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::Conflict(e.to_string()),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            StoreError::Unavailable(e.to_string())
        }
        Some(rusqlite::ErrorCode::CannotOpen) => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Database(e.to_string()),
    }
}

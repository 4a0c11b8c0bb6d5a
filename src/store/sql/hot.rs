//! PostgreSQL's hot writes through sqlx (SQLite runs the same statements on its writer thread).

/// The hot writes through sqlx, for PostgreSQL: the money path's multi-step writes and the
/// single or grouped writes every call makes. SQLite runs the same steps, with the same
/// statements, on its own writer thread (`store::sqlite_writer`). Each is called by the
/// `Store` method of the same meaning that `sql_store!` generates. Expands beside it, in the
/// module where `sql_store!` brought the store's names in.
macro_rules! sqlx_hot_writes {
    ($store:ty, $db:ty) => {
        impl $store {
            /// Inserts `rows` in one transaction, one multi-row INSERT per chunk: each page
            /// touched is written once for the whole group. `head` names the table and its
            /// columns, `bind` binds one row's values in that order, `tail` ends each INSERT.
            async fn insert_group<'a, T>(
                &self,
                head: &str,
                rows: &'a [T],
                bind: impl Fn(&mut sqlx::query_builder::Separated<'_, 'a, $db, &'static str>, &'a T),
                tail: &str,
            ) -> Result<(), StoreError> {
                let mut tx = self.writer.begin().await.map_err(classify)?;
                for chunk in rows.chunks(ATTEMPTS_PER_INSERT) {
                    let mut insert = sqlx::QueryBuilder::<$db>::new(head);
                    insert.push_values(chunk, |mut row, r| bind(&mut row, r));
                    insert.push(tail);
                    insert
                        .build()
                        .persistent(chunk.len() == 1)
                        .execute(&mut *tx)
                        .await
                        .map_err(classify)?;
                }
                tx.commit().await.map_err(classify)
            }

            async fn write_stream_token(
                &self,
                token_hash: &str,
                grant: &StreamGrant,
                expires_at: UnixTime,
            ) -> Result<(), StoreError> {
                sqlx::query::<$db>(STREAM_TOKEN_INSERT)
                .bind(token_hash)
                .bind(&grant.call_sid)
                .bind(&grant.order_id)
                .bind(expires_at)
                .execute(&self.writer)
                .await
                .map(|_| ())
                .map_err(classify)
            }

            async fn write_call(&self, call: &NewCall) -> Result<Call, StoreError> {
                sqlx::query_as::<$db, Call>(&CALL_UPSERT)
                    .bind(&call.call_sid)
                    .bind(&call.from_number)
                    .bind(&call.to_number)
                    .bind(call.now)
                    .fetch_one(&self.writer)
                    .await
                    .map_err(classify)
            }

            async fn write_calls(&self, calls: &[NewCall]) -> Result<(), StoreError> {
                self.insert_group(
                    "INSERT INTO calls (call_sid, from_number, to_number, status, started_at, updated_at) ",
                    calls,
                    |row, c| {
                        row.push_bind(&c.call_sid)
                            .push_bind(&c.from_number)
                            .push_bind(&c.to_number)
                            .push_bind(CallState::Menu)
                            .push_bind(c.now)
                            .push_bind(c.now);
                    },
                    " ON CONFLICT (call_sid) DO NOTHING",
                )
                .await
            }

            async fn write_attempts(&self, attempts: &[CodeAttempt]) -> Result<(), StoreError> {
                self.insert_group(
                    "INSERT INTO code_attempts (caller, code_hash, ok, at) ",
                    attempts,
                    |row, a| {
                        row.push_bind(&a.caller)
                            .push_bind(&a.code_hash)
                            .push_bind(a.ok)
                            .push_bind(a.at);
                    },
                    "",
                )
                .await
            }

            async fn write_hold(
                &self,
                order_id: &str,
                call_sid: &str,
                until: UnixTime,
                now: UnixTime,
                token: Option<&TokenIssue>,
            ) -> Result<Hold, StoreError> {
                let mut tx = self.writer.begin().await.map_err(classify)?;
                let linked = sqlx::query::<$db>(&CALL_LINK_ORDER)
                    .bind(call_sid)
                    .bind(order_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?
                    .rows_affected()
                    == 1;
                if !linked {
                    tx.rollback().await.map_err(classify)?;
                    return Ok(Hold::CallOver);
                }
                let held = sqlx::query_as::<$db, Order>(ORDER_HOLD)
                    .bind(order_id)
                    .bind(call_sid)
                    .bind(until)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(classify)?;
                if let Some(order) = held {
                    if let Some(token) = token {
                        sqlx::query::<$db>(STREAM_TOKEN_INSERT)
                            .bind(&token.token_hash)
                            .bind(call_sid)
                            .bind(order_id)
                            .bind(token.expires_at)
                            .execute(&mut *tx)
                            .await
                            .map_err(classify)?;
                    }
                    tx.commit().await.map_err(classify)?;
                    return Ok(Hold::Held(Box::new(order)));
                }
                tx.rollback().await.map_err(classify)?;
                Ok(Hold::refused(self.order(order_id).await?, now))
            }

            async fn write_end(&self, end: &EndCall) -> Result<Call, StoreError> {
                self.upsert_call(&end.as_new_call()).await?;
                let call = sqlx::query_as::<$db, Call>(&CALL_END)
                    .bind(&end.call_sid)
                    .bind(end.now)
                    .bind(end.duration)
                    .bind(&end.twilio_status)
                    .bind(&end.reason)
                    .fetch_one(&self.writer)
                    .await
                    .map_err(classify)?;
                if let Some(order_id) = call.releases_hold() {
                    sqlx::query::<$db>(ORDER_RELEASE)
                        .bind(order_id)
                        .bind(&call.call_sid)
                        .execute(&self.writer)
                        .await
                        .map_err(classify)?;
                }
                Ok(call)
            }

            async fn write_settlement(
                &self,
                call_sid: &str,
                rounding: Rounding,
                charge_id: &str,
                now: UnixTime,
            ) -> Result<Settlement, StoreError> {
                let mut tx = self.writer.begin().await.map_err(classify)?;
                // Claiming the call first makes the whole settlement happen once.
                let claimed = sqlx::query_as::<$db, Call>(&CALL_CLAIM_SETTLEMENT)
                    .bind(call_sid)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(classify)?;
                let Some(call) = claimed else {
                    tx.rollback().await.map_err(classify)?;
                    return Ok(Settlement::unclaimed(self.call(call_sid).await?));
                };
                let used = call.billable_seconds();
                sqlx::query::<$db>(CALL_SETTLED_SECONDS)
                    .bind(call_sid)
                    .bind(used.0)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                let Some(order_id) = call.order_id.as_deref() else {
                    tx.commit().await.map_err(classify)?;
                    return Ok(Settlement::without_order(used));
                };
                let order = sqlx::query_as::<$db, Order>(ORDER_FOR_DEBIT)
                    .bind(order_id)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(classify)?;
                let debit = $crate::domain::ledger::debit(&order, used, rounding);
                sqlx::query::<$db>(ORDER_DEBIT)
                    .bind(order_id)
                    .bind(debit.used_after.0)
                    .bind(call_sid)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                let charge = match debit.charge {
                    Some(amount) => sqlx::query_as::<$db, Charge>(&CHARGE_INSERT)
                        .bind(charge_id)
                        .bind(call_sid)
                        .bind(order_id)
                        .bind(amount.0)
                        .bind(order.currency.code())
                        .bind(debit.overage.0)
                        .bind(now)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(classify)?
                        .map(Box::new),
                    None => None,
                };
                tx.commit().await.map_err(classify)?;
                Ok(Settlement::Settled {
                    seconds: used,
                    overage: debit.overage,
                    charge,
                })
            }
        }
    };
}

pub(crate) use sqlx_hot_writes;

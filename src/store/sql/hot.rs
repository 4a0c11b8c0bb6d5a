//! PostgreSQL's hot writes through sqlx (SQLite runs the same statements on its writer thread).

/// Rows in one multi-row INSERT of a group (6 parameters each: 6,144 of the 65,535 a
/// statement may bind).
pub(crate) const ATTEMPTS_PER_INSERT: usize = 1024;

/// The hot writes through sqlx, for PostgreSQL: the money path's multi-step writes and the
/// single or grouped writes every call makes. SQLite runs the same steps, with the same
/// statements, on its own writer thread (`store::sqlite`). Each is called by the
/// `Store` method of the same meaning that `sql_store!` generates. Expands beside it, in the
/// module where `sql_store!` brought the store's names in.
macro_rules! sqlx_hot_writes {
    ($store:ty, $db:ty) => {
        impl $store {
            /// Inserts `rows` in one transaction, one multi-row INSERT per chunk (one INSERT
            /// alone when they fit in one): each page touched is written once for the whole
            /// group. `head` names the table and its columns, `bind` binds one row's values in
            /// that order, `tail` ends each INSERT.
            async fn insert_group<'a, T>(
                &self,
                head: &str,
                rows: &'a [T],
                bind: impl Fn(&mut sqlx::query_builder::Separated<'_, 'a, $db, &'static str>, &'a T),
                tail: &str,
            ) -> Result<(), StoreError> {
                // Groups hold only writes whose loss costs no money (attempts, first rows).
                let insert = |chunk: &'a [T]| {
                    let mut insert = sqlx::QueryBuilder::<$db>::new(head);
                    insert.push_values(chunk, |mut row, r| bind(&mut row, r));
                    insert.push(tail);
                    insert
                };
                if rows.is_empty() {
                    return Ok(());
                }
                if rows.len() <= ATTEMPTS_PER_INSERT {
                    // One INSERT is atomic alone: sent without BEGIN and COMMIT, one round trip.
                    return insert(rows)
                        .build()
                        .persistent(rows.len() == 1)
                        .execute(&self.lax)
                        .await
                        .map(|_| ())
                        .map_err(classify);
                }
                let mut tx = self.lax.begin().await.map_err(classify)?;
                for chunk in rows.chunks(ATTEMPTS_PER_INSERT) {
                    insert(chunk)
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
                use $crate::store::money::MoneyTx;
                let token = TokenIssue {
                    token_hash: token_hash.to_owned(),
                    expires_at,
                };
                // One statement: run on a pooled connection as it is, without BEGIN/COMMIT.
                let mut conn = self.writer.acquire().await.map_err(classify)?;
                SqlxTx(&mut *conn)
                    .insert_token(&token, &grant.call_sid, &grant.order_id)
                    .await
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

            async fn write_attempts(
                &self,
                attempts: &[CodeAttempt],
                group: Option<AttemptGroup>,
            ) -> Result<(), StoreError> {
                let (writer, batch) = AttemptGroup::columns(group);
                self.insert_group(
                    "INSERT INTO code_attempts (caller, code_hash, ok, at, writer, batch) ",
                    attempts,
                    |row, a| {
                        row.push_bind(&a.caller)
                            .push_bind(&a.code_hash)
                            .push_bind(a.ok)
                            .push_bind(a.at)
                            .push_bind(writer)
                            .push_bind(batch);
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
                let step = $crate::store::money::hold(
                    &mut SqlxTx(&mut *tx),
                    order_id,
                    call_sid,
                    until,
                    now,
                    token,
                )
                .await?;
                finish_tx(tx, step).await
            }

            async fn write_end(&self, end: &EndCall) -> Result<Call, StoreError> {
                let mut tx = self.writer.begin().await.map_err(classify)?;
                let step = $crate::store::money::end(&mut SqlxTx(&mut *tx), end).await?;
                finish_tx(tx, step).await
            }

            async fn write_settlement(
                &self,
                call_sid: &str,
                rounding: Rounding,
                charge_id: &str,
                now: UnixTime,
            ) -> Result<Settlement, StoreError> {
                let mut tx = self.writer.begin().await.map_err(classify)?;
                let step = $crate::store::money::settle(
                    &mut SqlxTx(&mut *tx),
                    call_sid,
                    rounding,
                    charge_id,
                    now,
                )
                .await?;
                finish_tx(tx, step).await
            }
        }

        impl $store {
            /// The status callback's end and settlement in one transaction (one commit, one
            /// wait for the disk). The end stands whatever the settlement does: a settlement
            /// that fails, or is not ready and rolls back, leaves the end written alone.
            async fn write_end_and_settlement(
                &self,
                end: &EndCall,
                rounding: Rounding,
                charge_id: &str,
            ) -> Result<(Call, Result<Settlement, StoreError>), StoreError> {
                use $crate::store::money::{self, Step};
                let mut tx = self.writer.begin().await.map_err(classify)?;
                let call = match money::end(&mut SqlxTx(&mut *tx), end).await? {
                    Step::Commit(call) => call,
                    Step::Rollback(_) => {
                        tx.rollback().await.map_err(classify)?;
                        return Ok((self.write_end(end).await?, Err(StoreError::Unavailable(
                            "the call's end was rolled back".into(),
                        ))));
                    }
                };
                let settled =
                    money::settle(&mut SqlxTx(&mut *tx), &end.call_sid, rounding, charge_id, end.now)
                        .await;
                match settled {
                    Ok(Step::Commit(outcome)) => {
                        tx.commit().await.map_err(classify)?;
                        Ok((call, Ok(outcome)))
                    }
                    Ok(Step::Rollback(outcome)) => {
                        tx.rollback().await.map_err(classify)?;
                        Ok((self.write_end(end).await?, Ok(outcome)))
                    }
                    Err(e) => {
                        tx.rollback().await.map_err(classify)?;
                        Ok((self.write_end(end).await?, Err(e)))
                    }
                }
            }
        }

        /// Commits or rolls back as the money path's sequence said.
        async fn finish_tx<T>(
            tx: sqlx::Transaction<'_, $db>,
            step: $crate::store::money::Step<T>,
        ) -> Result<T, StoreError> {
            match step {
                $crate::store::money::Step::Commit(value) => {
                    tx.commit().await.map_err(classify)?;
                    Ok(value)
                }
                $crate::store::money::Step::Rollback(value) => {
                    tx.rollback().await.map_err(classify)?;
                    Ok(value)
                }
            }
        }

        /// The money path's primitives through sqlx, inside one transaction.
        impl $crate::store::money::MoneyTx for SqlxTx<'_, <$db as sqlx::Database>::Connection> {
            type Error = StoreError;
            const ISOLATED: bool = true;

            fn contended(order_id: &str) -> StoreError {
                StoreError::Unavailable(format!("order {order_id} kept changing under its debit"))
            }

            async fn link_call(&mut self, call_sid: &str, order_id: &str, now: UnixTime) -> Result<bool, StoreError> {
                sqlx::query::<$db>(&CALL_LINK_ORDER)
                    .bind(call_sid)
                    .bind(order_id)
                    .bind(now)
                    .execute(&mut *self.0)
                    .await
                    .map(|r| r.rows_affected() == 1)
                    .map_err(classify)
            }

            async fn take_hold(
                &mut self,
                order_id: &str,
                call_sid: &str,
                until: UnixTime,
                now: UnixTime,
            ) -> Result<Option<Order>, StoreError> {
                sqlx::query_as::<$db, Order>(ORDER_HOLD)
                    .bind(order_id)
                    .bind(call_sid)
                    .bind(until)
                    .bind(now)
                    .fetch_optional(&mut *self.0)
                .await
                .map_err(classify)
            }

            async fn insert_token(
                &mut self,
                token: &TokenIssue,
                call_sid: &str,
                order_id: &str,
            ) -> Result<(), StoreError> {
                sqlx::query::<$db>(STREAM_TOKEN_INSERT)
                    .bind(&token.token_hash)
                    .bind(call_sid)
                    .bind(order_id)
                    .bind(token.expires_at)
                    .execute(&mut *self.0)
                    .await
                    .map(|_| ())
                    .map_err(classify)
            }

            async fn order(&mut self, id: &str) -> Result<Option<Order>, StoreError> {
                sqlx::query_as::<$db, Order>("SELECT * FROM orders WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *self.0)
                .await
                .map_err(classify)
            }

            async fn call(&mut self, call_sid: &str) -> Result<Option<Call>, StoreError> {
                sqlx::query_as::<$db, Call>("SELECT * FROM calls WHERE call_sid = $1")
                    .bind(call_sid)
                    .fetch_optional(&mut *self.0)
                .await
                .map_err(classify)
            }

            async fn mark_ended(&mut self, end: &EndCall) -> Result<Call, StoreError> {
                sqlx::query_as::<$db, Call>(&CALL_END)
                    .bind(&end.call_sid)
                    .bind(end.now)
                    .bind(end.duration)
                    .bind(&end.twilio_status)
                    .bind(&end.reason)
                    .bind(&end.from_number)
                    .bind(&end.to_number)
                    .fetch_one(&mut *self.0)
                    .await
                    .map_err(classify)
            }

            async fn release_hold(&mut self, order_id: &str, call_sid: &str) -> Result<(), StoreError> {
                sqlx::query::<$db>(ORDER_RELEASE)
                    .bind(order_id)
                    .bind(call_sid)
                    .execute(&mut *self.0)
                    .await
                    .map(|_| ())
                    .map_err(classify)
            }

            async fn claim_settlement(&mut self, call_sid: &str, now: UnixTime) -> Result<Option<Call>, StoreError> {
                sqlx::query_as::<$db, Call>(&CALL_CLAIM_SETTLEMENT)
                    .bind(call_sid)
                    .bind(now)
                    .fetch_optional(&mut *self.0)
                .await
                .map_err(classify)
            }

            async fn set_settled_seconds(&mut self, call_sid: &str, seconds: Seconds) -> Result<(), StoreError> {
                sqlx::query::<$db>(CALL_SETTLED_SECONDS)
                    .bind(call_sid)
                    .bind(seconds.0)
                    .execute(&mut *self.0)
                    .await
                    .map(|_| ())
                    .map_err(classify)
            }

            async fn order_for_debit(&mut self, order_id: &str, _call_sid: &str, _seconds: Seconds) -> Result<Order, StoreError> {
                sqlx::query_as::<$db, Order>(ORDER_FOR_DEBIT)
                    .bind(order_id)
                    .fetch_one(&mut *self.0)
                    .await
                    .map_err(classify)
            }

            async fn debit_order(
                &mut self,
                before: &Order,
                used_after: Seconds,
                call_sid: &str,
                now: UnixTime,
            ) -> Result<bool, StoreError> {
                sqlx::query::<$db>(ORDER_DEBIT)
                    .bind(&before.id)
                    .bind(used_after.0)
                    .bind(call_sid)
                    .bind(now)
                    .bind(before.seconds_used.0)
                    .execute(&mut *self.0)
                    .await
                    .map(|r| r.rows_affected() == 1)
                    .map_err(classify)
            }

            async fn insert_charge(&mut self, c: &NewCharge) -> Result<Option<Charge>, StoreError> {
                $crate::store::sql::bind_charge_insert!(
                    sqlx::query_as::<$db, Charge>(&CHARGE_INSERT),
                    c
                )
                .fetch_optional(&mut *self.0)
                .await
                .map_err(classify)
            }
        }
    };
}

pub(crate) use sqlx_hot_writes;

//! What the operator may do: revoke a code, add minutes, retry a refused charge.

use super::*;

pub(super) async fn revoke(
    State(app): State<AppState>,
    Path(id): Path<String>,
    _checked: Action,
) -> Page {
    let order = app.store.order(&id).await?.ok_or(AdminError::NotFound)?;
    crate::orders::revoke(&app, &order).await?;
    tracing::info!(order_id = %id, "admin revoked a code");
    Ok(Redirect::to(&format!("/admin/orders#{id}")).into_response())
}

/// Forgets a number remembered for the order's code: its next call is asked for the code.
pub(super) async fn forget_caller(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Action(form): Action,
) -> Page {
    let caller = form
        .caller
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty() && c.len() <= 64)
        .ok_or_else(|| AdminError::Refused("which number?".into()))?;
    if !app.store.forget_caller(caller, Some(&id)).await? {
        return Err(AdminError::NotFound);
    }
    tracing::info!(order_id = %id, "admin forgot a remembered number");
    Ok(Redirect::to(&format!("/admin/orders#{id}")).into_response())
}

pub(super) async fn add_minutes(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Action(form): Action,
) -> Page {
    let minutes = form
        .minutes
        .as_deref()
        .and_then(|m| m.trim().parse::<i64>().ok())
        .filter(|m| (1..=600).contains(m))
        .ok_or_else(|| {
            AdminError::Refused("minutes must be a whole number from 1 to 600".into())
        })?;
    crate::orders::ledger::grant(&app, &id, Seconds::from_minutes(minutes))
        .await?
        .ok_or(AdminError::NotFound)?;
    tracing::info!(order_id = %id, minutes, "admin added minutes");
    Ok(Redirect::to(&format!("/admin/orders#{id}")).into_response())
}

pub(super) async fn retry(
    State(app): State<AppState>,
    Path(id): Path<String>,
    _checked: Action,
) -> Page {
    match crate::billing::retry::retry(&app, &id).await {
        Ok(_) => Ok(Redirect::to(&format!("/admin/charges#{id}")).into_response()),
        Err(NoRetry::NotFound) => Err(AdminError::NotFound),
        Err(NoRetry::Store(e)) => Err(e.into()),
        Err(NoRetry::TooSoon { failed_at, until }) => Err(AdminError::Refused(format!(
            "this charge ran out of tries at {} UTC; Stripe replays that answer for 24 hours, \
             so retry after {} UTC (or check the payment in the Stripe dashboard)",
            when(failed_at),
            when(until)
        ))),
        Err(refused) => Err(AdminError::Refused(refused.to_string())),
    }
}

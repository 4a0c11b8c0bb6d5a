//! What the operator may do: revoke a code, add minutes, retry a refused charge. A
//! destructive action asks once, on a page of its own; every action ends on its list with a
//! line saying what happened and the changed row marked.

use super::*;

/// What an action did, as its list says it (a closed set: the query names one of these and
/// the row; nothing else from the address is shown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Done {
    Revoked,
    MinutesAdded(i64),
    Forgot,
    Requeued,
}

impl Done {
    /// The outcome as the address names it, and back.
    fn query(self) -> (&'static str, Option<i64>) {
        match self {
            Done::Revoked => ("revoked", None),
            Done::MinutesAdded(n) => ("minutes", Some(n)),
            Done::Forgot => ("forgot", None),
            Done::Requeued => ("requeued", None),
        }
    }

    fn from_query(done: &str, minutes: Option<i64>) -> Option<Done> {
        Some(match (done, minutes) {
            ("revoked", _) => Done::Revoked,
            ("minutes", Some(n)) if (1..=600).contains(&n) => Done::MinutesAdded(n),
            ("forgot", _) => Done::Forgot,
            ("requeued", _) => Done::Requeued,
            _ => return None,
        })
    }

    /// What the list says the action did to row `id`.
    fn said(self, id: &str) -> String {
        let id = escape(id);
        match self {
            Done::Revoked => format!(
                "Order {id}: code revoked. It no longer connects, and a call live on it was ended."
            ),
            Done::MinutesAdded(n) => format!("Order {id}: {n} minutes added."),
            Done::Forgot => format!(
                "Order {id}: the remembered number was forgotten; its next call is asked for the code."
            ),
            Done::Requeued => {
                format!("Charge {id}: back in the queue; the billing worker charges it again.")
            }
        }
    }

    /// Where the action ends: `list` with this outcome named for row `id`.
    fn redirect(self, list: &str, id: &str) -> Response {
        let (done, minutes) = self.query();
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("done", done).append_pair("id", id);
        if let Some(n) = minutes {
            q.append_pair("minutes", &n.to_string());
        }
        let fragment: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
        Redirect::to(&format!("{list}?{}#{fragment}", q.finish())).into_response()
    }
}

/// The outcome named in a list's address, if any.
#[derive(Debug, Default, Deserialize)]
pub(super) struct DoneQuery {
    done: Option<String>,
    id: Option<String>,
    minutes: Option<i64>,
}

impl DoneQuery {
    /// The row changed and the line saying how, when the address names an outcome.
    pub(super) fn outcome(&self) -> Option<(&str, String)> {
        let id = self.id.as_deref()?;
        let done = Done::from_query(self.done.as_deref()?, self.minutes)?;
        Some((
            id,
            format!("<p class=\"flash\" role=\"status\">{}</p>", done.said(id)),
        ))
    }
}

/// Asks once before revoking: what revoking does, the order as it stands, and the button.
pub(super) async fn confirm_revoke(
    State(app): State<AppState>,
    Path(id): Path<String>,
    admin: Admin,
) -> Page {
    let order = app.store.order(&id).await?.ok_or(AdminError::NotFound)?;
    if order.status != OrderStatus::Paid {
        return Ok(Redirect::to(&format!("/admin/orders#{}", order.id)).into_response());
    }
    let body = format!(
        "<p>Order <strong>{id}</strong> ({status}, {left} left). Revoking stops its code for good: \
         the next call with it is refused, and a call live on it now ends at once. Nothing is \
         refunded by this; refund in Stripe if money should go back.</p>\
         <form method=\"post\" action=\"/admin/orders/{id}/revoke\">{h}\
         <button class=\"danger\">Revoke code</button></form>\
         <a class=\"button secondary\" href=\"/admin/orders#{id}\">Cancel</a>",
        id = escape(&order.id),
        status = order.status,
        left = minutes(order.seconds_left()),
        h = hidden(&admin),
    );
    Ok(html(layout("/admin/orders", "Revoke this code?", &body)))
}

pub(super) async fn revoke(
    State(app): State<AppState>,
    Path(id): Path<String>,
    _checked: Action,
) -> Page {
    let order = app.store.order(&id).await?.ok_or(AdminError::NotFound)?;
    crate::orders::revoke(&app, &order).await?;
    tracing::info!(order_id = %id, "admin revoked a code");
    Ok(Done::Revoked.redirect("/admin/orders", &id))
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
    Ok(Done::Forgot.redirect("/admin/orders", &id))
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
    Ok(Done::MinutesAdded(minutes).redirect("/admin/orders", &id))
}

pub(super) async fn retry(
    State(app): State<AppState>,
    Path(id): Path<String>,
    _checked: Action,
) -> Page {
    match crate::billing::retry::retry(&app, &id).await {
        Ok(_) => Ok(Done::Requeued.redirect("/admin/charges", &id)),
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

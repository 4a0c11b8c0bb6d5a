//! What the operator may do: revoke a code, add minutes, forget a remembered number, retry a
//! refused charge, refund a purchase or an overage charge. A destructive action asks once,
//! on a page of its own; every action is recorded in the audit log (who, when, what, how it
//! ended) and ends on the order's page with a line saying what happened and the changed row
//! marked.

use super::*;
use crate::orders::refund::{self, NoRefund};
use crate::store::{AuditAction, AuditEntry, AuditResult, CallState};
use crate::telephony::twilio::rest::TwilioApiError;

/// What an action did, as the order's page says it (a closed set: the query names one of
/// these and the row; nothing else from the address is shown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Done {
    Revoked,
    MinutesAdded(i64),
    Forgot,
    Requeued,
    PurchaseRefunded,
    ChargeRefunded,
    CallEnded,
}

impl Done {
    /// The outcome as the address names it, and back.
    fn query(self) -> (&'static str, Option<i64>) {
        match self {
            Done::Revoked => ("revoked", None),
            Done::MinutesAdded(n) => ("minutes", Some(n)),
            Done::Forgot => ("forgot", None),
            Done::Requeued => ("requeued", None),
            Done::PurchaseRefunded => ("refunded", None),
            Done::ChargeRefunded => ("charge-refunded", None),
            Done::CallEnded => ("ended", None),
        }
    }

    fn from_query(done: &str, minutes: Option<i64>) -> Option<Done> {
        Some(match (done, minutes) {
            ("revoked", _) => Done::Revoked,
            ("minutes", Some(n)) if (1..=600).contains(&n) => Done::MinutesAdded(n),
            ("forgot", _) => Done::Forgot,
            ("requeued", _) => Done::Requeued,
            ("refunded", _) => Done::PurchaseRefunded,
            ("charge-refunded", _) => Done::ChargeRefunded,
            ("ended", _) => Done::CallEnded,
            _ => return None,
        })
    }

    /// What the page says the action did to row `id` (plain text; escaped where shown).
    fn said(self, id: &str) -> String {
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
            Done::PurchaseRefunded => format!(
                "Order {id}: Stripe accepted the refund of the purchase. When Stripe's \
                 charge.refunded event arrives (seconds, as for a refund made in Stripe) the code \
                 is revoked, a call live on it ends and open overage is canceled."
            ),
            Done::ChargeRefunded => format!(
                "Charge {id}: Stripe accepted the refund; the charge reads refunded when Stripe's \
                 charge.refunded event arrives."
            ),
            Done::CallEnded => format!(
                "Call {id}: Twilio was asked to hang up. The call ends as if the caller hung \
                 up: metered to that second and settled."
            ),
        }
    }

    /// Where the action ends: `page` with this outcome named for row `id`.
    fn redirect(self, page: &str, id: &str) -> Response {
        let (done, minutes) = self.query();
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("done", done).append_pair("id", id);
        if let Some(n) = minutes {
            q.append_pair("minutes", &n.to_string());
        }
        let fragment: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
        Redirect::to(&format!("{page}?{}#{fragment}", q.finish())).into_response()
    }
}

/// The outcome named in a page's address, if any.
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
            format!(
                "<p class=\"flash\" role=\"status\">{}</p>",
                escape(&done.said(id))
            ),
        ))
    }
}

/// What an action is about, for the audit log, and the page it ends on.
struct Subject<'a> {
    action: AuditAction,
    order_id: Option<&'a str>,
    id: &'a str,
    detail: String,
    /// The page the action ends on (and a problem links back to), and its name.
    page: (String, String),
}

impl Subject<'_> {
    /// An action on order `order` (or on a row of it): it ends on the order's page.
    fn on_order<'a>(
        action: AuditAction,
        order: Option<&'a str>,
        id: &'a str,
        detail: String,
    ) -> Subject<'a> {
        let order_page = order.unwrap_or(id);
        Subject {
            action,
            order_id: order,
            id,
            detail,
            page: (order_href(order_page), format!("order {order_page}")),
        }
    }
}

/// An audit entry's id: in the order entries were made (their times are whole seconds, and
/// the log reads newest first by time, then id).
fn audit_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "aud_{:020}_{}",
        nanos % 10u128.pow(20),
        crate::crypto::random_hex(3)
    )
}

/// Records how an action ended, then answers with its page: the order's page naming the
/// outcome, or the problem. A log that cannot be written is logged, never hides the answer.
async fn audited(
    app: &App,
    admin: &Admin,
    about: Subject<'_>,
    ended: Result<Done, AdminError>,
) -> Page {
    let (result, outcome) = match &ended {
        Ok(done) => (AuditResult::Done, done.said(about.id)),
        Err(e @ (AdminError::Refused(_) | AdminError::NotFound)) => {
            (AuditResult::Refused, e.to_string())
        }
        Err(e) => (AuditResult::Failed, e.to_string()),
    };
    let entry = AuditEntry {
        id: audit_id(),
        at: app.clock.now(),
        actor: admin.device.clone(),
        action: about.action,
        order_id: about.order_id.map(String::from),
        subject: about.id.to_string(),
        detail: about.detail,
        result,
        outcome,
    };
    if let Err(e) = app.store.record_audit(&entry).await {
        tracing::error!(error = %e, action = %entry.action, "an admin action was not written to the audit log");
    }
    let (page, name) = &about.page;
    Ok(match ended {
        Ok(done) => done.redirect(page, about.id),
        Err(e) => e.page(Some((page, name))),
    })
}

/// Asks once before revoking: what revoking does, the order as it stands, and the button.
pub(super) async fn confirm_revoke(
    State(app): State<AppState>,
    Path(id): Path<String>,
    admin: Admin,
) -> Page {
    let order = app.store.order(&id).await?.ok_or(AdminError::NotFound)?;
    if order.status != OrderStatus::Paid {
        return Ok(Redirect::to(&order_href(&order.id)).into_response());
    }
    let body = format!(
        "<p>Order <strong>{id}</strong> ({status}, {left} left). Revoking stops its code for good: \
         the next call with it is refused, and a call live on it now ends at once. Nothing is \
         refunded by this; refund from the order's page if money should go back.</p>\
         <form method=\"post\" action=\"/admin/orders/{id}/revoke\">{h}\
         <button class=\"danger\">Revoke code</button></form>\
         <a class=\"button secondary\" href=\"{back}\">Cancel</a>",
        id = escape(&order.id),
        status = order.status,
        left = minutes(order.seconds_left()),
        h = hidden(&admin),
        back = escape(&order_href(&order.id)),
    );
    Ok(html(layout("/admin/orders", "Revoke this code?", &body)))
}

pub(super) async fn revoke(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Action(_, admin): Action,
) -> Page {
    let ended = async {
        let order = app.store.order(&id).await?.ok_or(AdminError::NotFound)?;
        crate::orders::revoke(&app, &order).await?;
        tracing::info!(order_id = %id, "admin revoked a code");
        Ok(Done::Revoked)
    }
    .await;
    let about = Subject::on_order(
        AuditAction::Revoke,
        Some(&id),
        &id,
        "revoke the code".into(),
    );
    audited(&app, &admin, about, ended).await
}

/// Forgets a number remembered for the order's code: its next call is asked for the code.
pub(super) async fn forget_caller(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Action(form, admin): Action,
) -> Page {
    let caller = form
        .caller
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty() && c.len() <= 64);
    let ended = async {
        let caller = caller.ok_or_else(|| AdminError::Refused("which number?".into()))?;
        if !app.store.forget_caller(caller, Some(&id)).await? {
            return Err(AdminError::NotFound);
        }
        tracing::info!(order_id = %id, "admin forgot a remembered number");
        Ok(Done::Forgot)
    }
    .await;
    let about = Subject::on_order(
        AuditAction::ForgetCaller,
        Some(&id),
        &id,
        format!("forget {}", caller.unwrap_or("")),
    );
    audited(&app, &admin, about, ended).await
}

pub(super) async fn add_minutes(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Action(form, admin): Action,
) -> Page {
    let asked = form
        .minutes
        .as_deref()
        .and_then(|m| m.trim().parse::<i64>().ok())
        .filter(|m| (1..=600).contains(m));
    let ended = async {
        let minutes = asked.ok_or_else(|| {
            AdminError::Refused("minutes must be a whole number from 1 to 600".into())
        })?;
        crate::orders::ledger::grant(&app, &id, Seconds::from_minutes(minutes))
            .await?
            .ok_or(AdminError::NotFound)?;
        tracing::info!(order_id = %id, minutes, "admin added minutes");
        Ok(Done::MinutesAdded(minutes))
    }
    .await;
    let about = Subject::on_order(
        AuditAction::AddMinutes,
        Some(&id),
        &id,
        match asked {
            Some(n) => format!("add {n} minutes"),
            None => "add minutes (not a number from 1 to 600)".into(),
        },
    );
    audited(&app, &admin, about, ended).await
}

pub(super) async fn retry(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Action(_, admin): Action,
) -> Page {
    let order = app.store.charge(&id).await?.map(|c| c.order_id);
    let ended = match crate::billing::retry::retry(&app, &id).await {
        Ok(_) => Ok(Done::Requeued),
        Err(NoRetry::NotFound) => Err(AdminError::NotFound),
        Err(NoRetry::Store(e)) => Err(e.into()),
        Err(NoRetry::TooSoon { failed_at, until }) => Err(AdminError::Refused(format!(
            "this charge ran out of tries at {} UTC; Stripe replays that answer for 24 hours, \
             so retry after {} UTC (or check the payment in the Stripe dashboard)",
            when(failed_at),
            when(until)
        ))),
        Err(refused) => Err(AdminError::Refused(refused.to_string())),
    };
    let about = Subject::on_order(
        AuditAction::RetryCharge,
        order.as_deref(),
        &id,
        "retry the charge".into(),
    );
    audited(&app, &admin, about, ended).await
}

/// A refund's answer as the console shows it: refused (nothing changed) or not known.
fn refund_problem(e: NoRefund) -> AdminError {
    match e {
        NoRefund::NotFound => AdminError::NotFound,
        NoRefund::Store(e) => AdminError::Store(e),
        e if e.refused() => AdminError::Refused(e.to_string()),
        e => AdminError::Unknown(e.to_string()),
    }
}

/// Asks once before refunding the purchase of order `id` (one the console may refund; else
/// back to the order's page).
pub(super) async fn confirm_refund_purchase(
    State(app): State<AppState>,
    Path(id): Path<String>,
    admin: Admin,
) -> Page {
    let order = app.store.order(&id).await?.ok_or(AdminError::NotFound)?;
    if refund::purchase_payment(&order).is_err() {
        return Ok(Redirect::to(&order_href(&order.id)).into_response());
    }
    confirm_refund(&app, &admin, order, None)
}

/// Asks once before refunding overage charge `id` (a succeeded one; else back to its order).
pub(super) async fn confirm_refund_charge(
    State(app): State<AppState>,
    Path(id): Path<String>,
    admin: Admin,
) -> Page {
    let charge = app.store.charge(&id).await?.ok_or(AdminError::NotFound)?;
    let order = app
        .store
        .order(&charge.order_id)
        .await?
        .ok_or(AdminError::NotFound)?;
    if refund::charge_payment(&charge).is_err() {
        return Ok(Redirect::to(&order_href(&order.id)).into_response());
    }
    confirm_refund(&app, &admin, order, Some(charge))
}

/// The refund's confirmation: what it refunds (the purchase, or `charge`), what the refund
/// does, the amount, and the button.
fn confirm_refund(
    app: &App,
    admin: &Admin,
    order: crate::store::Order,
    charge: Option<crate::store::Charge>,
) -> Page {
    let (what, amount, pi, action) = match &charge {
        Some(c) => (
            format!(
                "overage charge <strong>{}</strong> of order {}",
                escape(&c.id),
                escape(&order.id)
            ),
            c.amount.0,
            c.stripe_payment_intent.clone(),
            format!("/admin/charges/{}/refund", escape(&c.id)),
        ),
        None => (
            format!(
                "the purchase of order <strong>{}</strong> ({})",
                escape(&order.id),
                order.status
            ),
            order.amount.0,
            order.stripe_payment_intent.clone(),
            format!("/admin/orders/{}/refund", escape(&order.id)),
        ),
    };
    let effect = match charge {
        Some(_) => "The charge is marked refunded when Stripe confirms; the order's code and minutes stay as they are.",
        None => "When Stripe confirms, the code is revoked for good: a call live on it ends at once, and open overage charges are canceled. Overage charges already paid are refunded separately.",
    };
    let body = format!(
        "<p>Refund {what}: <strong>{amount}</strong> back to the customer's card through Stripe \
         (PaymentIntent <span class=\"id\">{pi}</span>).</p><p>{effect} Asking twice refunds once.</p>\
         <form method=\"post\" action=\"{action}\">{h}<button class=\"danger\">Refund {amount}</button></form>\
         <a class=\"button secondary\" href=\"{back}\">Cancel</a>",
        amount = money(app, amount),
        pi = escape(pi.as_deref().unwrap_or("none")),
        h = hidden(admin),
        back = escape(&order_href(&order.id)),
    );
    Ok(html(layout("/admin/orders", "Refund this payment?", &body)))
}

/// Refunds the purchase of order `id` through Stripe.
pub(super) async fn refund_purchase(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Action(_, admin): Action,
) -> Page {
    let asked = refund::purchase(&app, &id).await;
    let detail = match &asked {
        Ok((order, refund)) => format!(
            "refund the purchase ({}), {}: Stripe refund {} {}",
            money(&app, order.amount.0),
            order.stripe_payment_intent.as_deref().unwrap_or(""),
            refund.id,
            refund.status
        ),
        Err(_) => "refund the purchase".into(),
    };
    let ended = asked
        .map(|_| Done::PurchaseRefunded)
        .map_err(refund_problem);
    let about = Subject::on_order(AuditAction::Refund, Some(&id), &id, detail);
    audited(&app, &admin, about, ended).await
}

/// Refunds overage charge `id` through Stripe.
pub(super) async fn refund_charge(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Action(_, admin): Action,
) -> Page {
    let order = app.store.charge(&id).await?.map(|c| c.order_id);
    let asked = refund::overage(&app, &id).await;
    let detail = match &asked {
        Ok((charge, refund)) => format!(
            "refund the overage charge ({}), {}: Stripe refund {} {}",
            money(&app, charge.amount.0),
            charge.stripe_payment_intent.as_deref().unwrap_or(""),
            refund.id,
            refund.status
        ),
        Err(_) => "refund the overage charge".into(),
    };
    let ended = asked.map(|_| Done::ChargeRefunded).map_err(refund_problem);
    let about = Subject::on_order(AuditAction::Refund, order.as_deref(), &id, detail);
    audited(&app, &admin, about, ended).await
}

/// Asks once before ending a live call: who is on it, what ending does, and the button.
pub(super) async fn confirm_end_call(
    State(app): State<AppState>,
    Path(sid): Path<String>,
    admin: Admin,
) -> Page {
    let call = app.store.call(&sid).await?.ok_or(AdminError::NotFound)?;
    let back = format!("/admin/calls/{}", escape(&call.call_sid));
    if call.status == CallState::Ended {
        return Ok(Redirect::to(&back).into_response());
    }
    let body = format!(
        "<p>Call <strong>{sid}</strong> from {from} ({status}, started {started} UTC). Ending it \
         has Twilio hang up now: the caller hears nothing more, and the call is metered to \
         that second and settled like any other. The code stays valid.</p>\
         <form method=\"post\" action=\"{back}/end\">{h}<button class=\"danger\">End call</button></form>\
         <a class=\"button secondary\" href=\"{back}\">Cancel</a>",
        sid = escape(&call.call_sid),
        from = escape(&call.from_number),
        status = call.status,
        started = when(call.started_at),
        h = hidden(&admin),
    );
    Ok(html(layout("/admin/calls", "End this call?", &body)))
}

/// Ends a live call through Twilio's API (Twilio then closes its stream and reports its end).
pub(super) async fn end_call(
    State(app): State<AppState>,
    Path(sid): Path<String>,
    Action(_, admin): Action,
) -> Page {
    let call = app.store.call(&sid).await?;
    let ended = async {
        let call = call.as_ref().ok_or(AdminError::NotFound)?;
        if call.status == CallState::Ended {
            return Err(AdminError::Refused("this call has ended already".into()));
        }
        let twilio = app.config.twilio.as_ref().ok_or_else(|| {
            AdminError::Refused("Twilio's API is not configured here (TWILIO_ACCOUNT_SID)".into())
        })?;
        match crate::telephony::twilio::rest::end_call(twilio, &call.call_sid).await {
            Ok(()) => {
                tracing::info!(call_sid = %call.call_sid, "admin ended a live call");
                Ok(Done::CallEnded)
            }
            Err(TwilioApiError::Refused(why)) => Err(AdminError::Refused(why)),
            Err(TwilioApiError::Transient(why)) => Err(AdminError::Unknown(format!(
                "Twilio could not be reached ({why}); the call may go on: try again"
            ))),
        }
    }
    .await;
    let about = Subject {
        action: AuditAction::EndCall,
        order_id: call.as_ref().and_then(|c| c.order_id.as_deref()),
        id: &sid,
        detail: "end the live call".into(),
        page: (
            format!(
                "/admin/calls/{}",
                url::form_urlencoded::byte_serialize(sid.as_bytes()).collect::<String>()
            ),
            format!("call {sid}"),
        ),
    };
    audited(&app, &admin, about, ended).await
}

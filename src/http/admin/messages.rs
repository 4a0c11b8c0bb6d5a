//! `/admin/messages`: receipts and lost codes sent to customers, with their state, tries and
//! last error (a relay that is down shows here while the worker retries).

use super::*;

pub(super) async fn messages_page(State(app): State<AppState>, _admin: Admin) -> Page {
    let messages = app.store.list_messages(ROWS).await?;
    let mut rows = String::new();
    for m in &messages {
        let next = match (m.state, m.next_attempt_at) {
            (crate::store::MessageState::Pending, Some(at)) => when(at),
            _ => String::new(),
        };
        let _ = write!(
            rows,
            "<tr id=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td><span class=\"badge {}\">{}</span></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&m.id),
            when(m.created_at),
            m.kind,
            order_link(Some(&m.order_id)),
            m.channel,
            escape(&m.to),
            m.state,
            m.state,
            m.tries,
            next,
            escape(m.last_error.as_deref().unwrap_or("")),
        );
    }
    let body = format!(
        "<p class=\"hint\">Receipts (the code, the number, the account link) and lost codes sent \
         again, by email (<code>SMTP_URL</code>) and SMS (Twilio). A send that fails is tried \
         again after 30 s, doubling, 6 times in all; the text is made at each send, so no code \
         is stored here.</p>\
         {}<table id=\"messages\"><tr><th>Queued</th><th>Kind</th><th>Order</th>\
         <th>Channel</th><th>To</th><th>State</th><th>Tries</th><th>Next try</th><th>Last error</th></tr>\
         {rows}</table></div>",
        scroll_frame("Messages")
    );
    Ok(html(layout("/admin/messages", "Messages", &body)))
}

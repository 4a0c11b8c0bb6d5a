//! The demo's Stripe: the peers' in-memory Stripe API ([`callgate_peers::stripe`]) with the
//! demo's keys, its webhooks sent to callgate's own endpoint and off-session charges paid
//! only by the card saved on the customer, as on real Stripe; plus a stand-in for Stripe.js
//! (`/demo/stripe.js`) whose "card form" confirms through `/demo/stripe/confirm`.

pub use callgate_peers::stripe::{FakeStripe, DECLINED_CARD};
use callgate_peers::stripe::{OffSession, Options, Webhook};

/// Serves the demo's Stripe API on a loopback port.
pub async fn start(
    secret_key: String,
    webhook_secret: String,
    webhook_url: String,
) -> std::io::Result<FakeStripe> {
    FakeStripe::serve(Options {
        id_prefix: "demo".into(),
        secret_key: Some(secret_key),
        webhook: Some(Webhook {
            url: webhook_url,
            secret: webhook_secret,
        }),
        off_session: OffSession::SavedCardOnly,
    })
    .await
}

/// The stand-in for Stripe.js that the demo's storefront and pay page load.
pub const STRIPE_JS: &str = include_str!("../../web/assets/demo-stripe.js");

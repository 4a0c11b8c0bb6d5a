//! A Stripe event as delivered to the webhook: the parts callgate reads.

use serde::Deserialize;

/// The parts of a Stripe event callgate reads.
#[derive(Debug, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub data: EventData,
}

#[derive(Debug, Deserialize)]
pub struct EventData {
    pub object: serde_json::Value,
}

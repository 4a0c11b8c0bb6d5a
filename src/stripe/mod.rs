//! Stripe's API as callgate uses it: the client, and webhook signatures.

pub mod client;
pub mod events;
pub mod intent;
pub mod signature;

pub use client::StripeClient;

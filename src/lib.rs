//! callgate: a paid phone gateway to an ElevenLabs voice agent.
//!
//! The layers, lowest first (`ARCHITECTURE.md` has the whole map; `tests/api/architecture.rs`
//! keeps it true): `crypto` and `metrics`; `domain` (money, codes, the call's and the
//! charge's states, the ledger's rules); `config`; `store`, `telephony` (Twilio, ElevenLabs,
//! audio) and `stripe`; `write_behind` (grouped writes behind the answer); `app` (the
//! services, built once); the features `orders`, `memory`, `notify`, `menu`,
//! `bridge`, `billing`, `import`, `recordings`; `http` (routes only); `demo`; `cli`.

pub mod app;
pub mod billing;
pub mod bridge;
pub mod cli;
pub mod config;
pub mod crypto;
#[cfg(feature = "demo")]
pub mod demo;
pub mod domain;
pub mod http;
pub mod import;
pub mod liveness;
pub mod memory;
pub mod menu;
pub mod metrics;
pub mod notify;
pub mod orders;
pub mod recordings;
pub mod settlement;
pub mod store;
pub mod stripe;
pub mod telemetry;
pub mod telephony;
pub mod write_behind;

pub use app::{App, StartError};

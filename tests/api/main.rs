//! callgate's test suite, as one binary: every module below is a file of tests beside the
//! shared `support` tree (real databases, localstripe, the Twilio and agent simulators,
//! Chromium). One binary links the support once, and the whole suite builds in one step.

#[macro_use]
mod support;

mod admin;
mod architecture;
mod billing;
mod billing_rules;
mod bridge;
mod broken_calls;
mod call_flow;
mod call_keys;
mod caller_memory;
mod clean_endings;
mod cli;
mod console;
mod demo;
mod faults;
mod fuzz;
mod health;
mod import;
mod in_call_top_up;
mod instances;
mod ledger;
mod ledger_model;
mod observability;
mod pages;
mod plans;
mod prompts_generate;
mod purchase;
mod readme;
mod receipts;
mod several_instances;
mod store_conformance;
mod stripe_webhook;
mod top_up;

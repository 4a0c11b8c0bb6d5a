//! The ledger under any order of events: a model-based test (issue 13).
//!
//! proptest draws sequences of what customers, Stripe, Twilio, the billing worker and the
//! operator's restarts do: purchases, payments, webhooks (duplicated, late, foreign), calls
//! that hang up early or run into the allowance, calls Twilio already reported ended, refunds
//! and disputes, billing passes with declines, restarts, web top-ups, and top-ups bought with
//! the keys during a call (racing the cut-off, declined, needing authentication, or with the
//! caller hanging up between the two presses). Each sequence runs against the real
//! server and store (SQLite, PostgreSQL, MongoDB), the fake agent, the Twilio simulator and a
//! recording Stripe. After every step the store must agree with a small model:
//!
//! - only PaymentIntents callgate created, and that were paid, buy an order;
//! - the seconds debited from an order equal the seconds its bridges metered; without overage
//!   (consent, card, not revoked) never more than the allowance;
//! - each call is settled once; each charge is what the overage rule says, created once;
//! - no overage charge is sent for an order after its purchase was refunded or disputed;
//! - `callgate ledger check` finds nothing (but payments whose webhook is still on its way).
//!
//! `LEDGER_MODEL_CASES=10000 cargo test --test ledger_model` runs a long exploration; CI runs
//! 200 cases on SQLite, 100 on PostgreSQL and 30 on MongoDB (mongoeco is slow).

use std::collections::HashMap;
use std::time::Duration;

use crate::support::app::{spawn_with, TestApp, ACCOUNT_SID, AUTH_TOKEN, PHONE};
use callgate::store::{DynStore, OrderStatus};
use callgate_peers::agent::{Behaviour, FakeAgent};
use callgate_peers::stripe::{FakeStripe, Next};
use callgate_peers::twilio::{Caller, Ending, Received};
use proptest::prelude::*;
use serde_json::{json, Value};

const WEBHOOK_SECRET: &str = "whsec_model";
/// One metered "second".
const TICK: Duration = Duration::from_millis(2);
const PLAN_SECONDS: i64 = 60;
const MAX_CALL_SECONDS: i64 = 120;
const OVERAGE_CENTS_PER_MINUTE: i64 = 100;
const PLAN_CENTS: i64 = 1000;
/// The one top-up pack: the plan itself (no `TOP_UPS` set).
const TOP_UP_SECONDS: i64 = 60;
const TOP_UP_CENTS: i64 = 1000;

#[derive(Debug, Clone)]
enum Op {
    Buy {
        overage: bool,
    },
    Pay {
        buy: usize,
    },
    Webhook {
        buy: usize,
        again: bool,
    },
    Foreign,
    /// A whole call on the purchase's code: talks `seconds` then hangs up, unless the
    /// bridge ends it first (allowance, maximum, revocation).
    Call {
        buy: usize,
        seconds: i64,
    },
    /// A call whose caller presses `#` once `press_at` seconds are metered, and, when
    /// `confirm`, again: a top-up on the saved card, which Stripe answers with `outcome`.
    /// Pressed near the end of the included time, the purchase races the cut-off; without
    /// `confirm` the caller hangs up between the presses; with `at_once`, right after the
    /// second.
    CallTopUp {
        buy: usize,
        seconds: i64,
        press_at: i64,
        confirm: bool,
        at_once: bool,
        outcome: u8,
    },
    /// Twilio reports the call ended, then its code arrives: it must never connect.
    EndedThenCode {
        buy: usize,
    },
    Reverse {
        buy: usize,
        dispute: bool,
    },
    Billing {
        decline: bool,
    },
    Restart,
    /// A web top-up on the purchase's code, paid (its webhook comes with `TopUpWebhook`).
    TopUp {
        buy: usize,
    },
    TopUpWebhook {
        top: usize,
        again: bool,
    },
    /// A top-up refunded or disputed: before or after its own webhook.
    ReverseTopUp {
        top: usize,
        dispute: bool,
    },
    /// The operator gives a minute.
    Grant {
        buy: usize,
    },
    /// A call whose agent drops after `chunks` of the caller's audio: early, it costs nothing.
    AgentDrops {
        buy: usize,
        chunks: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => any::<bool>().prop_map(|overage| Op::Buy { overage }),
        3 => (0..4usize).prop_map(|buy| Op::Pay { buy }),
        3 => (0..4usize, any::<bool>()).prop_map(|(buy, again)| Op::Webhook { buy, again }),
        1 => Just(Op::Foreign),
        4 => (0..4usize, 0..100i64).prop_map(|(buy, seconds)| Op::Call { buy, seconds }),
        2 => (0..4usize, 0..100i64, 40..80i64, any::<bool>(), any::<bool>(), 0..3u8).prop_map(
            |(buy, seconds, press_at, confirm, at_once, outcome)| Op::CallTopUp { buy, seconds, press_at, confirm, at_once, outcome }
        ),
        1 => (0..4usize).prop_map(|buy| Op::EndedThenCode { buy }),
        1 => (0..4usize, any::<bool>()).prop_map(|(buy, dispute)| Op::Reverse { buy, dispute }),
        2 => any::<bool>().prop_map(|decline| Op::Billing { decline }),
        1 => Just(Op::Restart),
        2 => (0..4usize).prop_map(|buy| Op::TopUp { buy }),
        2 => (0..4usize, any::<bool>()).prop_map(|(top, again)| Op::TopUpWebhook { top, again }),
        2 => (0..4usize, any::<bool>()).prop_map(|(top, dispute)| Op::ReverseTopUp { top, dispute }),
        1 => (0..4usize).prop_map(|buy| Op::Grant { buy }),
        2 => (0..4usize, 1..30usize).prop_map(|(buy, chunks)| Op::AgentDrops { buy, chunks }),
    ]
}

/// A few customers who buy (most of them pay and are notified, in some order), then anything.
fn scenario() -> impl Strategy<Value = Vec<Op>> {
    let customer = (any::<bool>(), 0..7u8, 50..70i64, any::<bool>(), 0..3u8).prop_map(
        |(overage, path, press_at, at_once, outcome)| {
            let mut ops = vec![Op::Buy { overage }];
            match path {
                // Paid and notified.
                0 | 1 => ops.extend([
                    Op::Pay { buy: usize::MAX },
                    Op::Webhook {
                        buy: usize::MAX,
                        again: false,
                    },
                ]),
                // Paid, its webhook still on the way.
                2 => ops.push(Op::Pay { buy: usize::MAX }),
                // Paid, notified, then topped up on the web (that top-up's webhook still to come).
                4 => ops.extend([
                    Op::Pay { buy: usize::MAX },
                    Op::Webhook {
                        buy: usize::MAX,
                        again: false,
                    },
                    Op::TopUp { buy: usize::MAX },
                ]),
                // Paid with consent, notified, then calls and buys a top-up with the keys around
                // the end of its included minute: the purchase races the cut-off.
                5 | 6 => {
                    ops[0] = Op::Buy { overage: true };
                    ops.extend([
                        Op::Pay { buy: usize::MAX },
                        Op::Webhook {
                            buy: usize::MAX,
                            again: false,
                        },
                        Op::CallTopUp {
                            buy: usize::MAX,
                            seconds: press_at + 10,
                            press_at,
                            confirm: true,
                            at_once,
                            outcome,
                        },
                    ]);
                }
                // Never pays.
                _ => {}
            }
            ops
        },
    );
    (
        prop::collection::vec(customer, 1..3),
        prop::collection::vec(op(), 1..12),
    )
        .prop_map(|(customers, tail)| {
            let mut ops = Vec::new();
            for (i, c) in customers.into_iter().enumerate() {
                // `usize::MAX` above means "this customer's purchase".
                ops.extend(c.into_iter().map(|op| match op {
                    Op::Pay { .. } => Op::Pay { buy: i },
                    Op::Webhook { again, .. } => Op::Webhook { buy: i, again },
                    Op::TopUp { .. } => Op::TopUp { buy: i },
                    Op::CallTopUp {
                        buy: usize::MAX,
                        seconds,
                        press_at,
                        confirm,
                        at_once,
                        outcome,
                    } => Op::CallTopUp {
                        buy: i,
                        seconds,
                        press_at,
                        confirm,
                        at_once,
                        outcome,
                    },
                    other => other,
                }));
            }
            ops.extend(tail);
            ops
        })
}

/// What the test knows of one purchase, from outside.
#[derive(Debug, Default)]
struct Purchase {
    pi: String,
    secret: String,
    overage: bool,
    paid: bool,
    /// The webhook for the payment was delivered (at least once).
    notified: bool,
    last_event: Option<String>,
    revoked: bool,
    /// Confirmed (overage) requests Stripe had seen when the purchase was reversed.
    requests_at_reversal: Option<usize>,
    /// Seconds the model says were debited, and the overage charges it expects, by call.
    used: i64,
    charges: HashMap<String, i64>,
    /// Overage suspended after a declined charge (the order refuses overage from then on).
    suspended: bool,
    /// Its webhook paid the order (before any reversal).
    fulfilled: bool,
    /// Its purchase was reversed after it was paid: its minutes and money taken back.
    purchase_reversed: bool,
    /// Seconds the operator gave.
    granted: i64,
    /// Seconds given back for calls whose agent failed in their first 15 s.
    waived: i64,
}

/// The keys of a [`Op::CallTopUp`].
#[derive(Debug, Clone, Copy)]
struct Keys {
    press_at: i64,
    confirm: bool,
    at_once: bool,
    outcome: Next,
}

enum Heard {
    Mark,
    Closed,
}

/// Reads what callgate sends until the mark `name` or the end of the stream.
async fn heard(stream: &mut callgate_peers::twilio::MediaStream, name: &str) -> Heard {
    let deadline = tokio::time::Instant::now() + crate::support::calls::WAIT;
    while tokio::time::Instant::now() < deadline {
        match stream.next(Duration::from_millis(100)).await {
            Some(Received::Mark(m)) if m == name => return Heard::Mark,
            Some(Received::Closed) => return Heard::Closed,
            _ => {}
        }
    }
    panic!("{name} never played")
}

/// What the test knows of one web top-up.
#[derive(Debug, Default)]
struct TopUp {
    buy: usize,
    pi: String,
    last_event: Option<String>,
    /// Its minutes were credited (its webhook, or its reversal reading Stripe first).
    credited: bool,
    reversed: bool,
}

struct World {
    store: DynStore,
    stripe: FakeStripe,
    agent: FakeAgent,
    app: Option<TestApp>,
    buys: Vec<Purchase>,
    tops: Vec<TopUp>,
    foreign: Vec<String>,
    calls: usize,
}

impl World {
    async fn start(store: DynStore) -> World {
        let stripe = FakeStripe::start(&[]).await;
        let agent = FakeAgent::start(Behaviour::default()).await;
        let mut w = World {
            store,
            stripe,
            agent,
            app: None,
            buys: Vec::new(),
            tops: Vec::new(),
            foreign: Vec::new(),
            calls: 0,
        };
        w.app = Some(w.spawn().await);
        w
    }

    async fn spawn(&self) -> TestApp {
        let vars = [
            ("ELEVENLABS_API_BASE", self.agent.base.as_str()),
            ("STRIPE_SECRET_KEY", "sk_test_model"),
            ("STRIPE_PUBLISHABLE_KEY", "pk_test_model"),
            ("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET),
            ("STRIPE_API_BASE", self.stripe.base.as_str()),
            ("BILLING_WORKER", "off"),
            ("PLAN_MINUTES", "1"),
            ("PLAN_PRICE", "10.00"),
            ("OVERAGE_PRICE_PER_MINUTE", "1.00"),
            ("MAX_CALL_MINUTES", "2"),
            ("API_REQUESTS_PER_MINUTE", "10000"),
        ];
        spawn_with(self.store.clone(), &vars, |app| {
            app.bridge.tick = TICK;
            app.bridge.setup_timeout = Duration::from_secs(10);
        })
        .await
    }

    fn app(&self) -> &TestApp {
        self.app.as_ref().expect("an app")
    }

    fn pick(&self, i: usize) -> Option<usize> {
        (!self.buys.is_empty()).then(|| i % self.buys.len())
    }

    async fn deliver(&self, id: &str, kind: &str, object: Value) {
        let status = self
            .app()
            .stripe_event(WEBHOOK_SECRET, id, kind, object)
            .await;
        assert_eq!(status, 200, "{kind} acknowledged");
    }

    async fn code_of(&self, b: usize) -> Option<String> {
        let p = &self.buys[b];
        let resp = reqwest::Client::new()
            .get(self.app().url("/api/order-details"))
            .query(&[("payment_intent", &p.pi), ("client_secret", &p.secret)])
            .send()
            .await
            .unwrap();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        body["code"].as_str().map(String::from)
    }

    /// The purchase's allowance as the model counts it: the plan (unless its purchase was
    /// reversed after it was paid), its credited top-ups not reversed, and the grants.
    fn allowance(&self, b: usize) -> i64 {
        let p = &self.buys[b];
        let topped: i64 = self
            .tops
            .iter()
            .filter(|t| t.buy == b && t.credited && !t.reversed)
            .map(|_| TOP_UP_SECONDS)
            .sum();
        let base = if p.purchase_reversed { 0 } else { PLAN_SECONDS };
        base + topped + p.granted + p.waived
    }

    /// Whether the model lets this purchase's calls run past the allowance.
    fn overage_allowed(&self, b: usize) -> bool {
        let p = &self.buys[b];
        p.overage && p.paid && !p.revoked && !p.suspended
    }

    async fn step(&mut self, op: &Op) {
        match *op {
            Op::Buy { overage } => {
                let (pi, secret) = self.app().start_purchase(overage).await;
                self.buys.push(Purchase {
                    pi,
                    secret,
                    overage,
                    ..Purchase::default()
                });
            }
            Op::Pay { buy } => {
                let Some(b) = self.pick(buy) else { return };
                if !self.buys[b].paid {
                    self.stripe.pay(&self.buys[b].pi);
                    self.buys[b].paid = true;
                }
            }
            Op::Webhook { buy, again } => {
                let Some(b) = self.pick(buy) else { return };
                if !self.buys[b].paid {
                    return;
                }
                let id = match (&self.buys[b].last_event, again) {
                    (Some(id), true) => id.clone(),
                    _ => callgate::store::new_id("evt"),
                };
                let pi = self
                    .stripe
                    .intent(&self.buys[b].pi)
                    .expect("its PaymentIntent");
                self.deliver(&id, "payment_intent.succeeded", pi).await;
                self.buys[b].last_event = Some(id);
                self.buys[b].notified = true;
                if !self.buys[b].revoked {
                    self.buys[b].fulfilled = true;
                }
            }
            Op::Foreign => {
                let pi = self.stripe.foreign_payment(50, "eur");
                self.foreign.push(pi["id"].as_str().unwrap().into());
                let id = callgate::store::new_id("evt");
                self.deliver(&id, "payment_intent.succeeded", pi).await;
            }
            Op::Call { buy, seconds } => {
                let Some(b) = self.pick(buy) else { return };
                self.call(b, seconds, None).await;
            }
            Op::AgentDrops { buy, chunks } => {
                let Some(b) = self.pick(buy) else { return };
                self.agent.drop_next(Some(chunks));
                self.call(b, MAX_CALL_SECONDS, None).await;
                self.agent.drop_next(None);
            }
            Op::CallTopUp {
                buy,
                seconds,
                press_at,
                confirm,
                at_once,
                outcome,
            } => {
                let Some(b) = self.pick(buy) else { return };
                let outcome = [Next::Succeed, Next::Decline, Next::AuthenticationRequired]
                    [outcome as usize % 3];
                let keys = Keys {
                    press_at,
                    confirm,
                    at_once,
                    outcome,
                };
                self.call(b, seconds, Some(keys)).await;
            }
            Op::EndedThenCode { buy } => {
                let Some(b) = self.pick(buy) else { return };
                let Some(code) = self.code_of(b).await else {
                    return;
                };
                self.calls += 1;
                let from = format!("+1555900{:04}", self.calls);
                let mut caller = Caller::new(AUTH_TOKEN, ACCOUNT_SID, &from, PHONE);
                let app = self.app();
                caller
                    .post(&app.url("/voice/incoming"), &caller.call_params("ringing"))
                    .await;
                caller
                    .status_callback(&app.url("/voice/status"), "completed", Some("3"))
                    .await;
                let mut params = caller.call_params("in-progress");
                params.push(("Digits".into(), code));
                let (_, twiml) = caller.post(&app.url("/voice/code?try=1"), &params).await;
                assert!(!twiml.contains("<Connect"), "an ended call connected");
            }
            Op::Reverse { buy, dispute } => {
                let Some(b) = self.pick(buy) else { return };
                if !self.buys[b].paid {
                    return;
                }
                let pi = self.buys[b].pi.clone();
                self.reverse(&pi, dispute).await;
                // Webhooks come in any order: a reversal that overtakes the payment's own
                // webhook still revokes the order, which that webhook then cannot fulfil.
                if !self.buys[b].revoked {
                    self.buys[b].revoked = true;
                    self.buys[b].requests_at_reversal = Some(self.stripe.confirmed().len());
                }
                if self.buys[b].fulfilled {
                    self.buys[b].purchase_reversed = true;
                }
            }
            Op::TopUp { buy } => {
                let Some(b) = self.pick(buy) else { return };
                self.top_up(b).await;
            }
            Op::TopUpWebhook { top, again } => {
                if self.tops.is_empty() {
                    return;
                }
                let t = top % self.tops.len();
                let id = match (&self.tops[t].last_event, again) {
                    (Some(id), true) => id.clone(),
                    _ => callgate::store::new_id("evt"),
                };
                let pi = self
                    .stripe
                    .intent(&self.tops[t].pi)
                    .expect("its PaymentIntent");
                self.deliver(&id, "payment_intent.succeeded", pi).await;
                self.tops[t].last_event = Some(id);
                self.tops[t].credited = true;
            }
            Op::ReverseTopUp { top, dispute } => {
                if self.tops.is_empty() {
                    return;
                }
                let t = top % self.tops.len();
                let pi = self.tops[t].pi.clone();
                self.reverse(&pi, dispute).await;
                // A reversal that overtakes the top-up's webhook credits it from Stripe first.
                self.tops[t].credited = true;
                self.tops[t].reversed = true;
            }
            Op::Grant { buy } => {
                let Some(b) = self.pick(buy) else { return };
                let order = self
                    .store
                    .order_by_payment_intent(&self.buys[b].pi)
                    .await
                    .unwrap()
                    .expect("an order per checkout");
                let granted = callgate::orders::ledger::grant(
                    &self.app().app,
                    &order.id,
                    callgate::store::Seconds(60),
                )
                .await
                .unwrap();
                assert!(granted.is_some());
                self.buys[b].granted += 60;
            }
            Op::Billing { decline } => {
                if decline {
                    self.stripe.script(&[Next::Decline]);
                }
                let before = self.stripe.confirmed().len();
                callgate::billing::run_once(&self.app().app, "model")
                    .await
                    .unwrap();
                // A declined charge suspends overage on its order.
                let after = self.stripe.confirmed();
                if decline && after.len() > before {
                    let order_id = after[before].1.get("metadata[order_id]").cloned();
                    for b in 0..self.buys.len() {
                        let order = self
                            .store
                            .order_by_payment_intent(&self.buys[b].pi)
                            .await
                            .unwrap();
                        if order.map(|o| o.id) == order_id {
                            self.buys[b].suspended = true;
                        }
                    }
                }
                // Scripted outcomes not used by this pass do not carry over.
                self.stripe.clear_script();
            }
            Op::Restart => {
                drop(self.app.take());
                self.app = Some(self.spawn().await);
            }
        }
    }

    /// Stripe reports the payment `pi` fully refunded, or disputed.
    async fn reverse(&self, pi: &str, dispute: bool) {
        let (kind, object) = if dispute {
            (
                "charge.dispute.created",
                json!({ "id": "dp_model", "object": "dispute", "payment_intent": pi }),
            )
        } else {
            (
                "charge.refunded",
                json!({ "id": "ch_model", "object": "charge", "refunded": true, "payment_intent": pi }),
            )
        };
        self.deliver(&callgate::store::new_id("evt"), kind, object)
            .await;
    }

    /// Starts a web top-up on the purchase's code and pays it; refused unless the code is paid
    /// and not revoked.
    async fn top_up(&mut self, b: usize) {
        let order = self
            .store
            .order_by_payment_intent(&self.buys[b].pi)
            .await
            .unwrap()
            .expect("an order per checkout");
        let app = &self.app().app;
        let body = json!({
            "order": order.id,
            "token": app.vault.account_token(&order.id),
            "pack": app.config.top_ups.first().id,
        });
        let resp = reqwest::Client::new()
            .post(self.app().url("/api/top-up"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let p = &self.buys[b];
        let expected = match (p.revoked, p.fulfilled) {
            (true, _) => 400,
            (false, true) => 200,
            (false, false) => 404,
        };
        assert_eq!(status, expected, "a top-up on {:?}", order.status);
        if status != 200 {
            return;
        }
        let started: Value = resp.json().await.unwrap();
        let pi = started["paymentIntent"].as_str().unwrap().to_string();
        self.stripe.pay(&pi);
        self.tops.push(TopUp {
            buy: b,
            pi,
            ..TopUp::default()
        });
    }

    async fn call(&mut self, b: usize, seconds: i64, keys: Option<Keys>) {
        let Some(code) = self.code_of(b).await else {
            return;
        };
        let order = self
            .store
            .order_by_payment_intent(&self.buys[b].pi)
            .await
            .unwrap()
            .expect("a code means an order");
        let left = (order.seconds_included.0 - order.seconds_used.0).max(0);
        let overage = self.overage_allowed(b);
        let should_connect = !self.buys[b].revoked && (left > 0 || overage);
        self.calls += 1;
        let from = format!("+1555800{:04}", self.calls);
        let mut caller = Caller::new(AUTH_TOKEN, ACCOUNT_SID, &from, PHONE)
            .types([Some(Box::leak(code.into_boxed_str()) as &str)]);
        let ending = caller.dial(&self.app().url("/voice/incoming")).await;
        let Ending::Stream {
            url, parameters, ..
        } = ending
        else {
            assert!(
                !should_connect,
                "refused a code that has time: {}",
                caller.transcript()
            );
            return;
        };
        assert!(should_connect, "connected a code with nothing left");
        let mut stream = crate::support::calls::open(&caller, &url, &parameters).await;
        // `#` buys only on a code with a saved card.
        let card = order.stripe_customer.is_some() && order.stripe_payment_method.is_some();
        let mut keys = keys;
        let mut bought: Option<Next> = None;
        // Talk until the bridge has metered `seconds` (or ended the call itself).
        let deadline = tokio::time::Instant::now() + crate::support::calls::WAIT;
        let mut closed = false;
        loop {
            let got = stream
                .talk_until_closed(&[0x55; 160], Duration::from_millis(20))
                .await;
            if got.contains(&Received::Closed) {
                closed = true;
                break;
            }
            let c = self.store.call(&caller.call_sid).await.unwrap().unwrap();
            if let Some(k) = keys.filter(|k| c.seconds_metered.0 >= k.press_at) {
                keys = None;
                if !stream.send_dtmf('#').await {
                    // The bridge ended the call (its cut-off) before the key: none pressed.
                    closed = true;
                    break;
                }
                if card {
                    // The caller hears the question before pressing again.
                    match heard(&mut stream, "top_up_confirm").await {
                        Heard::Closed => {
                            closed = true;
                            break;
                        }
                        Heard::Mark => {}
                    }
                    if !k.confirm {
                        break;
                    }
                    self.stripe.script(&[k.outcome]);
                    if !stream.send_dtmf('#').await {
                        // Ended before the confirming key: nothing may be bought.
                        closed = true;
                        break;
                    }
                    bought = Some(k.outcome);
                    if k.at_once {
                        break;
                    }
                } else if !k.confirm {
                    break;
                }
            }
            if c.seconds_metered.0 >= seconds || tokio::time::Instant::now() > deadline {
                break;
            }
        }
        if !closed {
            stream.stop().await;
        }
        let call = crate::support::calls::settled_call(self.app(), &caller.call_sid).await;
        assert!(call.settled_at.is_some(), "the bridge settles its call");
        self.stripe.clear_script();
        let charged = self.stripe.intents_with("call_sid", &caller.call_sid);
        let mut topped = 0;
        match bought {
            None => assert!(
                charged.is_empty(),
                "a top-up without two presses: {charged:?}"
            ),
            // The bridge ended the call itself before it read the confirming key.
            Some(_) if charged.is_empty() => assert_ne!(
                call.end_reason,
                Some(callgate::store::EndReason::CallerHungUp),
                "a confirmed top-up was lost"
            ),
            Some(outcome) => {
                assert_eq!(charged.len(), 1, "one top-up per confirmation");
                let pi = charged[0]["id"].as_str().unwrap().to_string();
                let ok = outcome == Next::Succeed;
                assert_eq!(charged[0]["status"] == "succeeded", ok);
                if ok {
                    // Credited before the call was settled: the call's seconds past the old
                    // allowance are the pack's.
                    self.tops.push(TopUp {
                        buy: b,
                        pi,
                        credited: true,
                        ..TopUp::default()
                    });
                    topped = TOP_UP_SECONDS;
                }
            }
        }
        caller
            .status_callback(&self.app().url("/voice/status"), "completed", Some("90"))
            .await;
        let metered = call.billable_seconds().0;
        assert!(metered <= MAX_CALL_SECONDS, "{metered}");
        // An agent that failed early: the call costs nothing (FREE_FAILURE_SECS, 15 s).
        if call.end_reason == Some(callgate::store::EndReason::AgentFailed) && metered <= 15 {
            self.buys[b].waived += metered;
        }
        if !overage {
            assert!(
                metered <= left + topped,
                "ran {metered} s past {left} s left without overage"
            );
        }

        let allowance = self.allowance(b);
        let p = &mut self.buys[b];
        let before = p.used;
        p.used += metered;
        let over = (p.used - before.max(allowance)).max(0);
        // A revoked order (reversed while the call ran) is debited but never charged.
        let order_now = self.store.order(&order.id).await.unwrap().unwrap();
        if over > 0 && order_now.status == OrderStatus::Paid {
            p.charges.insert(
                caller.call_sid.clone(),
                (over + 59) / 60 * OVERAGE_CENTS_PER_MINUTE,
            );
        }
        if order_now.status == OrderStatus::Revoked && !p.revoked {
            p.revoked = true;
            p.requests_at_reversal = Some(self.stripe.confirmed().len());
        }
    }

    /// The invariants, checked against the store and Stripe after every step.
    async fn check(&self) {
        let orders = self.store.list_orders(1000).await.unwrap();
        assert_eq!(
            orders.len(),
            self.buys.len(),
            "one order per checkout, no other"
        );
        for order in &orders {
            let pi = order.stripe_payment_intent.clone().unwrap_or_default();
            assert!(
                !self.foreign.contains(&pi),
                "a foreign payment bought a plan"
            );
            let p = self
                .buys
                .iter()
                .find(|p| p.pi == pi)
                .expect("the order's PaymentIntent came from a checkout");
            let expected = match (p.revoked, p.notified) {
                (true, _) => OrderStatus::Revoked,
                (false, true) => OrderStatus::Paid,
                (false, false) => OrderStatus::Pending,
            };
            assert_eq!(order.status, expected, "{}", order.id);
            assert_eq!(
                order.seconds_used.0, p.used,
                "{}: debited = metered",
                order.id
            );
            let b = self.buys.iter().position(|q| q.pi == pi).unwrap();
            let tops: Vec<&TopUp> = self.tops.iter().filter(|t| t.buy == b).collect();
            assert_eq!(
                order.seconds_included.0,
                self.allowance(b),
                "{}: the allowance is its entries (purchase, top-ups, grants, reversals)",
                order.id
            );
            let entries = self.store.entries_for_order(&order.id).await.unwrap();
            let paid: i64 = entries.iter().map(|e| e.amount.0).sum();
            let topped_paid: i64 = tops
                .iter()
                .map(|t| {
                    if t.credited && !t.reversed {
                        TOP_UP_CENTS
                    } else {
                        0
                    }
                })
                .sum();
            let bought = if p.fulfilled && !p.purchase_reversed {
                PLAN_CENTS
            } else {
                0
            };
            assert_eq!(
                paid,
                bought + topped_paid,
                "{}: money in its entries",
                order.id
            );
            let reversed = p.purchase_reversed || tops.iter().any(|t| t.reversed);
            if !p.overage && !reversed {
                assert!(order.seconds_used <= order.seconds_included, "{}", order.id);
            }
            assert_eq!(order.active_call_sid, None, "no hold outlives its call");
            let charges = self.store.charges_for_order(&order.id).await.unwrap();
            let mut got: HashMap<String, i64> = HashMap::new();
            for c in &charges {
                assert!(
                    got.insert(c.call_sid.clone(), c.amount.0).is_none(),
                    "one charge per call"
                );
            }
            assert_eq!(got, p.charges, "{}: the overage rule", order.id);
            if let Some(at) = p.requests_at_reversal {
                let late = self.stripe.confirmed()[at..]
                    .iter()
                    .filter(|(_, f)| f.get("metadata[order_id]") == Some(&order.id))
                    .count();
                assert_eq!(late, 0, "{}: charged after its reversal", order.id);
            }
        }
        // Every confirmed request of one charge shares its idempotency key; an in-call top-up's
        // key names its call.
        let mut keys: HashMap<String, Option<String>> = HashMap::new();
        for (key, form) in self.stripe.confirmed() {
            let charge = match form.get("metadata[charge_id]") {
                Some(charge) => charge.clone(),
                None => {
                    let call = form
                        .get("metadata[call_sid]")
                        .expect("a confirmed request is an overage charge or an in-call top-up");
                    let key = key.clone().unwrap_or_default();
                    assert!(key.starts_with(&format!("top_up:{call}:")), "{key}");
                    key
                }
            };
            let seen = keys.entry(charge).or_insert_with(|| key.clone());
            assert_eq!(seen, &key, "one key per charge");
        }
        let report = callgate::billing::reconcile::check(&self.app().app)
            .await
            .unwrap();
        let in_flight: Vec<&str> = self
            .buys
            .iter()
            .filter(|p| p.paid && !p.notified)
            .map(|p| p.pi.as_str())
            .collect();
        let top_ups_in_flight: Vec<&str> = self
            .tops
            .iter()
            .filter(|t| !t.credited)
            .map(|t| t.pi.as_str())
            .collect();
        use callgate::billing::reconcile::Mismatch;
        let left: Vec<_> = report
            .mismatches
            .iter()
            .filter(|m| match m {
                Mismatch::PaymentWithoutOrder { payment_intent, .. } => {
                    !in_flight.contains(&payment_intent.as_str())
                }
                Mismatch::PaymentWithoutCredit { payment_intent, .. } => {
                    !top_ups_in_flight.contains(&payment_intent.as_str())
                }
                _ => true,
            })
            .collect();
        assert!(left.is_empty(), "ledger check: {left:?}");
    }
}

async fn run(store: DynStore, ops: Vec<Op>) {
    let mut world = World::start(store).await;
    for op in &ops {
        world.step(op).await;
        world.check().await;
    }
    if std::env::var("LEDGER_MODEL_VERBOSE").is_ok() {
        let charges: usize = world.buys.iter().map(|p| p.charges.len()).sum();
        let used: i64 = world.buys.iter().map(|p| p.used).sum();
        eprintln!(
            "{} ops, {} purchases, {} calls, {used} s debited, {charges} charges, {} revoked",
            ops.len(),
            world.buys.len(),
            world.calls,
            world.buys.iter().filter(|p| p.revoked).count()
        );
    }
}

fn cases(default: u32) -> u32 {
    std::env::var("LEDGER_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn explore(backend: &'static str, default_cases: u32) {
    let config = ProptestConfig {
        cases: cases(default_cases),
        max_shrink_iters: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in scenario())| {
        // A runtime per case: dropping it ends every server and task the case started (the
        // fake Stripe, the fake agent, apps left by restarts), so thousands of cases do not
        // run out of file descriptors.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let db = match backend {
                "sqlite" => Some(crate::support::sqlite().await),
                "postgres" => crate::support::postgres().await,
                _ => crate::support::mongo::mongo().await,
            };
            let Some(db) = db else { return };
            run(db.store.clone(), ops).await;
            db.cleanup().await;
        });
    });
}

#[test]
fn sqlite_ledger_holds_under_any_order_of_events() {
    explore("sqlite", 200);
}

#[test]
fn postgres_ledger_holds_under_any_order_of_events() {
    explore("postgres", 100);
}

#[test]
fn mongodb_ledger_holds_under_any_order_of_events() {
    explore("mongodb", 30);
}

//! The storage conformance suite: every test runs against every backend.

use std::collections::HashSet;

use callgate::config::Secret;
use callgate::domain::codes::{AccessCode, CodeVault};
use callgate::domain::money::{Cents, Rounding, Seconds};
use callgate::store::{
    new_id, AttemptGroup, AttemptScope, ChargeState, ChargeUpdate, CodeAttempt, CodeCheckFacts,
    CodeCheckQuery, DynStore, EndCall, EndReason, Fulfilled, Fulfilment, Hold, NewCall, NewCharge,
    NewOrder, OrderSource, OrderStatus, Settlement, SlotWant, StoreError, StreamGrant,
    TranscriptLine,
};

const NOW: i64 = 1_790_000_000;

fn vault() -> CodeVault {
    CodeVault::new(&Secret::new("conformance-secret-0123456789abcdef"))
}

fn pending(pi: &str) -> NewOrder {
    NewOrder {
        id: new_id("ord"),
        source: OrderSource::Stripe,
        plan: "Talk time".into(),
        amount: Cents(1000),
        currency: Default::default(),
        seconds_included: Seconds(300),
        overage_consent: true,
        overage_price: Cents(100),
        stripe_payment_intent: Some(pi.into()),
        stripe_customer: Some("cus_1".into()),
        stripe_payment_method: None,
        client_secret_hash: None,
        code: None,
        now: NOW,
    }
}

fn fulfilment(pi: &str) -> Fulfilment {
    Fulfilment {
        payment_intent: pi.into(),
        code: vault().store(&AccessCode::generate(12)),
        customer: Some("cus_1".into()),
        payment_method: Some("pm_1".into()),
        now: NOW + 5,
    }
}

async fn paid_order(store: &DynStore) -> callgate::store::Order {
    let mut o = pending(&new_id("pi"));
    o.code = Some(vault().store(&AccessCode::generate(12)));
    store.insert_order(&o).await.expect("insert paid order")
}

async fn call(store: &DynStore, sid: &str) {
    store
        .upsert_call(&NewCall {
            call_sid: sid.into(),
            from_number: "+15550001111".into(),
            to_number: "+15550002222".into(),
            now: NOW,
        })
        .await
        .expect("upsert call");
}

fn charge(call_sid: &str, order_id: &str) -> NewCharge {
    NewCharge {
        id: new_id("chg"),
        call_sid: call_sid.into(),
        order_id: order_id.into(),
        amount: Cents(300),
        currency: Default::default(),
        seconds_billed: Seconds(180),
        now: NOW,
    }
}

/// The overview's figures are sums over every matching row (no page of the newest), and the
/// agent seconds are `Call::billable_seconds` summed.
async fn daily_figures_sum_every_matching_row(store: DynStore) {
    use callgate::store::DayTotal;
    const DAY: i64 = 86_400;
    let day0 = DayTotal::day_of(NOW);
    let since = day0 * DAY;
    let paid_on = |at: i64, cents: i64| {
        let mut o = pending(&new_id("pi"));
        o.code = Some(vault().store(&AccessCode::generate(12)));
        o.amount = Cents(cents);
        o.now = at;
        o
    };
    // Paid on day 0 (twice) and day 1; one paid before `since`; one revoked; one unpaid.
    let mut orders = Vec::new();
    for (at, cents) in [
        (since + 10, 1000),
        (since + 20, 250),
        (since + DAY + 5, 700),
        (since - 5, 9999),
    ] {
        orders.push(store.insert_order(&paid_on(at, cents)).await.unwrap());
    }
    let revoked = store
        .insert_order(&paid_on(since + 30, 5000))
        .await
        .unwrap();
    store
        .move_order(&revoked.id, OrderStatus::Revoked, since + 40)
        .await
        .unwrap()
        .expect("revoked");
    store.insert_order(&pending(&new_id("pi"))).await.unwrap();
    let mut paid = store.paid_per_day(since).await.unwrap();
    paid.sort_by_key(|t| t.day);
    assert_eq!(
        paid,
        vec![
            DayTotal {
                day: day0,
                total: 1250
            },
            DayTotal {
                day: day0 + 1,
                total: 700
            }
        ]
    );

    // Calls: two bridged and metered on day 0 and day 1, one never bridged (metered nothing).
    for (sid, order, start, secs) in [
        ("CA_d1", &orders[0], since + 100, 61),
        ("CA_d2", &orders[1], since + DAY + 100, 125),
        ("CA_d3", &orders[2], since + 200, 0),
    ] {
        store
            .upsert_call(&NewCall {
                call_sid: sid.into(),
                from_number: "+15550001111".into(),
                to_number: "+15550002222".into(),
                now: start,
            })
            .await
            .unwrap();
        if secs > 0 {
            assert!(held(
                store
                    .hold_order_for_call(&order.id, sid, start + 150, start)
                    .await
                    .unwrap()
            ));
            assert!(store
                .bridge_started(sid, None, start + 35, start + 1, "inst_test")
                .await
                .unwrap());
            store
                .record_metering(sid, Seconds(secs), start + 2)
                .await
                .unwrap();
        }
    }
    assert_eq!(store.count_live_calls().await.unwrap(), 3);
    let mut agent = store.agent_seconds_per_day(since).await.unwrap();
    agent.sort_by_key(|t| t.day);
    let mut expected = std::collections::BTreeMap::<i64, i64>::new();
    for c in store.list_calls(100).await.unwrap() {
        if c.started_at >= since && c.bridged_at.is_some() {
            *expected.entry(DayTotal::day_of(c.started_at)).or_default() += c.billable_seconds().0;
        }
    }
    let expected: Vec<DayTotal> = expected
        .into_iter()
        .map(|(day, total)| DayTotal { day, total })
        .collect();
    assert_eq!(
        agent, expected,
        "the SQL sum is Call::billable_seconds summed"
    );
    assert_eq!(
        agent,
        vec![
            DayTotal {
                day: day0,
                total: 61
            },
            DayTotal {
                day: day0 + 1,
                total: 125
            }
        ]
    );

    // A succeeded overage charge counts on the day it succeeded; a declined one does not.
    let mut c = charge("CA_d1", &orders[0].id);
    c.now = since + 300;
    let (stored, _) = store.insert_charge(&c).await.unwrap();
    let claimed = store
        .claim_charge("w", since + DAY + 900, since + DAY + 400)
        .await
        .unwrap()
        .expect("due");
    assert_eq!(claimed.id, stored.id);
    let done = ChargeUpdate {
        state: ChargeState::Succeeded,
        stripe_payment_intent: Some("pi_x".into()),
        last_error: None,
        next_attempt_at: None,
        pay_token: None,
    };
    assert!(store
        .finish_charge(&stored.id, "w", &done, since + DAY + 400)
        .await
        .unwrap());
    assert_eq!(
        store.succeeded_per_day(since).await.unwrap(),
        vec![DayTotal {
            day: day0 + 1,
            total: 300
        }]
    );
}

async fn migrate_is_idempotent(store: DynStore) {
    store.migrate().await.expect("second migration run");
    store.ping().await.expect("ping");
    assert!(["sqlite", "postgres", "mongodb"].contains(&store.backend()));
}

async fn orders_are_stored_and_found(store: DynStore) {
    let new = pending("pi_a");
    let order = store.insert_order(&new).await.unwrap();
    assert_eq!(order.status, OrderStatus::Pending);
    assert_eq!(order.amount, Cents(1000));
    assert_eq!(order.seconds_included, Seconds(300));
    assert_eq!(order.seconds_used, Seconds(0));
    assert!(order.overage_consent);
    assert_eq!(order.paid_at, None);
    assert_eq!(order.code_hash, None);
    assert_eq!(store.order(&order.id).await.unwrap().as_ref(), Some(&order));
    assert_eq!(
        store
            .order_by_payment_intent("pi_a")
            .await
            .unwrap()
            .as_ref(),
        Some(&order)
    );
    assert_eq!(store.order("ord_missing").await.unwrap(), None);
    assert_eq!(
        store.order_by_payment_intent("pi_missing").await.unwrap(),
        None
    );

    // Same id, same PaymentIntent: both refused as conflicts, nothing overwritten.
    let mut same_id = pending("pi_b");
    same_id.id = order.id.clone();
    assert!(matches!(
        store.insert_order(&same_id).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.insert_order(&pending("pi_a")).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store
            .order(&order.id)
            .await
            .unwrap()
            .unwrap()
            .stripe_payment_intent
            .as_deref(),
        Some("pi_a")
    );

    let mut later = pending("pi_c");
    later.now = NOW + 10;
    let later = store.insert_order(&later).await.unwrap();
    let listed = store.list_orders(10).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].id, later.id, "newest first");
    assert_eq!(store.list_orders(1).await.unwrap().len(), 1);
}

async fn codes_are_unique_and_found_by_hash(store: DynStore) {
    let vault = vault();
    let code = AccessCode::generate(12);
    let stored = vault.store(&code);
    let mut o = pending("pi_code");
    o.source = OrderSource::Operator;
    o.code = Some(stored.clone());
    let order = store.insert_order(&o).await.unwrap();
    assert_eq!(order.status, OrderStatus::Paid);
    assert_eq!(order.paid_at, Some(NOW));
    assert_eq!(order.code_last4.as_deref(), Some(code.last4().as_str()));
    let found = store
        .order_by_code(&vault.fingerprint(&code))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, order.id);
    assert_eq!(
        vault.open(found.code_sealed.as_deref().unwrap()),
        Some(code)
    );
    assert_eq!(
        store
            .order_by_code(&vault.fingerprint(&AccessCode::generate(12)))
            .await
            .unwrap(),
        None
    );

    let mut dup = pending("pi_other");
    dup.code = Some(stored);
    assert!(matches!(
        store.insert_order(&dup).await,
        Err(StoreError::Conflict(_))
    ));
}

async fn fulfilment_happens_once(store: DynStore) {
    let pending_order = store.insert_order(&pending("pi_f")).await.unwrap();
    let first = fulfilment("pi_f");
    let done = store.fulfil_order(&first).await.unwrap();
    let Fulfilled::Now(order) = done else {
        panic!("first fulfilment must pay the order")
    };
    assert_eq!(order.id, pending_order.id);
    assert_eq!(order.status, OrderStatus::Paid);
    assert_eq!(order.paid_at, Some(NOW + 5));
    assert_eq!(order.code_hash.as_deref(), Some(first.code.hash.as_str()));
    assert_eq!(order.stripe_payment_method.as_deref(), Some("pm_1"));

    let again = store.fulfil_order(&fulfilment("pi_f")).await.unwrap();
    let Fulfilled::Already(same) = again else {
        panic!("second fulfilment must change nothing")
    };
    assert_eq!(same.code_hash, order.code_hash, "the code must not change");
    assert_eq!(store.list_orders(10).await.unwrap().len(), 1);
}

/// Point 5: a PaymentIntent no callgate order names stores nothing.
async fn fulfilment_without_pending_order_stores_nothing(store: DynStore) {
    assert_eq!(
        store
            .fulfil_order(&fulfilment("pi_elsewhere"))
            .await
            .unwrap(),
        Fulfilled::NoOrder
    );
    assert!(store
        .order_by_payment_intent("pi_elsewhere")
        .await
        .unwrap()
        .is_none());
    assert!(store.list_orders(10).await.unwrap().is_empty());
}

async fn failed_payment_can_still_be_fulfilled(store: DynStore) {
    let o = store.insert_order(&pending("pi_retry")).await.unwrap();
    let failed = store
        .move_order(&o.id, OrderStatus::Failed, NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.status, OrderStatus::Failed);
    assert!(matches!(
        store.fulfil_order(&fulfilment("pi_retry")).await.unwrap(),
        Fulfilled::Now(_)
    ));
}

/// Two webhooks racing to fulfil the same payment create one order and one code.
async fn racing_fulfilments_yield_one_code(store: DynStore) {
    {
        let pi = new_id("pi");
        store.insert_order(&pending(&pi)).await.unwrap();
        let attempts: Vec<Fulfilment> = (0..12).map(|_| fulfilment(&pi)).collect();
        let mut tasks = Vec::new();
        for f in attempts {
            let store = store.clone();
            tasks.push(tokio::spawn(async move { store.fulfil_order(&f).await }));
        }
        let mut now = 0;
        let mut codes = HashSet::new();
        let mut ids = HashSet::new();
        for t in tasks {
            let outcome = t.await.unwrap().expect("a racing fulfilment must not fail");
            let order = match outcome {
                Fulfilled::Now(o) => {
                    now += 1;
                    o
                }
                Fulfilled::Already(o) => o,
                Fulfilled::NoOrder => panic!("the pending order was not found"),
            };
            codes.insert(order.code_hash.clone().unwrap());
            ids.insert(order.id.clone());
        }
        assert_eq!(now, 1, "exactly one fulfilment wins");
        assert_eq!(codes.len(), 1, "every caller sees the same code");
        assert_eq!(ids.len(), 1, "one order");
    }
}

/// Every move between two order states: the store makes exactly those the domain allows
/// (`OrderStatus::may_become`), and a refused move changes nothing.
async fn order_status_moves_only_from_allowed_states(store: DynStore) {
    async fn order_in(store: &DynStore, status: OrderStatus) -> callgate::store::Order {
        let order = match status {
            OrderStatus::Pending | OrderStatus::Failed => {
                store.insert_order(&pending(&new_id("pi"))).await.unwrap()
            }
            OrderStatus::Paid | OrderStatus::Revoked => paid_order(store).await,
        };
        if matches!(status, OrderStatus::Failed | OrderStatus::Revoked) {
            store.move_order(&order.id, status, NOW + 1).await.unwrap();
        }
        let order = store.order(&order.id).await.unwrap().unwrap();
        assert_eq!(order.status, status);
        order
    }
    let mut moves = 0;
    for &from in OrderStatus::ALL {
        for &to in OrderStatus::ALL {
            let order = order_in(&store, from).await;
            let moved = store.move_order(&order.id, to, NOW + 9).await.unwrap();
            let stored = store.order(&order.id).await.unwrap().unwrap();
            if from.may_become(to) {
                moves += 1;
                let moved = moved.unwrap_or_else(|| panic!("{from} -> {to} refused"));
                assert_eq!((moved.status, stored.status), (to, to));
                if to == OrderStatus::Revoked {
                    assert_eq!(stored.revoked_at, Some(NOW + 9));
                }
            } else {
                assert_eq!(moved, None, "{from} -> {to} made");
                assert_eq!(stored, order, "{from} -> {to} changed the order");
            }
        }
    }
    assert_eq!(moves, 6);
    assert_eq!(
        store
            .move_order("ord_missing", OrderStatus::Revoked, NOW)
            .await
            .unwrap(),
        None
    );
}

async fn calls_are_recorded_once(store: DynStore) {
    let first = store
        .upsert_call(&NewCall {
            call_sid: "CA1".into(),
            from_number: "+15550001111".into(),
            to_number: "+15550002222".into(),
            now: NOW,
        })
        .await
        .unwrap();
    assert_eq!(first.status, callgate::store::CallState::Menu);
    assert_eq!(first.started_at, NOW);
    assert_eq!(first.seconds_metered, Seconds(0));
    let again = store
        .upsert_call(&NewCall {
            call_sid: "CA1".into(),
            from_number: "+19999999999".into(),
            to_number: "+15550002222".into(),
            now: NOW + 30,
        })
        .await
        .unwrap();
    assert_eq!(again, first, "a repeated start changes nothing");
    call(&store, "CA2").await;
    assert_eq!(store.list_calls(10).await.unwrap().len(), 2);
    assert_eq!(store.call("CA_missing").await.unwrap(), None);
}

/// Two callbacks racing to bill one call create one charge.
async fn one_charge_per_call(store: DynStore) {
    let order = paid_order(&store).await;
    call(&store, "CA_bill").await;
    let (first, created) = store
        .insert_charge(&charge("CA_bill", &order.id))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(first.state, ChargeState::Pending);
    assert_eq!(first.amount, Cents(300));
    assert_eq!(first.attempts, 0);
    let (second, created) = store
        .insert_charge(&charge("CA_bill", &order.id))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(second.id, first.id);

    call(&store, "CA_race").await;
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let store = store.clone();
        let c = charge("CA_race", &order.id);
        tasks.push(tokio::spawn(async move { store.insert_charge(&c).await }));
    }
    let mut created = 0;
    let mut ids = HashSet::new();
    for t in tasks {
        let (c, new) = t.await.unwrap().expect("racing insert must not fail");
        created += usize::from(new);
        ids.insert(c.id);
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1);

    let all = store.list_charges(None, 10).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(
        store
            .list_charges(Some(ChargeState::Pending), 10)
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(store
        .list_charges(Some(ChargeState::Succeeded), 10)
        .await
        .unwrap()
        .is_empty());
}

async fn charge_needs_a_known_call(store: DynStore) {
    let order = paid_order(&store).await;
    let err = store.insert_charge(&charge("CA_unknown", &order.id)).await;
    assert!(err.is_err(), "a charge for an unknown call must be refused");
    assert!(store.list_charges(None, 10).await.unwrap().is_empty());
}

async fn webhook_events_are_deduplicated(store: DynStore) {
    assert!(!store.event_seen("evt_1").await.unwrap());
    assert!(store
        .record_event("evt_1", "payment_intent.succeeded", NOW)
        .await
        .unwrap());
    assert!(!store
        .record_event("evt_1", "payment_intent.succeeded", NOW)
        .await
        .unwrap());
    assert!(store.event_seen("evt_1").await.unwrap());

    let mut tasks = Vec::new();
    for _ in 0..10 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.record_event("evt_race", "x", NOW).await
        }));
    }
    let mut firsts = 0;
    for t in tasks {
        firsts += usize::from(t.await.unwrap().unwrap());
    }
    assert_eq!(firsts, 1);
}

async fn failures(store: &DynStore, scope: AttemptScope<'_>, since: i64) -> i64 {
    store.count_failures(scope, since, i64::MAX).await.unwrap()
}

async fn attempts_are_counted_per_scope_and_window(store: DynStore) {
    let attempt = |caller: &str, hash: &str, ok: bool, at: i64| CodeAttempt {
        caller: caller.into(),
        code_hash: hash.into(),
        ok,
        at,
    };
    for a in [
        attempt("+1", "h1", false, NOW - 100),
        attempt("+1", "h1", false, NOW),
        attempt("+1", "h2", true, NOW),
        attempt("+2", "h1", false, NOW + 1),
        attempt("+2", "h3", false, NOW + 2),
    ] {
        store.record_attempt(&a).await.unwrap();
    }
    assert_eq!(failures(&store, AttemptScope::Caller("+1"), NOW).await, 1);
    assert_eq!(
        failures(&store, AttemptScope::Caller("+1"), NOW - 100).await,
        2
    );
    assert_eq!(failures(&store, AttemptScope::Caller("+3"), 0).await, 0);
    assert_eq!(failures(&store, AttemptScope::Code("h1"), NOW).await, 2);
    assert_eq!(
        failures(&store, AttemptScope::Code("h2"), 0).await,
        0,
        "successes are not failures"
    );
    assert_eq!(failures(&store, AttemptScope::Global, NOW).await, 3);
    assert_eq!(failures(&store, AttemptScope::Global, 0).await, 4);
    // Counted up to a bound: a count past it reads as the bound, one below it is exact.
    let up_to = |scope, since, up_to| {
        let store = store.clone();
        async move { store.count_failures(scope, since, up_to).await.unwrap() }
    };
    assert_eq!(up_to(AttemptScope::Global, 0, 2).await, 2);
    assert_eq!(up_to(AttemptScope::Global, 0, 5).await, 4);
    assert_eq!(up_to(AttemptScope::Code("h1"), 0, 1).await, 1);
    assert_eq!(up_to(AttemptScope::Caller("+1"), 0, 0).await, 0);
    assert_eq!(store.prune_attempts(NOW).await.unwrap(), 1);
    assert_eq!(failures(&store, AttemptScope::Global, 0).await, 3);
}

/// The code check's combined read answers what the single reads answer, on every backend.
async fn code_check_reads_what_the_single_reads_do(store: DynStore) {
    let order = paid_order(&store).await;
    let hash = order.code_hash.clone().expect("paid order has a code");
    call(&store, "CA_check").await;
    let wrong = |caller: &str, code_hash: &str, at: i64| CodeAttempt {
        caller: caller.into(),
        code_hash: code_hash.into(),
        ok: false,
        at,
    };
    // More than one multi-row INSERT's worth, in one call, plus a success that never counts.
    let mut batch: Vec<CodeAttempt> = (0..300)
        .map(|i| wrong("+1999", &format!("other{i}"), NOW))
        .collect();
    batch.push(wrong("+15550001111", &hash, NOW - 10));
    batch.push(wrong("+15550001111", &hash, NOW - 4000));
    batch.push(wrong("+1888", &hash, NOW));
    batch.push(CodeAttempt {
        ok: true,
        ..wrong("+15550001111", &hash, NOW)
    });
    store.record_attempts(&batch).await.unwrap();
    store.record_attempts(&[]).await.unwrap();
    assert_eq!(
        failures(&store, AttemptScope::Caller("+1999"), 0).await,
        300
    );

    let query = |call_sid, caller, code_hash| CodeCheckQuery {
        call_sid,
        caller,
        code_hash,
        since: NOW - 3600,
        caller_up_to: i64::MAX,
        code_up_to: i64::MAX,
        written_up_to: None,
    };
    let facts = store
        .code_check(&query("CA_check", "+15550001111", Some(&hash)))
        .await
        .unwrap();
    assert_eq!(
        facts,
        CodeCheckFacts {
            call_known: true,
            caller_failures: 1,
            code_failures: 2,
            order: Some(order.clone()),
            remembered_order_id: None,
        }
    );
    let unknown = store
        .code_check(&query("CA_nobody", "+1777", Some("no-such-hash")))
        .await
        .unwrap();
    assert_eq!(
        unknown,
        CodeCheckFacts {
            call_known: false,
            caller_failures: 0,
            code_failures: 0,
            order: None,
            remembered_order_id: None,
        }
    );
    // A number remembered for the code's order: read in the same check.
    store
        .remember_caller("+15550001111", &order.id, NOW)
        .await
        .unwrap();
    let remembered = store
        .code_check(&query("CA_check", "+15550001111", Some(&hash)))
        .await
        .unwrap();
    assert_eq!(remembered.remembered_order_id, Some(order.id.clone()));
    assert_eq!(
        (remembered.caller_failures, remembered.code_failures),
        (1, 2)
    );
    // Digits that cannot be a code: nothing looked up for them, the caller still counted.
    let malformed = store
        .code_check(&query("CA_check", "+1999", None))
        .await
        .unwrap();
    assert_eq!(
        (
            malformed.caller_failures,
            malformed.code_failures,
            malformed.order
        ),
        (300, 0, None)
    );
    // Each count stops at its bound: 300 of the caller's read as 7, the code's 2 as 1.
    let bounded = store
        .code_check(&CodeCheckQuery {
            caller_up_to: 7,
            ..query("CA_check", "+1999", Some(&hash))
        })
        .await
        .unwrap();
    assert_eq!((bounded.caller_failures, bounded.code_failures), (7, 2));
    let bounded = store
        .code_check(&CodeCheckQuery {
            code_up_to: 1,
            ..query("CA_check", "+1999", Some(&hash))
        })
        .await
        .unwrap();
    assert_eq!((bounded.caller_failures, bounded.code_failures), (300, 1));
    assert_eq!(bounded.order, Some(order.clone()));
}

fn end(sid: &str, status: &str, duration: Option<i64>, now: i64) -> EndCall {
    EndCall {
        call_sid: sid.into(),
        from_number: "+15550001111".into(),
        to_number: "+15550002222".into(),
        twilio_status: status.parse().unwrap(),
        duration,
        reason: callgate::store::EndReason::from_twilio(status.parse().unwrap()).unwrap(),
        now,
    }
}

fn held(h: Hold) -> bool {
    matches!(h, Hold::Held(_))
}

/// Two calls with the same code: the first holds it until it ends, or until its call is
/// settled once its hold has lapsed.
async fn one_live_call_per_code(store: DynStore) {
    let order = paid_order(&store).await;
    call(&store, "CA_first").await;
    call(&store, "CA_second").await;
    let hold = |sid: &'static str, until, now| {
        let (store, id) = (store.clone(), order.id.clone());
        async move {
            store
                .hold_order_for_call(&id, sid, until, now)
                .await
                .unwrap()
        }
    };
    assert!(held(hold("CA_first", NOW + 600, NOW).await));
    assert!(held(hold("CA_first", NOW + 600, NOW).await), "re-entrant");
    assert_eq!(hold("CA_second", NOW + 600, NOW + 1).await, Hold::InUse);
    assert_eq!(
        store
            .call("CA_first")
            .await
            .unwrap()
            .unwrap()
            .order_id
            .as_deref(),
        Some(order.id.as_str())
    );
    assert_eq!(
        store.call("CA_second").await.unwrap().unwrap().order_id,
        None
    );
    // The first call ends in the menu (it never reached the agent): the code is free again.
    store
        .end_call(&end("CA_first", "completed", Some(42), NOW + 50))
        .await
        .unwrap();
    assert_eq!(
        store
            .order(&order.id)
            .await
            .unwrap()
            .unwrap()
            .active_call_sid,
        None
    );
    assert!(held(hold("CA_second", NOW + 700, NOW + 60).await));
    // A hold whose call went silent lapses, but only settling that call frees the code.
    call(&store, "CA_third").await;
    assert_eq!(hold("CA_third", NOW + 2000, NOW + 699).await, Hold::InUse);
    assert_eq!(
        hold("CA_third", NOW + 2000, NOW + 701).await,
        Hold::Lapsed("CA_second".into())
    );
    assert!(matches!(
        store
            .settle_call("CA_second", Rounding::PerStartedMinute, "chg_x", NOW + 701)
            .await
            .unwrap(),
        Settlement::Settled { .. }
    ));
    assert!(held(hold("CA_third", NOW + 2000, NOW + 701).await));

    // Racing holds: exactly one wins.
    let other = paid_order(&store).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let sid = format!("CA_race_{i}");
        call(&store, &sid).await;
        let store = store.clone();
        let id = other.id.clone();
        tasks.push(tokio::spawn(async move {
            store.hold_order_for_call(&id, &sid, NOW + 600, NOW).await
        }));
    }
    let mut winners = 0;
    for t in tasks {
        winners += usize::from(held(t.await.unwrap().unwrap()));
    }
    assert_eq!(winners, 1);
}

/// An ended call never takes a code, nor starts a bridge; a hold taken before the end is
/// released by it.
async fn an_ended_call_never_holds_a_code(store: DynStore) {
    let order = paid_order(&store).await;
    call(&store, "CA_over").await;
    store
        .end_call(&end("CA_over", "completed", Some(5), NOW + 5))
        .await
        .unwrap();
    assert_eq!(
        store
            .hold_order_for_call(&order.id, "CA_over", NOW + 600, NOW + 6)
            .await
            .unwrap(),
        Hold::CallOver
    );
    let o = store.order(&order.id).await.unwrap().unwrap();
    assert_eq!(o.active_call_sid, None, "no hold left behind");
    assert!(!store
        .bridge_started("CA_over", None, NOW + 40, NOW + 7, "inst_test")
        .await
        .unwrap());

    // Held in the menu, then Twilio reports the end before the stream opens.
    call(&store, "CA_late").await;
    assert!(held(
        store
            .hold_order_for_call(&order.id, "CA_late", NOW + 600, NOW + 10)
            .await
            .unwrap()
    ));
    store
        .end_call(&end("CA_late", "completed", Some(9), NOW + 11))
        .await
        .unwrap();
    assert_eq!(
        store
            .order(&order.id)
            .await
            .unwrap()
            .unwrap()
            .active_call_sid,
        None
    );
    assert!(
        !store
            .bridge_started("CA_late", None, NOW + 40, NOW + 12, "inst_test")
            .await
            .unwrap(),
        "its stream token must not open a bridge"
    );
    assert_eq!(
        store.call("CA_late").await.unwrap().unwrap().bridged_at,
        None
    );
}

/// A bridged call keeps its code until settlement, which debits its metered seconds and
/// frees the code in one step: a redial never sees the allowance the last call used.
async fn settlement_debits_and_frees_the_code_in_one_step(store: DynStore) {
    let order = paid_order(&store).await;
    call(&store, "CA_talk").await;
    call(&store, "CA_redial").await;
    assert!(held(
        store
            .hold_order_for_call(&order.id, "CA_talk", NOW + 150, NOW)
            .await
            .unwrap()
    ));
    assert!(store
        .bridge_started("CA_talk", None, NOW + 40, NOW + 10, "inst_test")
        .await
        .unwrap());
    // Its heartbeat renews the hold while it talks.
    store
        .record_metering_many(&[("CA_talk".into(), Seconds(110))], NOW + 150, NOW + 120)
        .await
        .unwrap();
    store
        .bridge_finished(
            "CA_talk",
            Seconds(120),
            callgate::store::EndReason::CallerHungUp,
            NOW + 130,
        )
        .await
        .unwrap();
    // Twilio's end arrives first: the code stays held, not yet debited.
    store
        .end_call(&end("CA_talk", "completed", Some(135), NOW + 131))
        .await
        .unwrap();
    assert_eq!(
        store
            .hold_order_for_call(&order.id, "CA_redial", NOW + 300, NOW + 131)
            .await
            .unwrap(),
        Hold::InUse,
        "ended but not debited: still held"
    );
    assert!(matches!(
        store
            .settle_call("CA_talk", Rounding::PerStartedMinute, "chg_t", NOW + 132)
            .await
            .unwrap(),
        Settlement::Settled {
            seconds: Seconds(120),
            ..
        }
    ));
    match store
        .hold_order_for_call(&order.id, "CA_redial", NOW + 300, NOW + 133)
        .await
        .unwrap()
    {
        Hold::Held(o) => assert_eq!(o.seconds_used, Seconds(120), "debited before freed"),
        other => panic!("not held: {other:?}"),
    }
}

/// The metering write is the heartbeat: it renews a live call's hold, and names the calls
/// that must stop (order revoked, hold gone).
async fn metering_renews_holds_and_names_calls_to_stop(store: DynStore) {
    let order = paid_order(&store).await;
    let other = paid_order(&store).await;
    for sid in ["CA_h1", "CA_h2"] {
        call(&store, sid).await;
    }
    for (sid, o) in [("CA_h1", &order), ("CA_h2", &other)] {
        assert!(held(
            store
                .hold_order_for_call(&o.id, sid, NOW + 150, NOW)
                .await
                .unwrap()
        ));
        assert!(store
            .bridge_started(sid, None, NOW + 30, NOW, "inst_test")
            .await
            .unwrap());
    }
    let figures = [
        ("CA_h1".to_string(), Seconds(5)),
        ("CA_h2".to_string(), Seconds(5)),
    ];
    let stop = store
        .record_metering_many(&figures, NOW + 35, NOW + 5)
        .await
        .unwrap();
    assert!(stop.is_empty());
    assert_eq!(
        store
            .order(&order.id)
            .await
            .unwrap()
            .unwrap()
            .active_call_until,
        Some(NOW + 35)
    );
    store
        .move_order(&other.id, OrderStatus::Revoked, NOW + 6)
        .await
        .unwrap();
    let stop = store
        .record_metering_many(&figures, NOW + 40, NOW + 10)
        .await
        .unwrap();
    assert_eq!(
        stop,
        vec!["CA_h2".to_string()],
        "the revoked order's call stops"
    );
    assert_eq!(
        store.call("CA_h2").await.unwrap().unwrap().seconds_metered,
        Seconds(5),
        "its metering is still recorded"
    );
}

/// Status callbacks: duplicated, out of order, or for a call never seen.
async fn ending_a_call_is_idempotent(store: DynStore) {
    call(&store, "CA_end").await;
    let first = store
        .end_call(&end("CA_end", "completed", Some(61), NOW + 61))
        .await
        .unwrap();
    assert_eq!(first.status, callgate::store::CallState::Ended);
    assert_eq!(first.ended_at, Some(NOW + 61));
    assert_eq!(first.twilio_duration, Some(61));
    assert_eq!(first.settled_at, None, "billing still owes it a look");
    let again = store
        .end_call(&end("CA_end", "completed", Some(99), NOW + 120))
        .await
        .unwrap();
    assert_eq!(again.ended_at, Some(NOW + 61), "first end time stays");
    assert_eq!(again.twilio_duration, Some(61), "first duration stays");
    assert_eq!(
        again.end_reason,
        Some(callgate::store::EndReason::TwilioCompleted)
    );

    // No duration first, then one: filled in.
    call(&store, "CA_late").await;
    let no_duration = store
        .end_call(&end("CA_late", "completed", None, NOW + 5))
        .await
        .unwrap();
    assert_eq!(no_duration.twilio_duration, None);
    let filled = store
        .end_call(&end("CA_late", "completed", Some(5), NOW + 6))
        .await
        .unwrap();
    assert_eq!(filled.twilio_duration, Some(5));

    // A busy call whose start was never seen is still recorded.
    let busy = store
        .end_call(&end("CA_never", "busy", Some(0), NOW))
        .await
        .unwrap();
    assert_eq!(busy.status, callgate::store::CallState::Ended);
    assert_eq!(busy.twilio_status.map(|s| s.as_str()), Some("busy"));
    assert_eq!(store.list_calls(10).await.unwrap().len(), 3);
}

/// The code step's one write: the token is stored with the hold, and only when the call holds
/// the code (a call refused, or one that has ended, gets none).
async fn a_stream_token_is_stored_only_with_its_hold(store: DynStore) {
    use callgate::store::TokenIssue;
    let order = paid_order(&store).await;
    for sid in ["CA_first", "CA_second", "CA_gone"] {
        call(&store, sid).await;
    }
    let issue = |h: &str| TokenIssue {
        token_hash: h.into(),
        expires_at: NOW + 120,
    };
    let first = store
        .hold_and_grant(&order.id, "CA_first", NOW + 150, NOW, &issue("h_first"))
        .await
        .unwrap();
    assert!(held(first));
    let refused = store
        .hold_and_grant(&order.id, "CA_second", NOW + 150, NOW, &issue("h_second"))
        .await
        .unwrap();
    assert_eq!(refused, Hold::InUse);
    store
        .end_call(&EndCall {
            call_sid: "CA_gone".into(),
            from_number: "+15550001111".into(),
            to_number: "+15550002222".into(),
            twilio_status: callgate::store::TwilioStatus::Completed,
            duration: Some(3),
            reason: callgate::store::EndReason::TwilioCompleted,
            now: NOW,
        })
        .await
        .unwrap();
    let free = paid_order(&store).await;
    let over = store
        .hold_and_grant(&free.id, "CA_gone", NOW + 150, NOW, &issue("h_gone"))
        .await
        .unwrap();
    assert_eq!(over, Hold::CallOver);
    let spend = |h: &'static str, sid: &'static str| {
        let store = store.clone();
        async move { store.consume_stream_token(h, sid, NOW + 1).await.unwrap() }
    };
    assert!(
        spend("h_first", "CA_first").await.is_some(),
        "stored with the hold"
    );
    assert!(
        spend("h_second", "CA_second").await.is_none(),
        "refused: no token"
    );
    assert!(
        spend("h_gone", "CA_gone").await.is_none(),
        "ended: no token"
    );
}

async fn stream_tokens_are_single_use(store: DynStore) {
    let order = paid_order(&store).await;
    call(&store, "CA_tok").await;
    call(&store, "CA_other").await;
    let grant = StreamGrant {
        call_sid: "CA_tok".into(),
        order_id: order.id.clone(),
    };
    store
        .insert_stream_token("hash1", &grant, NOW + 60)
        .await
        .unwrap();
    assert_eq!(
        store
            .consume_stream_token("hash1", "CA_other", NOW)
            .await
            .unwrap(),
        None,
        "bound to its call"
    );
    assert_eq!(
        store
            .consume_stream_token("nohash", "CA_tok", NOW)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .consume_stream_token("hash1", "CA_tok", NOW)
            .await
            .unwrap()
            .map(|o| (o.grant, o.call.map(|c| c.call_sid), o.order.map(|o| o.id))),
        Some((grant.clone(), Some("CA_tok".into()), Some(order.id.clone()))),
        "the token's call and order are read with it"
    );
    assert_eq!(
        store
            .consume_stream_token("hash1", "CA_tok", NOW)
            .await
            .unwrap(),
        None,
        "single use"
    );
    store
        .insert_stream_token("hash2", &grant, NOW + 60)
        .await
        .unwrap();
    assert_eq!(
        store
            .consume_stream_token("hash2", "CA_tok", NOW + 60)
            .await
            .unwrap(),
        None,
        "expired"
    );
}

/// An entry is recorded once by its id, its order's counters moved in the same step: a
/// replayed top-up, a repeated grant id or a refund after a dispute change nothing twice.
async fn entries_are_recorded_once_with_their_counters(store: DynStore) {
    use callgate::store::{Entry, EntryKind, Recorded};
    let order = paid_order(&store).await;
    let opening = Entry::opening(&order, &[], NOW);
    assert_eq!(store.record_entry(&opening).await.unwrap(), Recorded::Now);
    assert_eq!(
        store.record_entry(&opening).await.unwrap(),
        Recorded::Already
    );
    let top_up = Entry::top_up(
        &order.id,
        "pi_top",
        Seconds(600),
        Cents(800),
        order.currency.clone(),
        NOW + 1,
    );
    let grant = Entry::grant(&order, "g1", Seconds(120), NOW + 2);
    for _ in 0..2 {
        store.record_entry(&top_up).await.unwrap();
        store.record_entry(&grant).await.unwrap();
    }
    let prior = Entry::prior_use(&order, Seconds(90), NOW + 3);
    store.record_entry(&prior).await.unwrap();
    store.record_entry(&prior).await.unwrap();
    let now = store.order(&order.id).await.unwrap().unwrap();
    assert_eq!(now.seconds_included.0, order.seconds_included.0 + 720);
    assert_eq!(now.seconds_used, Seconds(90));
    assert_eq!(now.updated_at, NOW + 3);

    // The top-up's refund takes back exactly its minutes, once, dispute or refund.
    let paid = store.entry_paid_by("pi_top").await.unwrap().unwrap();
    assert_eq!(paid, top_up);
    let refund = paid.reversal(false, NOW + 4).unwrap();
    assert_eq!(store.record_entry(&refund).await.unwrap(), Recorded::Now);
    let dispute = paid.reversal(true, NOW + 5).unwrap();
    assert_eq!(
        store.record_entry(&dispute).await.unwrap(),
        Recorded::Already
    );
    let after = store.order(&order.id).await.unwrap().unwrap();
    assert_eq!(after.seconds_included.0, order.seconds_included.0 + 120);
    assert_eq!(
        after.status, order.status,
        "a top-up's refund leaves the code"
    );
    assert_eq!(
        store.entry(&refund.id).await.unwrap().unwrap().kind,
        EntryKind::Refund
    );
    assert_eq!(
        store.entry_paid_by("pi_top").await.unwrap(),
        Some(top_up.clone()),
        "the credit, not its reversal"
    );

    let entries = store.entries_for_order(&order.id).await.unwrap();
    let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            opening.id.as_str(),
            top_up.id.as_str(),
            grant.id.as_str(),
            prior.id.as_str(),
            refund.id.as_str()
        ]
    );
    let balance = callgate::store::Balance::of(&entries, []);
    assert!(balance.matches(&after), "{balance:?} vs {after:?}");
    assert_eq!(balance.paid, order.amount.0 + 800 - 800);
    assert_eq!(store.list_entries(100).await.unwrap(), entries);

    let missing = Entry::top_up(
        "ord_missing",
        "pi_x",
        Seconds(60),
        Cents(1),
        order.currency.clone(),
        NOW,
    );
    assert_eq!(
        store.record_entry(&missing).await.unwrap(),
        Recorded::NoOrder
    );
    assert_eq!(
        store.entry(&missing.id).await.unwrap(),
        None,
        "nothing stored"
    );
}

async fn charge_leases_and_outcomes(store: DynStore) {
    let order = paid_order(&store).await;
    call(&store, "CA_lease").await;
    let (c, _) = store
        .insert_charge(&charge("CA_lease", &order.id))
        .await
        .unwrap();
    assert_eq!(
        store.claim_charge("a", NOW + 100, NOW - 1).await.unwrap(),
        None,
        "not due yet"
    );
    let leased = store
        .claim_charge("a", NOW + 100, NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            leased.id.as_str(),
            leased.attempts,
            leased.lease_owner.as_deref()
        ),
        (c.id.as_str(), 1, Some("a"))
    );
    assert_eq!(
        store.claim_charge("b", NOW + 100, NOW + 50).await.unwrap(),
        None,
        "leased"
    );
    let retry = ChargeUpdate {
        state: ChargeState::Pending,
        stripe_payment_intent: None,
        last_error: Some("503".into()),
        next_attempt_at: Some(NOW + 300),
        pay_token: None,
    };
    assert!(
        !store.finish_charge(&c.id, "b", &retry, NOW).await.unwrap(),
        "only the lease holder records"
    );
    assert!(store.finish_charge(&c.id, "a", &retry, NOW).await.unwrap());
    assert_eq!(
        store.claim_charge("b", NOW + 400, NOW + 299).await.unwrap(),
        None,
        "backing off"
    );
    let again = store
        .claim_charge("b", NOW + 400, NOW + 300)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.attempts, 2);
    // A lease that lapses is taken over.
    let taken = store
        .claim_charge("c", NOW + 900, NOW + 401)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(taken.lease_owner.as_deref(), Some("c"));
    let held = ChargeUpdate {
        state: ChargeState::RequiresAction,
        stripe_payment_intent: Some("pi_x".into()),
        last_error: None,
        next_attempt_at: None,
        pay_token: Some("tok".into()),
    };
    assert!(store
        .finish_charge(&c.id, "c", &held, NOW + 402)
        .await
        .unwrap());
    let by_token = store.charge_by_pay_token("tok").await.unwrap().unwrap();
    assert_eq!(
        (by_token.state, by_token.stripe_payment_intent.as_deref()),
        (ChargeState::RequiresAction, Some("pi_x"))
    );
    assert_eq!(store.charges_for_order(&order.id).await.unwrap().len(), 1);
    assert!(store.charge_paid(&c.id, "pi_x", NOW + 500).await.unwrap());
    assert!(
        !store.charge_paid(&c.id, "pi_x", NOW + 501).await.unwrap(),
        "already paid"
    );
    assert_eq!(
        store
            .cancel_open_charges(&order.id, NOW + 600)
            .await
            .unwrap(),
        0,
        "a paid charge stays paid"
    );
    store
        .set_overage_blocked(
            &order.id,
            Some(callgate::store::OverageBlock::Declined),
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .order(&order.id)
            .await
            .unwrap()
            .unwrap()
            .overage_blocked
            .map(|b| b.as_str()),
        Some("declined overage")
    );
    store
        .set_overage_blocked(&order.id, None, NOW)
        .await
        .unwrap();
    assert_eq!(
        store
            .order(&order.id)
            .await
            .unwrap()
            .unwrap()
            .overage_blocked,
        None
    );
}

async fn bridge_bookkeeping_and_transcript(store: DynStore) {
    let order = paid_order(&store).await;
    call(&store, "CA_b").await;
    assert!(held(
        store
            .hold_order_for_call(&order.id, "CA_b", NOW + 150, NOW)
            .await
            .unwrap()
    ));
    assert!(store
        .bridge_started("CA_b", Some("conv_1"), NOW + 35, NOW + 5, "inst_test")
        .await
        .unwrap());
    store
        .record_metering("CA_b", Seconds(30), NOW + 35)
        .await
        .unwrap();
    store
        .record_metering("CA_b", Seconds(20), NOW + 36)
        .await
        .unwrap();
    let c = store.call("CA_b").await.unwrap().unwrap();
    assert_eq!(
        (c.status, c.bridged_at, c.seconds_metered),
        (
            callgate::store::CallState::Bridged,
            Some(NOW + 5),
            Seconds(30)
        ),
        "metering never goes down"
    );
    let line = |seq, speaker: &str, text: &str| TranscriptLine {
        seq,
        speaker: speaker.parse().unwrap(),
        text: text.into(),
        at: NOW,
    };
    store
        .append_transcript(
            "CA_b",
            &[line(1, "caller", "hi"), line(2, "agent", "hello")],
        )
        .await
        .unwrap();
    store
        .append_transcript("CA_b", &[line(2, "agent", "duplicate ignored")])
        .await
        .unwrap();
    let t = store.transcript("CA_b").await.unwrap();
    assert_eq!(
        t.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(),
        ["hi", "hello"]
    );
    store
        .bridge_finished(
            "CA_b",
            Seconds(42),
            callgate::store::EndReason::TimeUp,
            NOW + 50,
        )
        .await
        .unwrap();
    store
        .bridge_finished(
            "CA_b",
            Seconds(40),
            callgate::store::EndReason::CallerHungUp,
            NOW + 60,
        )
        .await
        .unwrap();
    let c = store.call("CA_b").await.unwrap().unwrap();
    assert_eq!(
        (
            c.seconds_metered,
            c.end_reason.map(|r| r.as_str()),
            c.bridge_ended_at
        ),
        (Seconds(42), Some("time_up"), Some(NOW + 50))
    );
    assert_eq!(
        store.calls_to_settle(10, NOW + 60).await.unwrap(),
        vec!["CA_b".to_string()]
    );
}

async fn metering_is_recorded_in_batches_and_never_lowered(store: DynStore) {
    call(&store, "CA_m1").await;
    call(&store, "CA_m2").await;
    store
        .record_metering_many(
            &[("CA_m1".into(), Seconds(30)), ("CA_m2".into(), Seconds(7))],
            NOW + 31,
            NOW + 1,
        )
        .await
        .unwrap();
    store
        .record_metering_many(
            &[
                ("CA_m1".into(), Seconds(20)),
                ("CA_unknown".into(), Seconds(5)),
            ],
            NOW + 32,
            NOW + 2,
        )
        .await
        .unwrap();
    store
        .record_metering_many(&[], NOW + 33, NOW + 3)
        .await
        .unwrap();
    let m1 = store.call("CA_m1").await.unwrap().unwrap();
    let m2 = store.call("CA_m2").await.unwrap().unwrap();
    assert_eq!((m1.seconds_metered.0, m2.seconds_metered.0), (30, 7));
}

async fn refused_charges_can_be_retried_once_each(store: DynStore) {
    let order = paid_order(&store).await;
    call(&store, "CA_retry").await;
    let (c, _) = store
        .insert_charge(&charge("CA_retry", &order.id))
        .await
        .unwrap();
    assert_eq!(c.key_generation, 0);
    assert!(
        store
            .retry_charge(&c.id, true, NOW)
            .await
            .unwrap()
            .is_none(),
        "a pending charge is not retried"
    );
    let leased = store
        .claim_charge("w", NOW + 100, NOW)
        .await
        .unwrap()
        .unwrap();
    let declined = ChargeUpdate {
        state: ChargeState::Declined,
        stripe_payment_intent: Some("pi_declined".into()),
        last_error: Some("card_declined".into()),
        next_attempt_at: None,
        pay_token: None,
    };
    assert!(store
        .finish_charge(&leased.id, "w", &declined, NOW)
        .await
        .unwrap());
    let counts = store.count_charges_by_state().await.unwrap();
    assert_eq!(counts.len(), ChargeState::ALL.len());
    for (state, n) in counts {
        let expect = i64::from(state == ChargeState::Declined);
        assert_eq!(n, expect, "{state}");
    }
    let again = store
        .retry_charge(&c.id, true, NOW + 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            again.state,
            again.attempts,
            again.key_generation,
            again.next_attempt_at
        ),
        (ChargeState::Pending, 0, 1, NOW + 10)
    );
    assert_eq!(again.last_error, None);
    assert_ne!(
        callgate::billing::retry::idempotency_key(&again),
        callgate::billing::retry::idempotency_key(&c)
    );
    assert!(
        store
            .retry_charge(&c.id, true, NOW + 11)
            .await
            .unwrap()
            .is_none(),
        "retrying twice queues it once"
    );
    // It is due again for the worker.
    let claimed = store
        .claim_charge("w2", NOW + 200, NOW + 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((claimed.id.as_str(), claimed.attempts), (c.id.as_str(), 1));
    assert!(store
        .retry_charge("ch_missing", false, NOW)
        .await
        .unwrap()
        .is_none());
}

/// Random orders of a call's events (holds, streams opening, metering, Twilio's end, the
/// bridge's end, settlement, time passing) on three calls sharing one code. After every
/// step: each call's state moved only as `CallState::may_become` allows, and the calls the
/// store offers for settlement are exactly those `domain::settlement::ready` names (the SQL
/// engines' `SETTLE_READY` and MongoDB's filter against the one rule).
async fn call_states_and_settlement_follow_the_domain_rules(store: DynStore) {
    use callgate::domain::call::CallState;
    use callgate::domain::money::Rounding;
    use callgate::domain::settlement;
    use callgate::store::EndReason;
    use rand::{Rng, SeedableRng};

    let cases: u64 = std::env::var("CALL_RULE_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(24);
    for case in 0..cases {
        let mut rng = rand::rngs::StdRng::seed_from_u64(case);
        let order = paid_order(&store).await;
        let sids: Vec<String> = (0..3).map(|i| format!("CA_rule_{case}_{i}")).collect();
        let mut now = NOW;
        let mut seen: std::collections::HashMap<String, CallState> = Default::default();
        let mut trace = Vec::new();
        for sid in &sids {
            call(&store, sid).await;
        }
        for _ in 0..14 {
            let sid = &sids[rng.gen_range(0..sids.len())];
            let step = rng.gen_range(0..8);
            trace.push(format!("{step}:{sid}@{now}"));
            match step {
                0 => {
                    let _ = store
                        .hold_order_for_call(&order.id, sid, now + 120, now)
                        .await
                        .unwrap();
                }
                1 => {
                    let _ = store
                        .bridge_started(sid, None, now + 40, now, "inst_test")
                        .await
                        .unwrap();
                }
                2 => {
                    let s = Seconds(rng.gen_range(0..200));
                    store.record_metering(sid, s, now).await.unwrap();
                }
                3 => {
                    store
                        .end_call(&end(sid, "completed", Some(10), now))
                        .await
                        .unwrap();
                }
                4 => {
                    let s = Seconds(rng.gen_range(0..200));
                    store
                        .bridge_finished(sid, s, EndReason::CallerHungUp, now)
                        .await
                        .unwrap();
                }
                5 => {
                    let _ = store
                        .settle_call(sid, Rounding::PerSecond, &new_id("chg"), now)
                        .await
                        .unwrap();
                }
                // Steps that land on a hold's last second (holds run 40 or 120 s) as well.
                _ => now += [1, 39, 40, 41, 80, 120, 121][rng.gen_range(0..7)],
            }
            let offered: std::collections::BTreeSet<String> = store
                .calls_to_settle(10_000, now)
                .await
                .unwrap()
                .into_iter()
                .filter(|s| s.starts_with(&format!("CA_rule_{case}_")))
                .collect();
            let holder = store.order(&order.id).await.unwrap().unwrap();
            let mut ready = std::collections::BTreeSet::new();
            for sid in &sids {
                let c = store.call(sid).await.unwrap().unwrap();
                let before = seen
                    .insert(sid.clone(), c.status)
                    .unwrap_or(CallState::Menu);
                assert!(
                    before == c.status || before.may_become(c.status),
                    "{sid} moved {before} -> {} after {trace:?}",
                    c.status
                );
                let hold_until = (holder.active_call_sid.as_deref() == Some(sid.as_str()))
                    .then_some(holder.active_call_until)
                    .flatten();
                if settlement::ready(&c, hold_until, now) {
                    ready.insert(sid.clone());
                }
            }
            assert_eq!(offered, ready, "case {case} after {trace:?}");
        }
    }
}

/// A number is remembered for one code at a time (the latest), read back with the order as it
/// stands, forgotten by the caller (any code) or for one order (the operator's revoke).
async fn callers_are_remembered_for_one_code(store: DynStore) {
    let first = paid_order(&store).await;
    let second = paid_order(&store).await;
    let (ann, bob) = ("+15550001111", "+15550002222");
    assert_eq!(store.remembered_order(ann).await.unwrap(), None);
    store.remember_caller(ann, &first.id, NOW).await.unwrap();
    store
        .remember_caller(bob, &first.id, NOW + 1)
        .await
        .unwrap();
    assert_eq!(
        store.remembered_order(ann).await.unwrap().map(|o| o.id),
        Some(first.id.clone())
    );
    let listed = store.remembered_callers(Some(&first.id)).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|r| (r.caller.as_str(), r.remembered_at))
            .collect::<Vec<_>>(),
        [(ann, NOW), (bob, NOW + 1)]
    );
    // Remembering another code replaces the first.
    store
        .remember_caller(ann, &second.id, NOW + 2)
        .await
        .unwrap();
    assert_eq!(
        store.remembered_order(ann).await.unwrap().map(|o| o.id),
        Some(second.id.clone())
    );
    assert_eq!(
        store
            .remembered_callers(Some(&first.id))
            .await
            .unwrap()
            .len(),
        1
    );
    // The order is read as it stands.
    store
        .move_order(&second.id, OrderStatus::Revoked, NOW + 3)
        .await
        .unwrap();
    assert_eq!(
        store.remembered_order(ann).await.unwrap().map(|o| o.status),
        Some(OrderStatus::Revoked)
    );
    // The operator's revoke names the order: another order's number stays.
    assert!(!store.forget_caller(ann, Some(&first.id)).await.unwrap());
    assert!(store.forget_caller(bob, Some(&first.id)).await.unwrap());
    assert!(store
        .remembered_callers(Some(&first.id))
        .await
        .unwrap()
        .is_empty());
    let all = store.remembered_callers(None).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.caller.as_str()).collect::<Vec<_>>(),
        [ann]
    );
    // The caller forgets whatever their number is remembered for, once.
    assert!(store.forget_caller(ann, None).await.unwrap());
    assert!(!store.forget_caller(ann, None).await.unwrap());
    assert_eq!(store.remembered_order(ann).await.unwrap(), None);
}

/// Instances: a call carried by an instance that is silent, gone, or an earlier run under the
/// same name is orphaned; one carried by a live instance, by this one, or whose bridge ended
/// or was settled is not; a hold is only ever cut shorter.
async fn instances_and_the_calls_they_carry(store: DynStore) {
    use callgate::store::Instance;
    let me = Instance {
        id: "run_me".into(),
        name: "host:1".into(),
    };
    let at = |id: &str, name: &str| Instance {
        id: id.into(),
        name: name.into(),
    };
    store.beat(&at("run_old", "host:1"), NOW - 1).await.unwrap();
    store
        .beat(&at("run_live", "host:2"), NOW - 1)
        .await
        .unwrap();
    store
        .beat(&at("run_silent", "host:3"), NOW - 10)
        .await
        .unwrap();
    store
        .beat(&at("run_silent", "host:3"), NOW - 9)
        .await
        .unwrap();
    store
        .beat(&at("run_gone", "host:4"), NOW - 1)
        .await
        .unwrap();
    store.instance_stopped("run_gone").await.unwrap();
    store.beat(&me, NOW).await.unwrap();
    let carriers = [
        ("CA_old", "run_old"),
        ("CA_live", "run_live"),
        ("CA_silent", "run_silent"),
        ("CA_gone", "run_gone"),
        ("CA_mine", "run_me"),
        ("CA_ended", "run_old"),
    ];
    for (sid, carrier) in carriers {
        let order = paid_order(&store).await;
        call(&store, sid).await;
        assert!(held(
            store
                .hold_order_for_call(&order.id, sid, NOW + 150, NOW - 20)
                .await
                .unwrap()
        ));
        assert!(store
            .bridge_started(sid, None, NOW + 30, NOW - 20, carrier)
            .await
            .unwrap());
    }
    store
        .bridge_finished("CA_ended", Seconds(3), EndReason::CallerHungUp, NOW - 5)
        .await
        .unwrap();
    let mut orphaned = store.orphaned_calls(&me, NOW - 4).await.unwrap();
    orphaned.sort();
    assert_eq!(orphaned, ["CA_gone", "CA_old", "CA_silent"]);

    assert!(
        store.cap_hold("CA_old", NOW + 2).await.unwrap(),
        "cut short"
    );
    assert!(
        !store.cap_hold("CA_old", NOW + 20).await.unwrap(),
        "never lengthened"
    );
    let order_of = |sid: &'static str| {
        let store = store.clone();
        async move {
            let id = store.call(sid).await.unwrap().unwrap().order_id.unwrap();
            store.order(&id).await.unwrap().unwrap()
        }
    };
    assert_eq!(order_of("CA_old").await.active_call_until, Some(NOW + 2));
    assert!(!store.cap_hold("CA_nobody", NOW).await.unwrap());
    // Lapsed, the call is ready to settle, and settling it frees its code.
    store.cap_hold("CA_old", NOW - 1).await.unwrap();
    store
        .settle_call("CA_old", Rounding::default(), "chg_old", NOW)
        .await
        .unwrap();
    assert_eq!(order_of("CA_old").await.active_call_sid, None);
    let mut orphaned = store.orphaned_calls(&me, NOW - 4).await.unwrap();
    orphaned.sort();
    assert_eq!(
        orphaned,
        ["CA_gone", "CA_silent"],
        "a settled call is no one's"
    );
}

/// The wrong-code limits' slots: however many take at once, at most `limit` get one, each its
/// own; a freed slot, or one whose failure aged out of the window, is taken again.
/// One key's slot through `take_slots`.
async fn take_slot(
    store: &DynStore,
    key: &str,
    limit: i64,
    since: i64,
    now: i64,
) -> Result<Option<i64>, StoreError> {
    let taken = store
        .take_slots(&[SlotWant { key, limit }], since, now)
        .await?;
    Ok(taken[0])
}

async fn attempt_slots_admit_at_most_the_limit_at_once(store: DynStore) {
    let takes = (0..9).map(|_| take_slot(&store, "caller:+1555", 5, NOW - 3600, NOW));
    let taken: Vec<Option<i64>> = futures_util::future::join_all(takes)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let mut slots: Vec<i64> = taken.iter().flatten().copied().collect();
    slots.sort();
    assert_eq!(
        slots,
        [0, 1, 2, 3, 4],
        "five of nine, each its own: {taken:?}"
    );
    assert_eq!(
        take_slot(&store, "caller:+1555", 5, NOW - 3600, NOW)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        take_slot(&store, "caller:+1666", 5, NOW - 3600, NOW)
            .await
            .unwrap(),
        Some(0),
        "another key's slots are its own"
    );
    store
        .free_slots(&[("caller:+1555".into(), 3)])
        .await
        .unwrap();
    assert_eq!(
        take_slot(&store, "caller:+1555", 5, NOW - 3600, NOW + 1)
            .await
            .unwrap(),
        Some(3),
        "a freed slot is taken again"
    );
    assert_eq!(
        take_slot(&store, "caller:+1555", 5, NOW - 3600, NOW + 1)
            .await
            .unwrap(),
        None
    );
    // An hour on, every failure has aged out: the slots are free, and still only five.
    let later = NOW + 3602;
    let takes = (0..7).map(|_| take_slot(&store, "caller:+1555", 5, later - 3600, later));
    let again = futures_util::future::join_all(takes).await;
    assert_eq!(again.iter().filter(|t| matches!(t, Ok(Some(_)))).count(), 5);
    // Pruned once all of a key's slots are old; a later take starts again from 0.
    store.prune_attempts(later + 1).await.unwrap();
    assert_eq!(
        take_slot(&store, "caller:+1555", 5, later, later + 2)
            .await
            .unwrap(),
        Some(0)
    );
    // Two keys in one take: each its own compare-and-set, a full one does not stop the other.
    let both = |caller: &'static str| {
        let store = store.clone();
        async move {
            store
                .take_slots(
                    &[
                        SlotWant {
                            key: caller,
                            limit: 2,
                        },
                        SlotWant {
                            key: "code:abc",
                            limit: 3,
                        },
                    ],
                    later,
                    later + 2,
                )
                .await
                .unwrap()
        }
    };
    let takes = futures_util::future::join_all((0..5).map(|_| both("caller:+1777"))).await;
    let callers = takes.iter().filter(|t| t[0].is_some()).count();
    let codes = takes.iter().filter(|t| t[1].is_some()).count();
    assert_eq!((callers, codes), (2, 3), "{takes:?}");
    assert_eq!(both("caller:+1888").await, [Some(0), None]);
    store
        .free_slots(&[("code:abc".into(), 1), ("caller:+1777".into(), 0)])
        .await
        .unwrap();
    assert_eq!(
        both("caller:+1777").await,
        [Some(0), Some(1)],
        "both freed at once"
    );
}

/// A count can leave out one writer's groups after a given one (its log counts them from
/// memory): every other writer's, and attempts written without a group, still count.
async fn counts_leave_out_a_writers_later_groups(store: DynStore) {
    let wrong = |code_hash: &str| CodeAttempt {
        caller: "+15558880000".into(),
        code_hash: code_hash.into(),
        ok: false,
        at: NOW,
    };
    let group = |writer, number| Some(AttemptGroup { writer, number });
    store.record_attempts(&[wrong("x")]).await.unwrap();
    store
        .record_group(&[wrong("x"), wrong("y")], group(7, 1))
        .await
        .unwrap();
    store
        .record_group(&[wrong("x"), wrong("x")], group(7, 2))
        .await
        .unwrap();
    store
        .record_group(&[wrong("x")], group(8, 5))
        .await
        .unwrap();
    let caller = AttemptScope::Caller("+15558880000");
    let count = |scope, up_to| {
        let store = store.clone();
        async move {
            store
                .count_failures_written(scope, NOW - 3600, i64::MAX, up_to)
                .await
                .unwrap()
        }
    };
    assert_eq!(count(caller, None).await, 6);
    assert_eq!(
        count(caller, group(7, 1)).await,
        4,
        "writer 7's group 2 left out"
    );
    assert_eq!(
        count(caller, group(7, 0)).await,
        2,
        "all of writer 7's left out"
    );
    assert_eq!(
        count(caller, group(8, 4)).await,
        5,
        "writer 8's group 5 left out"
    );
    assert_eq!(count(AttemptScope::Code("x"), group(7, 1)).await, 3);
    assert_eq!(count(AttemptScope::Global, group(7, 1)).await, 4);
    let facts = store
        .code_check(&CodeCheckQuery {
            call_sid: "CA_none",
            caller: "+15558880000",
            code_hash: Some("x"),
            since: NOW - 3600,
            caller_up_to: i64::MAX,
            code_up_to: i64::MAX,
            written_up_to: group(7, 1),
        })
        .await
        .unwrap();
    assert_eq!((facts.caller_failures, facts.code_failures), (4, 3));
}

/// The attempt log's counts stay exact while its groups are written, without a lock between
/// its readers and its writer: however a read and a group's commit (on the log's own task)
/// interleave, every read counts each recorded attempt once. Reads go on until the store has
/// taken several groups under them.
async fn attempt_counts_stay_exact_while_groups_are_written(store: DynStore) {
    use callgate::write_behind::attempts::AttemptLog;
    let log = AttemptLog::default();
    let caller = AttemptScope::Caller("+15557770000");
    let query = CodeCheckQuery {
        call_sid: "CA_none",
        caller: "+15557770000",
        code_hash: Some("guess0"),
        since: NOW - 3600,
        caller_up_to: i64::MAX,
        code_up_to: i64::MAX,
        written_up_to: None,
    };
    let (mut recorded, mut reads, mut groups, mut stored) = (0, 0, 0, 0);
    while groups < 4 {
        let attempt = CodeAttempt {
            caller: "+15557770000".into(),
            code_hash: format!("guess{}", recorded % 3),
            ok: false,
            at: NOW,
        };
        log.record(&store, attempt).await.unwrap();
        recorded += 1;
        let counted = log
            .failures(&store, caller, NOW - 3600, i64::MAX)
            .await
            .unwrap();
        let checked = log.code_check(&store, &query).await.unwrap();
        assert_eq!(
            (counted, checked.caller_failures, checked.code_failures),
            (recorded, recorded, (recorded + 2) / 3),
            "read {reads}: every attempt once"
        );
        let now_stored = store
            .count_failures(caller, NOW - 3600, i64::MAX)
            .await
            .unwrap();
        if now_stored > stored {
            groups += 1;
            stored = now_stored;
        }
        reads += 1;
    }
    log.flush().await;
    assert_eq!(log.pending(AttemptScope::Global), 0);
    assert_eq!(
        store
            .count_failures(caller, NOW - 3600, i64::MAX)
            .await
            .unwrap(),
        recorded,
        "all written, each once"
    );
}

/// The code check with the gate's slots taken in the same step (one statement on PostgreSQL)
/// reads what the check alone reads and takes what `take_slots` takes: nine at once against a
/// caller's limit of five and a code's of three get five and three slots, each its own.
async fn check_and_take_reads_and_takes_what_each_alone_does(store: DynStore) {
    let order = paid_order(&store).await;
    let hash = order.code_hash.clone().expect("paid order has a code");
    call(&store, "CA_take").await;
    store
        .record_attempts(&[CodeAttempt {
            caller: "+15550001111".into(),
            code_hash: hash.clone(),
            ok: false,
            at: NOW - 10,
        }])
        .await
        .unwrap();
    let query = |code_hash| CodeCheckQuery {
        call_sid: "CA_take",
        caller: "+15550001111",
        code_hash,
        since: NOW - 3600,
        caller_up_to: 10,
        code_up_to: 10,
        written_up_to: None,
    };
    let alone = store.code_check(&query(Some(&hash))).await.unwrap();
    assert_eq!(alone.order, Some(order.clone()));
    let wants = [
        SlotWant {
            key: "caller:+15550001111",
            limit: 5,
        },
        SlotWant {
            key: "code:take",
            limit: 3,
        },
    ];
    let code = query(Some(&hash));
    let takes = (0..9).map(|_| store.check_and_take(&code, &wants, NOW));
    let answers: Vec<_> = futures_util::future::join_all(takes)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    for (facts, _) in &answers {
        assert_eq!(facts, &alone, "the facts are the check's");
    }
    let mut callers: Vec<i64> = answers.iter().filter_map(|(_, t)| t[0]).collect();
    let mut codes: Vec<i64> = answers.iter().filter_map(|(_, t)| t[1]).collect();
    callers.sort();
    codes.sort();
    assert_eq!((callers, codes), (vec![0, 1, 2, 3, 4], vec![0, 1, 2]));
    // Full: nothing taken, no error; the facts still read.
    let (facts, taken) = store
        .check_and_take(&query(Some(&hash)), &wants, NOW)
        .await
        .unwrap();
    assert_eq!((facts, taken), (alone, vec![None, None]));
    // Digits that cannot be a code: the caller's slot alone, the facts without an order.
    let (facts, taken) = store
        .check_and_take(
            &query(None),
            &[SlotWant {
                key: "caller:short",
                limit: 2,
            }],
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(
        (facts.order, facts.caller_failures, taken),
        (None, 1, vec![Some(0)])
    );
}

/// An engine that offers word between instances delivers it: every change published reaches
/// a listener, in order, within a second (PostgreSQL's NOTIFY; MongoDB's change stream where
/// the server has them, none on mongoeco; none on SQLite, one instance).
async fn order_signals_reach_a_listener_when_the_engine_has_them(store: DynStore) {
    let Some(mut heard) = store.order_changes().await.unwrap() else {
        // Publishing still succeeds: the instance making a change cannot know who listens.
        store.publish_order_changed("ord_nobody").await.unwrap();
        assert_ne!(store.backend(), "postgres", "PostgreSQL carries signals");
        return;
    };
    for id in ["ord_1", "ord_2", "ord_1"] {
        store.publish_order_changed(id).await.unwrap();
    }
    for id in ["ord_1", "ord_2", "ord_1"] {
        let got = tokio::time::timeout(std::time::Duration::from_secs(1), heard.recv())
            .await
            .expect("a published change reaches the listener within a second");
        assert_eq!(got.as_deref(), Some(id));
    }
}

on_every_backend!(
    order_signals_reach_a_listener_when_the_engine_has_them,
    check_and_take_reads_and_takes_what_each_alone_does,
    attempt_counts_stay_exact_while_groups_are_written,
    counts_leave_out_a_writers_later_groups,
    attempt_slots_admit_at_most_the_limit_at_once,
    instances_and_the_calls_they_carry,
    callers_are_remembered_for_one_code,
    daily_figures_sum_every_matching_row,
    a_stream_token_is_stored_only_with_its_hold,
    call_states_and_settlement_follow_the_domain_rules,
    metering_is_recorded_in_batches_and_never_lowered,
    refused_charges_can_be_retried_once_each,
    charge_leases_and_outcomes,
    bridge_bookkeeping_and_transcript,
    one_live_call_per_code,
    an_ended_call_never_holds_a_code,
    settlement_debits_and_frees_the_code_in_one_step,
    metering_renews_holds_and_names_calls_to_stop,
    ending_a_call_is_idempotent,
    stream_tokens_are_single_use,
    entries_are_recorded_once_with_their_counters,
    migrate_is_idempotent,
    orders_are_stored_and_found,
    codes_are_unique_and_found_by_hash,
    fulfilment_happens_once,
    fulfilment_without_pending_order_stores_nothing,
    failed_payment_can_still_be_fulfilled,
    racing_fulfilments_yield_one_code,
    order_status_moves_only_from_allowed_states,
    calls_are_recorded_once,
    one_charge_per_call,
    charge_needs_a_known_call,
    webhook_events_are_deduplicated,
    attempts_are_counted_per_scope_and_window,
    code_check_reads_what_the_single_reads_do,
);

/// Issue 13, point 16: the SQLite file holds phone numbers and transcripts. It, and the -wal
/// and -shm files SQLite makes beside it, are readable by their owner only.
#[tokio::test]
async fn the_sqlite_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("private.db");
    let store = callgate::store::SqliteStore::open(&path).await.unwrap();
    let store: DynStore = std::sync::Arc::new(store);
    store.migrate().await.unwrap();
    store.insert_order(&pending("pi_private")).await.unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let file = dir.path().join(format!("private.db{suffix}"));
        let mode = std::fs::metadata(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "{} is mode {:o}",
            file.display(),
            mode & 0o777
        );
    }
}

/// A store on a fresh MongoDB database reached through a proxy that can cut it off before
/// any write.
async fn mongo_behind_a_cut() -> Option<(DynStore, crate::support::proxy::MongoWriteCut)> {
    let direct = crate::support::mongo::fresh_uri("cg_cut")?;
    let (server, path) = direct.trim_start_matches("mongodb://").split_once('/')?;
    let cut = crate::support::proxy::MongoWriteCut::start(server.to_string()).await;
    let uri = format!("mongodb://{}/{path}", cut.addr);
    let store = callgate::store::MongoStore::open(&uri).await.unwrap();
    callgate::store::Store::migrate(&store).await.unwrap();
    Some((std::sync::Arc::new(store), cut))
}

/// MongoDB's settlement runs without a multi-document transaction, one write per step. Cut
/// off before each of its writes in turn (the instance dying there), the next billing pass (a
/// minute on, when an unfinished claim is handed over) finishes it with the figures of an
/// uninterrupted one, and nothing is written twice: the order is debited once, the call has
/// one charge, and the code is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_settlement_cut_off_before_any_write_is_finished_once() {
    let mut cuts = 0;
    for writes in 0.. {
        let Some((store, cut)) = mongo_behind_a_cut().await else {
            return;
        };
        // Overage consented with a saved card: a charge is due.
        let mut o = pending(&new_id("pi"));
        o.code = Some(vault().store(&AccessCode::generate(12)));
        o.stripe_payment_method = Some("pm_1".into());
        let order = store.insert_order(&o).await.unwrap();
        call(&store, "CA_cut").await;
        assert!(held(
            store
                .hold_order_for_call(&order.id, "CA_cut", NOW + 150, NOW)
                .await
                .unwrap()
        ));
        assert!(store
            .bridge_started("CA_cut", None, NOW + 40, NOW + 10, "inst_test")
            .await
            .unwrap());
        let hung_up = callgate::store::EndReason::CallerHungUp;
        store
            .bridge_finished("CA_cut", Seconds(420), hung_up, NOW + 430)
            .await
            .unwrap();
        store
            .end_call(&end("CA_cut", "completed", Some(425), NOW + 431))
            .await
            .unwrap();

        cut.arm(writes, crate::support::proxy::AtWrite::Cut);
        let first = store
            .settle_call("CA_cut", Rounding::PerStartedMinute, "chg_first", NOW + 432)
            .await;
        let interrupted = cut.fired();
        cut.disarm();
        let settled = if interrupted {
            cuts += 1;
            assert!(first.is_err(), "cut before write {writes}: {first:?}");
            store
                .settle_call("CA_cut", Rounding::PerStartedMinute, "chg_next", NOW + 500)
                .await
                .unwrap()
        } else {
            first.unwrap()
        };
        let Settlement::Settled {
            seconds,
            overage,
            charge: Some(charge),
        } = settled
        else {
            panic!("cut before write {writes}: not settled with a charge: {settled:?}");
        };
        assert_eq!(
            (seconds, overage),
            (Seconds(420), Seconds(120)),
            "write {writes}"
        );
        assert_eq!(charge.amount, Cents(200), "write {writes}");

        let charges = store.charges_for_order(&order.id).await.unwrap();
        assert_eq!(charges.len(), 1, "write {writes}: {charges:?}");
        assert_eq!(charges[0].id, charge.id);
        let after = store.order(&order.id).await.unwrap().unwrap();
        assert_eq!(
            after.seconds_used,
            Seconds(420),
            "write {writes}: debited once"
        );
        assert_eq!(
            after.active_call_sid, None,
            "write {writes}: the code is free"
        );
        let called = store.call("CA_cut").await.unwrap().unwrap();
        assert_eq!(called.settled_seconds, Some(420));
        // A later pass finds nothing left to do.
        assert_eq!(
            store
                .settle_call("CA_cut", Rounding::PerStartedMinute, "chg_late", NOW + 600)
                .await
                .unwrap(),
            Settlement::AlreadySettled
        );
        assert_eq!(store.charges_for_order(&order.id).await.unwrap().len(), 1);
        if !interrupted {
            break;
        }
    }
    assert!(
        cuts >= 4,
        "claim, seconds, debit, charge, done: {cuts} cuts"
    );
}

/// A top-up's entry cut off before each of its writes (the order's counters, then the entry):
/// the webhook delivered again finishes it, and the minutes are credited exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_an_entry_cut_off_before_any_write_is_recorded_once() {
    use callgate::store::{Entry, Recorded};
    let mut cuts = 0;
    for writes in 0.. {
        let Some((store, cut)) = mongo_behind_a_cut().await else {
            return;
        };
        let order = paid_order(&store).await;
        let entry = Entry::top_up(
            &order.id,
            "pi_cut",
            Seconds(600),
            Cents(800),
            order.currency.clone(),
            NOW + 1,
        );
        cut.arm(writes, crate::support::proxy::AtWrite::Cut);
        let first = store.record_entry(&entry).await;
        let interrupted = cut.fired();
        cut.disarm();
        if interrupted {
            cuts += 1;
            assert!(first.is_err(), "cut before write {writes}: {first:?}");
            assert_eq!(store.record_entry(&entry).await.unwrap(), Recorded::Now);
        } else {
            assert_eq!(first.unwrap(), Recorded::Now);
        }
        assert_eq!(store.record_entry(&entry).await.unwrap(), Recorded::Already);
        let after = store.order(&order.id).await.unwrap().unwrap();
        assert_eq!(
            after.seconds_included.0,
            order.seconds_included.0 + 600,
            "cut before write {writes}: credited once"
        );
        assert_eq!(store.entries_for_order(&order.id).await.unwrap(), [entry]);
        if !interrupted {
            break;
        }
    }
    assert!(cuts >= 2, "the order, then the entry: {cuts} cuts");
}

/// The code step's hold (link the call, take the code, store the stream token) cut off before
/// each of its writes: the caller's next try holds the code, and once the call ends the code is
/// free for the next caller, whichever write the cut fell before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_hold_cut_off_before_any_write_leaves_the_code_usable() {
    let mut cuts = 0;
    for writes in 0.. {
        let Some((store, cut)) = mongo_behind_a_cut().await else {
            return;
        };
        let order = paid_order(&store).await;
        call(&store, "CA_try").await;
        call(&store, "CA_next").await;
        let token = |hash: &str| callgate::store::TokenIssue {
            token_hash: hash.into(),
            expires_at: NOW + 60,
        };
        cut.arm(writes, crate::support::proxy::AtWrite::Cut);
        let first = store
            .hold_and_grant(&order.id, "CA_try", NOW + 150, NOW, &token("h_first"))
            .await;
        let interrupted = cut.fired();
        cut.disarm();
        if interrupted {
            cuts += 1;
            assert!(first.is_err(), "cut before write {writes}: {first:?}");
            // The caller keys the code again.
            assert!(held(
                store
                    .hold_and_grant(&order.id, "CA_try", NOW + 160, NOW + 10, &token("h_again"))
                    .await
                    .unwrap()
            ));
        } else {
            assert!(held(first.unwrap()));
        }
        store
            .end_call(&end("CA_try", "completed", Some(30), NOW + 30))
            .await
            .unwrap();
        assert!(
            held(
                store
                    .hold_order_for_call(&order.id, "CA_next", NOW + 200, NOW + 31)
                    .await
                    .unwrap()
            ),
            "cut before write {writes}: the code is free once the call ended"
        );
        if !interrupted {
            break;
        }
    }
    assert!(cuts >= 3, "link, take, token: {cuts} cuts");
}

/// The caller hangs up while the code step writes: the whole end (Twilio's status callback)
/// lands before each of the hold's writes in turn. Whichever write it came before, the code
/// is free afterwards for the next caller, and the ended call's stream token opens nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_an_end_between_the_holds_writes_leaves_the_code_free() {
    use crate::support::proxy::AtWrite;
    let mut paused = 0;
    for writes in 0.. {
        let Some((store, gate)) = mongo_behind_a_cut().await else {
            return;
        };
        let order = paid_order(&store).await;
        call(&store, "CA_gone").await;
        call(&store, "CA_next").await;
        gate.arm(writes, AtWrite::Pause);
        let mut holding = {
            let (store, order_id) = (store.clone(), order.id.clone());
            tokio::spawn(async move {
                let token = callgate::store::TokenIssue {
                    token_hash: "h_gone".into(),
                    expires_at: NOW + 60,
                };
                store
                    .hold_and_grant(&order_id, "CA_gone", NOW + 150, NOW, &token)
                    .await
            })
        };
        // Either the hold reaches the paused write, or it finishes with fewer writes.
        let finished = tokio::select! {
            _ = gate.paused() => None,
            done = &mut holding => Some(done),
        };
        let reached = finished.is_none();
        if reached {
            paused += 1;
            store
                .end_call(&end("CA_gone", "completed", Some(3), NOW + 1))
                .await
                .unwrap();
            gate.resume();
        }
        let hold = match finished {
            Some(done) => done,
            None => holding.await,
        }
        .unwrap()
        .unwrap();
        gate.disarm();
        if !reached {
            assert!(held(hold));
            break;
        }
        assert!(
            held(
                store
                    .hold_order_for_call(&order.id, "CA_next", NOW + 200, NOW + 2)
                    .await
                    .unwrap()
            ),
            "an end before write {writes}: the code is free ({hold:?})"
        );
        assert!(
            store
                .consume_stream_token("h_gone", "CA_gone", NOW + 3)
                .await
                .unwrap()
                .is_none_or(|o| callgate::domain::call::stream_refusal(
                    o.call.as_ref(),
                    o.order.as_ref()
                )
                .is_some()),
            "an end before write {writes}: its stream opens nothing"
        );
    }
    assert!(paused >= 3, "link, take, token: {paused} pauses");
}

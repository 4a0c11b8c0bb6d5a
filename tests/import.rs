//! Importing the old deployment's orders: from its MongoDB (mongoeco here) and from a
//! `mongoexport` file, idempotently, with a dry run; the imported codes then open calls.

mod support;

use callgate::import::{self, Mapping};
use callgate::money::Seconds;
use callgate::store::{OrderSource, OrderStatus};
use mongodb::bson::{doc, oid::ObjectId, DateTime};
use support::twilio::{Caller, Ending};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_the_old_mongodb_idempotently_and_codes_keep_working() {
    // The old deployment's database, on the test MongoDB.
    let Some(scratch) = support::mongo::mongo().await else {
        return;
    };
    drop(scratch);
    let port = support::mongo::port().expect("mongoeco running");
    let uri = format!(
        "mongodb://127.0.0.1:{port}/oldsite_{}?directConnection=true",
        callgate::store::new_id("x")
    );
    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let orders = client
        .default_database()
        .unwrap()
        .collection::<mongodb::bson::Document>("orders");
    for d in [
        doc! { "_id": ObjectId::new(), "accessCode": "123456", "minutes": 10, "minutesUsed": 2, "acceptOverage": true,
        "customerId": "cus_old", "paymentMethodId": "pm_old", "paymentIntentId": "pi_old_1",
        "createdAt": DateTime::from_millis(1_700_000_000_000), "status": "paid" },
        doc! { "_id": ObjectId::new(), "accessCode": "654321", "minutes": 5, "status": "refunded", "paymentIntentId": "pi_old_2" },
        doc! { "_id": ObjectId::new(), "minutes": 5 },
        doc! { "_id": ObjectId::new(), "accessCode": "12ab", "minutes": 5 },
    ] {
        orders.insert_one(d).await.unwrap();
    }

    let db = support::sqlite().await;
    let app = support::app::spawn(db.store.clone(), &[]).await;
    let docs = import::read_mongodb(&uri, "orders").await.unwrap();
    assert_eq!(docs.len(), 4);

    let dry = import::run(&app.app, &docs, &Mapping::default(), true)
        .await
        .unwrap();
    assert_eq!((dry.read, dry.imported, dry.skipped), (4, 2, 2));
    assert_eq!(dry.reasons.get("no access code"), Some(&1));
    assert_eq!(
        dry.reasons.get("access code is not 6 to 32 digits"),
        Some(&1)
    );
    assert!(
        !serde_json::to_string(&dry.sample)
            .unwrap()
            .contains("123456"),
        "codes masked in the report"
    );
    assert!(
        app.app.store.list_orders(10).await.unwrap().is_empty(),
        "a dry run writes nothing"
    );

    let real = import::run(&app.app, &docs, &Mapping::default(), false)
        .await
        .unwrap();
    assert_eq!(
        (real.imported, real.already_present, real.skipped),
        (2, 0, 2)
    );
    let again = import::run(&app.app, &docs, &Mapping::default(), false)
        .await
        .unwrap();
    assert_eq!(
        (again.imported, again.already_present),
        (0, 2),
        "idempotent"
    );

    let imported = app
        .app
        .store
        .order_by_payment_intent("pi_old_1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(imported.source, OrderSource::Import);
    assert_eq!(imported.status, OrderStatus::Paid);
    assert_eq!(imported.seconds_included, Seconds(600));
    assert_eq!(imported.seconds_used, Seconds(120));
    assert!(imported.overage_consent);
    assert_eq!(imported.stripe_customer.as_deref(), Some("cus_old"));
    assert_eq!(imported.stripe_payment_method.as_deref(), Some("pm_old"));
    assert_eq!(imported.created_at, 1_700_000_000);
    let refunded = app
        .app
        .store
        .order_by_payment_intent("pi_old_2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(refunded.status, OrderStatus::Revoked);

    // A customer of the old deployment calls with their old code.
    let mut caller = Caller::new(
        support::app::AUTH_TOKEN,
        support::app::ACCOUNT_SID,
        "+15556660001",
        support::app::PHONE,
    )
    .types([Some("123456#")]);
    assert!(
        matches!(
            caller.dial(&app.url("/voice/incoming")).await,
            Ending::Stream { .. }
        ),
        "{}",
        caller.transcript()
    );
}

#[tokio::test]
async fn from_a_mongoexport_file_with_a_custom_mapping() {
    let db = support::sqlite().await;
    let app = support::app::build(
        db.store.clone(),
        &[],
        std::sync::Arc::new(callgate::clock::SystemClock),
    );
    let lines = r#"{"_id":{"$oid":"65f0c0ffee0000000000aaaa"},"pin":"111222333","mins":{"$numberInt":"3"},"createdAt":{"$date":"2024-05-01T10:00:00Z"}}

{"_id":{"$oid":"65f0c0ffee0000000000bbbb"},"pin":"444555666","mins":7}
"#;
    let docs = import::read_export(lines).unwrap();
    assert_eq!(docs.len(), 2);
    let dir = tempfile::tempdir().unwrap();
    let mapping_file = dir.path().join("mapping.json");
    std::fs::write(
        &mapping_file,
        r#"{"access_code": ["pin"], "minutes": ["mins"]}"#,
    )
    .unwrap();
    let mapping = import::load_mapping(&mapping_file).unwrap();
    assert_eq!(
        mapping.customer,
        Mapping::default().customer,
        "unnamed fields keep their defaults"
    );
    let report = import::run(&app, &docs, &mapping, false).await.unwrap();
    assert_eq!((report.imported, report.skipped), (2, 0), "{report:?}");
    let code = callgate::codes::AccessCode::parse("111222333").unwrap();
    let order = callgate::orders::find_by_code(&app, &code)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(order.seconds_included, Seconds(180));
    assert_eq!(order.created_at, 1_714_557_600);

    // A JSON array (mongoexport --jsonArray) reads the same; bad input is a clear error.
    assert_eq!(
        import::read_export(r#"[{"a":1},{"a":2}]"#).unwrap().len(),
        2
    );
    let err = import::read_export("{\"a\":1}\nnot json\n").unwrap_err();
    assert!(err.to_string().contains("line 2"), "{err}");
    std::fs::write(&mapping_file, r#"{"access_code": "pin"}"#).unwrap();
    assert!(import::load_mapping(&mapping_file)
        .unwrap_err()
        .to_string()
        .contains("mapping file"));
}

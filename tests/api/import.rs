//! Importing the old deployment's orders: from its MongoDB (mongoeco here) and from a
//! `mongoexport` file, idempotently, with a dry run; the imported codes then open calls.

use callgate::domain::money::Seconds;
use callgate::import::{self, ImportOptions, Mapping};
use callgate::store::{OrderSource, OrderStatus};
use callgate_peers::twilio::{Caller, Ending};
use mongodb::bson::{doc, oid::ObjectId, DateTime};

/// A fresh database on the test MongoDB, as the old deployment's: its URI and a handle.
/// `None` where mongoeco is not installed (outside CI).
async fn old_site() -> Option<(String, mongodb::Database)> {
    let uri = crate::support::mongo::fresh_uri("oldsite")?;
    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let db = client.default_database().unwrap();
    Some((uri, db))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_the_old_mongodb_idempotently_and_codes_keep_working() {
    // The old deployment's database, on the test MongoDB.
    let Some((uri, old)) = old_site().await else {
        return;
    };
    let orders = old.collection::<mongodb::bson::Document>("orders");
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

    let db = crate::support::sqlite().await;
    let app = crate::support::app::spawn(db.store.clone(), &[]).await;
    let docs = import::read_mongodb(&uri, "orders").await.unwrap();
    assert_eq!(docs.len(), 4);

    // A cut-over that keeps the old 6-digit codes, on purpose.
    let keep = |dry_run| ImportOptions {
        dry_run,
        keep_short_codes: true,
        ..ImportOptions::default()
    };
    let dry = import::run(&app.app, &docs, &Mapping::default(), keep(true))
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

    let real = import::run(&app.app, &docs, &Mapping::default(), keep(false))
        .await
        .unwrap();
    assert_eq!(
        (real.imported, real.already_present, real.skipped),
        (2, 0, 2)
    );
    assert_eq!((real.kept_short, real.reissued_count), (2, 0));
    let again = import::run(&app.app, &docs, &Mapping::default(), keep(false))
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
        crate::support::app::AUTH_TOKEN,
        crate::support::app::ACCOUNT_SID,
        "+15556660001",
        crate::support::app::PHONE,
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
    let db = crate::support::sqlite().await;
    let app = crate::support::app::build(
        db.store.clone(),
        &[],
        std::sync::Arc::new(callgate::domain::clock::SystemClock),
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
    let options = ImportOptions {
        dry_run: false,
        keep_short_codes: true,
        ..ImportOptions::default()
    };
    let report = import::run(&app, &docs, &mapping, options).await.unwrap();
    assert_eq!((report.imported, report.skipped), (2, 0), "{report:?}");
    let code = callgate::domain::codes::AccessCode::parse("111222333").unwrap();
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

/// `callgate import --from-file EXPORT --reissued-file CODES` into the SQLite file `db`.
fn run_import(
    export: &std::path::Path,
    codes: &std::path::Path,
    db: &std::path::Path,
) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["import", "--from-file"])
        .arg(export)
        .arg("--reissued-file")
        .arg(codes)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", format!("sqlite:{}", db.display()))
        .env("CALLGATE_SECRET", "test-secret-0123456789abcdef0123456789")
        .output()
        .unwrap()
}

/// Issue 13, point 12: codes shorter than ACCESS_CODE_DIGITS are replaced on import, through
/// the real binary. The new codes go to a file only the operator can read, never to the
/// terminal; the old short code no longer opens a call, the new one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_codes_are_reissued_into_a_private_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("cg.db");
    let export = dir.path().join("old.json");
    std::fs::write(
        &export,
        r#"{"_id":"a1","accessCode":"123456","minutes":5}
{"_id":"a2","accessCode":"123456789012","minutes":5}
"#,
    )
    .unwrap();
    let codes_file = dir.path().join("new-codes.csv");
    let out = run_import(&export, &codes_file, &db_path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("1 codes were shorter"), "{stderr}");
    let text = std::fs::read_to_string(&codes_file).unwrap();
    let mode = std::fs::metadata(&codes_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only the operator reads the new codes");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let fields: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(fields[0], "a1");
    assert_eq!(
        fields[2], "3456",
        "the old code's last four, to find the customer"
    );
    let new_code = fields[3];
    assert_eq!(new_code.len(), 12, "{new_code}");
    assert!(
        !stdout.contains(new_code) && !stderr.contains(new_code),
        "the new code is never printed"
    );

    // The store now answers to the new code only; the kept 12-digit code still works.
    let store = callgate::store::SqliteStore::open(&db_path).await.unwrap();
    let app = crate::support::app::build(
        std::sync::Arc::new(store),
        &[],
        std::sync::Arc::new(callgate::domain::clock::SystemClock),
    );
    let find = |c: &str| {
        let code = callgate::domain::codes::AccessCode::parse(c).unwrap();
        let app = &app;
        async move { callgate::orders::find_by_code(app, &code).await.unwrap() }
    };
    assert!(find("123456").await.is_none(), "the short code is gone");
    assert!(find(new_code).await.is_some());
    assert!(find("123456789012").await.is_some());

    // A second run never overwrites the file.
    let again = run_import(&export, &codes_file, &db_path);
    assert!(!again.status.success());
    assert_eq!(std::fs::read_to_string(&codes_file).unwrap(), text);
}

/// Issue 13, point 14: callgate shares a MongoDB with the old deployment during a cut-over.
/// Its collections never take the old names, so the old documents (any shape) sit beside
/// callgate's without breaking a listing, the admin view or a code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_deployment_documents_live_beside_callgate_s() {
    let Some((uri, old)) = old_site().await else {
        return;
    };
    for name in [
        "orders",
        "calls",
        "charges",
        "code_attempts",
        "webhook_events",
    ] {
        old.collection::<mongodb::bson::Document>(name)
            .insert_one(doc! { "_id": ObjectId::new(), "accessCode": "123456", "status": 7, "minutes": "lots" })
            .await
            .unwrap();
    }
    let store = callgate::store::MongoStore::open(&uri).await.unwrap();
    callgate::store::Store::migrate(&store).await.unwrap();
    let store: callgate::store::DynStore = std::sync::Arc::new(store);
    let app = crate::support::app::spawn(
        store.clone(),
        &[
            ("ADMIN_PASSWORD", "correct horse battery"),
            ("BILLING_WORKER", "off"),
        ],
    )
    .await;
    let grant = callgate::orders::OperatorGrant {
        minutes: 5,
        overage: false,
        customer: None,
        payment_method: None,
    };
    let (order, _code) = callgate::orders::issue_operator_code(&app.app, &grant)
        .await
        .unwrap();
    let listed = store.list_orders(50).await.unwrap();
    assert_eq!(listed.len(), 1, "only callgate's order");
    assert_eq!(listed[0].id, order.id);
    assert!(store.list_calls(50).await.unwrap().is_empty());
    for page in ["/admin", "/admin/orders", "/admin/calls", "/admin/charges"] {
        let resp = reqwest::Client::new()
            .get(app.url(page))
            .basic_auth("admin", Some("correct horse battery"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{page}");
    }
    // The old documents are untouched.
    let old_orders = old
        .collection::<mongodb::bson::Document>("orders")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(old_orders, 1);
}

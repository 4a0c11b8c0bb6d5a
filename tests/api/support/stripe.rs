//! localstripe, the stateful fake Stripe, started per test through the launcher beside this
//! file, plus the steps a customer's browser and Stripe's back office would take.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const SECRET_KEY: &str = "sk_test_callgate";
pub const PUBLISHABLE_KEY: &str = "pk_test_callgate";
pub const WEBHOOK_SECRET: &str = "whsec_callgate_test";

/// The Python that has localstripe: `CALLGATE_TEST_PYTHON`, or the venv scripts/test makes.
pub fn python() -> String {
    std::env::var("CALLGATE_TEST_PYTHON").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/.venv-test/bin/python").to_string()
    })
}

pub struct LocalStripe {
    pub base: String,
    http: reqwest::Client,
    _child: Child,
}

/// Starts a fresh localstripe. `None` (skipped, with a line on stderr) when it is not
/// installed, except under `CI=true`, where that is a failure.
pub async fn start() -> Option<LocalStripe> {
    let launcher = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/api/support/localstripe_launcher.py"
    );
    let spawned = Command::new(python())
        .arg(launcher)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return missing(&format!("cannot run {}: {e}", python())),
    };
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let port = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(port) = line.strip_prefix("localstripe listening on ") {
                return Some(port.trim().to_string());
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    let Some(port) = port else {
        return missing("localstripe did not start (is it installed? run ./scripts/test)");
    };
    Some(LocalStripe {
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::new(),
        _child: child,
    })
}

fn missing(why: &str) -> Option<LocalStripe> {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("localstripe is required under CI=true: {why}");
    }
    eprintln!("SKIPPED: {why}");
    None
}

impl LocalStripe {
    /// The settings that point callgate at this localstripe.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("STRIPE_SECRET_KEY", SECRET_KEY.to_string()),
            ("STRIPE_PUBLISHABLE_KEY", PUBLISHABLE_KEY.to_string()),
            ("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET.to_string()),
            ("STRIPE_API_BASE", self.base.clone()),
        ]
    }

    /// Registers callgate's webhook endpoint, as the Stripe dashboard would.
    pub async fn register_webhook(&self, url: &str) {
        let resp = self
            .http
            .post(format!("{}/_config/webhooks/callgate", self.base))
            .form(&[("url", url), ("secret", WEBHOOK_SECRET)])
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "webhook registration: {}",
            resp.status()
        );
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(SECRET_KEY)
            .form(form)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(SECRET_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// A PaymentMethod for the card `number`: its id.
    pub async fn card(&self, number: &str) -> String {
        let (status, pm) = self
            .post(
                "/v1/payment_methods",
                &[
                    ("type", "card"),
                    ("card[number]", number),
                    ("card[exp_month]", "12"),
                    ("card[exp_year]", "2034"),
                    ("card[cvc]", "123"),
                ],
            )
            .await;
        assert_eq!(status, 200, "payment method: {pm}");
        pm["id"].as_str().unwrap().to_string()
    }

    /// A customer with the card `number` saved, as a consented purchase leaves it:
    /// (customer, payment method).
    pub async fn saved_card(&self, number: &str) -> (String, String) {
        let (s, cus) = self
            .post("/v1/customers", &[("email", "caller@example.com")])
            .await;
        assert_eq!(s, 200, "{cus}");
        let cus = cus["id"].as_str().unwrap().to_string();
        let pm = self.card(number).await;
        let (s, body) = self
            .post(
                &format!("/v1/payment_methods/{pm}/attach"),
                &[("customer", &cus)],
            )
            .await;
        assert_eq!(s, 200, "{body}");
        (cus, pm)
    }

    /// What Stripe.js does when the customer pays with a card: a PaymentMethod, attached to
    /// the PaymentIntent, confirmed. Returns the confirm call's status and body.
    pub async fn pay(&self, payment_intent: &str, card: &str) -> (u16, Value) {
        let pm_id = self.card(card).await;
        let (status, body) = self
            .post(
                &format!("/v1/payment_intents/{payment_intent}"),
                &[("payment_method", &pm_id)],
            )
            .await;
        assert_eq!(status, 200, "attach payment method: {body}");
        self.post(
            &format!("/v1/payment_intents/{payment_intent}/confirm"),
            &[],
        )
        .await
    }
}

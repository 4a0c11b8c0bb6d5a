//! Memory of the caller (issue 27): a conversation opens with the caller's minutes left,
//! whether this number called on this code before, and the summary of its last conversation,
//! which ElevenLabs' post-call webhook brought (signed, within the tolerance, kept once per
//! conversation: a replay changes nothing). The admin call page shows the report.

use std::time::Duration;

use crate::support::app::{spawn_with, TestApp, ACCOUNT_SID, AUTH_TOKEN, PHONE};
use crate::support::calls::{admin_call_page, heard_the_agent, open, settled_call, TICK};
use callgate::orders::{self, OperatorGrant};
use callgate::store::DynStore;
use callgate::telephony::post_call;
use callgate_peers::agent::{Behaviour, FakeAgent};
use callgate_peers::twilio::{Caller, Ending};
use serde_json::{json, Value};

const SECRET: &str = "wsec_memory_test";
const PASSWORD: &str = "memory-admin";
const FROM: &str = "+15558880042";

async fn app(store: DynStore, agent: &FakeAgent) -> TestApp {
    spawn_with(
        store,
        &[
            ("ELEVENLABS_API_BASE", agent.base.as_str()),
            ("ELEVENLABS_WEBHOOK_SECRET", SECRET),
            ("ADMIN_PASSWORD", PASSWORD),
        ],
        |app| {
            app.bridge.tick = TICK;
            app.bridge.setup_timeout = Duration::from_secs(5);
        },
    )
    .await
}

/// One short conversation on `code` from `FROM`; the call once settled.
async fn one_call(app: &TestApp, code: &str) -> callgate::store::Call {
    let code: &'static str = Box::leak(code.to_string().into_boxed_str());
    let mut caller = Caller::new(AUTH_TOKEN, ACCOUNT_SID, FROM, PHONE).types([Some(code)]);
    let Ending::Stream {
        url, parameters, ..
    } = caller.dial(&app.url("/voice/incoming")).await
    else {
        panic!("not connected")
    };
    let mut stream = open(&caller, &url, &parameters).await;
    heard_the_agent(&mut stream).await;
    stream.hang_up().await;
    settled_call(app, &caller.call_sid).await
}

/// A `post_call_transcription` for `conversation_id`, as ElevenLabs sends it.
fn report(conversation_id: &str, call_sid: &str, caller: &str, summary: &str) -> String {
    json!({
        "type": "post_call_transcription",
        "event_timestamp": 1,
        "data": {
            "agent_id": "agent_test", "conversation_id": conversation_id, "status": "done",
            "transcript": [{ "role": "agent", "message": "Hello", "time_in_call_secs": 0 }],
            "metadata": { "call_duration_secs": 3 },
            "analysis": { "call_successful": "success", "transcript_summary": summary,
                          "evaluation_criteria_results": {}, "data_collection_results": {} },
            "conversation_initiation_client_data": { "dynamic_variables": {
                "callgate_call_sid": call_sid, "caller_number": caller } }
        }
    })
    .to_string()
}

/// Posts `body` signed at `t` with `secret`: the status and the answer's `status`.
async fn post(app: &TestApp, body: &str, t: i64, secret: &str) -> (u16, String) {
    let signature = format!("t={t},v0={}", post_call::sign(secret, t, body.as_bytes()));
    let resp = reqwest::Client::new()
        .post(app.url("/webhooks/elevenlabs"))
        .header("ElevenLabs-Signature", signature)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap_or_default();
    (status, v["status"].as_str().unwrap_or_default().to_string())
}

async fn a_summary_reaches_the_next_conversation(store: DynStore) {
    let agent = FakeAgent::start(Behaviour::default()).await;
    let app = app(store, &agent).await;
    let grant = OperatorGrant {
        minutes: 5,
        overage: false,
        customer: None,
        payment_method: None,
    };
    let (_, code) = orders::issue_operator_code(&app.app, &grant).await.unwrap();

    let first = one_call(&app, code.expose()).await;
    let opened = agent.log().initiations[0]["dynamic_variables"].clone();
    assert_eq!(opened["called_before"], false, "{opened}");
    assert_eq!(opened["last_call_summary"], "", "{opened}");
    assert_eq!(opened["minutes_remaining"], 5, "{opened}");
    assert_eq!(opened["caller_number"], FROM);
    assert_eq!(opened["callgate_call_sid"], first.call_sid.as_str());

    let conversation = first.conversation_id.clone().expect("a conversation id");
    let summary = "The caller asked about tide tables for Brest.";
    let body = report(&conversation, &first.call_sid, FROM, summary);
    let now = app.app.clock.now();

    // Refused: a wrong secret, a stale timestamp (signed properly), no signature at all.
    assert_eq!(post(&app, &body, now, "wsec_other").await.0, 401);
    assert_eq!(post(&app, &body, now - 31 * 60, SECRET).await.0, 401);
    let unsigned = reqwest::Client::new()
        .post(app.url("/webhooks/elevenlabs"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    // A report naming the call but another caller (or another conversation) is not kept.
    let forged = report(&conversation, &first.call_sid, "+15550000000", "forged");
    assert_eq!(
        post(&app, &forged, now, SECRET).await,
        (200, "not a call of this gateway".into())
    );
    let elsewhere = report("conv_elsewhere", &first.call_sid, FROM, "forged");
    assert_eq!(
        post(&app, &elsewhere, now, SECRET).await.1,
        "not a call of this gateway"
    );

    assert_eq!(post(&app, &body, now, SECRET).await, (200, "kept".into()));
    // Delivered again (a retry, or a replay within the tolerance): nothing changes.
    let replay = report(
        &conversation,
        &first.call_sid,
        FROM,
        "rewritten by a replay",
    );
    assert_eq!(
        post(&app, &replay, now, SECRET).await,
        (200, "already kept".into())
    );
    let page = admin_call_page(&app, PASSWORD, &first.call_sid).await;
    assert!(page.contains(summary), "the console shows the summary");
    assert!(page.contains("id=\"outcome\">success"), "and the outcome");
    assert!(!page.contains("rewritten"), "the replay changed nothing");

    // The next call on this code from this number: the agent remembers.
    one_call(&app, code.expose()).await;
    let log = agent.log();
    let opened = &log.initiations[1]["dynamic_variables"];
    assert_eq!(opened["called_before"], true, "{opened}");
    assert_eq!(opened["last_call_summary"], summary, "{opened}");
}

on_every_backend!(a_summary_reaches_the_next_conversation);

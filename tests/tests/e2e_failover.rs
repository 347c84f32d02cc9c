//! Failover beyond 429/5xx: an upstream that does not answer (per-attempt timeout, the next key serves), an
//! upstream that rejects a key (the key is disabled for later requests), and the overall deadline.

use std::time::{Duration, Instant};

use xai_tests::client;
use xai_tests::fixtures::{ACME_KEY, CONTRACT_CONFIG, Gateway, assert_openai_error, chat_body, num, text};
use xai_tests::harness::{USAGE_TIMEOUT, XaiServer};
use xai_tests::mock::{Behavior, MockUpstream};

fn with_timeouts(attempt_ms: u64, request_ms: u64) -> String {
    CONTRACT_CONFIG
        .replace("attempt_timeout_ms = 2000", &format!("attempt_timeout_ms = {attempt_ms}"))
        .replace("request_timeout_ms = 10000", &format!("request_timeout_ms = {request_ms}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_times_out_and_the_next_key_serves() {
    let gw = Gateway::start_with(&with_timeouts(300, 5000)).await;
    gw.mock_a.script(None, vec![Behavior::hang()]);
    let started = Instant::now();
    let resp = gw.chat(ACME_KEY, &chat_body("gpt-4o", "are you there")).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["choices"][0]["message"]["content"], "mock reply: are you there");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "one 300 ms timeout, then served: {took:?}"
    );

    let rec = gw.server.wait_usage(|r| r["requested_model"] == "gpt-4o", USAGE_TIMEOUT).await;
    let attempts = rec["attempts"].as_array().unwrap_or_else(|| panic!("{rec}"));
    assert_eq!(attempts.len(), 2, "{rec:#}");
    assert_eq!(text(&attempts[0], "outcome"), "timeout", "{rec:#}");
    assert!(attempts[0]["status"].is_null(), "no upstream status on a timeout: {rec:#}");
    assert_eq!((text(&attempts[1], "outcome"), num(&attempts[1], "status")), ("ok", 200), "{rec:#}");
    // The gateway hung up on the silent attempt rather than leaving it open.
    let log = gw
        .mock_a
        .wait_for("the hung request to be abandoned", Duration::from_secs(5), |log| {
            log.first().is_some_and(|r| r.cancelled)
        })
        .await;
    assert_ne!(log[0].key, log[1].key, "the retry used another key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_401_disables_the_key() {
    let gw = Gateway::start().await;
    // sk-up-1 is rejected by the provider (revoked upstream); the others work.
    gw.mock_a.script(Some("sk-up-1"), vec![Behavior::status(401)]);
    for i in 0..7 {
        let resp = gw.chat(ACME_KEY, &chat_body("gpt-4o", &format!("n{i}"))).await;
        assert_eq!(resp.status, 200, "request {i}: {}", resp.text());
    }
    let keys: Vec<String> = gw.mock_a.requests().iter().map(|r| r.key.clone().unwrap_or_default()).collect();
    assert_eq!(
        keys.iter().filter(|k| *k == "sk-up-1").count(),
        1,
        "the rejected key is tried once, then never: {keys:?}"
    );
    assert_eq!(keys.len(), 8, "7 served requests plus the one rejected attempt: {keys:?}");

    let health = client::get(&gw.url("/admin/v1/upstream-keys"), Some("admin-secret")).await;
    assert_eq!(health.status, 200, "{}", health.text());
    let all = health.json();
    let list = all["keys"].as_array().unwrap_or_else(|| panic!("{all}"));
    let disabled: Vec<u64> = list.iter().filter(|k| k["disabled"] == true).filter_map(|k| k["id"].as_u64()).collect();
    assert_eq!(disabled, [1], "upstream key 1 (sk-up-1) is disabled, the others are not: {all}");
    assert!(!health.text().contains("sk-up-"), "key health never shows key material");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overall_deadline_bounds_every_attempt() {
    let gw = Gateway::start_with(&with_timeouts(300, 700)).await;
    gw.mock_a.script(None, vec![Behavior::hang(), Behavior::hang(), Behavior::hang()]);
    gw.mock_b.script(None, vec![Behavior::hang()]);
    let started = Instant::now();
    let resp = gw.chat(ACME_KEY, &chat_body("gpt-4o", "too slow")).await;
    let took = started.elapsed();
    assert_eq!(resp.status, 504, "{}", resp.text());
    let err = assert_openai_error(&resp);
    assert!(err["message"].as_str().unwrap_or_default().contains("did not answer"), "{err}");
    assert!(
        took >= Duration::from_millis(650) && took < Duration::from_millis(2500),
        "bounded by the 700 ms deadline: {took:?}"
    );
    assert!(gw.mock_a.requests().len() <= 3, "no attempt starts after the deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_key_stays_disabled_across_restarts_until_an_operator_enables_it() {
    let (mock_a, mock_b) = (MockUpstream::start().await, MockUpstream::start().await);
    let dir = xai_tests::harness::TempDir::new("rejected-key");
    let start = || {
        XaiServer::builder(CONTRACT_CONFIG)
            .var("MOCK_A", mock_a.url())
            .var("MOCK_B", mock_b.url())
            .data_dir(dir.path())
            .start()
    };
    let disabled = |health: &client::HttpResponse| -> Vec<u64> {
        let all = health.json();
        let list = all["keys"].as_array().cloned().unwrap_or_default();
        list.iter().filter(|k| k["disabled"] == true).filter_map(|k| k["id"].as_u64()).collect()
    };
    let server = start().await;
    mock_a.script(Some("sk-up-1"), vec![Behavior::status(401)]);
    for i in 0..4 {
        let resp = client::post_json(
            &format!("{}/v1/chat/completions", server.url()),
            Some(ACME_KEY),
            &chat_body("gpt-4o", &format!("n{i}")),
        )
        .await;
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    let health = client::get(&format!("{}/admin/v1/upstream-keys", server.url()), Some("admin-secret")).await;
    assert_eq!(disabled(&health), [1]);
    drop(server);

    // Restarted on the same data: key 1 is still disabled and never tried, though the upstream would accept it now.
    let server = start().await;
    assert!(server.stderr().contains("1 upstream key(s) stay disabled"), "{}", server.stderr());
    let before = mock_a.requests().len();
    for i in 0..6 {
        let resp = client::post_json(
            &format!("{}/v1/chat/completions", server.url()),
            Some(ACME_KEY),
            &chat_body("gpt-4o", &format!("m{i}")),
        )
        .await;
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    let used: Vec<String> = mock_a.requests()[before..].iter().map(|r| r.key.clone().unwrap_or_default()).collect();
    assert!(!used.iter().any(|k| k == "sk-up-1"), "the rejected key is not tried after a restart: {used:?}");

    // Only the root admin enables it; then it serves again, and stays enabled across a restart.
    let url = format!("{}/admin/v1/upstream-keys/1/enable", server.url());
    let denied = client::post_json(&url, Some(ACME_KEY), &serde_json::json!({})).await;
    assert!(denied.status == 401 || denied.status == 403, "{}", denied.text());
    let enabled = client::post_json(&url, Some("admin-secret"), &serde_json::json!({})).await;
    assert_eq!(enabled.status, 200, "{}", enabled.text());
    assert_eq!(enabled.json()["disabled"], false);
    let missing = client::post_json(
        &format!("{}/admin/v1/upstream-keys/99/enable", server.url()),
        Some("admin-secret"),
        &serde_json::json!({}),
    )
    .await;
    assert_eq!(missing.status, 404);
    drop(server);
    let server = start().await;
    let health = client::get(&format!("{}/admin/v1/upstream-keys", server.url()), Some("admin-secret")).await;
    assert!(disabled(&health).is_empty(), "{}", health.text());
}

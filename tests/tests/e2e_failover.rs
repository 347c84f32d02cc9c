//! Failover beyond 429/5xx: an upstream that does not answer (per-attempt timeout, the next key serves), an
//! upstream that rejects a key (the key is disabled for later requests), and the overall deadline.

use std::time::{Duration, Instant};

use xai_tests::client;
use xai_tests::fixtures::{ACME_KEY, CONTRACT_CONFIG, Gateway, assert_openai_error, chat_body, num, text};
use xai_tests::harness::USAGE_TIMEOUT;
use xai_tests::mock::Behavior;

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

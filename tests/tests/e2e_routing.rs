//! Routing end to end: model mapping, key rotation, failover within a level and switch-over to the backup level,
//! and the model list a caller sees.

use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use xai_tests::client;
use xai_tests::fixtures::{
    ACME_KEY, CONTRACT_CONFIG, Gateway, MOCK_A_KEYS, MOCK_B_KEY, RESEARCH_KEY, assert_no_key_material, chat_body, id,
    num, text,
};
use xai_tests::harness::USAGE_TIMEOUT;
use xai_tests::mock::{Behavior, RecordedRequest};

fn keys_of(log: &[RecordedRequest]) -> Vec<String> {
    log.iter().map(|r| r.key.clone().unwrap_or_default()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_mapping_rewrites_only_the_model() {
    let gw = Gateway::start().await;
    let sent = json!({
        "model": "gpt-3.5-turbo",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "map me"}]}
        ],
        "temperature": 0.25,
        "max_tokens": 64,
        "x_vendor_extension": {"nested": [1, 2, {"deep": true}], "s": "kept"},
        "metadata": {"trace": "abc"}
    });
    let resp = gw.chat(ACME_KEY, &sent).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["choices"][0]["message"]["content"], "mock reply: map me");

    let log = gw.mock_a.requests();
    assert_eq!(log.len(), 1, "exactly one upstream request");
    let upstream = &log[0];
    assert_eq!(upstream.path, "/v1/chat/completions");
    assert_eq!(upstream.model(), Some("gpt-4o-mini"), "gpt-3.5* maps to gpt-4o-mini");
    let mut expected = sent.clone();
    expected["model"] = json!("gpt-4o-mini");
    assert_eq!(upstream.body, expected, "everything but the model must pass through unchanged");
    assert!(MOCK_A_KEYS.contains(&upstream.key.as_deref().unwrap_or("")), "upstream auth: {:?}", upstream.key);
    for (name, value) in &upstream.headers {
        assert!(!value.contains(ACME_KEY), "the virtual key leaked upstream in header {name}: {value}");
    }

    let rec = gw.server.wait_usage(|r| r["requested_model"] == "gpt-3.5-turbo", USAGE_TIMEOUT).await;
    assert_eq!(text(&rec, "upstream_model"), "gpt-4o-mini");
    assert_eq!(text(&rec, "status"), "ok");
    assert_eq!(text(&rec, "account_path"), "acme");
    assert_eq!(text(&rec, "provider"), "mock-a");
    assert_eq!((num(&rec, "prompt_tokens"), num(&rec, "completion_tokens")), (10, 5));
    assert_eq!(num(&rec, "level"), 1);
    assert_no_key_material(&rec);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_over_three_upstream_keys() {
    let gw = Gateway::start().await;
    for i in 0..9 {
        let resp = gw.chat(ACME_KEY, &chat_body("gpt-4o", &format!("rr {i}"))).await;
        assert_eq!(resp.status, 200, "request {i}: {}", resp.text());
        assert_eq!(resp.json()["choices"][0]["message"]["content"], format!("mock reply: rr {i}"));
    }
    let keys = keys_of(&gw.mock_a.requests());
    assert_eq!(keys.len(), 9, "{keys:?}");
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for k in &keys {
        *counts.entry(k.as_str()).or_default() += 1;
    }
    assert_eq!(counts, MOCK_A_KEYS.iter().map(|k| (*k, 3)).collect(), "each key three times: {keys:?}");
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(k, &keys[i % 3], "a strict rotation: {keys:?}");
    }
    assert!(gw.mock_b.requests().is_empty(), "the backup level is not used while level 1 is healthy");

    // The records name the three keys by id, never by value.
    let records = gw.server.wait_usage_all(|r| r.len() >= 9, USAGE_TIMEOUT).await;
    assert_eq!(records.len(), 9, "one record per request: {records:#?}");
    let ids: BTreeSet<String> = records.iter().map(|r| id(r, "upstream_key")).collect();
    assert_eq!(ids.len(), 3, "three distinct upstream key ids: {ids:?}");
    let request_ids: BTreeSet<String> = records.iter().map(|r| id(r, "request_id")).collect();
    assert_eq!(request_ids.len(), 9, "distinct request ids");
    for r in &records {
        assert_no_key_material(r);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_key_fails_over_to_the_next_key() {
    let gw = Gateway::start().await;
    // Whatever key comes first gets a 429 with a long retry-after; the next attempt gets the default reply.
    gw.mock_a.script(None, vec![Behavior::status(429).with_header("retry-after", "30")]);
    let resp = gw.chat(ACME_KEY, &chat_body("gpt-4o", "retry me")).await;
    assert_eq!(resp.status, 200, "the client must not see the 429: {}", resp.text());
    assert_eq!(resp.json()["choices"][0]["message"]["content"], "mock reply: retry me");

    let log = gw.mock_a.requests();
    assert_eq!(log.len(), 2, "two upstream attempts within one client request");
    assert_eq!((log[0].status, log[1].status), (Some(429), Some(200)));
    let limited = log[0].key.clone().unwrap_or_default();
    assert_ne!(log[1].key.as_deref(), Some(limited.as_str()), "the retry must use another key");
    assert_eq!(log[0].body, log[1].body, "the retry sends the same request");

    let rec = gw.server.wait_usage(|r| r["requested_model"] == "gpt-4o", USAGE_TIMEOUT).await;
    assert_eq!(text(&rec, "status"), "ok");
    assert_eq!(num(&rec, "http_status"), 200);
    let attempts = rec["attempts"].as_array().unwrap_or_else(|| panic!("no attempts list: {rec}"));
    assert_eq!(attempts.len(), 2, "{rec:#}");
    assert_eq!(num(&attempts[0], "status"), 429, "{rec:#}");
    assert_eq!(num(&attempts[1], "status"), 200, "{rec:#}");
    assert_ne!(attempts[0]["upstream_key"], attempts[1]["upstream_key"], "{rec:#}");
    assert_eq!(rec["upstream_key"], attempts[1]["upstream_key"], "the record names the key that served");
    assert_no_key_material(&rec);

    // retry-after: 30 puts that key in cooldown: the next requests avoid it.
    for i in 0..4 {
        let resp = gw.chat(ACME_KEY, &chat_body("gpt-4o", &format!("after {i}"))).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    let later = keys_of(&gw.mock_a.requests()[2..]);
    assert_eq!(later.len(), 4);
    assert!(!later.contains(&limited), "{limited} is cooling down (retry-after 30) but was used: {later:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_level_switches_over_to_the_backup_level() {
    let gw = Gateway::start().await;
    gw.mock_a.script(None, vec![Behavior::status(500), Behavior::status(502), Behavior::status(503)]);
    let resp = gw.chat(ACME_KEY, &chat_body("gpt-4o", "switch")).await;
    assert_eq!(resp.status, 200, "the backup level must answer: {}", resp.text());
    assert_eq!(resp.json()["choices"][0]["message"]["content"], "mock reply: switch");

    let a = gw.mock_a.requests();
    let tried: BTreeSet<String> = keys_of(&a).into_iter().collect();
    assert_eq!(a.len(), 3, "every level-1 key is tried once: {:?}", keys_of(&a));
    assert_eq!(tried, MOCK_A_KEYS.iter().map(|k| k.to_string()).collect(), "three distinct keys");
    let b = gw.mock_b.requests();
    assert_eq!(b.len(), 1, "then the switch-over level");
    assert_eq!(b[0].key.as_deref(), Some(MOCK_B_KEY));
    assert_eq!(b[0].model(), Some("gpt-4o"));

    let rec = gw.server.wait_usage(|r| r["requested_model"] == "gpt-4o", USAGE_TIMEOUT).await;
    assert_eq!(text(&rec, "status"), "ok");
    assert_eq!(text(&rec, "provider"), "mock-b");
    assert_eq!(num(&rec, "level"), 2);
    let attempts = rec["attempts"].as_array().unwrap_or_else(|| panic!("no attempts list: {rec}"));
    assert_eq!(attempts.len(), 4, "{rec:#}");
    let levels: Vec<u64> = attempts.iter().map(|a| num(a, "level")).collect();
    assert_eq!(levels, [1, 1, 1, 2], "{rec:#}");
    let statuses: Vec<u64> = attempts.iter().map(|a| num(a, "status")).collect();
    assert_eq!(statuses, [500, 502, 503, 200], "{rec:#}");
    assert_no_key_material(&rec);
}

fn model_ids(body: &Value) -> Vec<String> {
    assert_eq!(body["object"], "list", "{body}");
    body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data array: {body}"))
        .iter()
        .map(|m| {
            assert_eq!(m["object"], "model", "{m}");
            m["id"].as_str().unwrap_or_else(|| panic!("model without id: {m}")).to_owned()
        })
        .collect()
}

/// Provider model patterns are globs here, so the concrete names a list can show come from the pricing table.
const PRICING: &str = r#"
[pricing."gpt-4o"]
input = 2.5
output = 10.0

[pricing."gpt-4o-mini"]
input = 0.15
output = 0.6

[pricing."gpt-5"]
input = 1.25
output = 10.0

[pricing."gpt-3.5-turbo"]
input = 0.5
output = 1.5
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_list_shows_only_what_the_caller_may_use() {
    let gw = Gateway::start_with(&format!("{CONTRACT_CONFIG}{PRICING}")).await;
    let research = client::get(&gw.url("/v1/models"), Some(RESEARCH_KEY)).await;
    assert_eq!(research.status, 200, "{}", research.text());
    let research = model_ids(&research.json());
    for id in ["gpt-4o", "gpt-4o-mini"] {
        assert!(research.iter().any(|m| m == id), "research may use {id}: {research:?}");
    }
    for id in &research {
        assert!(id.starts_with("gpt-4o"), "research (allow gpt-4o*) must not see {id}: {research:?}");
    }

    let acme = client::get(&gw.url("/v1/models"), Some(ACME_KEY)).await;
    assert_eq!(acme.status, 200, "{}", acme.text());
    let acme = model_ids(&acme.json());
    for id in research.iter().map(String::as_str).chain(["gpt-5"]) {
        assert!(acme.iter().any(|m| m == id), "acme (allow *) may use {id}: {acme:?}");
    }

    let anonymous = client::get(&gw.url("/v1/models"), None).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
}

//! Admin API, virtual keys and explain: issued once and never shown again, working on the client API, revoked and
//! expired keys refused, a key's narrower policy enforced; and the explanation of a decision.

use std::time::Duration;

use serde_json::{Value, json};
use xai_tests::admin::{admin_gateway, assert_error, expect, id_of, rfc3339_in, str_of};
use xai_tests::fixtures::{assert_openai_error, chat_body};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issued_key_is_shown_once_works_and_revokes() {
    let (gw, api) = admin_gateway().await;
    let acme = id_of(&api.create_account("acme", None, json!({"allow_models": ["gpt-*"]})).await);

    let issued = api.issue_key(acme, json!({"name": "laptop"})).await;
    let key = str_of(&issued, "key").to_owned();
    assert!(key.starts_with("xai-"), "{key}");
    assert!(key.len() >= 40, "a long key: {key:?} has {} characters", key.len());
    assert!(key[4..].chars().all(|c| c.is_ascii_alphanumeric()), "base62 after the prefix: {key}");
    let prefix = str_of(&issued, "prefix").to_owned();
    assert!(prefix.starts_with("xai-") && key.starts_with(&prefix), "prefix {prefix} of {key}");
    assert!(prefix.len() < key.len() / 2, "the prefix is a short start of the key: {prefix}");
    assert_eq!(issued["account"], json!(acme));
    assert_eq!(issued["name"], "laptop");
    assert_eq!(issued["status"], "active");
    assert_eq!(issued["expires_at"], Value::Null);
    assert!(issued["created_at"].as_str().is_some_and(|t| t.ends_with('Z') && t.contains('T')), "{issued}");
    let kid = id_of(&issued);

    // Another key: distinct.
    let other = api.issue_key(acme, json!({})).await;
    assert_ne!(str_of(&other, "key"), key);
    assert_ne!(id_of(&other), kid);

    // Listing and getting never show the key.
    let resp = api.get(&format!("/accounts/{acme}/keys")).await;
    let list = expect(&resp, 200, "list keys");
    let keys = list["keys"].as_array().unwrap_or_else(|| panic!("{list}"));
    assert_eq!(keys.len(), 2, "{list}");
    for k in keys {
        assert!(k.get("key").is_none(), "a listed key carries `key`: {k}");
        assert!(k.get("prefix").and_then(Value::as_str).is_some_and(|p| p.starts_with("xai-")), "{k}");
    }
    let listed = keys.iter().find(|k| id_of(k) == kid).unwrap_or_else(|| panic!("key {kid} not listed: {list}"));
    assert_eq!(listed["prefix"], json!(prefix));
    assert_eq!(listed["name"], "laptop");
    assert!(!resp.text().contains(&key), "the key appears in the list");
    let resp = api.get(&format!("/keys/{kid}")).await;
    let one = expect(&resp, 200, "GET key");
    assert!(one.get("key").is_none() && !resp.text().contains(&key), "GET /keys/{kid} shows the key: {one}");
    assert_eq!(&one, listed);

    // It works on the client API.
    let resp = gw.chat(&key, &chat_body("gpt-4o", "hello")).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["choices"][0]["message"]["content"], "mock reply: hello");
    let rec = gw.server.wait_usage(|r| r["key"] == json!(kid), Duration::from_secs(5)).await;
    assert_eq!(rec["account_path"], "acme", "{rec}");

    // Revoke: the next request is refused; the other key still works.
    let revoked = expect(&api.delete(&format!("/keys/{kid}")).await, 200, "revoke");
    assert_eq!(revoked["status"], "revoked");
    assert!(revoked.get("key").is_none(), "{revoked}");
    let resp = gw.chat(&key, &chat_body("gpt-4o", "after revoke")).await;
    assert_eq!(resp.status, 401, "a revoked key: {}", resp.text());
    assert_openai_error(&resp);
    assert_eq!(expect(&api.get(&format!("/keys/{kid}")).await, 200, "GET revoked")["status"], "revoked");
    let resp = gw.chat(str_of(&other, "key"), &chat_body("gpt-4o", "other")).await;
    assert_eq!(resp.status, 200, "revoking one key leaves the other: {}", resp.text());
    assert_eq!(gw.mock_a.requests().len(), 2, "the revoked key's request never reached the upstream");

    // A disabled account's keys are refused too.
    expect(&api.delete(&format!("/accounts/{acme}")).await, 200, "disable acme");
    let resp = gw.chat(str_of(&other, "key"), &chat_body("gpt-4o", "disabled")).await;
    assert!(resp.status == 401 || resp.status == 403, "a disabled account: {} {}", resp.status, resp.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_key_is_refused() {
    let (gw, api) = admin_gateway().await;
    let acme = id_of(&api.create_account("acme", None, json!({})).await);

    let resp = api.post(&format!("/accounts/{acme}/keys"), &json!({"expires_at": "2001-01-01T00:00:00Z"})).await;
    assert_error(&resp, 400, "bad_request", "expires_at in the past");
    let resp = api.post(&format!("/accounts/{acme}/keys"), &json!({"expires_at": "next tuesday"})).await;
    assert_error(&resp, 400, "bad_request", "expires_at not a time");

    let expires_at = rfc3339_in(Duration::from_secs(3));
    let issued = api.issue_key(acme, json!({"expires_at": expires_at})).await;
    let shown = str_of(&issued, "expires_at");
    assert_eq!(shown.replace(".000Z", "Z"), expires_at, "the same instant: {issued}");
    let key = str_of(&issued, "key").to_owned();
    let resp = gw.chat(&key, &chat_body("gpt-4o", "before expiry")).await;
    assert_eq!(resp.status, 200, "not expired yet: {}", resp.text());

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let resp = gw.chat(&key, &chat_body("gpt-4o", "after expiry")).await;
        if resp.status == 401 {
            assert_openai_error(&resp);
            break;
        }
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert!(tokio::time::Instant::now() < deadline, "the key ({expires_at}) was still accepted 10 s later");
        // Expiry has second granularity: poll, bounded by the deadline.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ex = api.explain(json!({"key_id": id_of(&issued), "model": "gpt-4o"})).await;
    assert_eq!((ex["allowed"].clone(), ex["refused_by"].clone()), (json!(false), json!("key")), "{ex}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_narrower_policy_is_enforced() {
    let (gw, api) = admin_gateway().await;
    let acme = id_of(&api.create_account("acme", None, json!({"allow_models": ["gpt-*"]})).await);
    let narrow = api.issue_key(acme, json!({"allow_models": ["gpt-4o-mini"], "rpm": 2})).await;
    assert_eq!(narrow["allow_models"], json!(["gpt-4o-mini"]), "{narrow}");
    assert_eq!(narrow["rpm"], 2, "{narrow}");
    let key = str_of(&narrow, "key");
    let (_, wide) = api.new_key(acme).await;

    let resp = gw.chat(key, &chat_body("gpt-4o", "too wide")).await;
    assert_eq!(resp.status, 403, "the key allows only gpt-4o-mini: {}", resp.text());
    assert_openai_error(&resp);
    let resp = gw.chat(&wide, &chat_body("gpt-4o", "account key")).await;
    assert_eq!(resp.status, 200, "the account itself allows gpt-4o: {}", resp.text());
    for i in 0..2 {
        let resp = gw.chat(key, &chat_body("gpt-4o-mini", &format!("ok {i}"))).await;
        assert_eq!(resp.status, 200, "request {i}: {}", resp.text());
    }
    let resp = gw.chat(key, &chat_body("gpt-4o-mini", "third")).await;
    assert_eq!(resp.status, 429, "the key's own rpm 2: {}", resp.text());
    let resp = gw.chat(&wide, &chat_body("gpt-4o-mini", "other key")).await;
    assert_eq!(resp.status, 200, "the key's rpm does not bind the account: {}", resp.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_each_decision() {
    let (gw, api) = admin_gateway().await;
    let acme = id_of(
        &api.create_account(
            "acme",
            None,
            json!({"allow_models": ["gpt-*"], "model_mapper": {"gpt-3.5*": "gpt-4o-mini"}}),
        )
        .await,
    );
    let research =
        id_of(&api.create_account("research", Some(acme), json!({"allow_models": ["gpt-4o*", "gpt-3.5*"]})).await);
    let (kid, key) = api.new_key(research).await;

    // Refused: the model is outside research's list.
    let ex = api.explain(json!({"key": key, "model": "gpt-5"})).await;
    assert_eq!(ex["allowed"], false, "{ex}");
    assert_eq!(ex["refused_by"], "allow_models", "{ex}");
    let reason = ex["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("acme/research") && reason.contains("gpt-5"), "reason names account and model: {ex}");
    assert_eq!(ex["upstream_model"], Value::Null, "{ex}");
    assert_eq!(ex["plan"], json!([]), "{ex}");
    let steps = ex["steps"].as_array().unwrap_or_else(|| panic!("{ex}"));
    assert_eq!(steps[0]["step"], "key", "the key step comes first: {ex}");
    let first_refusal = steps.iter().find(|s| s["ok"] == false).unwrap_or_else(|| panic!("{ex}"));
    assert_eq!(first_refusal["step"], "allow_models", "{ex}");
    // The real request agrees.
    let resp = gw.chat(&key, &chat_body("gpt-5", "no")).await;
    assert_eq!(resp.status, 403, "{}", resp.text());

    // Allowed: mapped by acme, served at level 1 with the switch-over level 2 behind it.
    let ex = api.explain(json!({"key": key, "model": "gpt-3.5-turbo"})).await;
    assert_eq!(ex["allowed"], true, "{ex}");
    assert_eq!(ex["refused_by"], Value::Null, "{ex}");
    assert_eq!(ex["upstream_model"], "gpt-4o-mini", "{ex}");
    assert_eq!(ex["level"], 1, "{ex}");
    assert_eq!(ex["plan"], json!([1, 2]), "{ex}");
    let steps = ex["steps"].as_array().unwrap_or_else(|| panic!("{ex}"));
    assert!(steps.iter().all(|s| s["ok"] == true), "{ex}");
    let names: Vec<&str> = steps.iter().filter_map(|s| s["step"].as_str()).collect();
    let pos = |n: &str| names.iter().position(|s| *s == n).unwrap_or_else(|| panic!("no `{n}` step: {ex}"));
    assert!(pos("key") < pos("status") && pos("status") < pos("allow_models"), "{names:?}");
    assert!(pos("allow_models") < pos("model_mapper") && pos("model_mapper") < pos("route"), "{names:?}");
    let resp = gw.chat(&key, &chat_body("gpt-3.5-turbo", "yes")).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(gw.mock_a.requests().last().and_then(|r| r.model().map(str::to_owned)).as_deref(), Some("gpt-4o-mini"));

    // The same by key id and by account.
    let by_id = api.explain(json!({"key_id": kid, "model": "gpt-3.5-turbo"})).await;
    assert_eq!((by_id["allowed"].clone(), by_id["upstream_model"].clone()), (json!(true), json!("gpt-4o-mini")));
    let by_account = api.explain(json!({"account": research, "model": "gpt-5"})).await;
    assert_eq!(by_account["refused_by"], "allow_models", "{by_account}");

    // A parent pinned to level 2 (which has no switch-over behind it): the plan follows it.
    api.patch_account(acme, json!({"level": 2})).await;
    let ex = api.explain(json!({"key": key, "model": "gpt-4o"})).await;
    assert_eq!(
        (ex["allowed"].clone(), ex["level"].clone(), ex["plan"].clone()),
        (json!(true), json!(2), json!([2])),
        "{ex}"
    );
    let resp = gw.chat(&key, &chat_body("gpt-4o", "level two")).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(gw.mock_b.requests().len(), 1, "served by the level-2 provider");

    // A resource outside the account's list.
    api.patch_account(research, json!({"resources": ["chat"]})).await;
    let ex = api.explain(json!({"key": key, "model": "gpt-4o", "endpoint": "embeddings"})).await;
    assert_eq!((ex["allowed"].clone(), ex["refused_by"].clone()), (json!(false), json!("resource")), "{ex}");

    // A revoked key.
    api.delete(&format!("/keys/{kid}")).await;
    let ex = api.explain(json!({"key_id": kid, "model": "gpt-4o"})).await;
    assert_eq!((ex["allowed"].clone(), ex["refused_by"].clone()), (json!(false), json!("key")), "{ex}");

    // Unknown subjects and bad bodies.
    let unknown = "xai-0000000000000000000000000000000000000000000";
    assert_error(
        &api.post("/explain", &json!({"key": unknown, "model": "gpt-4o"})).await,
        404,
        "not_found",
        "unknown key",
    );
    assert_error(
        &api.post("/explain", &json!({"key_id": 9999, "model": "gpt-4o"})).await,
        404,
        "not_found",
        "unknown key id",
    );
    assert_error(
        &api.post("/explain", &json!({"account": 9999, "model": "gpt-4o"})).await,
        404,
        "not_found",
        "unknown account",
    );
    assert_error(&api.post("/explain", &json!({"model": "gpt-4o"})).await, 400, "bad_request", "no subject");
    assert_error(
        &api.post("/explain", &json!({"account": acme, "model": "gpt-4o", "endpoint": "teleport"})).await,
        400,
        "bad_request",
        "unknown endpoint",
    );
}

//! Admin API, limits as aggregate bounds: a parent's `rpm` / `rpd` count its own traffic and all of its
//! descendants', so two children together hit the parent's bound, and the refusal names the parent.

use serde_json::json;
use xai_tests::admin::{AdminApi, admin_gateway, id_of};
use xai_tests::client::HttpResponse;
use xai_tests::fixtures::{Gateway, assert_openai_error, chat_body};

/// corp → corp/dept (`bound`) → corp/dept/a, corp/dept/b; plus an unrelated root `other`. Returns the keys of a, b
/// and other.
async fn setup(api: &AdminApi, bound: serde_json::Value) -> (String, String, String) {
    let corp = id_of(&api.create_account("corp", None, json!({})).await);
    let dept = id_of(&api.create_account("dept", Some(corp), bound).await);
    let a = id_of(&api.create_account("a", Some(dept), json!({})).await);
    let b = id_of(&api.create_account("b", Some(dept), json!({})).await);
    let other = id_of(&api.create_account("other", None, json!({})).await);
    let (_, ka) = api.new_key(a).await;
    let (_, kb) = api.new_key(b).await;
    let (_, ko) = api.new_key(other).await;
    (ka, kb, ko)
}

fn assert_refused_by_dept(resp: &HttpResponse, bound: &str, what: &str) {
    assert_eq!(resp.status, 429, "{what}: expected 429 from corp/dept's {bound}, got: {}", resp.text());
    let err = assert_openai_error(resp);
    let msg = err["message"].as_str().unwrap_or_default();
    assert!(msg.contains("corp/dept"), "the refusal names the parent's path: {msg:?}");
    assert!(!msg.contains("corp/dept/a") && !msg.contains("corp/dept/b"), "not a child's bound: {msg:?}");
    assert!(msg.contains(bound), "the refusal names the bound {bound}: {msg:?}");
}

async fn four_across_two_children(gw: &Gateway, ka: &str, kb: &str, ko: &str, bound: &str) {
    for (i, key) in [ka, kb, ka].into_iter().enumerate() {
        let resp = gw.chat(key, &chat_body("gpt-4o", &format!("r{i}"))).await;
        assert_eq!(resp.status, 200, "request {i} is within the bound: {}", resp.text());
    }
    let resp = gw.chat(kb, &chat_body("gpt-4o", "r3")).await;
    assert_refused_by_dept(&resp, bound, "the 4th request across both children");
    let resp = gw.chat(ka, &chat_body("gpt-4o", "r4")).await;
    assert_refused_by_dept(&resp, bound, "the 5th request");
    assert_eq!(gw.mock_a.requests().len(), 3, "refused requests never reach the upstream");
    // Another tree is not affected.
    let resp = gw.chat(ko, &chat_body("gpt-4o", "elsewhere")).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parent_rpm_bounds_its_children_together() {
    let (gw, api) = admin_gateway().await;
    let (ka, kb, ko) = setup(&api, json!({"rpm": 3})).await;
    four_across_two_children(&gw, &ka, &kb, &ko, "rpm").await;
    let resp = gw.chat(&kb, &chat_body("gpt-4o", "retry")).await;
    assert!(resp.header("retry-after").is_some(), "a 429 says when to retry: {:?}", resp.headers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parent_rpd_bounds_its_children_together() {
    let (gw, api) = admin_gateway().await;
    let (ka, kb, ko) = setup(&api, json!({"rpd": 3})).await;
    four_across_two_children(&gw, &ka, &kb, &ko, "rpd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_bound_added_later_counts_the_days_earlier_traffic() {
    let (gw, api) = admin_gateway().await;
    let (ka, kb, ko) = setup(&api, json!({})).await;
    for i in 0..4 {
        let resp = gw.chat(if i % 2 == 0 { &ka } else { &kb }, &chat_body("gpt-4o", &format!("free {i}"))).await;
        assert_eq!(resp.status, 200, "no bound yet: {}", resp.text());
    }
    let accounts = api.accounts().await;
    let dept = accounts.iter().find(|a| a["path"] == "corp/dept").map(id_of).expect("corp/dept listed");
    api.patch_account(dept, json!({"rpd": 5})).await;
    // `/today` counts the four earlier requests against the new bound...
    let t = api.today_when(dept, |t| t["requests"] == 4).await;
    assert_eq!(t["limits"]["rpd"], json!({"limit": 5, "used": 4, "set_by": "corp/dept"}), "{t}");
    // ...and so does admission: one more fits today, the next does not.
    let resp = gw.chat(&ka, &chat_body("gpt-4o", "fifth")).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let resp = gw.chat(&kb, &chat_body("gpt-4o", "sixth")).await;
    assert_refused_by_dept(&resp, "rpd", "the 6th request today, the 2nd after rpd 5 was set");
    let resp = gw.chat(&ko, &chat_body("gpt-4o", "elsewhere")).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn today_reports_each_bounds_current_use() {
    let (gw, api) = admin_gateway().await;
    let (ka, kb, _) = setup(&api, json!({"rpm": 10, "rpd": 20})).await;
    for (i, key) in [&ka, &kb, &ka].into_iter().enumerate() {
        let resp = gw.chat(key, &chat_body("gpt-4o", &format!("r{i}"))).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    let accounts = api.accounts().await;
    let dept = accounts.iter().find(|a| a["path"] == "corp/dept").map(id_of).expect("corp/dept listed");
    let t = api.today_when(dept, |t| t["requests"] == 3).await;
    assert_eq!(t["limits"]["rpd"], json!({"limit": 20, "used": 3, "set_by": "corp/dept"}), "{t}");
    // docs/admin-api.md: `"rpm": {"limit": 60, "used": 3, "set_by": …}`: the minute's use, too.
    assert_eq!(t["limits"]["rpm"], json!({"limit": 10, "used": 3, "set_by": "corp/dept"}), "{t}");
}

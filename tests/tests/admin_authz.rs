//! Admin API, authorisation: the root token sees everything; an owner/admin key acts on the subtree below its
//! account only (its own account read-only, siblings and ancestors invisible: 404); a member key gets 403 on every
//! admin path; a missing or unknown token gets 401.

use http::Method;
use serde_json::{Value, json};
use xai_tests::admin::{AdminApi, admin_gateway, assert_error, expect, id_of, str_of};

struct Tree {
    acme: u64,
    eng: u64,
    team: u64,
    dev: u64,
    sales: u64,
    sales_key_id: u64,
    admin_key: String,
    member_key: String,
}

/// acme → eng (admin, rpm 50) → team (member) → dev; acme → sales.
async fn tree(root: &AdminApi) -> Tree {
    let acme = id_of(&root.create_account("acme", None, json!({"rpm": 100})).await);
    let eng = id_of(&root.create_account("eng", Some(acme), json!({"role": "admin", "rpm": 50})).await);
    let team = id_of(&root.create_account("team", Some(eng), json!({})).await);
    let dev = id_of(&root.create_account("dev", Some(team), json!({})).await);
    let sales = id_of(&root.create_account("sales", Some(acme), json!({"role": "admin"})).await);
    let (sales_key_id, _) = root.new_key(sales).await;
    let (_, admin_key) = root.new_key(eng).await;
    let (_, member_key) = root.new_key(team).await;
    root.credits(acme, "100").await;
    root.credits(eng, "40").await;
    Tree { acme, eng, team, dev, sales, sales_key_id, admin_key, member_key }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_token_sees_everything() {
    let (_gw, root) = admin_gateway().await;
    let t = tree(&root).await;
    assert_eq!(root.paths().await, ["acme", "acme/eng", "acme/eng/team", "acme/eng/team/dev", "acme/sales"]);
    for id in [t.acme, t.eng, t.team, t.dev, t.sales] {
        root.account(id).await;
    }
    expect(&root.get(&format!("/keys/{}", t.sales_key_id)).await, 200, "root reads any key");
    expect(&root.get("/providers").await, 200, "providers");
    expect(&root.get("/usage?limit=5").await, 200, "usage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_key_acts_on_its_subtree_only() {
    let (_gw, root) = admin_gateway().await;
    let t = tree(&root).await;
    let admin = root.with_token(&t.admin_key);
    let before = root.accounts().await;

    // It sees its own account and everything below, nothing else.
    assert_eq!(admin.paths().await, ["acme/eng", "acme/eng/team", "acme/eng/team/dev"]);
    assert_eq!(str_of(&admin.account(t.eng).await, "path"), "acme/eng", "it may read its own account");
    assert_eq!(str_of(&admin.account(t.dev).await, "path"), "acme/eng/team/dev");
    for (id, what) in [(t.sales, "sibling"), (t.acme, "ancestor")] {
        for path in [
            format!("/accounts/{id}"),
            format!("/accounts/{id}/effective"),
            format!("/accounts/{id}/keys"),
            format!("/accounts/{id}/credits"),
            format!("/accounts/{id}/today"),
            format!("/accounts/{id}/products"),
        ] {
            assert_error(&admin.get(&path).await, 404, "not_found", &format!("GET {path} of the {what}"));
        }
        let resp = admin.patch(&format!("/accounts/{id}"), &json!({"rpm": 1})).await;
        assert_error(&resp, 404, "not_found", &format!("PATCH the {what}"));
        let resp = admin.post("/accounts", &json!({"name": "sneaky", "parent": id})).await;
        assert_error(&resp, 404, "not_found", &format!("create under the {what}"));
        let resp = admin.post(&format!("/accounts/{id}/keys"), &json!({})).await;
        assert_error(&resp, 404, "not_found", &format!("issue a key on the {what}"));
        let resp = admin.post(&format!("/accounts/{id}/credits"), &json!({"amount": "1"})).await;
        assert_error(&resp, 404, "not_found", &format!("credits to the {what}"));
        let resp = admin.delete(&format!("/accounts/{id}")).await;
        assert_error(&resp, 404, "not_found", &format!("disable the {what}"));
        let resp = admin.post("/explain", &json!({"account": id, "model": "gpt-4o"})).await;
        assert_error(&resp, 404, "not_found", &format!("explain for the {what}"));
    }
    assert_error(&admin.get(&format!("/keys/{}", t.sales_key_id)).await, 404, "not_found", "a sibling's key");
    assert_error(&admin.delete(&format!("/keys/{}", t.sales_key_id)).await, 404, "not_found", "revoke a sibling's key");
    let resp = admin.post("/explain", &json!({"key_id": t.sales_key_id, "model": "gpt-4o"})).await;
    assert_error(&resp, 404, "not_found", "explain a sibling's key");

    // Its own account: read-only.
    for (body, what) in [
        (json!({"rpm": 1000}), "raise its own bound"),
        (json!({"rpm": 10}), "even lower its own bound"),
        (json!({"name": "renamed"}), "rename itself"),
        (json!({"parent": t.sales}), "move itself"),
        (json!({"role": "owner"}), "promote itself"),
    ] {
        let resp = admin.patch(&format!("/accounts/{}", t.eng), &body).await;
        assert_error(&resp, 403, "forbidden", what);
    }
    assert_error(&admin.delete(&format!("/accounts/{}", t.eng)).await, 403, "forbidden", "disable itself");
    let resp = admin.post(&format!("/accounts/{}/credits", t.eng), &json!({"amount": "1"})).await;
    assert_error(&resp, 403, "forbidden", "credits to itself");
    let resp = admin.post(&format!("/accounts/{}/products", t.eng), &json!({"kind": "card", "credits": "5"})).await;
    assert_error(&resp, 403, "forbidden", "a product for itself");
    // No root accounts.
    let resp = admin.post("/accounts", &json!({"name": "newroot", "parent": null})).await;
    assert_error(&resp, 403, "forbidden", "create a root account");
    let resp = admin.patch(&format!("/accounts/{}", t.team), &json!({"parent": null})).await;
    assert_error(&resp, 403, "forbidden", "make a root account");
    // Moving something of its own out of its subtree: the target is invisible.
    let resp = admin.patch(&format!("/accounts/{}", t.team), &json!({"parent": t.sales})).await;
    assert_error(&resp, 404, "not_found", "move team under sales");
    assert_eq!(root.accounts().await, before, "refused requests changed the tree");

    // Inside its subtree it may list, create, patch, issue keys and move credits.
    let created = expect(
        &admin.post("/accounts", &json!({"name": "intern", "parent": t.team, "rpm": 5})).await,
        201,
        "create below",
    );
    assert_eq!(str_of(&created, "path"), "acme/eng/team/intern");
    let patched = admin.patch_account(t.team, json!({"rpm": 20, "name": "platform"})).await;
    assert_eq!((patched["rpm"].clone(), str_of(&patched, "path")), (json!(20), "acme/eng/platform"));
    let resp = admin.patch(&format!("/accounts/{}", t.team), &json!({"rpm": 51})).await;
    assert_error(&resp, 422, "policy_widening", "above its own account's rpm");
    let t2 = admin.credits(t.team, "15").await;
    assert_eq!((t2["account"]["balance"].clone(), t2["parent"]["balance"].clone()), (json!("15"), json!("25")));
    let issued = admin.issue_key(t.dev, json!({"name": "by eng"})).await;
    assert!(str_of(&issued, "key").starts_with("xai-"));
    let keys = expect(&admin.get(&format!("/accounts/{}/keys", t.team)).await, 200, "keys below");
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(1), "team's member key: {keys}");
    expect(&admin.get(&format!("/accounts/{}/effective", t.dev)).await, 200, "effective below");
    expect(&admin.get(&format!("/accounts/{}/today", t.dev)).await, 200, "today below");
    let ex = admin.explain(json!({"account": t.dev, "model": "gpt-4o"})).await;
    assert_eq!(ex["allowed"], true, "{ex}");
    let resp = admin.delete(&format!("/accounts/{}", created["id"])).await;
    assert_eq!(expect(&resp, 200, "disable below")["status"], "disabled");

    // A sibling admin sees its own subtree, not eng's.
    let (_, sales_admin) = root.new_key(t.sales).await;
    let sales = root.with_token(&sales_admin);
    assert_eq!(sales.paths().await, ["acme/sales"]);
    assert_error(&sales.get(&format!("/accounts/{}", t.dev)).await, 404, "not_found", "a cousin");

    // Usage is scoped too.
    let usage = expect(&admin.get("/usage?limit=100").await, 200, "usage");
    assert!(usage["records"].is_array(), "{usage}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_keys_get_403_and_strangers_401() {
    let (gw, root) = admin_gateway().await;
    let t = tree(&root).await;
    let member = root.with_token(&t.member_key);
    let paths: Vec<(Method, String, Value)> = vec![
        (Method::GET, "/accounts".into(), Value::Null),
        (Method::POST, "/accounts".into(), json!({"name": "x", "parent": t.team})),
        (Method::GET, format!("/accounts/{}", t.team), Value::Null),
        (Method::PATCH, format!("/accounts/{}", t.dev), json!({"rpm": 1})),
        (Method::DELETE, format!("/accounts/{}", t.dev), Value::Null),
        (Method::GET, format!("/accounts/{}/effective", t.team), Value::Null),
        (Method::GET, format!("/accounts/{}/keys", t.team), Value::Null),
        (Method::POST, format!("/accounts/{}/keys", t.dev), json!({})),
        (Method::GET, format!("/accounts/{}/credits", t.team), Value::Null),
        (Method::POST, format!("/accounts/{}/credits", t.dev), json!({"amount": "1"})),
        (Method::GET, format!("/accounts/{}/products", t.team), Value::Null),
        (Method::GET, format!("/accounts/{}/today", t.team), Value::Null),
        (Method::POST, "/explain".into(), json!({"account": t.team, "model": "gpt-4o"})),
        (Method::GET, "/providers".into(), Value::Null),
        (Method::GET, "/upstream-keys".into(), Value::Null),
        (Method::GET, "/usage".into(), Value::Null),
        (Method::GET, "/keys/1".into(), Value::Null),
    ];
    let before = root.accounts().await;
    for (method, path, body) in &paths {
        let raw = if body.is_null() { Vec::new() } else { serde_json::to_vec(body).unwrap_or_default() };
        let resp = member.send_raw(method.clone(), path, raw.clone()).await;
        assert_error(&resp, 403, "forbidden", &format!("member key: {method} {path}"));
        let resp = root.anonymous().send_raw(method.clone(), path, raw.clone()).await;
        assert_error(&resp, 401, "unauthorized", &format!("no token: {method} {path}"));
        let resp =
            root.with_token("xai-not-a-real-key-000000000000000000000000000").send_raw(method.clone(), path, raw).await;
        assert_error(&resp, 401, "unauthorized", &format!("unknown token: {method} {path}"));
    }
    assert_eq!(root.accounts().await, before, "refused requests changed something");

    // Other malformed credentials.
    let url = format!("{}/admin/v1/accounts", gw.server.url());
    for auth in ["Basic YWRtaW46YWRtaW4=", "Bearer", "Bearer ", "admin-secret", "Bearer admin-secret-but-longer"] {
        let resp = xai_tests::client::send(Method::GET, &url, &[("authorization", auth)], bytes::Bytes::new()).await;
        assert_error(&resp, 401, "unauthorized", &format!("authorization {auth:?}"));
    }

    // A revoked admin key and a disabled admin account lose their rights.
    let (kid, key) = root.new_key(t.eng).await;
    expect(&root.with_token(&key).get("/accounts").await, 200, "fresh admin key");
    expect(&root.delete(&format!("/keys/{kid}")).await, 200, "revoke");
    assert_error(&root.with_token(&key).get("/accounts").await, 401, "unauthorized", "revoked admin key");
    expect(&root.delete(&format!("/accounts/{}", t.eng)).await, 200, "disable eng");
    let resp = root.with_token(&t.admin_key).get("/accounts").await;
    assert!(resp.status == 401 || resp.status == 403, "a disabled admin account: {} {}", resp.status, resp.text());
}

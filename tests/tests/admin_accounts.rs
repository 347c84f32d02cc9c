//! Admin API, accounts: a tree of any depth through the API, its JSON, listing order, renames that move whole
//! subtrees, `null` unsetting a field, effective policies with their sources, the config's accounts, and bad input.

use http::Method;
use serde_json::{Value, json};
use xai_tests::admin::{AdminApi, admin_gateway, assert_error, expect, id_of, str_of};
use xai_tests::fixtures::{CONTRACT_CONFIG, Gateway};

/// Every policy field of the account JSON.
const POLICY_FIELDS: [&str; 12] = [
    "allow_models",
    "model_mapper",
    "level_mapper",
    "level",
    "allow_ips",
    "resources",
    "rpm",
    "rpd",
    "tpm",
    "tpd",
    "daily_limit",
    "model_limits",
];

/// The value of an unset policy field: `{}` for the tables, `null` otherwise.
fn unset(field: &str) -> Value {
    if matches!(field, "model_mapper" | "level_mapper" | "model_limits") { json!({}) } else { Value::Null }
}

/// Asserts every policy field of `account` equals `set` where given, the unset value otherwise.
fn assert_policy(account: &Value, set: &Value) {
    for field in POLICY_FIELDS {
        let expected = set.get(field).cloned().unwrap_or_else(|| unset(field));
        assert_eq!(account.get(field), Some(&expected), "field `{field}` of {account}");
    }
}

struct Tree {
    acme: u64,
    research: u64,
    nlp: u64,
    intern: u64,
}

async fn four_deep(api: &AdminApi) -> (Tree, Value) {
    let acme = api.create_account("acme", None, json!({"allow_models": ["gpt-*"], "rpm": 100, "tpm": 100000})).await;
    let research =
        api.create_account("research", Some(id_of(&acme)), json!({"allow_models": ["gpt-4o*"], "rpm": 5})).await;
    let nlp = api.create_account("nlp", Some(id_of(&research)), json!({"rpd": 1000, "role": "admin"})).await;
    let intern = api
        .create_account(
            "intern",
            Some(id_of(&nlp)),
            json!({"allow_models": ["gpt-4o-mini"], "daily_limit": "2.5", "model_mapper": {"gpt-4o-m*": "gpt-4o-mini"}}),
        )
        .await;
    let tree = Tree { acme: id_of(&acme), research: id_of(&research), nlp: id_of(&nlp), intern: id_of(&intern) };
    (tree, intern)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_deep_tree_json_list_and_get() {
    let (_gw, api) = admin_gateway().await;
    assert!(api.accounts().await.is_empty(), "the admin config has no accounts");
    let (t, intern) = four_deep(&api).await;

    // The 201 answer of the deepest account.
    assert_eq!(str_of(&intern, "name"), "intern");
    assert_eq!(str_of(&intern, "path"), "acme/research/nlp/intern");
    assert_eq!(intern["parent"], json!(t.nlp));
    assert_eq!(str_of(&intern, "role"), "member", "the default role");
    assert_eq!(str_of(&intern, "status"), "active", "the default status");
    assert_eq!(str_of(&intern, "balance"), "0");
    assert_policy(
        &intern,
        &json!({"allow_models": ["gpt-4o-mini"], "daily_limit": "2.5", "model_mapper": {"gpt-4o-m*": "gpt-4o-mini"}}),
    );
    let ids = [t.acme, t.research, t.nlp, t.intern];
    let distinct: std::collections::BTreeSet<u64> = ids.into_iter().collect();
    assert_eq!(distinct.len(), 4, "distinct ids: {ids:?}");

    // GET one is the same object.
    assert_eq!(api.account(t.intern).await, intern);
    let nlp = api.account(t.nlp).await;
    assert_eq!((str_of(&nlp, "path"), str_of(&nlp, "role")), ("acme/research/nlp", "admin"));
    assert_policy(&nlp, &json!({"rpd": 1000}));
    let acme = api.account(t.acme).await;
    assert_eq!(acme["parent"], Value::Null, "a root: {acme}");
    assert_policy(&acme, &json!({"allow_models": ["gpt-*"], "rpm": 100, "tpm": 100000}));

    // Siblings created out of order: the list is sorted by path.
    api.create_account("zeta", Some(t.acme), json!({})).await;
    api.create_account("alpha", Some(t.acme), json!({})).await;
    api.create_account("beta", None, json!({})).await;
    let paths = api.paths().await;
    assert_eq!(
        paths,
        ["acme", "acme/alpha", "acme/research", "acme/research/nlp", "acme/research/nlp/intern", "acme/zeta", "beta"],
        "GET /accounts sorted by path"
    );
    let listed = api.accounts().await;
    let listed_intern = listed.iter().find(|a| id_of(a) == t.intern).expect("intern listed");
    assert_eq!(listed_intern, &intern, "the list carries the same objects as GET");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_moves_the_whole_subtree_and_null_unsets() {
    let (_gw, api) = admin_gateway().await;
    let (t, _) = four_deep(&api).await;

    let renamed = api.patch_account(t.research, json!({"name": "lab"})).await;
    assert_eq!((str_of(&renamed, "name"), str_of(&renamed, "path")), ("lab", "acme/lab"));
    assert_eq!(renamed["rpm"], 5, "a rename keeps the policy: {renamed}");
    assert_eq!(str_of(&api.account(t.nlp).await, "path"), "acme/lab/nlp");
    assert_eq!(str_of(&api.account(t.intern).await, "path"), "acme/lab/nlp/intern");
    assert_eq!(api.paths().await, ["acme", "acme/lab", "acme/lab/nlp", "acme/lab/nlp/intern"]);
    // Effective sources follow the rename.
    let eff = expect(&api.get(&format!("/accounts/{}/effective", t.intern)).await, 200, "effective");
    assert_eq!(eff["path"], "acme/lab/nlp/intern");
    assert_eq!(eff["effective"]["rpm"]["set_by"]["path"], "acme/lab", "{eff}");

    // Move nlp (and intern with it) directly under acme.
    let moved = api.patch_account(t.nlp, json!({"parent": t.acme})).await;
    assert_eq!((str_of(&moved, "path"), &moved["parent"]), ("acme/nlp", &json!(t.acme)));
    assert_eq!(str_of(&api.account(t.intern).await, "path"), "acme/nlp/intern");

    // `null` unsets; absent fields are kept.
    let nlp = api.patch_account(t.nlp, json!({"rpd": null})).await;
    assert_eq!(nlp["rpd"], Value::Null, "{nlp}");
    assert_eq!(nlp["role"], "admin", "{nlp}");
    let intern = api.patch_account(t.intern, json!({"allow_models": null, "model_mapper": null})).await;
    assert_policy(&intern, &json!({"daily_limit": "2.5"}));
    let intern = api.account(t.intern).await;
    assert_policy(&intern, &json!({"daily_limit": "2.5"}));
    let eff = expect(&api.get(&format!("/accounts/{}/effective", t.intern)).await, 200, "effective");
    assert_eq!(eff["effective"]["rpd"], Value::Null, "nlp's rpd was unset: {eff}");
    let owners: Vec<&Value> = eff["effective"]["allow_models"]
        .as_array()
        .unwrap_or_else(|| panic!("{eff}"))
        .iter()
        .map(|b| &b["set_by"]["path"])
        .collect();
    assert_eq!(owners, [&json!("acme")], "intern no longer sets allow_models: {eff}");

    // Role and status change through PATCH as well.
    let intern = api.patch_account(t.intern, json!({"role": "owner", "status": "disabled"})).await;
    assert_eq!((str_of(&intern, "role"), str_of(&intern, "status")), ("owner", "disabled"));
    // DELETE disables.
    let nlp = expect(&api.delete(&format!("/accounts/{}", t.nlp)).await, 200, "DELETE nlp");
    assert_eq!(str_of(&nlp, "status"), "disabled");
    assert_eq!(str_of(&api.account(t.nlp).await, "status"), "disabled");
    assert!(api.paths().await.contains(&"acme/nlp".to_owned()), "a disabled account is still listed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn effective_policy_names_who_set_each_bound() {
    let (_gw, api) = admin_gateway().await;
    let (t, _) = four_deep(&api).await;

    let eff = expect(&api.get(&format!("/accounts/{}/effective", t.intern)).await, 200, "effective intern");
    assert_eq!(eff["account"], json!(t.intern));
    assert_eq!(eff["path"], "acme/research/nlp/intern");
    let e = &eff["effective"];
    let src = |id: u64, path: &str| json!({"account": id, "path": path});
    // Tightest numeric bound wins, with the account that set it.
    assert_eq!(e["rpm"], json!({"value": 5, "set_by": src(t.research, "acme/research")}), "{eff}");
    assert_eq!(e["tpm"], json!({"value": 100000, "set_by": src(t.acme, "acme")}), "{eff}");
    assert_eq!(e["rpd"], json!({"value": 1000, "set_by": src(t.nlp, "acme/research/nlp")}), "{eff}");
    assert_eq!(e["tpd"], Value::Null, "{eff}");
    assert_eq!(e["levels"], Value::Null, "nobody restricts levels: {eff}");
    assert_eq!(e["daily_limit"]["value"], "2.5", "{eff}");
    assert_eq!(e["daily_limit"]["set_by"], src(t.intern, "acme/research/nlp/intern"), "{eff}");
    // Every allow_models list, caller first.
    assert_eq!(
        e["allow_models"],
        json!([
            {"value": ["gpt-4o-mini"], "set_by": src(t.intern, "acme/research/nlp/intern")},
            {"value": ["gpt-4o*"], "set_by": src(t.research, "acme/research")},
            {"value": ["gpt-*"], "set_by": src(t.acme, "acme")},
        ]),
        "{eff}"
    );
    assert_eq!(e["allow_ips"], json!([]), "{eff}");
    assert_eq!(e["resources"], json!([]), "{eff}");

    // A tighter rpm further down takes over.
    api.patch_account(t.nlp, json!({"rpm": 2})).await;
    let eff = expect(&api.get(&format!("/accounts/{}/effective", t.intern)).await, 200, "effective intern");
    assert_eq!(eff["effective"]["rpm"], json!({"value": 2, "set_by": src(t.nlp, "acme/research/nlp")}), "{eff}");

    // A key's effective policy includes its own, first.
    let key = api.issue_key(t.intern, json!({"rpm": 1, "allow_models": ["gpt-4o-mini"], "name": "ci"})).await;
    let prefix = str_of(&key, "prefix").to_owned();
    let eff = expect(&api.get(&format!("/keys/{}/effective", id_of(&key))).await, 200, "effective key");
    let e = &eff["effective"];
    assert_eq!(e["rpm"]["value"], 1, "{eff}");
    assert_eq!(e["rpm"]["set_by"]["account"], Value::Null, "the key's own bound: {eff}");
    assert!(
        e["rpm"]["set_by"]["path"].as_str().is_some_and(|p| p.contains(&prefix)),
        "the key's bound names the key ({prefix}): {eff}"
    );
    let lists = e["allow_models"].as_array().unwrap_or_else(|| panic!("{eff}"));
    assert_eq!(lists.len(), 4, "the key's list and the three accounts': {eff}");
    assert_eq!(lists[0]["value"], json!(["gpt-4o-mini"]));
    assert_eq!(lists[0]["set_by"]["account"], Value::Null, "{eff}");
    assert_eq!(lists[3]["set_by"], src(t.acme, "acme"), "{eff}");
    assert_eq!(e["tpm"]["set_by"], src(t.acme, "acme"), "{eff}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_accounts_are_imported_with_their_policies() {
    let gw = Gateway::start_with(CONTRACT_CONFIG).await;
    let api = AdminApi::root(&gw.server);
    let accounts = api.accounts().await;
    assert_eq!(accounts.len(), 2, "{accounts:#?}");
    let (acme, research) = (&accounts[0], &accounts[1]);
    assert_eq!((str_of(acme, "name"), str_of(acme, "path")), ("acme", "acme"));
    assert_eq!(acme["parent"], Value::Null);
    assert_policy(acme, &json!({"allow_models": ["*"], "level": 1, "model_mapper": {"gpt-3.5*": "gpt-4o-mini"}}));
    assert_eq!((str_of(research, "name"), str_of(research, "path")), ("research", "acme/research"));
    assert_eq!(research["parent"], json!(id_of(acme)));
    assert_policy(research, &json!({"allow_models": ["gpt-4o*"], "rpm": 60}));
    assert_eq!(str_of(research, "status"), "active");

    // Their imported keys are listed, by prefix only.
    for (account, secret) in [(acme, "sk-acme"), (research, "sk-research")] {
        let resp = api.get(&format!("/accounts/{}/keys", id_of(account))).await;
        let body = expect(&resp, 200, "list keys");
        let keys = body["keys"].as_array().unwrap_or_else(|| panic!("{body}"));
        assert_eq!(keys.len(), 1, "{body}");
        assert!(keys[0].get("key").is_none(), "a listed key never carries `key`: {body}");
        assert!(!resp.text().contains(secret), "the imported key {secret} leaked: {body}");
    }

    // And they are governed like any other: a child below research may not widen it.
    let resp = api.post("/accounts", &json!({"name": "x", "parent": id_of(research), "rpm": 61})).await;
    let msg = assert_error(&resp, 422, "policy_widening", "rpm above the config's 60");
    assert!(msg.contains("acme/research"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() {
    let (_gw, api) = admin_gateway().await;
    let (t, _) = four_deep(&api).await;
    let before = api.accounts().await;

    // Unknown ids.
    for path in ["/accounts/9999", "/accounts/abc", "/accounts/9999/effective", "/keys/9999", "/accounts/9999/keys"] {
        assert_error(&api.get(path).await, 404, "not_found", &format!("GET {path}"));
    }
    assert_error(&api.patch("/accounts/9999", &json!({"rpm": 1})).await, 404, "not_found", "PATCH unknown");
    assert_error(&api.delete("/accounts/9999").await, 404, "not_found", "DELETE unknown");
    assert_error(&api.delete("/keys/9999").await, 404, "not_found", "revoke unknown");
    assert_error(
        &api.post("/accounts/9999/credits", &json!({"amount": "1"})).await,
        404,
        "not_found",
        "credits of unknown",
    );
    assert_error(
        &api.post("/accounts", &json!({"name": "orphan", "parent": 9999})).await,
        404,
        "not_found",
        "create under unknown parent",
    );
    assert_error(
        &api.patch(&format!("/accounts/{}", t.nlp), &json!({"parent": 9999})).await,
        404,
        "not_found",
        "move under unknown parent",
    );

    // Moving an account under its own descendant (or itself).
    for target in [t.intern, t.nlp, t.acme] {
        let resp = api.patch(&format!("/accounts/{}", t.acme), &json!({"parent": target})).await;
        assert_error(&resp, 422, "invalid", &format!("move acme under {target}"));
    }
    let resp = api.patch(&format!("/accounts/{}", t.research), &json!({"parent": t.intern})).await;
    assert_error(&resp, 422, "invalid", "move research under its grandchild");

    // Duplicate sibling names: create and rename.
    let resp = api.post("/accounts", &json!({"name": "research", "parent": t.acme})).await;
    assert_error(&resp, 409, "conflict", "duplicate sibling");
    let resp = api.post("/accounts", &json!({"name": "acme", "parent": null})).await;
    assert_error(&resp, 409, "conflict", "duplicate root");
    let other = api.create_account("other", Some(t.acme), json!({})).await;
    let resp = api.patch(&format!("/accounts/{}", id_of(&other)), &json!({"name": "research"})).await;
    assert_error(&resp, 409, "conflict", "rename onto a sibling's name");
    let resp = api.patch(&format!("/accounts/{}", t.nlp), &json!({"parent": t.acme, "name": "other"})).await;
    assert_error(&resp, 409, "conflict", "move next to a sibling of the same name");
    // The same name under another parent is fine.
    let nested = api.create_account("research", Some(t.nlp), json!({})).await;
    assert_eq!(str_of(&nested, "path"), "acme/research/nlp/research");
    let after_ok = api.accounts().await;

    // Invalid globs, CIDRs, names, roles, amounts, unknown fields, malformed JSON.
    let bad_bodies = [
        json!({"name": "g", "parent": t.acme, "allow_models": ["gpt-["]}),
        json!({"name": "c", "parent": t.acme, "allow_ips": ["10.0.0.0/33"]}),
        json!({"name": "c", "parent": t.acme, "allow_ips": ["not-a-network"]}),
        json!({"name": "r", "parent": t.acme, "role": "king"}),
        json!({"name": "s", "parent": t.acme, "status": "sleeping"}),
        json!({"name": "a/b", "parent": t.acme}),
        json!({"name": "", "parent": t.acme}),
        json!({"name": "d", "parent": t.acme, "daily_limit": "lots"}),
        json!({"name": "u", "parent": t.acme, "colour": "red"}),
        json!({"name": "e", "parent": t.acme, "resources": ["teleport"]}),
        json!({"parent": t.acme}),
    ];
    for body in bad_bodies {
        assert_error(&api.post("/accounts", &body).await, 400, "bad_request", &format!("POST /accounts {body}"));
    }
    let patch = format!("/accounts/{}", t.research);
    for body in [
        json!({"allow_models": ["gpt-4o["]}),
        json!({"allow_ips": ["300.1.1.1/8"]}),
        json!({"bogus": 1}),
        json!({"rpm": "fast"}),
        json!({"name": "x/y"}),
    ] {
        assert_error(&api.patch(&patch, &body).await, 400, "bad_request", &format!("PATCH {body}"));
    }
    for raw in ["{", "not json", "[1, 2]"] {
        let resp = api.send_raw(Method::POST, "/accounts", raw.to_owned()).await;
        assert_error(&resp, 400, "bad_request", &format!("POST /accounts {raw:?}"));
        let resp = api.send_raw(Method::PATCH, &patch, raw.to_owned()).await;
        assert_error(&resp, 400, "bad_request", &format!("PATCH {raw:?}"));
    }

    // Nothing changed by any refusal.
    assert_eq!(api.accounts().await, after_ok, "refused writes changed the tree");
    let changed: Vec<&Value> = after_ok.iter().filter(|a| !before.contains(a)).collect();
    assert_eq!(changed.len(), 2, "only `other` and the nested `research` were added: {changed:#?}");
    assert_eq!(api.account(t.acme).await["parent"], Value::Null, "acme was not moved");
    assert_eq!(api.account(t.research).await["parent"], json!(t.acme), "research was not moved");
}

//! Admin API, narrowing: a policy that would widen an ancestor's is refused on write (422 `policy_widening`, naming
//! the ancestor and the bound, nothing changed), for accounts and for keys at issue; and enforcement is path-wide on
//! read, so narrowing a parent later refuses what a child's existing key could do before.

use serde_json::{Value, json};
use xai_tests::admin::{AdminApi, admin_gateway, assert_error, expect, id_of, str_of};
use xai_tests::fixtures::{assert_openai_error, chat_body};

/// corp (rpm 100) → corp/acme (the bounds under test) → corp/acme/team (within them).
async fn setup(api: &AdminApi) -> (u64, u64, u64) {
    let corp = api.create_account("corp", None, json!({"rpm": 100, "allow_models": ["gpt-*"]})).await;
    let acme = api
        .create_account(
            "acme",
            Some(id_of(&corp)),
            json!({
                "rpm": 10, "rpd": 1000, "tpm": 50000, "daily_limit": "5",
                "allow_models": ["gpt-4o*"], "allow_ips": ["10.0.0.0/8"], "level": 1,
                "resources": ["chat", "responses"],
            }),
        )
        .await;
    let team = api
        .create_account(
            "team",
            Some(id_of(&acme)),
            json!({"rpm": 5, "allow_models": ["gpt-4o-mini"], "allow_ips": ["10.1.0.0/16"], "level": 1}),
        )
        .await;
    (id_of(&corp), id_of(&acme), id_of(&team))
}

/// Each case: (what, body, the bound's field name that the message must carry).
fn widening_cases() -> Vec<(&'static str, Value, &'static str)> {
    vec![
        ("rpm above the parent's", json!({"rpm": 20}), "rpm"),
        ("rpd above the parent's", json!({"rpd": 1001}), "rpd"),
        ("tpm above the parent's", json!({"tpm": 50001}), "tpm"),
        ("daily_limit above the parent's", json!({"daily_limit": "5.000001"}), "daily_limit"),
        ("allow_models pattern outside the parent's", json!({"allow_models": ["gpt-*"]}), "allow_models"),
        ("allow_models name outside the parent's", json!({"allow_models": ["gpt-5"]}), "allow_models"),
        ("allow_ips outside the parent's CIDR", json!({"allow_ips": ["192.168.0.0/16"]}), "allow_ips"),
        ("allow_ips wider than the parent's CIDR", json!({"allow_ips": ["10.0.0.0/7"]}), "allow_ips"),
        ("a level the parent excludes", json!({"level": 2}), "level"),
        ("a level_mapper target the parent excludes", json!({"level_mapper": {"gpt-4o*": 2}}), "level"),
        (
            "a model_mapper target the parent does not allow",
            json!({"model_mapper": {"gpt-4o*": "gpt-5"}}),
            "model_mapper",
        ),
        ("an endpoint the parent does not allow", json!({"resources": ["embeddings"]}), "resources"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn widening_account_policies_is_refused_and_changes_nothing() {
    let (_gw, api) = admin_gateway().await;
    let (_, acme, team) = setup(&api).await;
    let before_team = api.account(team).await;
    let before_list = api.accounts().await;

    for (what, body, field) in widening_cases() {
        // On PATCH of the existing child.
        let resp = api.patch(&format!("/accounts/{team}"), &body).await;
        let msg = assert_error(&resp, 422, "policy_widening", &format!("PATCH team: {what}"));
        assert!(msg.contains("corp/acme"), "{what}: the message must name the ancestor corp/acme: {msg:?}");
        assert!(msg.contains(field), "{what}: the message must name the bound `{field}`: {msg:?}");
        assert_eq!(api.account(team).await, before_team, "{what}: a refused PATCH changed team");

        // On POST of a new child with the same policy.
        let mut create = body.clone();
        create["name"] = json!("newbie");
        create["parent"] = json!(acme);
        let resp = api.post("/accounts", &create).await;
        let msg = assert_error(&resp, 422, "policy_widening", &format!("POST child: {what}"));
        assert!(msg.contains("corp/acme") && msg.contains(field), "{what}: {msg:?}");
        assert_eq!(api.accounts().await, before_list, "{what}: a refused POST created something");

        // On a key at issue.
        let resp = api.post(&format!("/accounts/{acme}/keys"), &body).await;
        let msg = assert_error(&resp, 422, "policy_widening", &format!("issue key on acme: {what}"));
        assert!(msg.contains("corp/acme") && msg.contains(field), "{what}: {msg:?}");
    }
    let keys = expect(&api.get(&format!("/accounts/{acme}/keys")).await, 200, "keys of acme");
    assert_eq!(keys["keys"], json!([]), "no key was issued by a refused request");

    // A bound set further up is named by its own path: rpm above corp's 100 on acme itself.
    let resp = api.patch(&format!("/accounts/{acme}"), &json!({"rpm": 101})).await;
    let msg = assert_error(&resp, 422, "policy_widening", "acme rpm above corp's");
    assert!(msg.contains("corp") && !msg.contains("corp/acme"), "the bound is corp's: {msg:?}");
    assert_eq!(api.account(acme).await["rpm"], 10);

    // A mixed PATCH with one widening field changes none of its fields.
    let resp = api.patch(&format!("/accounts/{team}"), &json!({"name": "renamed", "rpm": 3, "tpm": 999999})).await;
    assert_error(&resp, 422, "policy_widening", "mixed patch");
    assert_eq!(api.account(team).await, before_team, "a refused mixed PATCH changed team");

    // Narrower values pass, on both.
    let ok = api
        .patch_account(
            team,
            json!({"rpm": 10, "allow_models": ["gpt-4o", "gpt-4o-mini"], "allow_ips": ["10.1.2.0/24"], "rpd": 1000}),
        )
        .await;
    assert_eq!((ok["rpm"].clone(), ok["rpd"].clone()), (json!(10), json!(1000)));
    let key =
        api.issue_key(team, json!({"rpm": 10, "allow_models": ["gpt-4o-mini"], "allow_ips": ["10.1.2.3/32"]})).await;
    assert_eq!(key["rpm"], 10, "{key}");
    assert_eq!(key["allow_models"], json!(["gpt-4o-mini"]), "{key}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_may_not_widen_its_own_account() {
    let (_gw, api) = admin_gateway().await;
    let (_, _, team) = setup(&api).await;
    for (what, body, field) in [
        ("rpm", json!({"rpm": 6}), "rpm"),
        ("allow_models", json!({"allow_models": ["gpt-4o"]}), "allow_models"),
        ("allow_ips", json!({"allow_ips": ["10.2.0.0/16"]}), "allow_ips"),
    ] {
        let resp = api.post(&format!("/accounts/{team}/keys"), &body).await;
        let msg = assert_error(&resp, 422, "policy_widening", &format!("key on team: {what}"));
        assert!(msg.contains("corp/acme/team") && msg.contains(field), "{what}: {msg:?}");
    }
    let keys = expect(&api.get(&format!("/accounts/{team}/keys")).await, 200, "keys of team");
    assert_eq!(keys["keys"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrowing_a_parent_later_refuses_a_childs_existing_key() {
    let (gw, api) = admin_gateway().await;
    let acme = id_of(&api.create_account("acme", None, json!({"allow_models": ["gpt-*"]})).await);
    let research = id_of(&api.create_account("research", Some(acme), json!({"allow_models": ["gpt-4o*"]})).await);
    let intern = id_of(&api.create_account("intern", Some(research), json!({})).await);
    let (_, key) = api.new_key(intern).await;

    let resp = gw.chat(&key, &chat_body("gpt-4o", "before")).await;
    assert_eq!(resp.status, 200, "gpt-4o is allowed along the path: {}", resp.text());
    assert_eq!(resp.json()["choices"][0]["message"]["content"], "mock reply: before");

    // Narrowing an ancestor is always allowed, even though research's list is now wider than acme's.
    let narrowed = api.patch_account(acme, json!({"allow_models": ["gpt-4o-mini"]})).await;
    assert_eq!(narrowed["allow_models"], json!(["gpt-4o-mini"]));
    assert_eq!(api.account(research).await["allow_models"], json!(["gpt-4o*"]), "children are not rewritten");

    let resp = gw.chat(&key, &chat_body("gpt-4o", "after")).await;
    assert_eq!(resp.status, 403, "acme no longer allows gpt-4o: {}", resp.text());
    let err = assert_openai_error(&resp);
    let msg = err["message"].as_str().unwrap_or_default();
    assert!(msg.contains("gpt-4o") && msg.contains("acme"), "the refusal names the model and acme: {msg:?}");
    let resp = gw.chat(&key, &chat_body("gpt-4o-mini", "still")).await;
    assert_eq!(resp.status, 200, "gpt-4o-mini is still allowed everywhere: {}", resp.text());

    let sent: Vec<String> = gw.mock_a.requests().iter().filter_map(|r| r.model().map(str::to_owned)).collect();
    assert_eq!(sent, ["gpt-4o", "gpt-4o-mini"], "the refused request never reached the upstream");

    // Widening it back restores access (the tree stays valid throughout).
    api.patch_account(acme, json!({"allow_models": ["gpt-*"]})).await;
    let resp = gw.chat(&key, &chat_body("gpt-4o", "again")).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    // Explain agrees (narrowed again), and names the account that refuses by its path, as the contract's steps do.
    api.patch_account(acme, json!({"allow_models": ["gpt-4o-mini"]})).await;
    let ex = api.explain(json!({"key": key, "model": "gpt-4o"})).await;
    assert_eq!(ex["allowed"], false, "{ex}");
    assert_eq!(ex["refused_by"], "allow_models", "{ex}");
    let steps = ex["steps"].as_array().unwrap_or_else(|| panic!("{ex}"));
    let refusing = steps.iter().find(|s| s["ok"] == false).unwrap_or_else(|| panic!("{ex}"));
    assert_eq!(str_of(refusing, "account"), "acme", "{ex}");
}

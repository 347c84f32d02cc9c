//! The `xai` CLI end to end: the real binary against a real server and mock upstream, through `XAI_SERVER` /
//! `XAI_TOKEN`. Tables for people contain what matters, `--json` is the server's answer, issued keys work, exit
//! codes follow `xai --help` (0 ok, 1 API error with the server's message on stderr, 2 usage, 3 explain refused),
//! and the token never appears in any output (checked on every run by [`Cli::run`]).

use serde_json::{Value, json};
use xai_tests::admin::{Cli, admin_gateway, id_of, str_of, utc_date};
use xai_tests::fixtures::chat_body;

/// The first `xai-…` key printed in `text`.
fn printed_key(text: &str) -> String {
    text.split_whitespace()
        .find(|w| w.starts_with("xai-") && w.len() >= 40)
        .map(|w| w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-').to_owned())
        .unwrap_or_else(|| panic!("no key printed in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_through_the_cli_match_the_api() {
    let (gw, api) = admin_gateway().await;
    let cli = Cli::new(&gw.server, gw.server.admin_token());

    let out = cli.run(&["accounts", "create", "acme", "--allow-models", "gpt-*", "--rpm", "100"]).await.ok();
    assert!(out.contains("acme"), "{out}");
    let acme = api.accounts().await.iter().find(|a| a["path"] == "acme").map(id_of).expect("acme created");
    let research = cli
        .run(&["--json", "accounts", "create", "research", "--parent", &acme.to_string(), "--allow-models", "gpt-4o*"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(str_of(&research, "path"), "acme/research", "{research}");
    assert_eq!(research["allow_models"], json!(["gpt-4o*"]));
    assert_eq!(research, api.account(id_of(&research)).await, "--json prints the server's answer");
    let rid = id_of(&research).to_string();
    cli.run(&["accounts", "create", "nlp", "--parent", &rid, "--rpm", "10", "--daily-limit", "2.5"]).await.ok();

    // The table lists every path; --json is the API's list.
    let table = cli.run(&["accounts", "list"]).await.ok();
    for path in ["acme", "acme/research", "acme/research/nlp"] {
        assert!(table.lines().any(|l| l.split_whitespace().any(|w| w == path)), "{path} missing from:\n{table}");
    }
    let listed = cli.run(&["accounts", "list", "--json"]).await.expect_code(0).json();
    assert_eq!(listed["accounts"], json!(api.accounts().await), "--json list equals GET /accounts");

    // Update: a policy flag, then `none` unsets it.
    let nlp = api.accounts().await.iter().find(|a| a["path"] == "acme/research/nlp").map(id_of).expect("nlp");
    let updated =
        cli.run(&["accounts", "update", &nlp.to_string(), "--rpm", "5", "--json"]).await.expect_code(0).json();
    assert_eq!(updated["rpm"], 5, "{updated}");
    cli.run(&["accounts", "update", &nlp.to_string(), "--rpm", "none"]).await.ok();
    assert_eq!(api.account(nlp).await["rpm"], Value::Null, "`--rpm none` unsets");
    assert_eq!(api.account(nlp).await["daily_limit"], "2.5", "other fields kept");
    let renamed = cli.run(&["accounts", "update", &rid, "--name", "lab", "--json"]).await.expect_code(0).json();
    assert_eq!(renamed["path"], "acme/lab");
    assert_eq!(api.account(nlp).await["path"], "acme/lab/nlp", "the subtree moved with the rename");

    // The effective policy shows who set what.
    let eff = cli.run(&["accounts", "effective", &nlp.to_string(), "--json"]).await.expect_code(0).json();
    assert_eq!(eff["effective"]["rpm"]["set_by"]["path"], "acme", "{eff}");
    let eff_table = cli.run(&["accounts", "effective", &nlp.to_string()]).await.ok();
    assert!(eff_table.contains("acme/lab"), "{eff_table}");

    // API errors: exit 1 with the server's message on stderr.
    let out =
        cli.run(&["accounts", "create", "wide", "--parent", &rid, "--allow-models", "gpt-*"]).await.expect_code(1);
    assert!(out.stderr.contains("policy_widening") || out.stderr.contains("allow_models"), "{}", out.stderr);
    assert!(out.stderr.contains("acme/lab"), "the server's message names the ancestor: {}", out.stderr);
    let out = cli.run(&["accounts", "get", "9999"]).await.expect_code(1);
    assert!(out.stderr.contains("no account 9999"), "the server's message: {}", out.stderr);
    let out = cli.run(&["accounts", "create", "lab", "--parent", &acme.to_string()]).await.expect_code(1);
    assert!(out.stderr.contains("409") || out.stderr.contains("conflict"), "{}", out.stderr);
    // A wrong token: 401 from the server, exit 1, and the wrong token is not echoed either.
    let out = cli.with_token("not-the-token-xyz").run(&["accounts", "list"]).await.expect_code(1);
    assert!(out.stderr.contains("401") || out.stderr.contains("unauthorized"), "{}", out.stderr);
    // A usage error: exit 2.
    cli.run(&["accounts", "get"]).await.expect_code(2);
    cli.run(&["credits", "allocate", &rid, "-5"]).await.expect_code(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_issued_by_the_cli_work_and_revoke() {
    let (gw, api) = admin_gateway().await;
    let cli = Cli::new(&gw.server, gw.server.admin_token());
    let acme = id_of(&api.create_account("acme", None, json!({"allow_models": ["gpt-*"]})).await).to_string();

    let out = cli.run(&["keys", "issue", &acme, "--name", "ci"]).await.ok();
    let key = printed_key(&out);
    let resp = gw.chat(&key, &chat_body("gpt-4o", "from the cli")).await;
    assert_eq!(resp.status, 200, "the printed key works: {}", resp.text());
    assert_eq!(resp.json()["choices"][0]["message"]["content"], "mock reply: from the cli");

    // Listed by prefix only, in the table and in JSON.
    let table = cli.run(&["keys", "list", &acme]).await.ok();
    assert!(!table.contains(&key), "the key appears in the list:\n{table}");
    assert!(table.contains(&key[..10]), "the prefix {} is listed:\n{table}", &key[..10]);
    let listed = cli.run(&["keys", "list", &acme, "--json"]).await.expect_code(0).json();
    let keys = listed["keys"].as_array().unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(keys.len(), 1, "{listed}");
    assert!(keys[0].get("key").is_none() && !listed.to_string().contains(&key), "{listed}");
    let kid = id_of(&keys[0]).to_string();

    // A narrower key through policy flags, with --json: the key is in the answer once.
    let narrow =
        cli.run(&["keys", "issue", &acme, "--allow-models", "gpt-4o-mini", "--json"]).await.expect_code(0).json();
    let narrow_key = str_of(&narrow, "key").to_owned();
    assert_eq!(narrow["allow_models"], json!(["gpt-4o-mini"]));
    let resp = gw.chat(&narrow_key, &chat_body("gpt-4o", "too wide")).await;
    assert_eq!(resp.status, 403, "{}", resp.text());

    // Revoke.
    cli.run(&["keys", "revoke", &kid]).await.ok();
    let resp = gw.chat(&key, &chat_body("gpt-4o", "after revoke")).await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    let shown = cli.run(&["keys", "get", &kid, "--json"]).await.expect_code(0).json();
    assert_eq!(shown["status"], "revoked");

    // An admin-role account's key drives the CLI on its subtree; the token stays out of the output.
    let eng = id_of(&api.create_account("eng", Some(acme.parse().expect("id")), json!({"role": "admin"})).await);
    let (_, admin_key) = api.new_key(eng).await;
    let as_admin = cli.with_token(&admin_key);
    as_admin.run(&["accounts", "create", "team", "--parent", &eng.to_string()]).await.ok();
    let table = as_admin.run(&["accounts", "list"]).await.ok();
    assert!(table.contains("acme/eng/team") && !table.lines().any(|l| l.split_whitespace().any(|w| w == "acme")));
    let out = as_admin.run(&["accounts", "get", &acme]).await.expect_code(1);
    assert!(out.stderr.contains("404") || out.stderr.contains("not_found"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_products_and_explain_through_the_cli() {
    let (gw, api) = admin_gateway().await;
    let cli = Cli::new(&gw.server, gw.server.admin_token());
    let acme = id_of(&api.create_account("acme", None, json!({"allow_models": ["gpt-*"]})).await);
    let research = id_of(&api.create_account("research", Some(acme), json!({"allow_models": ["gpt-4o*"]})).await);
    let (a, r) = (acme.to_string(), research.to_string());

    // Credits: mint, allocate, reclaim, ledger; an over-allocation is the server's 422.
    cli.run(&["credits", "allocate", &a, "100"]).await.ok();
    let out = cli.run(&["credits", "allocate", &r, "12.5", "--note", "Q4"]).await.ok();
    assert!(out.contains("12.5"), "{out}");
    assert_eq!((api.balance(acme).await, api.balance(research).await), ("87.5".to_owned(), "12.5".to_owned()));
    let moved = cli.run(&["credits", "reclaim", &r, "2.5", "--json"]).await.expect_code(0).json();
    assert_eq!(moved["entry"]["kind"], "reclaim", "{moved}");
    assert_eq!((moved["account"]["balance"].clone(), moved["parent"]["balance"].clone()), (json!("10"), json!("90")));
    let out = cli.run(&["credits", "allocate", &r, "1000"]).await.expect_code(1);
    assert!(out.stderr.contains("has only 90"), "the server's message on stderr: {}", out.stderr);
    assert_eq!(api.balance(research).await, "10", "nothing moved");
    let ledger = cli.run(&["credits", "ledger", &r, "--json"]).await.expect_code(0).json();
    assert_eq!(ledger, api.ledger(research).await);
    let kinds: Vec<&str> = ledger["ledger"].as_array().into_iter().flatten().map(|e| str_of(e, "kind")).collect();
    assert_eq!(kinds, ["allocate", "reclaim"], "{ledger}");
    let table = cli.run(&["credits", "ledger", &r]).await.ok();
    assert!(table.contains("allocate") && table.contains("reclaim") && table.contains("12.5"), "{table}");

    // Products: a subscription and a card, then today.
    cli.run(&[
        "products",
        "add",
        &r,
        "subscription",
        "--daily-allowance",
        "3",
        "--starts",
        &utc_date(-1),
        "--ends",
        &utc_date(30),
    ])
    .await
    .ok();
    let card = cli.run(&["products", "add", &r, "card", "--credits", "10", "--json"]).await.expect_code(0).json();
    assert_eq!((card["kind"].clone(), card["credits"].clone()), (json!("card"), json!("10")), "{card}");
    let today = cli.run(&["products", "today", &r, "--json"]).await.expect_code(0).json();
    let kinds: Vec<&str> = today["sources"].as_array().into_iter().flatten().map(|s| str_of(s, "kind")).collect();
    assert_eq!(kinds, ["subscription", "card", "balance"], "{today}");
    let table = cli.run(&["products", "today", &r]).await.ok();
    assert!(table.contains("subscription") && table.contains("card") && table.contains("balance"), "{table}");
    let (_, key) = api.new_key(research).await;
    let resp = gw
        .chat(&key, &{
            let mut b = chat_body("gpt-4o-mini", "priced");
            b["max_tokens"] = json!(8);
            b
        })
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let today = loop {
        let t = cli.run(&["products", "today", &r, "--json"]).await.expect_code(0).json();
        if t["requests"] == 1 {
            break t;
        }
        assert!(tokio::time::Instant::now() < deadline, "today never showed the request: {t}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(today["sources"][0]["used"], "2", "the subscription pays first: {today}");

    // Explain: exit 0 allowed, 3 refused (with and without --json), 1 on an API error.
    let out = cli.run(&["explain", "--account", &r, "--model", "gpt-4o"]).await.expect_code(0);
    assert!(!out.stdout.is_empty());
    let out = cli.run(&["explain", "--account", &r, "--model", "gpt-5"]).await.expect_code(3);
    assert!(out.stdout.contains("allow_models") && out.stdout.contains("acme/research"), "{}", out.stdout);
    let refused = cli.run(&["explain", "--key", &key, "--model", "gpt-5", "--json"]).await.expect_code(3).json();
    assert_eq!((refused["allowed"].clone(), refused["refused_by"].clone()), (json!(false), json!("allow_models")));
    // The key from standard input, so it stays out of the command line.
    let out = cli.run_with_stdin(&["explain", "--key", "-", "--model", "gpt-4o", "--json"], &format!("{key}\n")).await;
    assert_eq!(out.expect_code(0).json()["allowed"], true);
    let out = cli.run(&["explain", "--key-id", "9999", "--model", "gpt-4o"]).await.expect_code(1);
    assert!(out.stderr.contains("404") || out.stderr.contains("not_found"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_through_the_cli() {
    let (gw, api) = admin_gateway().await;
    let cli = Cli::new(&gw.server, gw.server.admin_token());
    let acme = id_of(&api.create_account("acme", None, json!({"allow_models": ["gpt-*"]})).await);
    let lab = id_of(&api.create_account("lab", Some(acme), json!({})).await);
    api.credits(acme, "100000").await;
    api.credits(lab, "10000").await;
    let (_, acme_key) = api.new_key(acme).await;
    let (_, lab_key) = api.new_key(lab).await;
    for (key, model) in [(&acme_key, "gpt-4o"), (&lab_key, "gpt-4o-mini"), (&lab_key, "gpt-4o-mini")] {
        let resp = gw.chat(key, &chat_body(model, "counted")).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let grouped = loop {
        let g = cli.run(&["usage", "--group-by", "model", "--json"]).await.expect_code(0).json();
        if g["total"]["requests"] == 3 {
            break g;
        }
        assert!(tokio::time::Instant::now() < deadline, "usage never showed 3 requests: {g}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(grouped["rows"][0]["model"], "gpt-4o-mini", "cost descending: {grouped}");
    assert_eq!((grouped["rows"][0]["requests"].clone(), grouped["rows"][0]["cost"].clone()), (json!(2), json!("4")));
    // --format json is --json; both are the server's answer.
    let same = cli.run(&["usage", "--group-by", "model", "--format", "json"]).await.expect_code(0).json();
    assert_eq!(same, grouped);

    // CSV: the server's text, verbatim.
    let (from, to) = (utc_date(-1), utc_date(0));
    let csv = cli.run(&["usage", "--group-by", "model", "--from", &from, "--to", &to, "--format", "csv"]).await.ok();
    let api_csv = api.get(&format!("/usage?group_by=model&from={from}&to={to}&format=csv")).await.text();
    assert_eq!(csv, api_csv);
    assert!(csv.starts_with("model,requests,") && csv.contains("\r\ngpt-4o-mini,2,20,10,"), "{csv}");

    // The ranking of acme's children, as a table with a total line.
    let table = cli
        .run(&["usage", "--group-by", "account", "--account", &acme.to_string(), "--rollup", "children", "--top", "1"])
        .await
        .ok();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("account") && lines[0].contains("path"), "{table}");
    assert!(lines[2].contains("acme/lab") && lines[2].trim_end().ends_with('4'), "{table}");
    assert!(lines.last().is_some_and(|l| l.starts_with("total") && l.trim_end().ends_with('4')), "{table}");
    // Records, as before.
    let recs = cli.run(&["usage", "--limit", "2", "--json"]).await.expect_code(0).json();
    assert_eq!(recs["records"].as_array().map(Vec::len), Some(2), "{recs}");
    // Usage errors (exit 2) and the server's 400 (exit 1).
    cli.run(&["usage", "--rollup", "children"]).await.expect_code(2);
    cli.run(&["usage", "--group-by", "model", "--rollup", "children"]).await.expect_code(2);
    cli.run(&["usage", "--group-by", "day", "--from", "2026-13-01"]).await.expect_code(2);
    let out = cli.run(&["usage", "--group-by", "day", "--from", "2026-11-02", "--to", "2026-11-01"]).await;
    let out = out.expect_code(1);
    assert!(out.stderr.contains("`from`") && out.stderr.contains("400"), "{}", out.stderr);
    let out =
        cli.run(&["usage", "--group-by", "model", "--from", "2026-11-02", "--to", "2026-11-01", "--format", "csv"]);
    assert!(out.await.expect_code(1).stderr.contains("400"), "a CSV request's error is still the server's message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pricing_through_the_cli() {
    let (gw, _api) = admin_gateway().await;
    let cli = Cli::new(&gw.server, gw.server.admin_token());
    let set = cli
        .run(&["pricing", "set", "claude-*", "--input", "3", "--output", "15", "--cached-input", "0.3", "--json"])
        .await
        .expect_code(0)
        .json();
    assert_eq!((set["model"].clone(), set["price"]["output"].clone()), (json!("claude-*"), json!("15")), "{set}");
    let table = cli.run(&["pricing", "list"]).await.expect_code(0).ok();
    assert!(table.contains("claude-*") && table.contains("gpt-4o-mini"), "{table}");
    assert!(table.contains("Models without a price: free"), "{table}");
    // Bad input is the server's 400, on stderr with exit 1.
    cli.run(&["pricing", "set", "gpt-4o", "--input=-1", "--output", "1"]).await.expect_code(1);
    let gone = cli.run(&["pricing", "delete", "claude-*", "--json"]).await.expect_code(0).json();
    assert_eq!(gone["price"], Value::Null, "{gone}");
    let list = cli.run(&["pricing", "list", "--json"]).await.expect_code(0).json();
    assert!(list["prices"].get("claude-*").is_none(), "{list}");
    // Enabling an upstream key that is not disabled is harmless; an unknown one is a 404.
    let ok = cli.run(&["providers", "enable-key", "1"]).await.expect_code(0).ok();
    assert!(ok.contains("upstream key 1 enabled"), "{ok}");
    cli.run(&["providers", "enable-key", "999"]).await.expect_code(1);
}

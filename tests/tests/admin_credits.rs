//! Admin API, credits: mint on a root, allocate down and reclaim up the tree as exact decimal strings, refusals that
//! change nothing, the ledger of every movement, and conservation under concurrent transfers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::Method;
use serde_json::{Value, json};
use xai_tests::admin::{admin_gateway, assert_error, expect, id_of, str_of};

/// Parses a decimal credit string into micro-credits (exactly; the API never shows more than 6 places).
fn micros(s: &str) -> i64 {
    let (neg, body) = s.strip_prefix('-').map_or((false, s), |b| (true, b));
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    assert!(frac.len() <= 6, "more than 6 decimal places in {s:?}");
    let int: i64 = int.parse().unwrap_or_else(|e| panic!("not a decimal string {s:?}: {e}"));
    let frac: i64 = format!("{frac:0<6}").parse().unwrap_or_else(|e| panic!("not a decimal string {s:?}: {e}"));
    let v = int * 1_000_000 + frac;
    if neg { -v } else { v }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocate_reclaim_mint_burn_and_the_ledger() {
    let (_gw, api) = admin_gateway().await;
    let acme = id_of(&api.create_account("acme", None, json!({})).await);
    let research = id_of(&api.create_account("research", Some(acme), json!({})).await);
    let nlp = id_of(&api.create_account("nlp", Some(research), json!({})).await);

    // Mint on a root.
    let t = api.credits(acme, "1000").await;
    assert_eq!(t["account"]["balance"], "1000", "{t}");
    assert_eq!(t["parent"], Value::Null, "{t}");
    let e = &t["entry"];
    assert_eq!(
        (e["kind"].clone(), e["from"].clone(), e["to"].clone()),
        (json!("mint"), Value::Null, json!(acme)),
        "{t}"
    );
    assert_eq!(e["amount"], "1000", "{t}");

    // Allocate down: the parent goes down by exactly as much.
    let t = api.credits(research, "100").await;
    assert_eq!((t["account"]["balance"].clone(), t["parent"]["balance"].clone()), (json!("100"), json!("900")), "{t}");
    assert_eq!(t["parent"]["id"], json!(acme), "{t}");
    let e = &t["entry"];
    assert_eq!(
        (e["kind"].clone(), e["from"].clone(), e["to"].clone()),
        (json!("allocate"), json!(acme), json!(research))
    );
    let t = api.credits(research, "12.5").await;
    assert_eq!(
        (t["account"]["balance"].clone(), t["parent"]["balance"].clone()),
        (json!("112.5"), json!("887.5")),
        "{t}"
    );
    assert_eq!(t["entry"]["amount"], "12.5");
    let t = api.credits(nlp, "0.000001").await;
    assert_eq!(
        (t["account"]["balance"].clone(), t["parent"]["balance"].clone()),
        (json!("0.000001"), json!("112.499999"))
    );

    // Negative reclaims back to the parent.
    let t = api.credits(research, "-2.5").await;
    assert_eq!(
        (t["account"]["balance"].clone(), t["parent"]["balance"].clone()),
        (json!("109.999999"), json!("890")),
        "{t}"
    );
    let e = &t["entry"];
    assert_eq!(
        (e["kind"].clone(), e["from"].clone(), e["to"].clone()),
        (json!("reclaim"), json!(research), json!(acme))
    );
    assert_eq!(e["amount"], "2.5", "entries carry positive amounts: {t}");
    api.credits(nlp, "-0.000001").await;
    assert_eq!(api.balance(research).await, "110");
    assert_eq!(api.balance(nlp).await, "0");

    // Burn on a root.
    let t = api.credits(acme, "-10").await;
    assert_eq!((t["account"]["balance"].clone(), t["entry"]["kind"].clone()), (json!("880"), json!("burn")), "{t}");

    let snapshot = api.accounts().await;
    let ledger_len = api.ledger(acme).await["ledger"].as_array().map(Vec::len);

    // Over-allocation, over-reclaim and over-burn: 422, nothing changed.
    for (account, amount, what) in [
        (nlp, "110.000001", "allocate more than the parent has"),
        (research, "880.5", "allocate more than acme has"),
        (research, "-110.000001", "reclaim more than research has"),
        (nlp, "-1", "reclaim from an empty account"),
        (acme, "-880.000001", "burn more than acme has"),
    ] {
        let resp = api.post(&format!("/accounts/{account}/credits"), &json!({"amount": amount})).await;
        assert_error(&resp, 422, "invalid", what);
    }
    // Malformed amounts: 400, nothing changed.
    for body in [
        json!({"amount": "abc"}),
        json!({"amount": "1.0000001"}),
        json!({"amount": 5}),
        json!({"amount": 5.5}),
        json!({"amount": "1e3"}),
        json!({"amount": ""}),
        json!({"amount": "0"}),
        json!({"amount": null}),
        json!({}),
        json!({"amount": "1", "colour": "red"}),
    ] {
        let resp = api.post(&format!("/accounts/{research}/credits"), &body).await;
        assert_error(&resp, 400, "bad_request", &format!("credits {body}"));
    }
    let resp = api.send_raw(Method::POST, &format!("/accounts/{research}/credits"), "{\"amount\":").await;
    assert_error(&resp, 400, "bad_request", "truncated JSON");
    assert_eq!(api.accounts().await, snapshot, "refused transfers changed balances");
    assert_eq!(api.ledger(acme).await["ledger"].as_array().map(Vec::len), ledger_len, "refusals wrote ledger entries");

    // The ledger: every movement touching the account, oldest first.
    let l = api.ledger(acme).await;
    assert_eq!(l["balance"], "880", "{l}");
    let kinds: Vec<(&str, &str)> = l["ledger"]
        .as_array()
        .unwrap_or_else(|| panic!("{l}"))
        .iter()
        .map(|e| (str_of(e, "kind"), str_of(e, "amount")))
        .collect();
    assert_eq!(
        kinds,
        [("mint", "1000"), ("allocate", "100"), ("allocate", "12.5"), ("reclaim", "2.5"), ("burn", "10")],
        "{l}"
    );
    let ids: Vec<u64> = l["ledger"].as_array().into_iter().flatten().map(id_of).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first: {ids:?}");
    for e in l["ledger"].as_array().into_iter().flatten() {
        assert!(e["time"].as_str().is_some_and(|t| t.contains('T')), "entry time: {e}");
    }
    let l = api.ledger(research).await;
    assert_eq!(l["balance"], "110");
    let kinds: Vec<&str> = l["ledger"].as_array().into_iter().flatten().map(|e| str_of(e, "kind")).collect();
    assert_eq!(kinds, ["allocate", "allocate", "allocate", "reclaim", "reclaim"], "{l}");
    let l = api.ledger(nlp).await;
    assert_eq!(l["ledger"].as_array().map(Vec::len), Some(2), "{l}");

    // Notes are kept.
    let resp = api.post(&format!("/accounts/{nlp}/credits"), &json!({"amount": "1", "note": "Q3 budget"})).await;
    assert_eq!(expect(&resp, 200, "with note")["entry"]["note"], "Q3 budget");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_transfers_conserve_credits() {
    let (_gw, api) = admin_gateway().await;
    let root = id_of(&api.create_account("root", None, json!({})).await);
    let a = id_of(&api.create_account("a", Some(root), json!({})).await);
    let b = id_of(&api.create_account("b", Some(root), json!({})).await);
    let a1 = id_of(&api.create_account("a1", Some(a), json!({})).await);
    let a2 = id_of(&api.create_account("a2", Some(a), json!({})).await);
    let b1 = id_of(&api.create_account("b1", Some(b), json!({})).await);
    api.credits(root, "100").await;
    let minted = micros("100");

    // A reader checks every snapshot while the writers run.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (api, stop) = (api.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seen = 0;
            while !stop.load(Ordering::Relaxed) || seen == 0 {
                let accounts = api.accounts().await;
                let balances: Vec<i64> = accounts.iter().map(|x| micros(str_of(x, "balance"))).collect();
                assert!(balances.iter().all(|v| *v >= 0), "a negative balance: {accounts:#?}");
                assert_eq!(balances.iter().sum::<i64>(), minted, "credits not conserved mid-flight: {accounts:#?}");
                seen += 1;
            }
            seen
        })
    };

    // 40 transfers, many of which compete for the same small balances (some must be refused).
    let plan: Vec<(u64, &str)> = (0..40)
        .map(|i| match i % 8 {
            0 => (a, "20"),
            1 => (b, "15.5"),
            2 => (a1, "7.25"),
            3 => (a2, "9"),
            4 => (b1, "6.000001"),
            5 => (a1, "-3"),
            6 => (a, "-4.75"),
            _ => (b1, "-2.5"),
        })
        .collect();
    let mut tasks = Vec::new();
    for (account, amount) in plan {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let resp = api.post(&format!("/accounts/{account}/credits"), &json!({"amount": amount})).await;
            match resp.status.as_u16() {
                200 => true,
                422 => {
                    assert_error(&resp, 422, "invalid", "a competing transfer");
                    false
                }
                other => panic!("transfer {amount} to {account}: unexpected {other}: {}", resp.text()),
            }
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        if t.await.expect("transfer task") {
            accepted += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let snapshots = reader.await.expect("reader task");
    assert!(snapshots > 0);
    assert!(accepted > 0, "no transfer succeeded");
    // The root hands out 177.5 and gets back at most 23.75 of its 100: some allocations must have been refused.
    assert!(accepted < 40, "every transfer was accepted although the root cannot fund them all");

    // Final state: conserved, non-negative, and each balance equals what its ledger says.
    let accounts = api.accounts().await;
    let balances: BTreeMap<u64, i64> = accounts.iter().map(|x| (id_of(x), micros(str_of(x, "balance")))).collect();
    assert_eq!(balances.values().sum::<i64>(), minted, "{accounts:#?}");
    assert!(balances.values().all(|v| *v >= 0), "{accounts:#?}");
    let mut all_entries = BTreeMap::new();
    for (&id, &balance) in &balances {
        let l = api.ledger(id).await;
        assert_eq!(micros(str_of(&l, "balance")), balance, "{l}");
        let mut replay = 0i64;
        for e in l["ledger"].as_array().into_iter().flatten() {
            let amount = micros(str_of(e, "amount"));
            assert!(amount > 0, "{e}");
            if e["to"] == json!(id) {
                replay += amount;
            }
            if e["from"] == json!(id) {
                replay -= amount;
            }
            all_entries.insert(id_of(e), e.clone());
        }
        assert_eq!(replay, balance, "account {id}: the ledger does not add up to the balance: {l}");
    }
    // One mint plus one entry per accepted transfer.
    assert_eq!(all_entries.len(), 1 + accepted, "{all_entries:#?}");
}

//! Budgets: admission holds the upper-bound cost on the paying account's funds and on every daily credit limit
//! of the path, settlement replaces the hold with the real cost, concurrency never overspends.

use std::sync::Arc;
use std::time::SystemTime;

use super::*;
use crate::control::keys::NewKey;
use crate::control::tree::NewAccount;
use crate::ids::RequestId;
use crate::memory::InMemoryMeter;
use crate::policy::Principal;
use crate::protocol::Protocol;
use crate::secret::KeyDigest;
use crate::traits::{AdmitRequest, Meter, PolicyStore, Reservation};
use crate::usage::{RecordStatus, Usage, UsageRecord};

struct Fixture {
    cp: Arc<ControlPlane>,
    inner: Arc<InMemoryMeter>,
    meter: Arc<SpendingMeter>,
}

fn fixture() -> Fixture {
    let cp = Arc::new(ControlPlane::new(Catalog::default()).unwrap());
    let inner = Arc::new(InMemoryMeter::default());
    let meter = Arc::new(SpendingMeter::new(inner.clone(), cp.clone()));
    Fixture { cp, inner, meter }
}

impl Fixture {
    fn account(&self, name: &str, parent: Option<AccountId>, policy: serde_json::Value) -> AccountId {
        let mut v = serde_json::json!({ "name": name, "parent": parent });
        v.as_object_mut().unwrap().extend(policy.as_object().unwrap().clone());
        let new: NewAccount = serde_json::from_value(v).unwrap();
        self.cp.create_account(Scope::Root, new).unwrap().account.id
    }

    fn credit(&self, a: AccountId, micros: i64) {
        self.cp.transfer(Scope::Root, a, Micros(micros), None).unwrap();
    }

    fn principal(&self, a: AccountId) -> Arc<Principal> {
        let k = self.cp.issue_key(Scope::Root, a, NewKey::default()).unwrap();
        match self.cp.store().principal(&KeyDigest::of(&k.key)) {
            crate::traits::Maybe::Ready(Ok(Some(p))) => p,
            other => panic!("{other:?}"),
        }
    }

    fn admit(&self, p: &Principal, cost: i64) -> Result<Reservation, crate::GatewayError> {
        let ask = AdmitRequest {
            principal: p,
            model: "m",
            estimate_tokens: 10,
            resolution: None,
            cost: Micros(cost),
            funds: None,
        };
        futures::executor::block_on(self.meter.admit(&ask).get())
    }

    fn settle(&self, p: &Principal, r: Reservation, cost: i64) {
        self.meter.record(record(p, cost, Usage { prompt_tokens: 5, ..Usage::default() }), r);
    }

    fn balance(&self, a: AccountId) -> i64 {
        self.cp.account(Scope::Root, a).unwrap().account.balance.0
    }
}

/// A settled request of `p` costing `cost`.
fn record(p: &Principal, cost: i64, usage: Usage) -> UsageRecord {
    UsageRecord {
        request_id: RequestId::generate(),
        time: SystemTime::now(),
        account: p.account().id,
        account_path: p.account().path.clone(),
        chain: p.chain_ids.clone(),
        key: p.key.id,
        inbound_protocol: Protocol::OpenAiChat,
        provider: None,
        upstream_key: None,
        requested_model: "m".into(),
        upstream_model: None,
        level: None,
        status: RecordStatus::Ok,
        http_status: 200,
        attempts: vec![],
        latency_ms: 1,
        ttft_ms: None,
        usage,
        cost: Micros(cost),
        estimated: false,
    }
}

#[test]
fn twenty_concurrent_requests_on_funds_for_four_admit_four() {
    let f = Arc::new(fixture());
    let root = f.account("acme", None, serde_json::json!({}));
    f.credit(root, 1_000_000_000);
    let team = f.account("team", Some(root), serde_json::json!({}));
    f.credit(team, 4 * 1000);
    let p = f.principal(team);
    let admitted: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..20).map(|_| s.spawn(|| f.admit(&p, 1000))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let (ok, refused): (Vec<_>, Vec<_>) = admitted.into_iter().partition(|r| r.is_ok());
    assert_eq!(ok.len(), 4, "funds for 4 admit exactly 4");
    let e = refused[0].as_ref().unwrap_err().to_string();
    assert!(e.contains("insufficient credits: account acme/team has 0 available"), "{e}");
    // Each settles below its hold: the balance goes down by what was used and never below zero.
    for r in ok {
        f.settle(&p, r.unwrap(), 700);
    }
    assert_eq!(f.balance(team), 4000 - 4 * 700);
    assert_eq!(f.inner.fund_state(team).held, 0);
    // 1200 left: one more request that may cost 1000, not two.
    let r = f.admit(&p, 1000).unwrap();
    assert!(f.admit(&p, 1000).is_err());
    f.settle(&p, r, 1000);
    assert_eq!(f.balance(team), 200);
    assert_eq!(f.balance(root), 1_000_000_000 - 4000, "the parent's credits are untouched");
}

#[test]
fn an_unfunded_account_draws_on_its_nearest_funded_ancestor() {
    let f = fixture();
    let root = f.account("acme", None, serde_json::json!({}));
    f.credit(root, 2500);
    let dept = f.account("dept", Some(root), serde_json::json!({}));
    let person = f.account("ann", Some(dept), serde_json::json!({}));
    let p = f.principal(person);
    let r1 = f.admit(&p, 1000).unwrap();
    let r2 = f.admit(&p, 1000).unwrap();
    let e = f.admit(&p, 1000).unwrap_err().to_string();
    assert!(e.contains("account acme has 500 available") || e.contains("account acme has 0.0005"), "{e}");
    f.settle(&p, r1, 1000);
    f.settle(&p, r2, 200);
    assert_eq!(f.balance(root), 2500 - 1200);
    assert_eq!((f.balance(dept), f.balance(person)), (0, 0));
    // Funding the person makes it pay for itself, from its own credits only.
    f.credit(dept, 1000);
    f.credit(person, 600);
    let e = f.admit(&p, 1000).unwrap_err().to_string();
    assert!(e.contains("account acme/dept/ann"), "{e}");
    assert!(f.admit(&p, 600).is_ok());
}

#[test]
fn a_path_nobody_funded_is_not_budgeted_and_free_requests_always_pass() {
    let f = fixture();
    let root = f.account("acme", None, serde_json::json!({}));
    let p = f.principal(root);
    for _ in 0..10 {
        let r = f.admit(&p, 1_000_000).unwrap();
        f.settle(&p, r, 1_000_000);
    }
    f.credit(root, 10);
    let p2 = f.principal(root);
    let r = f.admit(&p2, 0).unwrap();
    assert_eq!(r.funder, None, "nothing to hold");
    assert!(f.admit(&p2, 11).is_err());
}

#[test]
fn daily_credit_limits_hold_the_estimate_on_every_ancestor() {
    let f = fixture();
    let root = f.account("acme", None, serde_json::json!({"daily_limit": "0.003"}));
    let a = f.account("a", Some(root), serde_json::json!({}));
    let b = f.account("b", Some(root), serde_json::json!({}));
    let (pa, pb) = (f.principal(a), f.principal(b));
    let r1 = f.admit(&pa, 1000).unwrap();
    let r2 = f.admit(&pb, 1000).unwrap();
    let r3 = f.admit(&pa, 1000).unwrap();
    let e = f.admit(&pb, 1).unwrap_err();
    assert_eq!(e.status(), 429);
    assert!(e.to_string().contains("daily_limit 0.003 credits (0 left"), "{e}");
    assert!(e.to_string().contains("of account acme"), "{e}");
    // Settled below the holds: what was not used is free again.
    f.settle(&pa, r1, 100);
    f.settle(&pb, r2, 100);
    f.settle(&pa, r3, 100);
    for _ in 0..2 {
        let r = f.admit(&pb, 1000).unwrap();
        f.settle(&pb, r, 1000);
    }
    assert!(f.admit(&pa, 701).is_err());
    assert!(f.admit(&pa, 700).is_ok());
}

#[test]
fn a_settlement_the_control_plane_has_not_applied_yet_still_counts() {
    // The meter settles first, the control plane is told later (the order a slow charge could produce): the
    // funds view must not double the money in between.
    let f = fixture();
    let root = f.account("acme", None, serde_json::json!({}));
    f.credit(root, 2000);
    let p = f.principal(root);
    let r = f.admit(&p, 1000).unwrap();
    let funds = f.cp.funds(&p.chain_ids).unwrap();
    f.inner.record(record(&p, 1000, Usage::default()), r);
    // The control plane still says 2000, but 1000 of it is settled: only 1000 may be held.
    let ask = |cost| AdmitRequest {
        principal: &p,
        model: "m",
        estimate_tokens: 1,
        resolution: None,
        cost: Micros(cost),
        funds: Some(funds),
    };
    assert!(futures::executor::block_on(f.inner.admit(&ask(1001)).get()).is_err());
    assert!(futures::executor::block_on(f.inner.admit(&ask(1000)).get()).is_ok());
}

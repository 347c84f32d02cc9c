//! Property tests of the governance semantics (DESIGN §4): a child is never served what its parent refuses,
//! effective bounds only tighten down the tree, the narrowing check is sound, credits are conserved under
//! concurrent transfers, and aggregate limits hold over a subtree.
//!
//! Trees are drawn from small vocabularies (model globs, mapper targets, levels 1-3, a few networks and endpoint
//! resources) so that policies overlap often, and are built two ways: through [`ControlPlane`] (writes that
//! widen are refused; only accepted accounts and keys remain, then random updates and moves are applied) and
//! directly as a [`Catalog`] (no write check at all), which is what narrowing *on read* must cope with.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use super::{AccountPatch, AdminError, ControlPlane, EntryKind, NewAccount, NewKey, Scope};
use crate::error::GatewayError;
use crate::ids::{AccountId, KeyId, Level, ProviderId, RequestId};
use crate::layers::{ClientAddr, acl};
use crate::memory::{Catalog, InMemoryMeter, InMemoryPolicyStore};
use crate::money::Micros;
use crate::policy::wire::{OrderedMap, PolicyPatch};
use crate::policy::{
    Account, EffectivePolicy, Limits, ModelPattern, ModelResolution, Policy, Principal, Role, Source, Status,
    VirtualKey, check_narrowing, effective_of,
};
use crate::protocol::{Endpoint, EndpointKind, Protocol};
use crate::routing::{Provider, RoutePlan, RouteTable};
use crate::secret::KeyDigest;
use crate::traits::{AdmitRequest, LimitNode, Maybe, Meter, PolicyStore, Reservation};
use crate::usage::{RecordStatus, Usage, UsageRecord};

// ---------------------------------------------------------------------------------------------------------------
// Vocabularies and generators
// ---------------------------------------------------------------------------------------------------------------

/// Model globs of policies: every shape `ModelPattern` has (any, exact, prefix, general glob).
const GLOBS: &[&str] = &["*", "gpt-*", "gpt-4o*", "gpt-4o-mini", "gpt-4o", "claude-*", "claude-3-opus", "o[13]*"];
/// Model names of requests and mapper targets.
const NAMES: &[&str] = &[
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-5",
    "gpt-3.5-turbo",
    "claude-3-opus",
    "claude-sonnet-4",
    "o1",
    "o3-mini",
    "o4-mini",
    "gemini-pro",
];
/// What providers serve.
const SERVED: &[&str] = &["*", "gpt-*", "claude-*", "o[13]*", "gpt-4o", "gpt-5", "gemini-pro"];
const NETS: &[&str] = &["10.0.0.0/8", "10.1.0.0/16", "192.168.0.0/16", "::1/128", "0.0.0.0/0"];
const IPS: &[Option<&str>] =
    &[None, Some("10.1.2.3"), Some("10.1.2.3"), Some("10.2.0.1"), Some("192.168.1.1"), Some("::1"), Some("8.8.8.8")];
const RESOURCES: &[&str] = &["chat", "responses", "messages", "count_tokens", "generate", "models", "embeddings", "*"];
const KINDS: &[EndpointKind] = &[
    EndpointKind::ChatCompletions,
    EndpointKind::Responses,
    EndpointKind::Messages,
    EndpointKind::CountTokens,
    EndpointKind::GenerateContent,
    EndpointKind::GeminiCountTokens,
    EndpointKind::Models,
    EndpointKind::Embeddings,
];

fn pat(s: &str) -> ModelPattern {
    ModelPattern::new(s).expect("valid glob")
}

fn pattern() -> impl Strategy<Value = ModelPattern> {
    prop::sample::select(GLOBS).prop_map(pat)
}

/// A model name: mostly the vocabulary, sometimes an arbitrary name of the same families.
fn model_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(NAMES).prop_map(String::from),
        1 => "(gpt-|claude-|o|gemini-)[0-9a-z.-]{0,6}",
    ]
}

/// A random policy; every field is often unset so that trees accept many of them.
fn policy() -> impl Strategy<Value = Policy> {
    let allow = prop::option::weighted(0.35, prop::collection::vec(pattern(), 1..=2));
    let mapper = prop_oneof![
        3 => Just(Vec::new()),
        1 => prop::collection::vec((pattern(), prop::sample::select(NAMES)), 1..=2),
    ];
    let level_mapper = prop_oneof![
        3 => Just(Vec::new()),
        1 => prop::collection::vec((pattern(), 1u32..=3), 1..=2),
    ];
    let level = prop::option::weighted(0.35, 1u32..=3);
    let ips = prop::option::weighted(0.15, prop::collection::vec(prop::sample::select(NETS), 1..=2));
    let resources = prop::option::weighted(0.15, prop::sample::subsequence(RESOURCES, 2..=6));
    let n = || prop::option::weighted(0.3, 1u64..=40);
    let t = || prop::option::weighted(0.25, 100u64..=8000);
    let limits = (n(), n(), t(), t(), prop::option::weighted(0.2, 1i64..=5_000_000));
    let model_limits = prop_oneof![4 => Just(Vec::new()), 1 => prop::collection::vec((pattern(), 1u64..=5), 1..=1)];
    (allow, mapper, level_mapper, level, ips, resources, limits, model_limits).prop_map(
        |(allow, mapper, level_mapper, level, ips, resources, (rpm, rpd, tpm, tpd, daily), model_limits)| Policy {
            allow_models: allow,
            model_mapper: mapper.into_iter().map(|(g, to)| (g, Arc::from(to))).collect(),
            level_mapper: level_mapper.into_iter().map(|(g, l)| (g, Level(l))).collect(),
            level: level.map(Level),
            allow_ips: ips.map(|v| v.into_iter().map(|n| n.parse().expect("valid network")).collect()),
            resources: resources.map(|v| v.into_iter().map(String::from).collect()),
            rpm,
            rpd,
            tpm,
            tpd,
            daily_limit: daily.map(Micros),
            model_limits: model_limits
                .into_iter()
                .map(|(g, rpm)| (g, Limits { rpm: Some(rpm), ..Limits::default() }))
                .collect(),
        },
    )
}

/// One account of a generated tree.
#[derive(Debug, Clone)]
struct Node {
    /// Index of the parent (ignored for node 0, the root).
    parent: usize,
    policy: Policy,
    disabled: bool,
    /// A second key of this account carrying its own (narrower) policy.
    key_policy: Option<Policy>,
}

/// A tree of 1..=max accounts, depth at most 5.
fn tree(max: usize) -> impl Strategy<Value = Vec<Node>> {
    prop::collection::vec(
        (any::<Index>(), policy(), prop::bool::weighted(0.03), prop::option::weighted(0.35, policy())),
        1..=max,
    )
    .prop_map(|raw| {
        let mut depth: Vec<usize> = Vec::with_capacity(raw.len());
        raw.into_iter()
            .enumerate()
            .map(|(i, (ix, policy, disabled, key_policy))| {
                let parent = if i == 0 {
                    0
                } else {
                    let eligible: Vec<usize> = (0..i).filter(|&j| depth[j] < 5).collect();
                    eligible[ix.index(eligible.len())]
                };
                depth.push(if i == 0 { 1 } else { depth[parent] + 1 });
                Node { parent, policy, disabled, key_policy }
            })
            .collect()
    })
}

/// Providers per level 1..=3 (what each serves) and the switch-over of each level.
#[derive(Debug, Clone)]
struct Topology {
    serves: Vec<Vec<&'static str>>,
    switch_over: Vec<Option<u32>>,
}

fn topology() -> impl Strategy<Value = Topology> {
    (
        prop::collection::vec(prop::collection::vec(prop::sample::select(SERVED), 0..=3), 3).prop_map(|mut v| {
            // Most topologies serve every model somewhere.
            if v[0].len() % 3 != 2 {
                v[0].push("*");
            }
            v
        }),
        prop::collection::vec(prop::option::weighted(0.4, 1u32..=3), 3),
    )
        .prop_map(|(serves, switch_over)| Topology { serves, switch_over })
}

impl Topology {
    fn parts(&self) -> (Vec<Arc<Provider>>, HashMap<Level, Level>) {
        let providers = self
            .serves
            .iter()
            .enumerate()
            .filter(|(_, m)| !m.is_empty())
            .map(|(i, m)| {
                Arc::new(Provider {
                    id: ProviderId(i as u32 + 1),
                    name: format!("p{}", i + 1).into(),
                    protocol: Protocol::OpenAiChat,
                    base_url: "http://upstream.test/v1".into(),
                    models: m.iter().map(|g| pat(g)).collect(),
                    level: Level(i as u32 + 1),
                    keys: vec![],
                })
            })
            .collect();
        let switch_over = self
            .switch_over
            .iter()
            .enumerate()
            .filter_map(|(i, to)| to.map(|to| (Level(i as u32 + 1), Level(to))))
            .collect();
        (providers, switch_over)
    }
}

/// A request: model, endpoint and client address.
#[derive(Debug, Clone)]
struct Req {
    model: String,
    kind: EndpointKind,
    ip: Option<&'static str>,
}

fn request() -> impl Strategy<Value = Req> {
    (model_name(), prop::sample::select(KINDS), prop::sample::select(IPS)).prop_map(|(model, kind, ip)| Req {
        model,
        kind,
        ip,
    })
}

impl Req {
    fn endpoint(&self) -> Endpoint {
        Endpoint { kind: self.kind, protocol: Protocol::OpenAiChat, path_model: None, sse: false }
    }

    fn client(&self) -> Option<ClientAddr> {
        self.ip.map(|ip| ClientAddr(SocketAddr::new(ip.parse().expect("valid address"), 40_000)))
    }
}

/// The JSON-less admin form of a policy: every field given, so the stored policy equals `p`.
fn patch_of(p: &Policy) -> PolicyPatch {
    PolicyPatch {
        allow_models: Some(p.allow_models.clone()),
        model_mapper: Some(Some(OrderedMap(
            p.model_mapper.iter().map(|(g, to)| (g.clone(), to.to_string())).collect(),
        ))),
        level_mapper: Some(Some(OrderedMap(p.level_mapper.iter().map(|(g, l)| (g.clone(), l.0)).collect()))),
        level: Some(p.level.map(|l| l.0)),
        allow_ips: Some(p.allow_ips.clone()),
        resources: Some(p.resources.clone()),
        rpm: Some(p.rpm),
        rpd: Some(p.rpd),
        tpm: Some(p.tpm),
        tpd: Some(p.tpd),
        daily_limit: Some(p.daily_limit),
        model_limits: Some(Some(OrderedMap(p.model_limits.clone()))),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Worlds: a tree with keys, as the request path sees it
// ---------------------------------------------------------------------------------------------------------------

struct World {
    table: Arc<RouteTable>,
    /// (child, parent): an account's plain key and its parent account's plain key, or a key with its own policy
    /// and its account's plain key. The child's own policy is the first of its walk.
    pairs: Vec<(Arc<Principal>, Arc<Principal>)>,
    /// Every principal (for the monotonicity checks).
    principals: Vec<Arc<Principal>>,
}

fn principal_of(store: &InMemoryPolicyStore, digest: &KeyDigest) -> Arc<Principal> {
    match store.principal(digest) {
        Maybe::Ready(Ok(Some(p))) => p,
        other => panic!("key not found in the store: {other:?}"),
    }
}

/// Every account's plain key, plus the keys carrying their own policies, paired with their parents.
fn world_from(
    store: &InMemoryPolicyStore,
    plain: &BTreeMap<AccountId, KeyDigest>,
    narrow: &[(AccountId, KeyDigest)],
) -> World {
    let by_account: BTreeMap<AccountId, Arc<Principal>> =
        plain.iter().map(|(a, d)| (*a, principal_of(store, d))).collect();
    let mut pairs = Vec::new();
    for p in by_account.values() {
        if let Some(parent) = p.account().parent {
            pairs.push((p.clone(), by_account[&parent].clone()));
        }
    }
    let mut principals: Vec<Arc<Principal>> = by_account.values().cloned().collect();
    for (a, d) in narrow {
        let k = principal_of(store, d);
        pairs.push((k.clone(), by_account[a].clone()));
        principals.push(k);
    }
    World { table: store.route_table(), pairs, principals }
}

/// The tree as a catalog, with no write check at all.
fn build_direct(nodes: &[Node], topo: &Topology) -> World {
    let id = |i: usize| AccountId(i as u64 + 1);
    let accounts = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| Account {
            id: id(i),
            parent: (i > 0).then(|| id(n.parent)),
            name: format!("n{i}").into(),
            path: format!("n{i}").into(),
            status: if n.disabled { Status::Disabled } else { Status::Active },
            role: Role::Member,
            policy: n.policy.clone(),
            balance: Micros::ZERO,
        })
        .collect();
    let key = |i: usize, tag: &str, account: AccountId, policy: Option<Policy>| VirtualKey {
        id: KeyId(i as u64),
        account,
        prefix: format!("xai-{tag}").into(),
        digest: KeyDigest::of(tag),
        status: Status::Active,
        expires_at: None,
        policy,
    };
    let mut keys = Vec::new();
    let mut plain = BTreeMap::new();
    let mut narrow = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let tag = format!("plain-{i}");
        keys.push(key(2 * i + 1, &tag, id(i), None));
        plain.insert(id(i), KeyDigest::of(&tag));
        if let Some(kp) = &n.key_policy {
            let tag = format!("narrow-{i}");
            keys.push(key(2 * i + 2, &tag, id(i), Some(kp.clone())));
            narrow.push((id(i), KeyDigest::of(&tag)));
        }
    }
    let (providers, switch_over) = topo.parts();
    let store = InMemoryPolicyStore::new(Catalog { accounts, keys, providers, switch_over, ..Catalog::default() })
        .expect("a generated tree is a valid catalog");
    world_from(&store, &plain, &narrow)
}

/// An admin change after the tree is built.
#[derive(Debug, Clone)]
enum Op {
    /// Replace the whole policy of an account.
    Patch(Index, Policy),
    /// Move an account under another.
    Move(Index, Index),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (any::<Index>(), policy()).prop_map(|(i, p)| Op::Patch(i, p)),
        (any::<Index>(), any::<Index>()).prop_map(|(i, j)| Op::Move(i, j)),
    ]
}

#[derive(Debug, Default)]
struct BuildStats {
    accounts_tried: usize,
    accounts_refused: usize,
    keys_refused: usize,
}

/// The tree through the admin API: widening writes are refused (and must be refused exactly when
/// `check_narrowing` says so); refused accounts' children go under their nearest accepted ancestor.
fn build_checked(nodes: &[Node], topo: &Topology, ops: &[Op], stats: &mut BuildStats) -> World {
    let (providers, switch_over) = topo.parts();
    let cp = ControlPlane::new(Catalog { providers, switch_over, ..Catalog::default() }).expect("empty catalog");
    let mut ids: Vec<Option<AccountId>> = Vec::with_capacity(nodes.len());
    for (i, n) in nodes.iter().enumerate() {
        let parent = (i > 0).then(|| {
            let mut j = n.parent;
            loop {
                if let Some(id) = ids[j] {
                    break id;
                }
                j = nodes[j].parent;
            }
        });
        let expected = cp.read(|st| check_narrowing(&n.policy, &st.inherited(parent)));
        stats.accounts_tried += 1;
        let created = cp.create_account(
            Scope::Root,
            NewAccount {
                name: format!("n{i}"),
                parent,
                role: Role::Member,
                status: if n.disabled { Status::Disabled } else { Status::Active },
                policy: patch_of(&n.policy),
            },
        );
        match created {
            Ok(v) => {
                assert!(expected.is_ok(), "created although check_narrowing refuses: {expected:?}");
                assert_eq!(v.account.policy, n.policy, "the stored policy is the one written");
                ids.push(Some(v.account.id));
            }
            Err(AdminError::Widening(msg)) => {
                let w = expected.expect_err("refused although check_narrowing accepts");
                assert_eq!(msg, w.to_string());
                stats.accounts_refused += 1;
                ids.push(None);
            }
            Err(e) => panic!("unexpected refusal of node {i}: {e}"),
        }
    }
    let accepted: Vec<AccountId> = ids.iter().flatten().copied().collect();
    let mut plain = BTreeMap::new();
    let mut narrow = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let Some(id) = ids[i] else { continue };
        let k = cp.issue_key(Scope::Root, id, NewKey::default()).expect("a plain key is always issued");
        plain.insert(id, KeyDigest::of(&k.key));
        if let Some(kp) = &n.key_policy {
            let new = NewKey { policy: patch_of(kp), ..NewKey::default() };
            match cp.issue_key(Scope::Root, id, new) {
                Ok(k) => narrow.push((id, KeyDigest::of(&k.key))),
                Err(AdminError::Widening(_)) => stats.keys_refused += 1,
                Err(e) => panic!("unexpected key refusal: {e}"),
            }
        }
    }
    for op in ops {
        let r = match op {
            Op::Patch(i, p) => {
                let patch = AccountPatch { policy: patch_of(p), ..AccountPatch::default() };
                cp.update_account(Scope::Root, *i.get(&accepted), patch)
            }
            Op::Move(i, j) => {
                let patch = AccountPatch { parent: Some(Some(*j.get(&accepted))), ..AccountPatch::default() };
                cp.update_account(Scope::Root, *i.get(&accepted), patch)
            }
        };
        match r {
            Ok(_) | Err(AdminError::Widening(_) | AdminError::Invalid(_)) => {}
            Err(e) => panic!("unexpected update refusal: {e}"),
        }
    }
    world_from(&cp.store(), &plain, &narrow)
}

// ---------------------------------------------------------------------------------------------------------------
// The read path
// ---------------------------------------------------------------------------------------------------------------

/// acl, then the walk, then the plan: what the request path decides before admission.
fn served(p: &Principal, table: &RouteTable, r: &Req) -> Result<(Arc<ModelResolution>, RoutePlan), String> {
    acl::check(p, &r.endpoint(), r.client(), SystemTime::now()).map_err(|e| e.to_string())?;
    let res = p.resolve_model(&r.model).map_err(|e| e.message)?;
    let plan = table.plan(&res).map_err(|e| format!("{e:?}"))?;
    Ok((res, plan))
}

/// The name a policy hands on to its parent.
fn forward(p: &Policy, name: &str) -> String {
    p.model_mapper.iter().find(|(g, _)| g.matches(name)).map_or_else(|| name.to_string(), |(_, to)| to.to_string())
}

/// The primary level `RouteTable::plan` chose: the resolved level, else the lowest allowed level serving it.
fn primary(table: &RouteTable, r: &ModelResolution) -> Option<Level> {
    r.level.or_else(|| table.levels_serving(&r.upstream_model).iter().copied().find(|&l| r.level_allowed(l)))
}

/// `a ⊆ b` for level sets where `None` is "unrestricted".
fn levels_within(a: &Option<Vec<Level>>, b: &Option<Vec<Level>>) -> bool {
    match (a, b) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(a), Some(b)) => a.iter().all(|l| b.contains(l)),
    }
}

/// A policy's set fields as compact JSON.
fn compact(p: &Policy) -> String {
    let mut m = crate::policy::wire::policy_json(p);
    m.retain(|_, v| !(v.is_null() || v.as_object().is_some_and(serde_json::Map::is_empty)));
    serde_json::Value::Object(m).to_string()
}

fn describe(p: &Principal) -> String {
    let mut s = String::new();
    for (owner, pol) in p.policies() {
        s.push_str(&format!("\n  {owner}: {}", compact(pol)));
    }
    s
}

#[derive(Debug, Default)]
struct ServeStats {
    checked: usize,
    served: usize,
    /// The parent's own full read path refuses the forwarded name, for its own level choice (see below).
    parent_plan_refused: usize,
    /// The first level the plan tries is outside the caller's level set (the primary did not serve the model).
    first_level_outside: usize,
    /// Assert that the first level tried is one the caller may use.
    strict: bool,
    refusals: BTreeMap<String, usize>,
}

/// Property 1 for one (child, parent) pair and one request.
fn child_within_parent(
    w: &World,
    child: &Principal,
    parent: &Principal,
    req: &Req,
    stats: &mut ServeStats,
) -> Result<(), TestCaseError> {
    stats.checked += 1;
    let (rc, plan) = match served(child, &w.table, req) {
        Ok(x) => x,
        Err(e) => {
            let key = e.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
            *stats.refusals.entry(key.chars().filter(|c| !c.is_ascii_digit()).collect()).or_default() += 1;
            return Ok(());
        }
    };
    stats.served += 1;
    let own = child.policies().next().expect("a principal has at least its account's policy").1;
    let fwd = forward(own, &req.model);
    let ctx =
        || format!("request {req:?} forwarded as {fwd:?}\nchild:{}\nparent:{}", describe(child), describe(parent));
    let acl_parent = acl::check(parent, &req.endpoint(), req.client(), SystemTime::now());
    prop_assert!(acl_parent.is_ok(), "parent refuses at acl ({:?}) what the child is served: {}", acl_parent, ctx());
    let rp = parent.resolve_model(&fwd);
    prop_assert!(rp.is_ok(), "parent's walk refuses ({:?}) what the child is served: {}", rp, ctx());
    let rp = rp.expect("checked");
    prop_assert_eq!(&rp.upstream_model, &rc.upstream_model, "same upstream model: {}", ctx());
    prop_assert!(
        levels_within(&rc.allowed_levels, &rp.allowed_levels),
        "child's levels {:?} not within the parent's {:?}: {}",
        rc.allowed_levels,
        rp.allowed_levels,
        ctx()
    );
    let prim = primary(&w.table, &rc).expect("a plan has a primary level");
    prop_assert!(rc.level_allowed(prim), "primary {prim} outside the child's levels: {}", ctx());
    prop_assert!(
        rp.level_allowed(prim),
        "primary {prim} outside the parent's levels {:?}: {}",
        rp.allowed_levels,
        ctx()
    );
    // Stricter readings, counted (and asserted in the strict variants, which are ignored: see the report).
    let parent_plan = w.table.plan(&rp);
    if parent_plan.is_err() {
        stats.parent_plan_refused += 1;
    }
    if !rc.level_allowed(plan.levels[0]) {
        stats.first_level_outside += 1;
    }
    if stats.strict {
        prop_assert!(
            rc.level_allowed(plan.levels[0]),
            "first level tried {:?} is outside the child's levels {:?}: {}",
            plan.levels,
            rc.allowed_levels,
            ctx()
        );
    }
    Ok(())
}

fn run(cases: u32) -> TestRunner {
    TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() })
}

// ---------------------------------------------------------------------------------------------------------------
// Property 1: a child is never served what its parent would refuse
// ---------------------------------------------------------------------------------------------------------------

fn property_1(checked: bool, cases: u32, strict: bool) -> ServeStats {
    let stats = std::cell::RefCell::new(ServeStats::default());
    let build = std::cell::RefCell::new(BuildStats::default());
    let strategy = (tree(12), topology(), prop::collection::vec(op(), 0..=3), prop::collection::vec(request(), 24));
    run(cases)
        .run(&strategy, |(nodes, topo, ops, reqs)| {
            let w = if checked {
                build_checked(&nodes, &topo, &ops, &mut build.borrow_mut())
            } else {
                build_direct(&nodes, &topo)
            };
            let mut s = ServeStats { strict, ..ServeStats::default() };
            for (child, parent) in &w.pairs {
                for r in &reqs {
                    child_within_parent(&w, child, parent, r, &mut s)?;
                }
            }
            let mut all = stats.borrow_mut();
            all.checked += s.checked;
            all.served += s.served;
            all.parent_plan_refused += s.parent_plan_refused;
            all.first_level_outside += s.first_level_outside;
            for (k, v) in s.refusals {
                *all.refusals.entry(k).or_default() += v;
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let b = build.into_inner();
    if checked {
        assert!(
            b.accounts_refused > 0 && b.accounts_refused < b.accounts_tried,
            "writes both accepted and refused: {b:?}"
        );
    }
    let s = stats.into_inner();
    eprintln!("property 1 ({}): {s:?} {b:?}", if checked { "admin API" } else { "catalog" });
    s
}

#[test]
fn child_is_never_served_what_its_parent_refuses_admin_api() {
    let s = property_1(true, 128, false);
    assert!(s.served * 10 > s.checked, "too few served requests to be meaningful: {s:?}");
}

#[test]
fn child_is_never_served_what_its_parent_refuses_on_read() {
    let s = property_1(false, 128, false);
    assert!(s.served * 20 > s.checked, "too few served requests to be meaningful: {s:?}");
}

#[test]
#[ignore = "finding F2 (see switch_over_level_serves_without_any_failure): strict reading of property 1"]
fn strict_first_level_tried_is_the_callers() {
    property_1(true, 512, true);
}

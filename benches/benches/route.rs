//! Criterion benchmark of the route step: model resolution along the account path (allowlists
//! and `model_mapper` rules, caller first, up to the root), then the route plan (levels serving
//! the model, the caller's level, the switch-over chain).
//!
//! The step is `xai_core::layers::route::plan`, what the route layer runs per request.
//!
//! - `route/warm`: what nearly every request pays: the exact-match cache in front of the
//!   wildcard rules answers, then the plan (target: well under 2 µs).
//! - `route/cold`: a principal's first request for a model name: the walk over every allowlist
//!   and mapper rule on the path, the cache insert, the plan.
//! - `route/cold_glob`: the same for a name that needs the glob engine on two levels.
//! - `route/warm_refused`: a cached refusal (a model the path does not allow).
//! - `route_parts/*`: the resolution (cached, uncached) and the plan alone.
//!
//!   cargo bench -p xai-benches --bench route

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use xai_core::layers::route;
use xai_core::{
    Account, AccountId, KeyDigest, KeyId, Level, Micros, ModelPattern, Policy, Principal, Protocol, Provider,
    ProviderId, Role, RouteTable, Status, VirtualKey,
};

fn pats(v: &[&str]) -> Option<Vec<ModelPattern>> {
    Some(v.iter().map(|s| ModelPattern::new(s).expect("pattern")).collect())
}

fn mapper(rules: &[(&str, &str)]) -> Vec<(ModelPattern, Arc<str>)> {
    rules.iter().map(|(g, to)| (ModelPattern::new(g).expect("pattern"), Arc::from(*to))).collect()
}

fn account(id: u64, path: &str, role: Role, policy: Policy) -> Arc<Account> {
    Arc::new(Account {
        id: AccountId(id),
        parent: (id > 1).then(|| AccountId(id - 1)),
        name: path.rsplit('/').next().unwrap_or(path).into(),
        path: path.into(),
        status: Status::Active,
        role,
        policy,
        balance: Micros::ZERO,
    })
}

/// A three-level tree (company / department / person) with realistic rules: wildcard
/// allowlists on every level, mapper rules at the root and the person, level mapping.
fn principal() -> Principal {
    let root = account(
        1,
        "acme",
        Role::Owner,
        Policy {
            allow_models: pats(&["*"]),
            model_mapper: mapper(&[
                ("o1*", "o3-mini"),
                ("gpt-4-*", "gpt-4o"),
                ("claude-2*", "claude-3-5-sonnet"),
                ("gpt-3.5*", "gpt-4o-mini"),
            ]),
            level: Some(Level(1)),
            level_mapper: vec![
                (ModelPattern::new("claude-*").expect("pattern"), Level(2)),
                (ModelPattern::new("gemini-*").expect("pattern"), Level(3)),
            ],
            rpm: Some(6000),
            ..Policy::default()
        },
    );
    let dept = account(
        2,
        "acme/research",
        Role::Admin,
        Policy {
            allow_models: pats(&["gpt-4o*", "gpt-3.5*", "claude-*", "o[13]*"]),
            rpm: Some(600),
            ..Policy::default()
        },
    );
    let person = account(
        3,
        "acme/research/alice",
        Role::Member,
        Policy {
            allow_models: pats(&["gpt-*", "claude-*-sonnet", "o1*"]),
            model_mapper: mapper(&[("gpt-4-turbo*", "gpt-4o"), ("gpt-35*", "gpt-3.5-turbo")]),
            ..Policy::default()
        },
    );
    let key = Arc::new(VirtualKey {
        id: KeyId(7),
        account: person.id,
        prefix: "xai-bench".into(),
        digest: KeyDigest::of("sk-bench"),
        status: Status::Active,
        expires_at: None,
        policy: None,
    });
    Principal::new(key, vec![root, dept, person])
}

fn provider(id: u32, level: u32, models: &[&str]) -> Arc<Provider> {
    Arc::new(Provider {
        id: ProviderId(id),
        name: format!("p{id}").into(),
        protocol: Protocol::OpenAiChat,
        base_url: "http://127.0.0.1:1/v1".into(),
        models: models.iter().map(|m| ModelPattern::new(m).expect("pattern")).collect(),
        level: Level(level),
        keys: vec![],
    })
}

fn table() -> RouteTable {
    RouteTable::new(
        vec![
            provider(1, 1, &["gpt-*", "o*"]),
            provider(2, 2, &["claude-*"]),
            provider(3, 2, &["gpt-*"]),
            provider(4, 3, &["gemini-*"]),
        ],
        HashMap::from([(Level(1), Level(2))]),
    )
}

/// A principal like `p` with an empty resolution cache.
fn fresh(p: &Principal) -> Principal {
    Principal::new(p.key.clone(), p.chain.to_vec())
}

fn bench_route(c: &mut Criterion) {
    let p = principal();
    let t = table();
    // The request: mapped by the root's last rule, allowed on every level, switch-over 1 -> 2.
    let model = "gpt-3.5-turbo";
    let (_, plan) = route::plan(&p, &t, model).expect("plan");
    assert_eq!(&*plan.upstream_model, "gpt-4o-mini");
    assert_eq!(plan.levels, vec![Level(1), Level(2)]);
    assert!(route::plan(&p, &t, "gemini-pro").is_err());
    let glob = t.plan(&p.resolve_uncached("o1-mini").expect("allowed")).expect("plan");
    assert_eq!((&*glob.upstream_model, glob.levels.as_slice()), ("o3-mini", &[Level(1)][..]));

    let mut g = c.benchmark_group("route");
    // The route layer's step: the principal's exact-match cache answers, then the plan.
    g.bench_function("warm", |b| b.iter(|| route::plan(&p, &t, black_box(model)).expect("plan")));
    // The first request of a principal for this name: the walk, the cache insert, the plan.
    g.bench_function("cold", |b| {
        b.iter_batched_ref(
            || fresh(&p),
            |fresh| route::plan(fresh, &t, black_box(model)).expect("plan"),
            BatchSize::SmallInput,
        )
    });
    // The same for a name that goes through the glob engine (`claude-*-sonnet`, `o[13]*`).
    g.bench_function("cold_glob", |b| {
        b.iter_batched_ref(
            || fresh(&p),
            |fresh| route::plan(fresh, &t, black_box("o1-mini")).expect("plan"),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("warm_refused", |b| b.iter(|| route::plan(&p, &t, black_box("gemini-pro")).is_err()));
    g.finish();

    let mut g = c.benchmark_group("route_parts");
    g.bench_function("resolve_warm", |b| b.iter(|| p.resolve_model(black_box(model)).expect("allowed")));
    g.bench_function("resolve_cold", |b| b.iter(|| p.resolve_uncached(black_box(model)).expect("allowed")));
    let r = p.resolve_model(model).expect("allowed");
    g.bench_function("plan", |b| b.iter(|| t.plan(black_box(&r)).expect("plan")));
    g.finish();
}

/// A 10-deep path (company → … → person), every account with an allowlist, a mapper rule and an rpm bound.
fn deep_principal(depth: u64) -> Principal {
    let chain: Vec<Arc<Account>> = (1..=depth)
        .map(|i| {
            let path = (1..=i).map(|j| format!("a{j}")).collect::<Vec<_>>().join("/");
            account(
                i,
                &path,
                Role::Member,
                Policy {
                    allow_models: pats(&["gpt-*", "alias-*"]),
                    model_mapper: mapper(&[(&format!("alias-{i}"), "gpt-4o-mini")]),
                    rpm: Some(10_000 - i),
                    ..Policy::default()
                },
            )
        })
        .collect();
    let key = Arc::new(xai_core::policy::VirtualKey {
        id: xai_core::KeyId(1),
        account: AccountId(depth),
        prefix: "xai-bench".into(),
        digest: xai_core::KeyDigest::of("bench"),
        status: Status::Active,
        expires_at: None,
        policy: None,
    });
    Principal::new(key, chain)
}

fn bench_deep(c: &mut Criterion) {
    let p = deep_principal(10);
    let t = table();
    // `alias-3` is rewritten three accounts below the root, then checked by every account above.
    let (_, plan) = route::plan(&p, &t, "alias-3").expect("plan");
    assert_eq!(&*plan.upstream_model, "gpt-4o-mini");
    let mut g = c.benchmark_group("deep10");
    g.bench_function("route_warm", |b| b.iter(|| route::plan(&p, &t, black_box("alias-3")).expect("plan")));
    g.bench_function("route_cold", |b| {
        b.iter_batched_ref(
            || fresh(&p),
            |fresh| route::plan(fresh, &t, black_box("alias-3")).expect("plan"),
            BatchSize::SmallInput,
        )
    });
    // The effective policy (every bound with its source), as the admin API computes it.
    g.bench_function("effective", |b| b.iter(|| xai_core::policy::effective_of(black_box(&p.chain))));
    g.finish();
}

criterion_group!(benches, bench_route, bench_deep);
criterion_main!(benches);

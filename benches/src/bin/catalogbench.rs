//! The catalog's read path (issue 4 item 4): how long an instance takes the catalog again after another instance's
//! change, from the database alone and through the Redis tier (memory → Redis → database), for a tree of a given
//! size, on the embedded SQLite and on Postgres.
//!
//! The tree: one company, `--departments` departments, `--people` people spread over them, `--keys-per-person`
//! virtual keys each, every account with a policy, and three providers with sealed upstream keys. Each cell is one
//! `SqlStore::load_live` (what the change feed runs): `database` without a tier; `redis` with the tier holding
//! the database's current version (the common case for every instance after the first). Rounds alternate the order;
//! the table shows medians and the ratio redis ÷ database of the same round. Postgres or Redis unreachable: that
//! arm is skipped with a message.
//!
//!   cargo run --release -p xai-benches --bin catalogbench -- --people 10000

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use clap::Parser;
use xai_benches::scratch::{ScratchDb, median, rand_u32};
use xai_core::ids::{AccountId, KeyId, Level, ProviderId, UpstreamKeyId};
use xai_core::money::Micros;
use xai_core::policy::wire::PolicyPatch;
use xai_core::policy::{Account, ModelPattern, Policy, Role, Status, VirtualKey};
use xai_core::protocol::Protocol;
use xai_core::routing::{Provider, UpstreamKey};
use xai_core::secret::{KeyDigest, Secret};
use xai_store::catalog_cache::CatalogCache;
use xai_store::secrets::MasterKey;
use xai_store::sql::{CatalogSource, Change, SqlStore};

#[derive(Parser, Debug)]
#[command(name = "catalogbench", about = "Catalog reloads from the database and through the Redis tier")]
struct Args {
    /// People (leaf accounts).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    people: usize,
    /// Departments between the company and the people.
    #[arg(long, value_name = "N", default_value_t = 50)]
    departments: usize,
    /// Virtual keys per person.
    #[arg(long, value_name = "N", default_value_t = 2)]
    keys_per_person: usize,
    /// Rounds (alternating the arm order); medians are reported.
    #[arg(long, value_name = "N", default_value_t = 7)]
    rounds: usize,
    /// Admin URL of Postgres (a database `xai_bench_<random>` is created there and dropped at the end).
    #[arg(
        long,
        value_name = "URL",
        env = "XAI_TEST_POSTGRES",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres: String,
    /// Redis URL (keys under a random prefix, deleted at the end).
    #[arg(long, value_name = "URL", env = "XAI_TEST_REDIS", default_value = "redis://127.0.0.1:6379")]
    redis: String,
}

fn policy(json: &str) -> Policy {
    let patch: PolicyPatch = serde_json::from_str(json).expect("a valid policy");
    let mut p = Policy::default();
    patch.apply(&mut p).expect("a valid policy");
    p
}

fn account(id: u64, parent: Option<u64>, name: String, policy: Policy) -> Account {
    Account {
        id: AccountId(id),
        parent: parent.map(AccountId),
        name: name.into(),
        path: "".into(),
        status: Status::Active,
        role: if parent.is_none() { Role::Owner } else { Role::Member },
        policy,
        balance: Micros(1_000_000),
    }
}

/// Saves the tree in transactions of 2 000 changes.
async fn seed(store: &SqlStore, a: &Args) -> Result<(usize, usize), String> {
    let company = policy(
        r#"{"allow_models": ["gpt-*", "claude-*", "gemini-*"], "model_mapper": {"gpt-4": "gpt-4o"},
            "level_mapper": {"claude-*": 2}, "rpm": 6000, "daily_limit": "5000"}"#,
    );
    let dept = policy(r#"{"allow_models": ["gpt-*", "claude-*"], "rpm": 600, "tpm": 2000000}"#);
    let person = policy(r#"{"rpm": 60, "tpd": 2000000, "daily_limit": "20"}"#);
    let mut accounts = vec![account(1, None, "acme".into(), company)];
    for d in 0..a.departments {
        accounts.push(account(2 + d as u64, Some(1), format!("dept-{d}"), dept.clone()));
    }
    let first_person = 2 + a.departments as u64;
    for p in 0..a.people {
        let parent = 2 + (p % a.departments.max(1)) as u64;
        accounts.push(account(first_person + p as u64, Some(parent), format!("person-{p}"), person.clone()));
    }
    let now = SystemTime::now();
    let mut keys = Vec::new();
    for p in 0..a.people {
        for k in 0..a.keys_per_person {
            let id = (p * a.keys_per_person + k + 1) as u64;
            keys.push(VirtualKey {
                id: KeyId(id),
                account: AccountId(first_person + p as u64),
                prefix: format!("xai-{id:04x}…").into(),
                digest: KeyDigest::of(&format!("xai-bench-key-{id}")),
                status: Status::Active,
                expires_at: None,
                policy: (k == 1).then(|| policy(r#"{"allow_models": ["gpt-4o-mini"]}"#)),
            });
        }
    }
    let providers: Vec<Provider> = (0..3u32)
        .map(|i| Provider {
            id: ProviderId(i + 1),
            name: format!("provider-{i}").into(),
            protocol: [Protocol::OpenAiChat, Protocol::Anthropic, Protocol::Gemini][i as usize],
            base_url: "https://upstream.example/v1".into(),
            models: vec![ModelPattern::new(["gpt-*", "claude-*", "gemini-*"][i as usize]).expect("a pattern")],
            level: Level(1 + i % 2),
            keys: (0..8u32)
                .map(|k| UpstreamKey {
                    id: UpstreamKeyId(k + 1),
                    secret: Secret::new(format!("sk-bench-{i}-{k}").into()),
                    weight: 1,
                })
                .collect(),
        })
        .collect();
    let mut changes: Vec<Change<'_>> = accounts.iter().map(Change::Account).collect();
    changes.extend(keys.iter().map(|k| Change::Key { key: k, name: Some("laptop"), created_at: now }));
    changes.extend(providers.iter().map(Change::Provider));
    for chunk in changes.chunks(2_000) {
        store.save(chunk).await.map_err(|e| format!("seeding: {e}"))?;
    }
    Ok((accounts.len(), keys.len()))
}

/// Rounds of both arms on one store; prints one table row per arm.
async fn measure(name: &str, store: &SqlStore, cache: Option<&CatalogCache>, rounds: usize) -> Result<(), String> {
    let mut db_ms = Vec::new();
    let mut redis_ms = Vec::new();
    let mut ratios = Vec::new();
    // Warm both paths (and fill the tier).
    store.load_live(None).await.map_err(|e| e.to_string())?;
    if let Some(c) = cache {
        store.load_live(Some(c)).await.map_err(|e| e.to_string())?;
    }
    for round in 0..rounds {
        let mut db = 0.0;
        let mut redis = None;
        let order: &[bool] = if round % 2 == 0 { &[false, true] } else { &[true, false] };
        for &through_redis in order {
            if through_redis && cache.is_none() {
                continue;
            }
            let start = Instant::now();
            let (snap, source) =
                store.load_live(if through_redis { cache } else { None }).await.map_err(|e| e.to_string())?;
            let ms = start.elapsed().as_secs_f64() * 1e3;
            std::hint::black_box(snap);
            if through_redis {
                if source != CatalogSource::Redis {
                    return Err(format!("{name}: the tier missed in round {round}"));
                }
                redis = Some(ms);
            } else {
                db = ms;
            }
        }
        db_ms.push(db);
        if let Some(r) = redis {
            redis_ms.push(r);
            ratios.push(r / db);
        }
    }
    println!("| {name} | database | {:.1} | 1.00 |", median(db_ms));
    if !redis_ms.is_empty() {
        println!("| {name} | Redis tier | {:.1} | {:.2} |", median(redis_ms), median(ratios));
    }
    Ok(())
}

async fn run(a: Args) -> Result<(), String> {
    let prefix = format!("xai-bench-{:08x}:", rand_u32());
    let master = MasterKey::generate();
    println!(
        "catalog: 1 company, {} departments, {} people, {} keys each, 3 providers × 8 upstream keys; {} rounds\n",
        a.departments, a.people, a.keys_per_person, a.rounds
    );
    println!("| database | path | ms per reload (median) | ÷ database (same round) |\n|---|---|---:|---:|");

    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("xai.db").display());
    let sqlite = SqlStore::connect(&url, master.clone()).await.map_err(|e| e.to_string())?;
    let (accounts, keys) = seed(&sqlite, &a).await?;
    let cache = CatalogCache::connect(&a.redis, &prefix, sqlite.master()).map_err(|e| e.to_string())?;
    let redis_up =
        sqlite.load_live(Some(&cache)).await.is_ok() && xai_store::catalog_cache::ERRORS.load(Ordering::Relaxed) == 0;
    if !redis_up {
        eprintln!("SKIPPED: the Redis arm (Redis unreachable at {})", a.redis);
    }
    let cache = redis_up.then_some(cache);
    measure("SQLite", &sqlite, cache.as_ref(), a.rounds).await?;
    sqlite.close().await;

    if let Some(db) = ScratchDb::create(&a.postgres).await? {
        let r = async {
            let pg = SqlStore::connect(&db.url, master).await.map_err(|e| e.to_string())?;
            seed(&pg, &a).await?;
            let cache = match &cache {
                Some(_) => Some(CatalogCache::connect(&a.redis, &prefix, pg.master()).map_err(|e| e.to_string())?),
                None => None,
            };
            let r = measure("Postgres", &pg, cache.as_ref(), a.rounds).await;
            pg.close().await;
            r
        }
        .await;
        db.drop_db().await;
        r?;
    }
    let _ = del_prefix(&a.redis, &prefix).await;
    println!("\n{accounts} accounts, {keys} virtual keys per database");
    Ok(())
}

/// Deletes the run's Redis keys.
async fn del_prefix(url: &str, prefix: &str) -> Result<(), String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut c = client.get_multiplexed_async_connection().await.map_err(|e| e.to_string())?;
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut c).await.map_err(|e| e.to_string())?;
    if !keys.is_empty() {
        redis::cmd("DEL").arg(keys).query_async::<i64>(&mut c).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("catalogbench: {e}");
            ExitCode::FAILURE
        }
    }
}

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use xai_core::control::{Entry, EntryKind, ProductKind};
use xai_core::day::Day;
use xai_core::ids::{AccountId, KeyId, Level, ProviderId, UpstreamKeyId};
use xai_core::memory::InMemoryPolicyStore;
use xai_core::money::Micros;
use xai_core::policy::wire::PolicyPatch;
use xai_core::policy::{Account, Policy, Role, Status, VirtualKey};
use xai_core::protocol::Protocol;
use xai_core::routing::{Provider, UpstreamKey};
use xai_core::secret::{KeyDigest, Secret};

use super::{Change, ProductRow, SqlStore, StoreError};
use crate::secrets::MasterKey;
use crate::testenv::TestDb;

const UPSTREAM_SECRET: &str = "sk-live-SECRET123";
const VIRTUAL_KEY: &str = "xai-VIRTUALKEY-9f8e7d6c5b4a";

fn t(us: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(us.unsigned_abs())
}

fn policy(json: &str) -> Policy {
    let patch: PolicyPatch = serde_json::from_str(json).unwrap();
    let mut p = Policy::default();
    patch.apply(&mut p).unwrap();
    p
}

fn account(id: u64, parent: Option<u64>, name: &str, path: &str, policy: Policy, balance: i64) -> Account {
    Account {
        id: AccountId(id),
        parent: parent.map(AccountId),
        name: name.into(),
        path: path.into(),
        status: if id == 2 { Status::Disabled } else { Status::Active },
        role: [Role::Owner, Role::Admin, Role::Member][(id % 3) as usize],
        policy,
        balance: Micros(balance),
    }
}

struct Fixture {
    accounts: Vec<Account>,
    keys: Vec<(VirtualKey, Option<&'static str>, SystemTime)>,
    ledger: Vec<Entry>,
    products: Vec<ProductRow>,
    provider: Provider,
}

fn fixture() -> Fixture {
    let rich = policy(
        r#"{"allow_models": ["gpt-*", "claude-3-*"], "model_mapper": {"z*": "gpt-4o", "a*": "claude-3-opus"},
            "level_mapper": {"claude-*": 2, "gpt-4o": 1}, "level": 1, "allow_ips": ["10.0.0.0/8", "::1/128"],
            "resources": ["chat", "messages"], "rpm": 60, "rpd": 1000, "tpm": 90000, "tpd": 1000000,
            "daily_limit": "12.5", "model_limits": {"gpt-4o": {"rpm": 5, "daily_limit": "1.000001"}}}"#,
    );
    let accounts = vec![
        account(1, None, "acme", "acme", rich, 5_000_000),
        account(2, Some(1), "research", "acme/research", policy(r#"{"rpm": 10}"#), 2_500_000),
        account(3, Some(2), "intern", "acme/research/intern", Policy::default(), 0),
    ];
    let keys = vec![
        (
            VirtualKey {
                id: KeyId(7),
                account: AccountId(3),
                prefix: "xai-VIRT…".into(),
                digest: KeyDigest::of(VIRTUAL_KEY),
                status: Status::Active,
                expires_at: Some(t(1_900_000_000_000_000)),
                policy: Some(policy(r#"{"allow_models": ["gpt-4o"], "tpm": 100}"#)),
            },
            Some("laptop"),
            t(1_764_000_000_123_456),
        ),
        (
            VirtualKey {
                id: KeyId(8),
                account: AccountId(1),
                prefix: "xai-othe…".into(),
                digest: KeyDigest::of("xai-other-key"),
                status: Status::Disabled,
                expires_at: None,
                policy: None,
            },
            None,
            t(1_764_000_001_000_000),
        ),
    ];
    let entry = |id, from: Option<u64>, to: Option<u64>, amount, kind, note: Option<&str>| Entry {
        id,
        time: t(1_764_000_000_000_000 + id as i64 * 1_001),
        from: from.map(AccountId),
        to: to.map(AccountId),
        amount: Micros(amount),
        kind,
        note: note.map(str::to_string),
    };
    let ledger = vec![
        entry(1, None, Some(1), 7_500_000, EntryKind::Mint, Some("initial credits")),
        entry(2, Some(1), Some(2), 2_500_000, EntryKind::Allocate, None),
        entry(3, Some(2), None, 1, EntryKind::Spend, None),
    ];
    let day = |s: &str| s.parse::<Day>().unwrap();
    let products = vec![
        ProductRow {
            id: 1,
            account: AccountId(2),
            kind: ProductKind::Subscription,
            daily_allowance: Some(Micros(3_000_000)),
            credits: None,
            remaining: Micros(2_000_000),
            starts: Some(day("2026-01-01")),
            ends: Some(day("2026-12-31")),
            expires: None,
            used_day: Some(day("2026-11-25")),
            used: Micros(1_000_000),
        },
        ProductRow {
            id: 2,
            account: AccountId(3),
            kind: ProductKind::Card,
            daily_allowance: None,
            credits: Some(Micros(9_000_000)),
            remaining: Micros(8_999_999),
            starts: None,
            ends: None,
            expires: Some(day("2027-03-01")),
            used_day: None,
            used: Micros::ZERO,
        },
        ProductRow {
            id: 3,
            account: AccountId(3),
            kind: ProductKind::Addon,
            daily_allowance: None,
            credits: Some(Micros(1)),
            remaining: Micros(1),
            starts: Some(day("2026-11-01")),
            ends: Some(day("2026-11-30")),
            expires: None,
            used_day: None,
            used: Micros::ZERO,
        },
    ];
    let provider = Provider {
        id: ProviderId(4),
        name: "openai".into(),
        protocol: Protocol::OpenAiResponses,
        base_url: "https://api.openai.com/v1".into(),
        models: ["gpt-4o", "o*"].iter().map(|m| xai_core::policy::ModelPattern::new(m).unwrap()).collect(),
        level: Level(1),
        keys: vec![
            UpstreamKey { id: UpstreamKeyId(10), secret: Secret::new(UPSTREAM_SECRET.into()), weight: 3 },
            UpstreamKey { id: UpstreamKeyId(11), secret: Secret::new("sk-live-OTHER456".into()), weight: 1 },
        ],
    };
    Fixture { accounts, keys, ledger, products, provider }
}

/// Saves the fixture (accounts out of order, the spend entry updated), loads it back and compares every field.
async fn round_trip(store: &SqlStore) {
    let f = fixture();
    // Children first: there is no parent foreign key, the tree is checked when the catalog is built.
    for a in f.accounts.iter().rev() {
        store.save_account(a).await.unwrap();
    }
    for (k, name, created) in &f.keys {
        store.save_key(k, *name, *created).await.unwrap();
    }
    // A transfer: entry and balances in one transaction.
    store
        .save(&[Change::Ledger(&f.ledger[0]), Change::Ledger(&f.ledger[1]), Change::Account(&f.accounts[1])])
        .await
        .unwrap();
    let mut spend = f.ledger[2].clone();
    store.append_ledger(&spend).await.unwrap();
    spend.amount = Micros(1_234);
    store.append_ledger(&spend).await.unwrap();
    for p in &f.products {
        store.save_product(p).await.unwrap();
    }
    store.save_provider(&f.provider).await.unwrap();
    // Saving again replaces, never duplicates.
    store.save_provider(&f.provider).await.unwrap();
    store.save_account(&f.accounts[0]).await.unwrap();

    let snap = store.load().await.unwrap();
    let c = &snap.catalog;
    assert_eq!(c.accounts.len(), 3);
    for (got, want) in c.accounts.iter().zip(&f.accounts) {
        assert_eq!(format!("{got:?}"), format!("{want:?}"));
        assert_eq!(got.policy, want.policy);
    }
    assert_eq!(c.keys.len(), 2);
    for ((got, meta), (want, name, created)) in c.keys.iter().zip(&snap.key_meta).zip(&f.keys) {
        assert_eq!(got.digest, want.digest);
        assert_eq!(format!("{got:?}"), format!("{want:?}"));
        assert_eq!(got.policy, want.policy);
        assert_eq!((meta.id, meta.name.as_deref(), meta.created_at), (want.id, *name, *created));
    }
    let mut ledger = f.ledger.clone();
    ledger[2].amount = Micros(1_234);
    assert_eq!(format!("{:?}", snap.ledger), format!("{ledger:?}"));
    assert_eq!(snap.products, f.products);
    assert_eq!(c.providers.len(), 1);
    let p = &c.providers[0];
    assert_eq!(
        (p.id, &*p.name, p.protocol, &*p.base_url, p.level),
        (f.provider.id, "openai", Protocol::OpenAiResponses, "https://api.openai.com/v1", Level(1))
    );
    assert_eq!(p.models, f.provider.models);
    let keys: Vec<_> = p.keys.iter().map(|k| (k.id, k.secret.expose().to_string(), k.weight)).collect();
    assert_eq!(
        keys,
        [(UpstreamKeyId(10), UPSTREAM_SECRET.to_string(), 3), (UpstreamKeyId(11), "sk-live-OTHER456".to_string(), 1)]
    );
    // The snapshot is a valid catalog for the in-memory store.
    let mem = InMemoryPolicyStore::new(c.clone()).unwrap();
    assert_eq!(&*mem.account(AccountId(3)).unwrap().path, "acme/research/intern");

    // A provider losing a key loses its row.
    let mut fewer = f.provider;
    fewer.keys.truncate(1);
    store.save_provider(&fewer).await.unwrap();
    assert_eq!(store.load().await.unwrap().catalog.providers[0].keys.len(), 1);
    // Deleting a provider takes its keys along; saving it again brings both back.
    store.save(&[Change::DeleteProvider(ProviderId(4))]).await.unwrap();
    assert!(store.load().await.unwrap().catalog.providers.is_empty());
    store.save_provider(&fixture().provider).await.unwrap();
    assert_eq!(store.load().await.unwrap().catalog.providers[0].keys.len(), 2);
    audit_round_trip(store).await;
}

/// The audit trail: appended, saved twice without duplicates, read back newest first and per account.
async fn audit_round_trip(store: &SqlStore) {
    use xai_core::control::AuditEntry;
    let entry = |id: u64, account: Option<u64>, action: &str| AuditEntry {
        id,
        time: t(1_700_000_000_000_000 + id as i64),
        actor: "system:anomaly".into(),
        action: action.into(),
        account: account.map(AccountId),
        detail: serde_json::json!({"flags": [{"rule": "daily_spend", "value": 12.5}]}),
    };
    let (a, b, c) =
        (entry(10, Some(1), "account.frozen"), entry(11, Some(2), "account.disabled"), entry(12, None, "x"));
    store.save(&[Change::Audit(&a), Change::Audit(&b)]).await.unwrap();
    store.save(&[Change::Audit(&a), Change::Audit(&c)]).await.unwrap();
    let all = store.audit(None, 10).await.unwrap();
    assert_eq!(all, [c, b.clone(), a.clone()]);
    assert_eq!(store.audit(Some(&[AccountId(1)]), 10).await.unwrap(), [a]);
    assert_eq!(store.audit(Some(&[AccountId(1), AccountId(2)]), 1).await.unwrap(), [b]);
    assert!(store.audit(Some(&[]), 10).await.unwrap().is_empty());
}

fn sqlite_url(dir: &std::path::Path) -> String {
    // A data directory that does not exist yet: connect creates it.
    format!("sqlite://{}?mode=rwc", dir.join("data").join("xai.db").display())
}

#[tokio::test]
async fn sqlite_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let s1 = SqlStore::connect(&url, MasterKey::generate()).await.unwrap();
    assert_eq!(s1.applied_migrations().await.unwrap(), [1, 2, 3, 4, 5, 6, 7]);
    assert!(s1.migrate().await.unwrap().is_empty());
    s1.close().await;
    let s2 = SqlStore::connect(&url, MasterKey::generate()).await.unwrap();
    assert_eq!(s2.applied_migrations().await.unwrap(), [1, 2, 3, 4, 5, 6, 7]);
    // Two stores on one file at once.
    let (a, b) =
        tokio::join!(SqlStore::connect(&url, MasterKey::generate()), SqlStore::connect(&url, MasterKey::generate()));
    assert!(a.unwrap().migrate().await.unwrap().is_empty() && b.is_ok());
}

#[tokio::test]
async fn sqlite_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::connect(&sqlite_url(dir.path()), MasterKey::generate()).await.unwrap();
    round_trip(&store).await;
}

#[tokio::test]
async fn unsupported_url_does_not_echo() {
    let e = SqlStore::connect("mysql://root:hunter2@db/xai", MasterKey::generate()).await.unwrap_err();
    assert!(matches!(e, StoreError::UnsupportedUrl));
    assert!(!e.to_string().contains("hunter2"));
}

#[tokio::test]
async fn sqlite_stores_no_key_material() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let url = sqlite_url(dir.path());
    let store = SqlStore::connect(&url, master.clone()).await.unwrap();
    round_trip(&store).await;
    store.close().await;
    // Every file of the database (main, WAL, shared memory).
    let mut bytes = Vec::new();
    for f in std::fs::read_dir(dir.path().join("data")).unwrap() {
        // The WAL and shared-memory files may vanish as the last connection closes: read what is there.
        match std::fs::read(f.unwrap().path()) {
            Ok(b) => bytes.extend(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("reading the database files: {e}"),
        }
    }
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(has(KeyDigest::of(VIRTUAL_KEY).to_hex().as_bytes()), "the digest is stored");
    assert!(has(b"v1:"), "the sealed form is stored");
    for secret in [UPSTREAM_SECRET, "SECRET123", "sk-live-OTHER456", VIRTUAL_KEY, "VIRTUALKEY"] {
        assert!(!has(secret.as_bytes()), "{secret} found in the database files");
    }
    // Reopened with another master key, the sealed keys do not open: a clear error, no plaintext.
    let other = SqlStore::connect(&url, MasterKey::generate()).await.unwrap();
    let e = other.load().await.unwrap_err();
    assert!(matches!(e, StoreError::Secret { .. }), "{e}");
    assert!(!format!("{e} {e:?}").contains("SECRET"));
    // With the right key it still does.
    let again = SqlStore::connect(&url, master).await.unwrap();
    assert_eq!(again.load().await.unwrap().catalog.providers[0].keys[0].secret.expose().as_ref(), UPSTREAM_SECRET);
}

#[tokio::test]
async fn postgres_migrations_round_trip_and_no_key_material() {
    let Some(db) = TestDb::create().await else { return };
    let master = MasterKey::generate();
    // Several instances starting together apply each version exactly once.
    let starts = futures::future::join_all((0..4).map(|_| SqlStore::connect(&db.url, master.clone()))).await;
    let stores: Vec<SqlStore> = starts.into_iter().map(Result::unwrap).collect();
    let store = &stores[0];
    assert_eq!(store.applied_migrations().await.unwrap(), [1, 2, 3, 4, 5, 6, 7]);
    assert!(store.migrate().await.unwrap().is_empty());
    round_trip(store).await;

    // Every row of every table, as text.
    let pool = store.postgres_pool().unwrap();
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema()")
            .fetch_all(pool)
            .await
            .unwrap();
    assert!(tables.iter().any(|t| t == "xai_upstream_keys") && tables.iter().any(|t| t == "xai_keys"));
    let mut all = String::new();
    for t in &tables {
        let rows: Vec<String> =
            sqlx::query_scalar(&format!("SELECT r::text FROM {t} r")).fetch_all(pool).await.unwrap();
        all.extend(rows.into_iter().map(|r| r + "\n"));
    }
    assert!(all.contains(&KeyDigest::of(VIRTUAL_KEY).to_hex()) && all.contains("v1:"));
    for secret in [UPSTREAM_SECRET, "SECRET123", "sk-live-OTHER456", VIRTUAL_KEY, "VIRTUALKEY"] {
        assert!(!all.contains(secret), "{secret} found in Postgres");
    }
    // Another master key cannot open them.
    let other = SqlStore::connect(&db.url, MasterKey::generate()).await.unwrap();
    assert!(matches!(other.load().await.unwrap_err(), StoreError::Secret { .. }));

    for s in stores {
        s.close().await;
    }
    other.close().await;
    db.drop_db().await;
}

#[test]
fn times_round_trip_at_microsecond_precision() {
    for us in [0, 1, -1, 1_764_000_000_123_456, -86_400_000_001] {
        assert_eq!(super::to_us(super::from_us(us)), us);
    }
}

#[test]
fn migration_lists_are_ordered_and_parallel() {
    use super::{POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};
    for list in [SQLITE_MIGRATIONS, POSTGRES_MIGRATIONS] {
        assert!(list.windows(2).all(|w| w[0].version < w[1].version));
    }
    let versions = |l: &[super::Migration]| l.iter().map(|m| (m.version, m.name)).collect::<Vec<_>>();
    assert_eq!(versions(SQLITE_MIGRATIONS), versions(POSTGRES_MIGRATIONS));
}

// --- The catalog's Redis tier (memory → Redis → database) ---

mod tier {
    use super::*;
    use crate::catalog_cache::CatalogCache;
    use crate::sql::CatalogSource;
    use crate::testenv;

    /// Saves the fixture's tree (accounts, keys, products, provider).
    async fn seed(store: &SqlStore) -> Fixture {
        let f = fixture();
        for a in &f.accounts {
            store.save_account(a).await.unwrap();
        }
        for (k, name, created) in &f.keys {
            store.save_key(k, *name, *created).await.unwrap();
        }
        for p in &f.products {
            store.save_product(p).await.unwrap();
        }
        store.save_provider(&f.provider).await.unwrap();
        f
    }

    /// The snapshot minus what only a full load carries, as comparable text.
    fn view(s: &super::super::Snapshot) -> String {
        format!("{:?}\n{:?}\n{:?}\n{:?}", s.catalog, s.key_meta, s.products, {
            let mut c: Vec<_> = s.account_created.iter().collect();
            c.sort();
            c
        })
    }

    /// The tier's hash: epoch and version as text, the blob as bytes.
    async fn hash(conn: &mut redis::aio::ConnectionManager, key: &str) -> (String, String, Vec<u8>) {
        let (e, v, b): (Option<String>, Option<String>, Option<Vec<u8>>) =
            redis::cmd("HMGET").arg(key).arg("epoch").arg("version").arg("blob").query_async(conn).await.unwrap();
        (e.unwrap_or_default(), v.unwrap_or_default(), b.unwrap_or_default())
    }

    /// Runs `body` over a store on `url` (or a fresh SQLite file) and a tier under a fresh Redis prefix.
    async fn exercise(store: SqlStore, redis: (redis::aio::ConnectionManager, String)) {
        let (mut conn, prefix) = redis;
        let cache = CatalogCache::new(conn.clone(), &prefix, store.master());
        let f = seed(&store).await;

        // First load: the database, and Redis is filled; second: Redis, the same snapshot.
        let (a, src) = store.load_live(Some(&cache)).await.unwrap();
        assert_eq!(src, CatalogSource::Database);
        let (b, src) = store.load_live(Some(&cache)).await.unwrap();
        assert_eq!(src, CatalogSource::Redis);
        assert_eq!(view(&a), view(&b));
        let full = store.load().await.unwrap();
        assert_eq!(view(&a), view(&full), "a live load is a full load without the ledger");
        assert!(a.ledger.is_empty());

        // Redis holds no credential, not even sealed as the database stores it.
        let (stored_epoch, stored_version, blob) = hash(&mut conn, cache.key()).await;
        assert!(blob.len() > 1000 && blob[0] != b'{', "the copy is sealed");
        for secret in [UPSTREAM_SECRET, "SECRET123", "sk-live-OTHER456", VIRTUAL_KEY, "VIRTUALKEY", "research"] {
            assert!(!blob.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret} readable in Redis");
        }
        let (epoch, version) = store.catalog_stamp().await.unwrap();
        assert_eq!((stored_epoch, stored_version), (epoch, version.to_string()));

        // Traffic moves money only: the version stays, the copy is used, and balances come from the database.
        store.save(&[Change::Balance(f.accounts[1].id, -1_000)]).await.unwrap();
        assert_eq!(store.catalog_stamp().await.unwrap().1, version);
        let (c, src) = store.load_live(Some(&cache)).await.unwrap();
        assert_eq!(src, CatalogSource::Redis);
        assert_eq!(c.catalog.accounts[1].balance, Micros(f.accounts[1].balance.0 - 1_000));

        // An admin change raises the version: the copy is not used until the database's version is read again.
        let mut renamed = f.accounts[2].clone();
        renamed.policy = policy(r#"{"rpm": 7}"#);
        store.save(&[Change::AccountMoved(&renamed, 0)]).await.unwrap();
        assert_eq!(store.catalog_stamp().await.unwrap().1, version + 1);
        let (d, src) = store.load_live(Some(&cache)).await.unwrap();
        assert_eq!(src, CatalogSource::Database);
        assert_eq!(d.catalog.accounts[2].policy.rpm, Some(7));
        let (e, src) = store.load_live(Some(&cache)).await.unwrap();
        assert_eq!((src, view(&e)), (CatalogSource::Redis, view(&d)));
        // A key's change raises it too (revocations must reach every instance).
        let mut revoked = f.keys[0].0.clone();
        revoked.status = Status::Disabled;
        store.save_key(&revoked, None, f.keys[0].2).await.unwrap();
        let (g, src) = store.load_live(Some(&cache)).await.unwrap();
        assert_eq!((src, g.catalog.keys[0].status), (CatalogSource::Database, Status::Disabled));

        // An older copy never replaces a newer one; a copy of another database does.
        let newest = store.catalog_rows().await.unwrap();
        let mut older = newest.clone();
        older.version -= 1;
        cache.put(&older).await;
        assert_eq!(hash(&mut conn, cache.key()).await.1, newest.version.to_string());
        let mut foreign = newest.clone();
        foreign.epoch = "another-database".into();
        foreign.version = 0;
        cache.put(&foreign).await;
        assert_eq!(hash(&mut conn, cache.key()).await.0, "another-database");
        let (_, src) = store.load_live(Some(&cache)).await.unwrap();
        assert_eq!(src, CatalogSource::Database, "another database's copy is not used");

        // A copy planted or moved in Redis does not open: ignored, the database is read.
        let good = hash(&mut conn, cache.key()).await;
        let _: () = redis::cmd("HSET")
            .arg(cache.key())
            .arg("version")
            .arg(newest.version + 5)
            .query_async(&mut conn)
            .await
            .unwrap();
        store.save(&[Change::AccountMoved(&renamed, 0); 5]).await.unwrap(); // one save raises the version once
        assert_eq!(store.catalog_stamp().await.unwrap().1, newest.version + 1);
        for _ in 0..4 {
            store.save(&[Change::AccountMoved(&renamed, 0)]).await.unwrap();
        }
        let (_, src) = store.load_live(Some(&cache)).await.unwrap();
        assert_eq!(src, CatalogSource::Database, "a copy sealed for another version does not open");
        let planted = serde_json::to_string(&store.catalog_rows().await.unwrap()).unwrap();
        let _: () = redis::cmd("HSET")
            .arg(cache.key())
            .arg("blob")
            .arg(&planted)
            .arg("version")
            .arg(newest.version + 5)
            .arg("epoch")
            .arg(&good.0)
            .query_async(&mut conn)
            .await
            .unwrap();
        let (_, src) = store.load_live(Some(&cache)).await.unwrap();
        assert_eq!(src, CatalogSource::Database, "an unsealed copy written to Redis is not trusted");

        testenv::redis_cleanup(&mut conn, &prefix).await;
        store.close().await;
    }

    /// A movement saved by an instance that read the account before another instance changed its policy adds
    /// the money and leaves the newer policy.
    #[tokio::test]
    async fn a_balance_movement_leaves_the_rest_of_the_row() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqlStore::connect(&sqlite_url(dir.path()), MasterKey::generate()).await.unwrap();
        let f = seed(&store).await;
        let mut elsewhere = f.accounts[1].clone();
        elsewhere.policy = policy(r#"{"rpm": 3}"#);
        elsewhere.status = Status::Active;
        store.save(&[Change::AccountMoved(&elsewhere, 0)]).await.unwrap();
        let version = store.catalog_stamp().await.unwrap().1;
        store.save(&[Change::Balance(f.accounts[1].id, 250)]).await.unwrap();
        let back = store.load().await.unwrap().catalog.accounts[1].clone();
        assert_eq!((back.policy.rpm, back.status), (Some(3), Status::Active));
        assert_eq!(back.balance, Micros(f.accounts[1].balance.0 + 250));
        assert_eq!(store.catalog_stamp().await.unwrap().1, version, "a movement is not a catalog change");
        store.close().await;
    }

    #[tokio::test]
    async fn sqlite_through_redis() {
        let Some(redis) = testenv::redis().await else { return };
        let dir = tempfile::tempdir().unwrap();
        let store = SqlStore::connect(&sqlite_url(dir.path()), MasterKey::generate()).await.unwrap();
        exercise(store, redis).await;
    }

    #[tokio::test]
    async fn postgres_through_redis() {
        let Some(redis) = testenv::redis().await else { return };
        let Some(db) = TestDb::create().await else { return };
        let store = SqlStore::connect(&db.url, MasterKey::generate()).await.unwrap();
        exercise(store, redis).await;
        db.drop_db().await;
    }

    #[tokio::test]
    async fn an_unreachable_redis_reads_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqlStore::connect(&sqlite_url(dir.path()), MasterKey::generate()).await.unwrap();
        seed(&store).await;
        // Nothing listens on port 1.
        let cache = CatalogCache::connect("redis://127.0.0.1:1", "xai-test-none:", store.master()).unwrap();
        let started = std::time::Instant::now();
        let (snap, src) = store.load_live(Some(&cache)).await.unwrap();
        assert_eq!(src, CatalogSource::Database);
        assert_eq!(snap.catalog.accounts.len(), 3);
        assert!(started.elapsed() < Duration::from_secs(5), "a dead Redis held the reload {:?}", started.elapsed());
        store.close().await;
    }
}

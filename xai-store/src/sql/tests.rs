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
    assert_eq!(s1.applied_migrations().await.unwrap(), [1, 2, 3, 4, 5, 6]);
    assert!(s1.migrate().await.unwrap().is_empty());
    s1.close().await;
    let s2 = SqlStore::connect(&url, MasterKey::generate()).await.unwrap();
    assert_eq!(s2.applied_migrations().await.unwrap(), [1, 2, 3, 4, 5, 6]);
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
    assert_eq!(store.applied_migrations().await.unwrap(), [1, 2, 3, 4, 5, 6]);
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

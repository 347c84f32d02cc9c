//! In-memory [`PolicyStore`]: an immutable snapshot swapped atomically on change.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::ids::{AccountId, Level};
use crate::policy::{Account, Principal, VirtualKey};
use crate::routing::{Provider, RouteTable};
use crate::secret::KeyDigest;
use crate::traits::{BoxFuture, Maybe, PolicyStore, StoreError};
use crate::usage::Price;

/// Everything a policy store holds, as plain data.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    /// Accounts (any order; parents must exist).
    pub accounts: Vec<Account>,
    /// Virtual keys.
    pub keys: Vec<VirtualKey>,
    /// Providers.
    pub providers: Vec<Arc<Provider>>,
    /// Level → backup level.
    pub switch_over: HashMap<Level, Level>,
    /// Model → price.
    pub prices: HashMap<Arc<str>, Price>,
}

/// A catalog that does not hold together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CatalogError(pub String);

#[derive(Debug)]
struct Snapshot {
    principals: HashMap<KeyDigest, Arc<Principal>>,
    accounts: HashMap<AccountId, Arc<Account>>,
    table: Arc<RouteTable>,
    prices: HashMap<Arc<str>, Price>,
    /// Prices keyed by a pattern (`claude-*`), most specific (longest literal text) first.
    price_globs: Vec<(crate::policy::ModelPattern, Price)>,
}

impl Snapshot {
    fn build(c: Catalog) -> Result<Self, CatalogError> {
        let accounts: HashMap<AccountId, Arc<Account>> = c.accounts.into_iter().map(|a| (a.id, Arc::new(a))).collect();
        let mut principals = HashMap::with_capacity(c.keys.len());
        for k in c.keys {
            let mut chain = Vec::new();
            let mut cur = Some(k.account);
            while let Some(id) = cur {
                let a = accounts
                    .get(&id)
                    .ok_or_else(|| CatalogError(format!("key {} refers to missing account {id}", k.prefix)))?;
                if chain.len() > 64 || chain.iter().any(|x: &Arc<Account>| x.id == id) {
                    return Err(CatalogError(format!("account {id} is part of a cycle or too deep")));
                }
                chain.push(a.clone());
                cur = a.parent;
            }
            chain.reverse();
            if principals.contains_key(&k.digest) {
                return Err(CatalogError(format!("duplicate virtual key (prefix {})", k.prefix)));
            }
            principals.insert(k.digest, Arc::new(Principal::new(Arc::new(k), chain)));
        }
        let mut price_globs: Vec<(crate::policy::ModelPattern, Price)> = c
            .prices
            .iter()
            .filter(|(m, _)| m.contains(['*', '?', '[']))
            .filter_map(|(m, p)| crate::policy::ModelPattern::new(m).ok().map(|g| (g, *p)))
            .collect();
        let literal = |g: &crate::policy::ModelPattern| g.as_str().chars().filter(|c| !"*?[]".contains(*c)).count();
        price_globs.sort_by(|a, b| literal(&b.0).cmp(&literal(&a.0)).then_with(|| a.0.as_str().cmp(b.0.as_str())));
        Ok(Self {
            principals,
            accounts,
            table: Arc::new(RouteTable::new(c.providers, c.switch_over)),
            prices: c.prices,
            price_globs,
        })
    }
}

/// The in-memory policy store: reads are lock-free snapshot loads.
#[derive(Debug)]
pub struct InMemoryPolicyStore {
    snap: ArcSwap<Snapshot>,
}

impl InMemoryPolicyStore {
    /// Builds the store from a catalog.
    pub fn new(c: Catalog) -> Result<Self, CatalogError> {
        Ok(Self { snap: ArcSwap::from_pointee(Snapshot::build(c)?) })
    }

    /// Replaces everything atomically (caches go with the old snapshot).
    pub fn replace(&self, c: Catalog) -> Result<(), CatalogError> {
        self.snap.store(Arc::new(Snapshot::build(c)?));
        Ok(())
    }

    /// An account by id.
    pub fn account(&self, id: AccountId) -> Option<Arc<Account>> {
        self.snap.load().accounts.get(&id).cloned()
    }

    /// All accounts.
    pub fn accounts(&self) -> Vec<Arc<Account>> {
        self.snap.load().accounts.values().cloned().collect()
    }
}

impl PolicyStore for InMemoryPolicyStore {
    fn principal(&self, digest: &KeyDigest) -> Maybe<'_, Result<Option<Arc<Principal>>, StoreError>> {
        let snap = self.snap.load();
        // The map lookup hashes the digest; the final comparison is constant-time on the whole digest.
        let found = snap.principals.get(digest).filter(|p| p.key.digest.ct_eq(digest)).cloned();
        Maybe::Ready(Ok(found))
    }

    fn route_table(&self) -> Arc<RouteTable> {
        self.snap.load().table.clone()
    }

    fn price(&self, model: &str) -> Option<Price> {
        let snap = self.snap.load();
        snap.prices
            .get(model)
            .copied()
            .or_else(|| snap.price_globs.iter().find(|(g, _)| g.matches(model)).map(|(_, p)| *p))
    }

    fn priced_models(&self) -> Vec<Arc<str>> {
        self.snap.load().prices.keys().cloned().collect()
    }

    fn ready(&self) -> BoxFuture<'_, bool> {
        Box::pin(async { true })
    }
}

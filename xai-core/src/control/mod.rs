//! The control plane: the account tree, virtual keys, credits and products, changed through an admin API.
//!
//! [`ControlPlane`] owns the mutable state behind one lock (every change is atomic: validate, apply, publish)
//! and publishes an immutable snapshot to the [`InMemoryPolicyStore`] that the request path reads, so the hot
//! path never takes this lock. Balances and product counters live here only.

mod audit;
#[cfg(test)]
mod budget_tests;
mod credits;
mod explain;
mod keys;
mod persist;
mod products;
#[cfg(test)]
mod proptests;
mod tree;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use serde::Serialize;

pub use audit::{ANOMALY_ACTOR, AuditEntry};
pub use credits::Transfer;
pub use credits::{Entry, EntryKind};
pub use explain::{Explain, ExplainStep, Subject};
pub use keys::{IssuedKey, KeyInfo, NewKey};
pub use persist::{Changes, KeyChange, Saved};
pub use products::{Product, ProductKind, ProductSpec, SourceProgress, SpendingMeter, Today};
pub use tree::{AccountPatch, NewAccount};

use crate::ids::{AccountId, KeyId};
use crate::memory::{Catalog, InMemoryPolicyStore};
use crate::money::Micros;
use crate::policy::{Account, VirtualKey};

const SALT_BITS: u32 = 10;
const SALT_MASK: u64 = (1 << SALT_BITS) - 1;

/// Ids of ledger entries and products, unique across the instances of a cluster that create them at the same
/// time: milliseconds since the epoch, strictly increasing per instance, above `SALT_BITS` random bits fixed per
/// instance. They stay below 2^53, so JSON clients read them exactly. `last` is the last id this instance saw.
pub(crate) fn cluster_id(last: &mut u64, salt: u64) -> u64 {
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let ms = now_ms.max((*last >> SALT_BITS) + 1);
    let id = (ms << SALT_BITS) | (salt & SALT_MASK);
    *last = id;
    id
}

/// Why an admin change was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// Malformed input.
    #[error("{0}")]
    BadRequest(String),
    /// Unknown id (or outside the caller's scope).
    #[error("{0}")]
    NotFound(String),
    /// Not allowed for this caller.
    #[error("{0}")]
    Forbidden(String),
    /// Duplicate name.
    #[error("{0}")]
    Conflict(String),
    /// A policy that widens an ancestor's.
    #[error("{0}")]
    Widening(String),
    /// Semantically impossible (cycles, over-allocation, …).
    #[error("{0}")]
    Invalid(String),
}

impl AdminError {
    /// HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            AdminError::BadRequest(_) => 400,
            AdminError::Forbidden(_) => 403,
            AdminError::NotFound(_) => 404,
            AdminError::Conflict(_) => 409,
            AdminError::Widening(_) | AdminError::Invalid(_) => 422,
        }
    }

    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            AdminError::BadRequest(_) => "bad_request",
            AdminError::Forbidden(_) => "forbidden",
            AdminError::NotFound(_) => "not_found",
            AdminError::Conflict(_) => "conflict",
            AdminError::Widening(_) => "policy_widening",
            AdminError::Invalid(_) => "invalid",
        }
    }
}

/// Who is asking: the root admin, or an owner/admin key acting on its subtree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Everything.
    Root,
    /// The subtree below this account (the account itself read-only).
    Subtree(AccountId),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct KeyRecord {
    pub(crate) key: VirtualKey,
    pub(crate) name: Option<String>,
    pub(crate) created_at: SystemTime,
}

/// The mutable state.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) accounts: BTreeMap<AccountId, Account>,
    pub(crate) keys: BTreeMap<KeyId, KeyRecord>,
    pub(crate) ledger: Vec<Entry>,
    pub(crate) products: BTreeMap<u64, Product>,
    /// The products of each account, by id (the request path looks up one payer's, never scans them all).
    pub(crate) products_of: HashMap<AccountId, Vec<u64>>,
    pub(crate) usage: HashMap<AccountId, products::DayUsage>,
    /// The day's spend entry of each account in `ledger` (spend is booked as one entry per account and day).
    pub(crate) spend_entry: HashMap<AccountId, (crate::day::Day, usize)>,
    /// What changed since the last save.
    pub(crate) dirty: persist::Dirty,
    pub(crate) next_account: u64,
    pub(crate) next_key: u64,
    /// The last product id handed out (see [`cluster_id`]).
    pub(crate) next_product: u64,
    /// The last ledger entry id handed out (see [`cluster_id`]).
    pub(crate) next_entry: u64,
    /// This instance's low id bits (see [`cluster_id`]).
    pub(crate) salt: u64,
    /// The audit trail (append-only).
    pub(crate) audit: Vec<AuditEntry>,
    /// The last audit entry id handed out (see [`cluster_id`]).
    pub(crate) next_audit: u64,
    /// The non-account part of the catalog (providers, switch-over, prices).
    pub(crate) base: Catalog,
    /// Accounts that pay for their own traffic (and their subtree's): they were ever given credits or a
    /// product. Traffic of an account that is not funded is paid by its nearest funded ancestor.
    pub(crate) funded: std::collections::HashSet<AccountId>,
    /// The cost charged to each paying account since the control plane was loaded (see [`crate::traits::Funds`]).
    pub(crate) applied: HashMap<AccountId, i64>,
    /// Bumped when balances are reloaded from the store.
    pub(crate) generation: u64,
    /// Each account's balance as this instance last saved or loaded it (saves write the difference).
    pub(crate) saved_balance: HashMap<AccountId, i64>,
    /// Each product's (remaining, used day, used) as this instance last saved or loaded it.
    pub(crate) saved_product: HashMap<u64, (i64, crate::day::Day, i64)>,
}

/// Where the control plane reads live use (the meter's counters) for `today` and `explain`.
pub trait LiveUsageSource: Send + Sync + 'static {
    /// Use of an account, aggregate over its subtree.
    fn live_usage(&self, account: AccountId) -> crate::memory::LiveUsage;
}

impl LiveUsageSource for crate::memory::InMemoryMeter {
    fn live_usage(&self, account: AccountId) -> crate::memory::LiveUsage {
        self.live(account)
    }
}

/// The control plane. Cheap to share (`Arc`).
pub struct ControlPlane {
    state: Mutex<State>,
    store: Arc<InMemoryPolicyStore>,
    live: std::sync::OnceLock<Arc<dyn LiveUsageSource>>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane").field("store", &self.store).finish_non_exhaustive()
    }
}

/// An account as the admin API shows it (live balance).
#[derive(Debug, Clone, Serialize)]
pub struct AccountView {
    /// The account.
    #[serde(flatten, serialize_with = "tree::ser_account")]
    pub account: Account,
}

impl ControlPlane {
    /// Starts from a catalog (accounts and keys in it are imported; ids are kept).
    pub fn new(catalog: Catalog) -> Result<Self, AdminError> {
        let store =
            Arc::new(InMemoryPolicyStore::new(catalog.clone()).map_err(|e| AdminError::Invalid(e.to_string()))?);
        let mut st = State {
            next_account: catalog.accounts.iter().map(|a| a.id.0).max().unwrap_or(0) + 1,
            next_key: catalog.keys.iter().map(|k| k.id.0).max().unwrap_or(0) + 1,
            next_product: 0,
            next_entry: 0,
            salt: rand::random::<u64>() & SALT_MASK,
            ..State::default()
        };
        let now = SystemTime::now();
        for a in &catalog.accounts {
            if a.balance.0 > 0 {
                st.push_entry(
                    None,
                    Some(a.id),
                    a.balance,
                    EntryKind::Mint,
                    Some("initial credits from the configuration".into()),
                    now,
                );
            }
        }
        st.accounts = catalog.accounts.iter().map(|a| (a.id, a.clone())).collect();
        st.keys =
            catalog.keys.iter().map(|k| (k.id, KeyRecord { key: k.clone(), name: None, created_at: now })).collect();
        st.base = Catalog { accounts: vec![], keys: vec![], ..catalog };
        Ok(Self { state: Mutex::new(st), store, live: std::sync::OnceLock::new() })
    }

    /// Connects the meter whose counters `today` and `explain` report (once).
    pub fn set_live_usage(&self, source: Arc<dyn LiveUsageSource>) {
        let _ = self.live.set(source);
    }

    /// The read side used by the request path.
    pub fn store(&self) -> Arc<InMemoryPolicyStore> {
        self.store.clone()
    }

    /// Runs a change: `f` validates and applies on a scratch copy; on success the copy replaces the state and a
    /// new snapshot is published. On error nothing changed.
    pub(crate) fn change<T>(&self, f: impl FnOnce(&mut State) -> Result<T, AdminError>) -> Result<T, AdminError> {
        let mut st = self.state.lock();
        // Only what these changes touch is copied (accounts, keys): the ledger, products and usage grow with
        // traffic and are never changed here, so they are not cloned on every admin write.
        // The ledger is lent to the change (a config import mints initial credits) and always returned; entries
        // a refused change pushed are dropped with it.
        let mut scratch = st.clone_shallow();
        let ledger_len = st.ledger.len();
        scratch.ledger = std::mem::take(&mut st.ledger);
        scratch.next_entry = st.next_entry;
        let out = f(&mut scratch).and_then(|out| {
            let catalog = scratch.catalog();
            self.store.replace(catalog).map_err(|e| AdminError::Invalid(e.to_string()))?;
            Ok(out)
        });
        st.ledger = std::mem::take(&mut scratch.ledger);
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                st.ledger.truncate(ledger_len);
                return Err(e);
            }
        };
        scratch.mark_tree_diff(&st.accounts, &st.keys);
        st.dirty.accounts.extend(scratch.dirty.accounts.drain());
        st.dirty.keys.extend(scratch.dirty.keys.drain());
        st.dirty.entries.extend(scratch.dirty.entries.drain());
        st.dirty.edited.extend(scratch.dirty.edited.drain());
        st.next_entry = scratch.next_entry;
        st.funded.extend(scratch.funded.drain());
        st.base = scratch.base;
        st.accounts = scratch.accounts;
        st.keys = scratch.keys;
        st.next_account = scratch.next_account;
        st.next_key = scratch.next_key;
        Ok(out)
    }

    /// Reads under the lock.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.lock())
    }

    /// Changes that do not alter what the request path sees (balances, products, usage): no snapshot rebuild.
    pub(crate) fn change_quiet<T>(&self, f: impl FnOnce(&mut State) -> Result<T, AdminError>) -> Result<T, AdminError> {
        let mut st = self.state.lock();
        f(&mut st)
    }
}

impl State {
    /// A copy of the tree (accounts, keys) for a validated change; traffic-grown parts stay behind.
    fn clone_shallow(&self) -> State {
        State {
            accounts: self.accounts.clone(),
            keys: self.keys.clone(),
            next_account: self.next_account,
            next_key: self.next_key,
            salt: self.salt,
            base: self.base.clone(),
            ..State::default()
        }
    }

    /// Paths are derived from names and parents; recomputed for everyone after any change (moves and renames).
    fn catalog(&mut self) -> Catalog {
        let ids: Vec<AccountId> = self.accounts.keys().copied().collect();
        for id in ids {
            let path = self.path_of(id);
            if let Some(a) = self.accounts.get_mut(&id) {
                a.path = path.into();
            }
        }
        Catalog {
            accounts: self.accounts.values().cloned().collect(),
            keys: self.keys.values().map(|k| k.key.clone()).collect(),
            ..self.base.clone()
        }
    }

    pub(crate) fn path_of(&self, id: AccountId) -> String {
        let mut parts = Vec::new();
        let mut cur = Some(id);
        while let Some(c) = cur {
            let Some(a) = self.accounts.get(&c) else { break };
            parts.push(a.name.to_string());
            cur = a.parent;
            if parts.len() > 256 {
                break;
            }
        }
        parts.reverse();
        parts.join("/")
    }

    /// The chain root first, `Arc`ed for the policy helpers.
    pub(crate) fn chain(&self, id: AccountId) -> Vec<Arc<Account>> {
        let mut v = Vec::new();
        let mut cur = Some(id);
        while let Some(c) = cur {
            let Some(a) = self.accounts.get(&c) else { break };
            let mut a = a.clone();
            a.path = self.path_of(c).into();
            v.push(Arc::new(a));
            cur = v.last().and_then(|a| a.parent);
            if v.len() > 256 {
                break;
            }
        }
        v.reverse();
        v
    }

    /// Whether `anc` is `id` or one of its ancestors.
    pub(crate) fn is_within(&self, id: AccountId, anc: AccountId) -> bool {
        let mut cur = Some(id);
        let mut n = 0;
        while let Some(c) = cur {
            if c == anc {
                return true;
            }
            cur = self.accounts.get(&c).and_then(|a| a.parent);
            n += 1;
            if n > 256 {
                return false;
            }
        }
        false
    }

    pub(crate) fn account(&self, id: AccountId, scope: Scope) -> Result<&Account, AdminError> {
        let a = self.accounts.get(&id).ok_or_else(|| AdminError::NotFound(format!("no account {id}")))?;
        match scope {
            Scope::Root => Ok(a),
            Scope::Subtree(s) if self.is_within(id, s) => Ok(a),
            Scope::Subtree(_) => Err(AdminError::NotFound(format!("no account {id}"))),
        }
    }

    /// Accounts a scope may change: strictly below its own account.
    pub(crate) fn writable(&self, id: AccountId, scope: Scope) -> Result<&Account, AdminError> {
        let a = self.account(id, scope)?;
        match scope {
            Scope::Subtree(s) if s == id => Err(AdminError::Forbidden(format!(
                "account {} cannot change itself; ask an administrator above it",
                self.path_of(id)
            ))),
            _ => Ok(a),
        }
    }

    pub(crate) fn view(&self, id: AccountId) -> Option<AccountView> {
        let mut a = self.accounts.get(&id)?.clone();
        a.path = self.path_of(id).into();
        Some(AccountView { account: a })
    }

    pub(crate) fn push_entry(
        &mut self,
        from: Option<AccountId>,
        to: Option<AccountId>,
        amount: Micros,
        kind: EntryKind,
        note: Option<String>,
        time: SystemTime,
    ) -> Entry {
        let e = Entry { id: cluster_id(&mut self.next_entry, self.salt), time, from, to, amount, kind, note };
        self.dirty.entries.insert(e.id);
        if let (Some(to), EntryKind::Allocate | EntryKind::Mint) = (to, kind) {
            self.funded.insert(to);
        }
        self.ledger.push(e.clone());
        e
    }
}

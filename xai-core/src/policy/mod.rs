//! Accounts, virtual keys and the policies that narrow down the tree.

mod effective;
mod pattern;
mod resolve;
pub mod wire;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use effective::{Bound, EffectivePolicy, Source, Widening, check_narrowing, effective_of};
pub use pattern::{ModelPattern, PatternError};
pub use resolve::{ModelResolution, Refusal, ResolveCache};

use crate::ids::{AccountId, KeyId, Level};
use crate::money::Micros;
use crate::secret::KeyDigest;

/// Whether an account or key may be used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Usable.
    #[default]
    Active,
    /// Switched off by an administrator (accounts) or revoked (keys).
    Disabled,
}

/// What an account's keys may do in the admin API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Owns its subtree.
    Owner,
    /// Administers its subtree.
    Admin,
    /// Uses AI; no admin rights.
    #[default]
    Member,
}

/// The policy fields of an account (or a key's narrower policy). `None` / empty means "not set here".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    /// Model globs the caller may ask for, checked against the name as this account sees it.
    pub allow_models: Option<Vec<ModelPattern>>,
    /// Ordered rewrites; the first matching rule wins.
    pub model_mapper: Vec<(ModelPattern, Arc<str>)>,
    /// Model glob → level.
    pub level_mapper: Vec<(ModelPattern, Level)>,
    /// Default level.
    pub level: Option<Level>,
    /// Client networks allowed.
    pub allow_ips: Option<Vec<IpNet>>,
    /// Endpoint resources allowed (`chat`, `responses`, `messages`, `generate`, `count_tokens`, `models`, `embeddings`).
    pub resources: Option<Vec<String>>,
    /// Requests per minute (aggregate over the subtree).
    pub rpm: Option<u64>,
    /// Requests per day.
    pub rpd: Option<u64>,
    /// Tokens per minute.
    pub tpm: Option<u64>,
    /// Tokens per day.
    pub tpd: Option<u64>,
    /// Credits per day.
    pub daily_limit: Option<Micros>,
    /// Limits that apply to the models matching a glob (also aggregate over the subtree).
    pub model_limits: Vec<(ModelPattern, Limits)>,
    /// Disable the account automatically when anomaly detection flags it (a setting, not a bound: the nearest
    /// account on the path that sets it decides; see [`crate::anomaly`]).
    pub freeze_on_anomaly: Option<bool>,
}

/// Numeric limits (used per model).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Requests per day.
    pub rpd: Option<u64>,
    /// Tokens per minute.
    pub tpm: Option<u64>,
    /// Tokens per day.
    pub tpd: Option<u64>,
    /// Credits per day.
    pub daily_limit: Option<Micros>,
}

impl Limits {
    /// Whether any bound is set.
    pub fn any(&self) -> bool {
        self.rpm.is_some()
            || self.rpd.is_some()
            || self.tpm.is_some()
            || self.tpd.is_some()
            || self.daily_limit.is_some()
    }
}

impl Policy {
    /// The levels this policy may route to: its `level` plus its `level_mapper` targets (empty = unrestricted).
    pub fn allowed_levels(&self) -> impl Iterator<Item = Level> + '_ {
        self.level.into_iter().chain(self.level_mapper.iter().map(|(_, l)| *l))
    }

    /// Whether the policy restricts levels at all.
    pub fn restricts_levels(&self) -> bool {
        self.level.is_some() || !self.level_mapper.is_empty()
    }

    /// Whether `ip` is allowed (true when unset).
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        self.allow_ips.as_ref().is_none_or(|nets| nets.iter().any(|n| n.contains(&ip)))
    }

    /// Whether the endpoint resource is allowed (true when unset).
    pub fn allows_resource(&self, resource: &str) -> bool {
        self.resources.as_ref().is_none_or(|r| r.iter().any(|x| x == resource || x == "*"))
    }
}

/// A node of the account tree.
#[derive(Clone, Debug, PartialEq)]
pub struct Account {
    /// Id.
    pub id: AccountId,
    /// Parent, `None` for a root.
    pub parent: Option<AccountId>,
    /// Name among its siblings.
    pub name: Arc<str>,
    /// Full path from the root (`acme/research/intern`).
    pub path: Arc<str>,
    /// Active or disabled.
    pub status: Status,
    /// Admin rights of its keys.
    pub role: Role,
    /// Its own policy (not the effective one).
    pub policy: Policy,
    /// Credit balance.
    pub balance: Micros,
}

/// A virtual key, as stored: the key itself is only ever a digest.
#[derive(Clone, Debug, PartialEq)]
pub struct VirtualKey {
    /// Id.
    pub id: KeyId,
    /// Owner.
    pub account: AccountId,
    /// The recognisable start of the key (`xai-ab12…`), safe to show.
    pub prefix: Arc<str>,
    /// SHA-256 of the key.
    pub digest: KeyDigest,
    /// Active or revoked.
    pub status: Status,
    /// Optional expiry.
    pub expires_at: Option<SystemTime>,
    /// Optional narrower policy.
    pub policy: Option<Policy>,
}

/// Who is calling: a key, its account and the account path, resolved once and cached by the store.
#[derive(Debug)]
pub struct Principal {
    /// The key used.
    pub key: Arc<VirtualKey>,
    /// The account path, root first, caller last.
    pub chain: Arc<[Arc<Account>]>,
    /// Account ids of `chain`, root first (for counters and records).
    pub chain_ids: Arc<[AccountId]>,
    /// Exact-match cache of model resolutions for this principal.
    pub cache: ResolveCache,
}

impl Principal {
    /// Builds a principal for `key` over `chain` (root first).
    pub fn new(key: Arc<VirtualKey>, chain: Vec<Arc<Account>>) -> Self {
        let chain_ids: Arc<[AccountId]> = chain.iter().map(|a| a.id).collect();
        Self { key, chain: chain.into(), chain_ids, cache: ResolveCache::default() }
    }

    /// The calling account (last of the chain).
    pub fn account(&self) -> &Arc<Account> {
        self.chain.last().expect("a principal has at least its own account")
    }

    /// The policies in walk order: the key's (if any), the caller's, then up to the root.
    pub fn policies(&self) -> impl Iterator<Item = (PolicyOwner<'_>, &Policy)> {
        let key = self.key.policy.as_ref().map(|p| (PolicyOwner::Key(&self.key), p));
        key.into_iter().chain(self.chain.iter().rev().map(|a| (PolicyOwner::Account(a), &a.policy)))
    }
}

/// Who set a policy: for messages that name the refusing bound.
#[derive(Clone, Copy, Debug)]
pub enum PolicyOwner<'a> {
    /// A key's own policy.
    Key(&'a VirtualKey),
    /// An account's policy.
    Account(&'a Account),
}

impl std::fmt::Display for PolicyOwner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicyOwner::Key(k) => write!(f, "key {}", k.prefix),
            PolicyOwner::Account(a) => write!(f, "account {}", a.path),
        }
    }
}

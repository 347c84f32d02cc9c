//! Model resolution along the account path, behind an exact-match cache.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use super::{Policy, Principal};
use crate::error::GatewayError;
use crate::ids::{AccountId, Level};

/// The outcome of walking a model name from the caller to the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelResolution {
    /// The name after the root's mapper: what the upstream is asked for.
    pub upstream_model: Arc<str>,
    /// The level chosen by the nearest `level_mapper` match, else the nearest `level`; `None` when the path sets
    /// neither (the route step then takes the lowest level serving the model).
    pub level: Option<Level>,
    /// Intersection of the level sets of every policy on the path that restricts levels (`None` = unrestricted).
    pub allowed_levels: Option<Vec<Level>>,
    /// The name each account on the path saw (before its own mapper), caller first: per-model limits of an
    /// account match this name, so a descendant's mapper cannot route around them.
    pub seen: Vec<(AccountId, Arc<str>)>,
}

impl ModelResolution {
    /// The name `account` saw, if it is on the path.
    pub fn name_at(&self, account: AccountId) -> Option<&str> {
        self.seen.iter().find(|(a, _)| *a == account).map(|(_, n)| &**n)
    }
}

impl ModelResolution {
    /// Whether `level` may be used by this caller.
    pub fn level_allowed(&self, level: Level) -> bool {
        self.allowed_levels.as_ref().is_none_or(|s| s.contains(&level))
    }
}

/// A policy refusal, naming the bound and who set it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Stable code (`model_not_allowed`).
    pub code: &'static str,
    /// Message for the caller.
    pub message: String,
}

impl From<Refusal> for GatewayError {
    fn from(r: Refusal) -> Self {
        GatewayError::Forbidden { code: r.code, message: r.message }
    }
}

type Entry = Result<Arc<ModelResolution>, Refusal>;

/// Exact-match cache in front of the wildcard rules: requested model name → resolution. Bounded: when full it is
/// cleared (model names a caller uses are few; a flood of random names must not grow memory).
#[derive(Debug, Default)]
pub struct ResolveCache {
    map: RwLock<HashMap<Box<str>, Entry>>,
}

const CACHE_CAP: usize = 1024;

impl ResolveCache {
    fn get(&self, model: &str) -> Option<Entry> {
        self.map.read().get(model).cloned()
    }

    fn put(&self, model: &str, e: Entry) {
        let mut m = self.map.write();
        if m.len() >= CACHE_CAP {
            m.clear();
        }
        m.insert(model.into(), e);
    }

    /// Number of cached names.
    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Principal {
    /// Resolves `requested` along the path (cached per principal; the cache lives as long as this snapshot).
    pub fn resolve_model(&self, requested: &str) -> Result<Arc<ModelResolution>, Refusal> {
        if let Some(hit) = self.cache.get(requested) {
            return hit;
        }
        let e = self.resolve_uncached(requested).map(Arc::new);
        self.cache.put(requested, e.clone());
        e
    }

    /// The walk itself, without the cache (also what benchmarks call "cold").
    pub fn resolve_uncached(&self, requested: &str) -> Result<ModelResolution, Refusal> {
        let mut name: Arc<str> = Arc::from(requested);
        let mut mapped_level: Option<Level> = None;
        let mut default_level: Option<Level> = None;
        let mut allowed: Option<Vec<Level>> = None;
        let mut seen = Vec::with_capacity(self.chain.len());
        for (owner, p) in self.policies() {
            if let super::PolicyOwner::Account(a) = owner {
                seen.push((a.id, name.clone()));
            }
            if let Some(allow) = &p.allow_models
                && !allow.iter().any(|g| g.matches(&name))
            {
                let shown = if &*name == requested {
                    format!("{requested:?}")
                } else {
                    format!("{requested:?} (mapped to {name:?})")
                };
                return Err(Refusal {
                    code: "model_not_allowed",
                    message: format!("model {shown} is not allowed for {owner}"),
                });
            }
            if mapped_level.is_none()
                && let Some((_, l)) = p.level_mapper.iter().find(|(g, _)| g.matches(&name))
            {
                mapped_level = Some(*l);
            }
            if default_level.is_none() {
                default_level = p.level;
            }
            if p.restricts_levels() {
                allowed = Some(intersect(allowed, p));
            }
            if let Some((_, to)) = p.model_mapper.iter().find(|(g, _)| g.matches(&name)) {
                name = to.clone();
            }
        }
        Ok(ModelResolution {
            upstream_model: name,
            level: mapped_level.or(default_level),
            allowed_levels: allowed,
            seen,
        })
    }

    /// Explains why `level` is refused: the nearest policy whose level set excludes it.
    pub fn level_refusal(&self, level: Level) -> Refusal {
        let who = self
            .policies()
            .find(|(_, p)| p.restricts_levels() && !p.allowed_levels().any(|l| l == level))
            .map(|(o, _)| o.to_string())
            .unwrap_or_else(|| "the account path".into());
        Refusal { code: "level_not_allowed", message: format!("level {level} is not allowed for {who}") }
    }
}

fn intersect(acc: Option<Vec<Level>>, p: &Policy) -> Vec<Level> {
    let own: Vec<Level> = p.allowed_levels().collect();
    match acc {
        None => own,
        Some(prev) => prev.into_iter().filter(|l| own.contains(l)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{AccountId, KeyId};
    use crate::money::Micros;
    use crate::policy::{Account, ModelPattern, Role, Status, VirtualKey};
    use crate::secret::KeyDigest;

    fn account(id: u64, path: &str, policy: Policy) -> Arc<Account> {
        Arc::new(Account {
            id: AccountId(id),
            parent: (id > 1).then(|| AccountId(id - 1)),
            name: path.rsplit('/').next().unwrap().into(),
            path: path.into(),
            status: Status::Active,
            role: Role::Member,
            policy,
            balance: Micros::ZERO,
        })
    }

    fn pats(v: &[&str]) -> Option<Vec<ModelPattern>> {
        Some(v.iter().map(|s| ModelPattern::new(s).unwrap()).collect())
    }

    pub(crate) fn principal(chain: Vec<Arc<Account>>) -> Principal {
        let key = Arc::new(VirtualKey {
            id: KeyId(1),
            account: chain.last().unwrap().id,
            prefix: "xai-test".into(),
            digest: KeyDigest::of("k"),
            status: Status::Active,
            expires_at: None,
            policy: None,
        });
        Principal::new(key, chain)
    }

    #[test]
    fn walks_caller_to_root() {
        let root = account(
            1,
            "acme",
            Policy {
                allow_models: pats(&["*"]),
                model_mapper: vec![(ModelPattern::new("gpt-3.5*").unwrap(), "gpt-4o-mini".into())],
                level: Some(Level(1)),
                level_mapper: vec![(ModelPattern::new("claude-*").unwrap(), Level(2))],
                ..Policy::default()
            },
        );
        let team =
            account(2, "acme/research", Policy { allow_models: pats(&["gpt-*", "claude-*"]), ..Policy::default() });
        let p = principal(vec![root, team]);
        let r = p.resolve_model("gpt-3.5-turbo").unwrap();
        assert_eq!(&*r.upstream_model, "gpt-4o-mini");
        assert_eq!(r.level, Some(Level(1)));
        assert_eq!(p.resolve_model("claude-3-opus").unwrap().level, Some(Level(2)));
        let refused = p.resolve_model("gemini-pro").unwrap_err();
        assert_eq!(refused.code, "model_not_allowed");
        assert!(refused.message.contains("acme/research"), "{}", refused.message);
        assert_eq!(p.cache.len(), 3);
        // Cached answers equal fresh ones.
        assert_eq!(*p.resolve_model("gpt-3.5-turbo").unwrap(), p.resolve_uncached("gpt-3.5-turbo").unwrap());
    }

    #[test]
    fn child_mapping_is_checked_by_parent() {
        let root = account(1, "acme", Policy { allow_models: pats(&["gpt-4o*"]), ..Policy::default() });
        let child = account(
            2,
            "acme/x",
            Policy { model_mapper: vec![(ModelPattern::new("*").unwrap(), "gpt-5".into())], ..Policy::default() },
        );
        let p = principal(vec![root, child]);
        let e = p.resolve_model("gpt-4o").unwrap_err();
        assert!(e.message.contains("mapped to \"gpt-5\"") && e.message.contains("account acme"), "{}", e.message);
    }

    #[test]
    fn level_sets_intersect() {
        let root = account(
            1,
            "acme",
            Policy {
                level: Some(Level(1)),
                level_mapper: vec![(ModelPattern::new("claude-*").unwrap(), Level(2))],
                ..Policy::default()
            },
        );
        let child = account(2, "acme/x", Policy { level: Some(Level(2)), ..Policy::default() });
        let p = principal(vec![root, child]);
        let r = p.resolve_model("gpt-4o").unwrap();
        assert_eq!(r.level, Some(Level(2)));
        assert_eq!(r.allowed_levels.as_deref(), Some(&[Level(2)][..]));
        assert!(!r.level_allowed(Level(1)));
        assert!(p.level_refusal(Level(1)).message.contains("acme/x"));
    }
}

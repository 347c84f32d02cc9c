//! Providers, levels and route plans.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::ids::{Level, ProviderId, UpstreamKeyId};
use crate::policy::{ModelPattern, ModelResolution};
use crate::protocol::Protocol;
use crate::secret::Secret;

/// An upstream provider: a base URL speaking one protocol, served by a pool of keys at one level.
#[derive(Debug)]
pub struct Provider {
    /// Id.
    pub id: ProviderId,
    /// Config name (`openai`).
    pub name: Arc<str>,
    /// Upstream protocol.
    pub protocol: Protocol,
    /// Base URL as configured (`https://api.openai.com/v1`), without trailing slash.
    pub base_url: Arc<str>,
    /// Models it serves (globs). Exact names are also what `GET /v1/models` lists.
    pub models: Vec<ModelPattern>,
    /// Its level.
    pub level: Level,
    /// Its keys.
    pub keys: Vec<UpstreamKey>,
}

impl Provider {
    /// Whether it serves `model`.
    pub fn serves(&self, model: &str) -> bool {
        self.models.iter().any(|p| p.matches(model))
    }
}

/// One upstream credential. The secret never leaves the process except in the upstream request's auth header.
#[derive(Debug, Clone)]
pub struct UpstreamKey {
    /// Id (what logs, records and the admin API show).
    pub id: UpstreamKeyId,
    /// The credential.
    pub secret: Secret<Arc<str>>,
    /// Round-robin weight (≥ 1).
    pub weight: u32,
}

/// The routing topology: providers by level and the switch-over chain.
#[derive(Debug, Default)]
pub struct RouteTable {
    providers: Vec<Arc<Provider>>,
    levels: BTreeMap<Level, Vec<usize>>,
    switch_over: HashMap<Level, Level>,
    serving: RwLock<HashMap<Box<str>, Arc<[Level]>>>,
}

/// The levels to try for one request, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutePlan {
    /// The model name sent upstream.
    pub upstream_model: Arc<str>,
    /// The primary level first, then its switch-over levels.
    pub levels: Vec<Level>,
}

impl RouteTable {
    /// Builds the table.
    pub fn new(providers: Vec<Arc<Provider>>, switch_over: HashMap<Level, Level>) -> Self {
        let mut levels: BTreeMap<Level, Vec<usize>> = BTreeMap::new();
        for (i, p) in providers.iter().enumerate() {
            levels.entry(p.level).or_default().push(i);
        }
        Self { providers, levels, switch_over, serving: RwLock::default() }
    }

    /// All providers.
    pub fn providers(&self) -> &[Arc<Provider>] {
        &self.providers
    }

    /// Providers of one level.
    pub fn providers_at(&self, level: Level) -> impl Iterator<Item = &Arc<Provider>> {
        self.levels.get(&level).into_iter().flatten().map(|&i| &self.providers[i])
    }

    /// The backup of a level.
    pub fn switch_over(&self, level: Level) -> Option<Level> {
        self.switch_over.get(&level).copied()
    }

    /// Levels that have a provider serving `model`, ascending (cached by exact name).
    pub fn levels_serving(&self, model: &str) -> Arc<[Level]> {
        if let Some(l) = self.serving.read().get(model) {
            return l.clone();
        }
        let l: Arc<[Level]> =
            self.levels.keys().copied().filter(|&lv| self.providers_at(lv).any(|p| p.serves(model))).collect();
        let mut w = self.serving.write();
        if w.len() >= 4096 {
            w.clear();
        }
        w.insert(model.into(), l.clone());
        l
    }

    /// The plan for a resolution: the primary level (chosen, or the lowest serving level the caller may use),
    /// which must be one the caller may use and must serve the model, then its switch-over chain. The chain is the operator's failover
    /// topology (`[switch_over]`): it is followed from an allowed primary even onto levels outside the caller's
    /// own set, and only levels that serve the model are kept. An empty plan means nothing can serve it.
    pub fn plan(&self, r: &ModelResolution) -> Result<RoutePlan, PlanError> {
        let serving = self.levels_serving(&r.upstream_model);
        if serving.is_empty() {
            return Err(PlanError::NotServed);
        }
        let primary = match r.level {
            Some(l) => l,
            None => match serving.iter().copied().find(|&l| r.level_allowed(l)) {
                Some(l) => l,
                None => return Err(PlanError::LevelRefused(serving[0])),
            },
        };
        if !r.level_allowed(primary) {
            return Err(PlanError::LevelRefused(primary));
        }
        // Switch-over is for failures of a level that serves the model, never a way around the caller's level.
        if !serving.contains(&primary) {
            return Err(PlanError::NotServed);
        }
        let mut levels = Vec::with_capacity(2);
        let mut visited = Vec::with_capacity(2);
        let mut cur = Some(primary);
        while let Some(l) = cur {
            if visited.contains(&l) {
                break; // switch_over may form a cycle
            }
            visited.push(l);
            // The primary level must be one the caller may use; the switch-over chain behind it is the
            // operator's failover topology, reached only through an allowed primary.
            if serving.contains(&l) {
                levels.push(l);
            }
            cur = self.switch_over(l);
        }
        if levels.is_empty() {
            return Err(PlanError::NotServed);
        }
        Ok(RoutePlan { upstream_model: r.upstream_model.clone(), levels })
    }
}

/// Why no plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// No provider on any reachable level serves the model.
    NotServed,
    /// The level is not allowed for the caller.
    LevelRefused(Level),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(id: u32, level: u32, models: &[&str]) -> Arc<Provider> {
        Arc::new(Provider {
            id: ProviderId(id),
            name: format!("p{id}").into(),
            protocol: Protocol::OpenAiChat,
            base_url: "http://x/v1".into(),
            models: models.iter().map(|m| ModelPattern::new(m).unwrap()).collect(),
            level: Level(level),
            keys: vec![],
        })
    }

    fn res(model: &str, level: Option<u32>, allowed: Option<Vec<u32>>) -> ModelResolution {
        ModelResolution {
            upstream_model: model.into(),
            level: level.map(Level),
            allowed_levels: allowed.map(|v| v.into_iter().map(Level).collect()),
            seen: vec![],
        }
    }

    #[test]
    fn plans_follow_switch_over() {
        let t = RouteTable::new(
            vec![provider(1, 1, &["gpt-*"]), provider(2, 2, &["gpt-*", "claude-*"]), provider(3, 3, &["gpt-*"])],
            HashMap::from([(Level(1), Level(2)), (Level(2), Level(3)), (Level(3), Level(1))]),
        );
        assert_eq!(t.plan(&res("gpt-4o", Some(1), None)).unwrap().levels, vec![Level(1), Level(2), Level(3)]);
        assert_eq!(t.plan(&res("gpt-4o", None, None)).unwrap().levels[0], Level(1));
        // Level 1 does not serve claude: no silent jump to its switch-over level without a failure.
        assert_eq!(t.plan(&res("claude-3", Some(1), None)), Err(PlanError::NotServed));
        assert_eq!(t.plan(&res("claude-3", Some(2), None)).unwrap().levels, vec![Level(2)]);
        // Switch-over levels follow an allowed primary even when the caller's own set is only the primary.
        assert_eq!(t.plan(&res("gpt-4o", Some(1), Some(vec![1]))).unwrap().levels, vec![Level(1), Level(2), Level(3)]);
        assert_eq!(t.plan(&res("gpt-4o", Some(2), Some(vec![1]))), Err(PlanError::LevelRefused(Level(2))));
        assert_eq!(t.plan(&res("gemini", None, None)), Err(PlanError::NotServed));
        assert_eq!(t.plan(&res("gpt-4o", None, Some(vec![3]))).unwrap().levels, vec![Level(3), Level(1), Level(2)]);
    }
}

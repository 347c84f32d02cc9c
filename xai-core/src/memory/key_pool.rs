//! In-memory [`KeyPool`]: weighted round-robin per level, cooldowns and disabling with atomics.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::ids::{Level, UpstreamKeyId};
use crate::routing::{Provider, RouteTable, UpstreamKey};
use crate::traits::{Exhausted, KeyPool, Lease};
use crate::usage::Outcome;

/// Cooldown policy.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// First cooldown after a 5xx, timeout or connect error; doubles per consecutive failure.
    pub backoff_base: Duration,
    /// Cap of that cooldown (also used for exhausted quotas).
    pub backoff_max: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self { backoff_base: Duration::from_secs(1), backoff_max: Duration::from_secs(60) }
    }
}

#[derive(Debug, Default)]
struct KeyState {
    cooldown_until_ms: AtomicU64,
    failures: AtomicU32,
    disabled: AtomicBool,
}

#[derive(Debug)]
struct Slot {
    provider: Arc<Provider>,
    key: UpstreamKey,
    state: Arc<KeyState>,
}

#[derive(Debug, Default)]
struct LevelPool {
    slots: Vec<Slot>,
    cursor: AtomicUsize,
}

/// Health of one key, for operators (never the key).
#[derive(Debug, Clone, Serialize)]
pub struct KeyHealth {
    /// Key id.
    pub id: UpstreamKeyId,
    /// Provider name.
    pub provider: Arc<str>,
    /// Level.
    pub level: Level,
    /// Disabled after an upstream 401/403.
    pub disabled: bool,
    /// Remaining cooldown.
    pub cooldown_ms: u64,
    /// Consecutive failures.
    pub failures: u32,
}

/// The in-memory key pool.
#[derive(Debug)]
pub struct InMemoryKeyPool {
    epoch: Instant,
    cfg: PoolConfig,
    levels: HashMap<Level, LevelPool>,
    states: HashMap<UpstreamKeyId, (Arc<KeyState>, Arc<Provider>)>,
}

impl InMemoryKeyPool {
    /// Builds the pool from the providers of a route table.
    pub fn new(table: &RouteTable, cfg: PoolConfig) -> Self {
        let mut levels: HashMap<Level, LevelPool> = HashMap::new();
        let mut states = HashMap::new();
        for p in table.providers() {
            let lp = levels.entry(p.level).or_default();
            for k in &p.keys {
                let st: Arc<KeyState> =
                    states.entry(k.id).or_insert_with(|| (Arc::new(KeyState::default()), p.clone())).0.clone();
                for _ in 0..k.weight.max(1) {
                    lp.slots.push(Slot { provider: p.clone(), key: k.clone(), state: st.clone() });
                }
            }
        }
        Self { epoch: Instant::now(), cfg, levels, states }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Health of every key.
    pub fn health(&self) -> Vec<KeyHealth> {
        let now = self.now_ms();
        let mut v: Vec<KeyHealth> = self
            .states
            .iter()
            .map(|(id, (s, p))| KeyHealth {
                id: *id,
                provider: p.name.clone(),
                level: p.level,
                disabled: s.disabled.load(Relaxed),
                cooldown_ms: s.cooldown_until_ms.load(Relaxed).saturating_sub(now),
                failures: s.failures.load(Relaxed),
            })
            .collect();
        v.sort_by_key(|h| h.id);
        v
    }

    /// A stable name of a key's credential for remembering its state across restarts and config reorders (a
    /// SHA-256 under a context of its own, never the key): `None` for an unknown id.
    pub fn fingerprint(&self, id: UpstreamKeyId) -> Option<crate::secret::KeyDigest> {
        self.keys().find(|k| k.id == id).map(fingerprint_of)
    }

    /// Every key by [`InMemoryKeyPool::fingerprint`].
    pub fn fingerprints(&self) -> HashMap<crate::secret::KeyDigest, UpstreamKeyId> {
        self.keys().map(|k| (fingerprint_of(k), k.id)).collect()
    }

    fn keys(&self) -> impl Iterator<Item = &crate::routing::UpstreamKey> {
        self.levels.values().flat_map(|lp| lp.slots.iter()).map(|s| &s.key)
    }

    /// Disables or enables a key (an operator's decision, or a state restored at start); `false` for an unknown id.
    pub fn set_disabled(&self, id: UpstreamKeyId, disabled: bool) -> bool {
        let Some((s, _)) = self.states.get(&id) else { return false };
        s.disabled.store(disabled, Relaxed);
        if !disabled {
            s.failures.store(0, Relaxed);
            s.cooldown_until_ms.store(0, Relaxed);
        }
        true
    }

    fn cool(&self, s: &KeyState, d: Duration) {
        let until = self.now_ms() + d.as_millis() as u64;
        s.cooldown_until_ms.fetch_max(until, Relaxed);
    }
}

impl KeyPool for InMemoryKeyPool {
    fn pick(&self, level: Level, model: &str, exclude: &[UpstreamKeyId]) -> Result<Lease, Exhausted> {
        let Some(lp) = self.levels.get(&level) else {
            return Err(Exhausted { retry_after: None });
        };
        let n = lp.slots.len();
        if n == 0 {
            return Err(Exhausted { retry_after: None });
        }
        let now = self.now_ms();
        let start = lp.cursor.fetch_add(1, Relaxed);
        let mut soonest: Option<u64> = None;
        for i in 0..n {
            let s = &lp.slots[(start + i) % n];
            if exclude.contains(&s.key.id) || s.state.disabled.load(Relaxed) || !s.provider.serves(model) {
                continue;
            }
            let until = s.state.cooldown_until_ms.load(Relaxed);
            if until > now {
                soonest = Some(soonest.map_or(until, |x| x.min(until)));
                continue;
            }
            return Ok(Lease { provider: s.provider.clone(), key: s.key.clone() });
        }
        Err(Exhausted { retry_after: soonest.map(|u| Duration::from_millis(u - now)) })
    }

    fn report(&self, key: UpstreamKeyId, outcome: Outcome) {
        let Some((s, p)) = self.states.get(&key) else { return };
        match outcome {
            Outcome::Ok => {
                s.failures.store(0, Relaxed);
            }
            Outcome::RateLimited { retry_after_ms } => {
                self.cool(s, Duration::from_millis(retry_after_ms));
            }
            Outcome::QuotaExhausted => {
                self.cool(s, self.cfg.backoff_max * 10);
            }
            Outcome::AuthRejected => {
                if !s.disabled.swap(true, Relaxed) {
                    tracing::warn!(provider = %p.name, upstream_key = %key, "upstream rejected the key; disabled");
                }
            }
            Outcome::Overloaded | Outcome::Timeout | Outcome::ConnectError => {
                let n = s.failures.fetch_add(1, Relaxed).min(16);
                let d = self.cfg.backoff_base.saturating_mul(1 << n).min(self.cfg.backoff_max);
                self.cool(s, d);
            }
        }
    }
}

/// See [`InMemoryKeyPool::fingerprint`].
fn fingerprint_of(k: &crate::routing::UpstreamKey) -> crate::secret::KeyDigest {
    crate::secret::KeyDigest::of(&format!("xai-upstream-key-state:{}", k.secret.expose()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ProviderId;
    use crate::policy::ModelPattern;
    use crate::protocol::Protocol;
    use crate::secret::Secret;

    fn table(keys_per_level: &[(u32, &[u32])]) -> RouteTable {
        let providers = keys_per_level
            .iter()
            .map(|(level, keys)| {
                Arc::new(Provider {
                    id: ProviderId(*level),
                    name: format!("p{level}").into(),
                    protocol: Protocol::OpenAiChat,
                    base_url: "http://127.0.0.1:1/v1".into(),
                    models: vec![ModelPattern::new("gpt-*").unwrap()],
                    level: Level(*level),
                    keys: keys
                        .iter()
                        .map(|k| UpstreamKey {
                            id: UpstreamKeyId(*k),
                            secret: Secret::new(format!("sk-{k}").into()),
                            weight: 1,
                        })
                        .collect(),
                })
            })
            .collect();
        RouteTable::new(providers, HashMap::new())
    }

    fn pick(p: &InMemoryKeyPool, ex: &[u32]) -> Result<u32, Exhausted> {
        let ex: Vec<_> = ex.iter().map(|k| UpstreamKeyId(*k)).collect();
        p.pick(Level(1), "gpt-4o", &ex).map(|l| l.key.id.0)
    }

    #[test]
    fn round_robin_and_cooldowns() {
        let pool = InMemoryKeyPool::new(&table(&[(1, &[1, 2, 3])]), PoolConfig::default());
        let seq: Vec<u32> = (0..6).map(|_| pick(&pool, &[]).unwrap()).collect();
        assert_eq!(seq, [1, 2, 3, 1, 2, 3]);
        pool.report(UpstreamKeyId(2), Outcome::RateLimited { retry_after_ms: 60_000 });
        let seq: Vec<u32> = (0..4).map(|_| pick(&pool, &[]).unwrap()).collect();
        assert!(!seq.contains(&2), "{seq:?}");
        pool.report(UpstreamKeyId(1), Outcome::AuthRejected);
        assert_eq!(pick(&pool, &[]).unwrap(), 3);
        let e = pick(&pool, &[3]).unwrap_err();
        let ra = e.retry_after.expect("key 2 is only cooling");
        assert!(ra > Duration::from_secs(50) && ra <= Duration::from_secs(60), "{ra:?}");
        assert!(pool.health().iter().any(|h| h.id == UpstreamKeyId(1) && h.disabled));
        assert!(pool.pick(Level(1), "claude-3", &[]).is_err());
        assert!(pool.pick(Level(9), "gpt-4o", &[]).is_err());
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let cfg = PoolConfig { backoff_base: Duration::from_secs(1), backoff_max: Duration::from_secs(4) };
        let pool = InMemoryKeyPool::new(&table(&[(1, &[7])]), cfg);
        for expect in [1u64, 2, 4, 4] {
            // Clear the previous cooldown so each report's own cooldown is observed.
            pool.states[&UpstreamKeyId(7)].0.cooldown_until_ms.store(0, Relaxed);
            pool.report(UpstreamKeyId(7), Outcome::Overloaded);
            let h = &pool.health()[0];
            assert!(h.cooldown_ms <= expect * 1000 && h.cooldown_ms + 50 >= expect * 1000, "{h:?} {expect}");
        }
        pool.report(UpstreamKeyId(7), Outcome::Ok);
        assert_eq!(pool.health()[0].failures, 0);
    }
}

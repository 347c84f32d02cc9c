//! In-memory [`Meter`]: per-account sliding-window RPM/TPM (aggregate over the subtree) and a bounded record log.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::error::GatewayError;
use crate::ids::{AccountId, KeyId};
use crate::policy::{Policy, Principal};
use crate::traits::{AdmitRequest, BoxFuture, Maybe, Meter, Reservation};
use crate::usage::UsageRecord;

const WINDOW: usize = 60;

/// A 60-second sliding window in one-second buckets: requests and tokens.
#[derive(Debug)]
struct Window {
    stamp: [u64; WINDOW],
    requests: [u64; WINDOW],
    tokens: [u64; WINDOW],
}

impl Default for Window {
    fn default() -> Self {
        Self { stamp: [0; WINDOW], requests: [0; WINDOW], tokens: [0; WINDOW] }
    }
}

impl Window {
    fn bucket(&mut self, sec: u64) -> usize {
        let i = (sec % WINDOW as u64) as usize;
        if self.stamp[i] != sec {
            self.stamp[i] = sec;
            self.requests[i] = 0;
            self.tokens[i] = 0;
        }
        i
    }

    fn sums(&self, sec: u64) -> (u64, u64) {
        let live = |i: usize| self.stamp[i] + (WINDOW as u64) > sec && self.stamp[i] <= sec;
        (0..WINDOW).filter(|&i| live(i)).fold((0, 0), |(r, t), i| (r + self.requests[i], t + self.tokens[i]))
    }

    /// Seconds until the oldest live bucket leaves the window.
    fn retry_after(&self, sec: u64) -> u64 {
        (0..WINDOW)
            .filter(|&i| self.stamp[i] + (WINDOW as u64) > sec && (self.requests[i] > 0 || self.tokens[i] > 0))
            .map(|i| self.stamp[i] + WINDOW as u64 - sec)
            .min()
            .unwrap_or(1)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Node {
    Account(AccountId),
    Key(KeyId),
}

/// The in-memory meter: limits are correct for one instance.
#[derive(Debug)]
pub struct InMemoryMeter {
    epoch: Instant,
    windows: RwLock<HashMap<Node, Arc<Mutex<Window>>>>,
    log: Mutex<VecDeque<UsageRecord>>,
    log_cap: usize,
}

impl Default for InMemoryMeter {
    fn default() -> Self {
        Self::new(10_000)
    }
}

impl InMemoryMeter {
    /// A meter keeping the last `log_cap` records.
    pub fn new(log_cap: usize) -> Self {
        Self { epoch: Instant::now(), windows: RwLock::default(), log: Mutex::default(), log_cap }
    }

    fn sec(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    fn window(&self, n: Node) -> Arc<Mutex<Window>> {
        if let Some(w) = self.windows.read().get(&n) {
            return w.clone();
        }
        self.windows.write().entry(n).or_default().clone()
    }

    /// The bounded nodes of a principal, root first, with their policies.
    fn bounded(p: &Principal) -> Vec<(Node, &Policy, String)> {
        let mut v: Vec<(Node, &Policy, String)> = p
            .chain
            .iter()
            .filter(|a| a.policy.rpm.is_some() || a.policy.tpm.is_some())
            .map(|a| (Node::Account(a.id), &a.policy, format!("account {}", a.path)))
            .collect();
        if let Some(kp) = p.key.policy.as_ref().filter(|kp| kp.rpm.is_some() || kp.tpm.is_some()) {
            v.push((Node::Key(p.key.id), kp, format!("key {}", p.key.prefix)));
        }
        v
    }

    fn admit_now(&self, req: &AdmitRequest<'_>) -> Result<Reservation, GatewayError> {
        let nodes = Self::bounded(req.principal);
        let sec = self.sec();
        let reservation =
            Reservation { chain: Some(req.principal.chain_ids.clone()), tokens: req.estimate_tokens, slot: sec };
        if nodes.is_empty() {
            return Ok(reservation);
        }
        let windows: Vec<_> = nodes.iter().map(|(n, _, _)| self.window(*n)).collect();
        // Locks are taken root first, always in the same order: no deadlock, and the check-then-add is atomic
        // across the whole path.
        let mut guards: Vec<_> = windows.iter().map(|w| w.lock()).collect();
        for ((_, policy, who), w) in nodes.iter().zip(guards.iter()) {
            let (r, t) = w.sums(sec);
            let refuse = |bound: &str, limit: u64| GatewayError::RateLimited {
                message: format!("rate limit reached: {bound} {limit} of {who}"),
                retry_after: Some(Duration::from_secs(w.retry_after(sec))),
            };
            if let Some(rpm) = policy.rpm
                && r + 1 > rpm
            {
                return Err(refuse("rpm", rpm));
            }
            if let Some(tpm) = policy.tpm
                && t + req.estimate_tokens > tpm
            {
                return Err(refuse("tpm", tpm));
            }
        }
        for w in guards.iter_mut() {
            let i = w.bucket(sec);
            w.requests[i] += 1;
            w.tokens[i] += req.estimate_tokens;
        }
        Ok(reservation)
    }
}

impl Meter for InMemoryMeter {
    fn admit<'a>(&'a self, req: &'a AdmitRequest<'a>) -> Maybe<'a, Result<Reservation, GatewayError>> {
        Maybe::Ready(self.admit_now(req))
    }

    fn record(&self, record: UsageRecord, reservation: Reservation) {
        if let Some(chain) = &reservation.chain {
            let actual = record.usage.total();
            let nodes: Vec<Node> =
                chain.iter().map(|a| Node::Account(*a)).chain(std::iter::once(Node::Key(record.key))).collect();
            let map = self.windows.read();
            for n in nodes {
                if let Some(w) = map.get(&n) {
                    let mut w = w.lock();
                    let i = (reservation.slot % WINDOW as u64) as usize;
                    if w.stamp[i] == reservation.slot {
                        w.tokens[i] = (w.tokens[i] + actual).saturating_sub(reservation.tokens);
                    }
                }
            }
        }
        let mut log = self.log.lock();
        if log.len() >= self.log_cap {
            log.pop_front();
        }
        log.push_back(record);
    }

    fn recent(&self, limit: usize) -> Vec<UsageRecord> {
        let log = self.log.lock();
        log.iter().skip(log.len().saturating_sub(limit)).cloned().collect()
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Micros;
    use crate::policy::{Account, Role, Status, VirtualKey};
    use crate::protocol::Protocol;
    use crate::secret::KeyDigest;
    use crate::usage::{RecordStatus, Usage};
    use std::time::SystemTime;

    fn principal(limits: &[(Option<u64>, Option<u64>)], key: u64) -> Principal {
        let chain: Vec<Arc<Account>> = limits
            .iter()
            .enumerate()
            .map(|(i, (rpm, tpm))| {
                Arc::new(Account {
                    id: AccountId(i as u64 + 1),
                    parent: (i > 0).then_some(AccountId(i as u64)),
                    name: format!("a{i}").into(),
                    path: format!("a{i}").into(),
                    status: Status::Active,
                    role: Role::Member,
                    policy: Policy { rpm: *rpm, tpm: *tpm, ..Policy::default() },
                    balance: Micros::ZERO,
                })
            })
            .collect();
        let k = VirtualKey {
            id: KeyId(key),
            account: chain.last().unwrap().id,
            prefix: "xai-k".into(),
            digest: KeyDigest::of(&key.to_string()),
            status: Status::Active,
            expires_at: None,
            policy: None,
        };
        Principal::new(Arc::new(k), chain)
    }

    fn record(p: &Principal, total: u64) -> UsageRecord {
        UsageRecord {
            request_id: crate::ids::RequestId::generate(),
            time: SystemTime::now(),
            account: p.account().id,
            account_path: p.account().path.clone(),
            chain: p.chain_ids.clone(),
            key: p.key.id,
            inbound_protocol: Protocol::OpenAiChat,
            provider: None,
            upstream_key: None,
            requested_model: "m".into(),
            upstream_model: None,
            level: None,
            status: RecordStatus::Ok,
            http_status: 200,
            attempts: vec![],
            latency_ms: 0,
            ttft_ms: None,
            usage: Usage { prompt_tokens: total, ..Usage::default() },
            cost: Micros::ZERO,
            estimated: false,
        }
    }

    #[test]
    fn parent_rpm_is_aggregate_over_children() {
        let m = InMemoryMeter::default();
        // Two siblings under a parent with rpm 3: the fourth request of either is refused.
        let a = principal(&[(Some(3), None), (None, None)], 1);
        let mut b = principal(&[(Some(3), None), (None, None)], 2);
        // b is a sibling: same root id 1, its own leaf id.
        let leaf = Arc::new(Account { id: AccountId(99), ..(*b.chain[1]).clone() });
        b = Principal::new(b.key.clone(), vec![b.chain[0].clone(), leaf]);
        let ask = |p: &Principal| m.admit_now(&AdmitRequest { principal: p, model: "m", estimate_tokens: 1 });
        assert!(ask(&a).is_ok() && ask(&b).is_ok() && ask(&a).is_ok());
        let e = ask(&b).unwrap_err();
        assert_eq!(e.status(), 429);
        assert!(e.to_string().contains("rpm 3 of account a0"), "{e}");
        assert!(e.retry_after().unwrap() <= Duration::from_secs(60));
    }

    #[test]
    fn tpm_settles_to_actual() {
        let m = InMemoryMeter::default();
        let p = principal(&[(None, Some(1000))], 1);
        let ask = |est| m.admit_now(&AdmitRequest { principal: &p, model: "m", estimate_tokens: est });
        let r = ask(900).unwrap();
        assert!(ask(200).is_err(), "900 reserved + 200 > 1000");
        // Actual usage was only 100: 900 frees up.
        m.record(record(&p, 100), r);
        assert!(ask(800).is_ok());
        assert!(ask(200).is_err());
        assert_eq!(m.recent(10).len(), 1);
    }

    #[test]
    fn unlimited_paths_take_no_locks() {
        let m = InMemoryMeter::default();
        let p = principal(&[(None, None)], 1);
        for _ in 0..100 {
            m.admit_now(&AdmitRequest { principal: &p, model: "m", estimate_tokens: 10 }).unwrap();
        }
        assert!(m.windows.read().is_empty());
    }
}

//! In-memory [`Meter`]: per-account RPM/TPM over a sliding minute and RPD/TPD/daily credits per UTC day, each
//! aggregate over the account's subtree, plus per-model rules; a bounded log of recent records.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Mutex, RwLock};

use crate::day::{Day, until_midnight};
use crate::error::{GatewayError, RateBound};
use crate::policy::{Limits, Principal};
use crate::traits::{AdmitRequest, BoxFuture, LimitNode, Maybe, Meter, Reservation};
use crate::usage::UsageRecord;

const WINDOW: usize = 60;

/// The counters of one node: a 60-second window in one-second buckets, and today's totals.
#[derive(Debug)]
struct Counters {
    stamp: [u64; WINDOW],
    requests: [u64; WINDOW],
    tokens: [u64; WINDOW],
    day: Day,
    day_requests: u64,
    day_tokens: u64,
    day_spent: i64,
    /// Cost held by admitted requests not settled yet (counts against `daily_limit`).
    day_held: i64,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            stamp: [0; WINDOW],
            requests: [0; WINDOW],
            tokens: [0; WINDOW],
            day: Day(0),
            day_requests: 0,
            day_tokens: 0,
            day_spent: 0,
            day_held: 0,
        }
    }
}

impl Counters {
    fn bucket(&mut self, sec: u64) -> usize {
        let i = (sec % WINDOW as u64) as usize;
        if self.stamp[i] != sec {
            self.stamp[i] = sec;
            self.requests[i] = 0;
            self.tokens[i] = 0;
        }
        i
    }

    fn live(&self, i: usize, sec: u64) -> bool {
        self.stamp[i] + (WINDOW as u64) > sec && self.stamp[i] <= sec
    }

    fn sums(&self, sec: u64) -> (u64, u64) {
        (0..WINDOW).filter(|&i| self.live(i, sec)).fold((0, 0), |(r, t), i| (r + self.requests[i], t + self.tokens[i]))
    }

    /// Seconds until the oldest live bucket leaves the window.
    fn retry_after(&self, sec: u64) -> u64 {
        (0..WINDOW)
            .filter(|&i| self.live(i, sec) && (self.requests[i] > 0 || self.tokens[i] > 0))
            .map(|i| self.stamp[i] + WINDOW as u64 - sec)
            .min()
            .unwrap_or(1)
    }

    fn roll(&mut self, day: Day) {
        if self.day != day {
            self.day = day;
            self.day_requests = 0;
            self.day_tokens = 0;
            self.day_spent = 0;
            self.day_held = 0;
        }
    }
}

/// Live use of one account, aggregate over its subtree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveUsage {
    /// Requests in the sliding minute.
    pub requests_minute: u64,
    /// Tokens in the sliding minute (reservations settled to actual use).
    pub tokens_minute: u64,
    /// Requests today (UTC).
    pub requests_today: u64,
    /// Tokens today.
    pub tokens_today: u64,
    /// Credits spent today.
    pub spent_today: crate::money::Micros,
}

/// What a meter knows of one paying account's funds: cost held by admitted requests, and cost settled.
#[derive(Debug, Default, Clone, Copy)]
pub struct FundState {
    /// Held by admitted, unsettled requests.
    pub held: i64,
    /// Settled through this meter, in all.
    pub settled: i64,
    /// `settled` that the control plane's `applied` counts from (moves when it reloads).
    pub base: i64,
    /// The control plane generation `base` was taken at.
    pub generation: u64,
}

impl FundState {
    /// Checks `cost` against the funds and holds it, or says what is missing. Funds the control plane has not
    /// applied yet (settled here, not yet charged there) count as spent; a new control plane generation (a reload
    /// of balances from the store) is taken to reflect every settlement so far.
    pub fn hold(&mut self, funds: &crate::traits::Funds, cost: i64) -> Result<(), i64> {
        if funds.generation != self.generation {
            self.generation = funds.generation;
            self.base = self.settled - funds.applied;
        }
        let unapplied = (self.settled - self.base - funds.applied).max(0);
        let free = funds.available.0 - unapplied - self.held;
        if cost > free {
            return Err(free.max(0));
        }
        self.held += cost;
        Ok(())
    }

    /// Replaces a hold with the settled cost.
    pub fn settle(&mut self, held: i64, cost: i64) {
        self.held = (self.held - held).max(0);
        self.settled += cost;
    }
}

/// The refusal for a request its funds cannot cover.
pub fn no_funds(path: &str, free: i64, cost: i64) -> GatewayError {
    GatewayError::RateLimited {
        message: format!(
            "insufficient credits: account {path} has {} available and this request may cost up to {}",
            crate::money::Micros(free),
            crate::money::Micros(cost)
        ),
        retry_after: None,
        bound: None,
    }
}

/// The in-memory meter: limits are correct for one instance.
#[derive(Debug)]
pub struct InMemoryMeter {
    epoch: Instant,
    counters: RwLock<HashMap<LimitNode, Arc<Mutex<Counters>>>>,
    funds: Mutex<HashMap<crate::ids::AccountId, FundState>>,
    log: Mutex<VecDeque<UsageRecord>>,
    log_cap: usize,
}

impl Default for InMemoryMeter {
    fn default() -> Self {
        Self::new(10_000)
    }
}

/// The numeric limits of a policy.
pub fn limits_of(p: &crate::policy::Policy) -> Limits {
    Limits { rpm: p.rpm, rpd: p.rpd, tpm: p.tpm, tpd: p.tpd, daily_limit: p.daily_limit }
}

/// The counters a request charges, root first, with their limits and a label for refusals: every account of the
/// path (bounded or not, so a bound added later sees the day's earlier traffic and operators see live use), their
/// per-model rules matching the name each account saw in the walk, the key's own limits and its per-model rules
/// (the key sees the requested name). Shared by every [`Meter`] implementation so they count the same nodes.
pub fn limit_nodes<'p>(
    p: &'p Principal,
    model: &str,
    r: Option<&crate::policy::ModelResolution>,
) -> Vec<(LimitNode, Limits, Who<'p>)> {
    let mut v = Vec::with_capacity(p.chain.len() + 1);
    for a in p.chain.iter() {
        v.push((LimitNode::Account(a.id), limits_of(&a.policy), Who::Account(&a.path)));
        let seen = r.and_then(|r| r.name_at(a.id)).unwrap_or(model);
        for (i, (g, l)) in a.policy.model_limits.iter().enumerate() {
            if l.any() && g.matches(seen) {
                v.push((LimitNode::Model(a.id, i as u16), *l, Who::AccountModels(&a.path, g)));
            }
        }
    }
    if let Some(kp) = &p.key.policy {
        let l = limits_of(kp);
        if l.any() {
            v.push((LimitNode::Key(p.key.id), l, Who::Key(&p.key.prefix)));
        }
        for (i, (g, l)) in kp.model_limits.iter().enumerate() {
            if l.any() && g.matches(model) {
                v.push((LimitNode::KeyModel(p.key.id, i as u16), *l, Who::KeyModels(&p.key.prefix, g)));
            }
        }
    }
    v
}

/// Who a limit node belongs to, for refusal messages (rendered only when a request is refused).
#[derive(Clone, Copy, Debug)]
pub enum Who<'p> {
    /// An account, by path.
    Account(&'p str),
    /// A per-model rule of an account.
    AccountModels(&'p str, &'p crate::policy::ModelPattern),
    /// A key, by its visible prefix.
    Key(&'p str),
    /// A per-model rule of a key.
    KeyModels(&'p str, &'p crate::policy::ModelPattern),
}

impl std::fmt::Display for Who<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Who::Account(p) => write!(f, "account {p}"),
            Who::AccountModels(p, g) => write!(f, "account {p} for models {g}"),
            Who::Key(k) => write!(f, "key {k}"),
            Who::KeyModels(k, g) => write!(f, "key {k} for models {g}"),
        }
    }
}

impl InMemoryMeter {
    /// A meter keeping the last `log_cap` records.
    pub fn new(log_cap: usize) -> Self {
        Self {
            epoch: Instant::now(),
            counters: RwLock::default(),
            funds: Mutex::default(),
            log: Mutex::default(),
            log_cap,
        }
    }

    fn sec(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    /// The wall-clock time of second `sec` of this meter.
    fn epoch_time(&self, sec: u64) -> SystemTime {
        let ago = self.epoch.elapsed().saturating_sub(Duration::from_secs(sec));
        SystemTime::now() - ago
    }

    fn node(&self, n: LimitNode) -> Arc<Mutex<Counters>> {
        if let Some(w) = self.counters.read().get(&n) {
            return w.clone();
        }
        self.counters.write().entry(n).or_default().clone()
    }

    fn bounded<'p>(
        p: &'p Principal,
        model: &str,
        r: Option<&crate::policy::ModelResolution>,
    ) -> Vec<(LimitNode, Limits, Who<'p>)> {
        limit_nodes(p, model, r)
    }

    /// Live use of an account (aggregate over its subtree): requests and tokens in the last minute, and today.
    pub fn live(&self, account: crate::ids::AccountId) -> LiveUsage {
        let Some(c) = self.counters.read().get(&LimitNode::Account(account)).cloned() else {
            return LiveUsage::default();
        };
        let mut c = c.lock();
        c.roll(Day::today());
        let (requests_minute, tokens_minute) = c.sums(self.sec());
        LiveUsage {
            requests_minute,
            tokens_minute,
            requests_today: c.day_requests,
            tokens_today: c.day_tokens,
            spent_today: crate::money::Micros(c.day_spent),
        }
    }

    fn admit_now(&self, req: &AdmitRequest<'_>) -> Result<Reservation, GatewayError> {
        let nodes = Self::bounded(req.principal, req.model, req.resolution);
        let sec = self.sec();
        let cost = req.cost.0;
        let mut reservation = Reservation {
            chain: Some(req.principal.chain_ids.clone()),
            tokens: req.estimate_tokens,
            slot: sec,
            ..Reservation::default()
        };
        let day = Day::today();
        let counters: Vec<_> = nodes.iter().map(|(n, _, _)| self.node(*n)).collect();
        // Locks are taken root first, always in the same order, then the funds: no deadlock, and
        // check-then-add is atomic across the whole path and the funds.
        let mut guards: Vec<_> = counters.iter().map(|w| w.lock()).collect();
        let mut rate = crate::traits::RateInfo::default();
        let midnight = std::cell::OnceCell::new();
        let until_midnight = || *midnight.get_or_init(until_midnight);
        for ((_, l, who), c) in nodes.iter().zip(guards.iter_mut()) {
            c.roll(day);
            let (r, t) = c.sums(sec);
            let reset = c.retry_after(sec);
            let minute = |bound: &str, limit: u64| GatewayError::RateLimited {
                message: format!("rate limit reached: {bound} {limit} of {who}"),
                retry_after: Some(Duration::from_secs(reset)),
                bound: Some(if bound == "rpm" { RateBound::Requests(limit) } else { RateBound::Tokens(limit) }),
            };
            let daily = |bound: &str, limit: String| GatewayError::RateLimited {
                message: format!("daily limit reached: {bound} {limit} of {who}"),
                retry_after: Some(until_midnight()),
                bound: match (bound, limit.parse::<u64>()) {
                    ("rpd", Ok(n)) => Some(RateBound::Requests(n)),
                    ("tpd", Ok(n)) => Some(RateBound::Tokens(n)),
                    _ => None,
                },
            };
            let est = req.estimate_tokens;
            if let Some(x) = l.rpm {
                if r + 1 > x {
                    return Err(minute("rpm", x));
                }
                rate.requests_bound(x, x - r - 1, reset);
            }
            if let Some(x) = l.tpm {
                if t + est > x {
                    return Err(minute("tpm", x));
                }
                rate.tokens_bound(x, x - t - est, reset);
            }
            if let Some(x) = l.rpd {
                if c.day_requests + 1 > x {
                    return Err(daily("rpd", x.to_string()));
                }
                rate.requests_bound(x, x - c.day_requests - 1, until_midnight().as_secs());
            }
            if let Some(x) = l.tpd {
                if c.day_tokens + est > x {
                    return Err(daily("tpd", x.to_string()));
                }
                rate.tokens_bound(x, x - c.day_tokens - est, until_midnight().as_secs());
            }
            if let Some(x) = l.daily_limit {
                let used = c.day_spent.saturating_add(c.day_held);
                if used >= x.0 || used.saturating_add(cost) > x.0 {
                    let left = crate::money::Micros((x.0 - used).max(0));
                    return Err(daily(
                        "daily_limit",
                        format!("{x} credits ({left} left; this request may cost up to {})", req.cost),
                    ));
                }
            }
        }
        if let Some(f) = &req.funds
            && cost > 0
        {
            let mut funds = self.funds.lock();
            let st = funds.entry(f.account).or_default();
            if let Err(free) = st.hold(f, cost) {
                let path = req.principal.chain.iter().find(|a| a.id == f.account).map_or("?", |a| &*a.path);
                return Err(no_funds(path, free, cost));
            }
            reservation.funder = Some(f.account);
        }
        for c in guards.iter_mut() {
            let i = c.bucket(sec);
            c.requests[i] += 1;
            c.tokens[i] += req.estimate_tokens;
            c.day_requests += 1;
            c.day_tokens += req.estimate_tokens;
            c.day_held += cost;
        }
        reservation.cost = req.cost;
        reservation.nodes = nodes.iter().map(|(n, _, _)| *n).collect();
        reservation.rate = (rate != crate::traits::RateInfo::default()).then_some(rate);
        Ok(reservation)
    }

    /// What this meter holds and has settled for a paying account.
    pub fn fund_state(&self, account: crate::ids::AccountId) -> FundState {
        self.funds.lock().get(&account).copied().unwrap_or_default()
    }
}

impl Meter for InMemoryMeter {
    fn admit<'a>(&'a self, req: &'a AdmitRequest<'a>) -> Maybe<'a, Result<Reservation, GatewayError>> {
        Maybe::Ready(self.admit_now(req))
    }

    fn record(&self, record: UsageRecord, reservation: Reservation) {
        if let Some(f) = reservation.funder {
            self.funds.lock().entry(f).or_default().settle(reservation.cost.0, record.cost.0);
        }
        if !reservation.nodes.is_empty() {
            let actual = record.usage.total();
            let day = Day::of(record.time);
            let held_day = Day::of(self.epoch_time(reservation.slot));
            let map = self.counters.read();
            for n in reservation.nodes.iter() {
                let Some(c) = map.get(n) else { continue };
                let mut c = c.lock();
                let i = (reservation.slot % WINDOW as u64) as usize;
                if c.stamp[i] == reservation.slot {
                    c.tokens[i] = (c.tokens[i] + actual).saturating_sub(reservation.tokens);
                }
                if c.day == held_day {
                    c.day_held = (c.day_held - reservation.cost.0).max(0);
                }
                if c.day == day {
                    c.day_tokens = (c.day_tokens + actual).saturating_sub(reservation.tokens);
                    c.day_spent = c.day_spent.saturating_add(record.cost.0);
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
    use crate::ids::{AccountId, KeyId};
    use crate::money::Micros;
    use crate::policy::{Account, ModelPattern, Policy, Role, Status, VirtualKey};
    use crate::protocol::Protocol;
    use crate::secret::KeyDigest;
    use crate::usage::{RecordStatus, Usage};

    fn principal(policies: Vec<Policy>, key: u64) -> Principal {
        let chain: Vec<Arc<Account>> = policies
            .into_iter()
            .enumerate()
            .map(|(i, policy)| {
                Arc::new(Account {
                    id: AccountId(i as u64 + 1),
                    parent: (i > 0).then_some(AccountId(i as u64)),
                    name: format!("a{i}").into(),
                    path: format!("a{i}").into(),
                    status: Status::Active,
                    role: Role::Member,
                    policy,
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

    fn lim(rpm: Option<u64>, tpm: Option<u64>) -> Policy {
        Policy { rpm, tpm, ..Policy::default() }
    }

    fn record(p: &Principal, total: u64, cost: i64) -> UsageRecord {
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
            cost: Micros(cost),
            estimated: false,
        }
    }

    fn ask<'a>(m: &InMemoryMeter, p: &'a Principal, model: &'a str, est: u64) -> Result<Reservation, GatewayError> {
        m.admit_now(&AdmitRequest {
            principal: p,
            model,
            estimate_tokens: est,
            resolution: None,
            cost: Micros::ZERO,
            funds: None,
        })
    }

    #[test]
    fn parent_rpm_is_aggregate_over_children() {
        let m = InMemoryMeter::default();
        let a = principal(vec![lim(Some(3), None), lim(None, None)], 1);
        let b0 = principal(vec![lim(Some(3), None), lim(None, None)], 2);
        // b is a sibling of a: the same root, another leaf.
        let leaf = Arc::new(Account { id: AccountId(99), ..(*b0.chain[1]).clone() });
        let b = Principal::new(b0.key.clone(), vec![b0.chain[0].clone(), leaf]);
        assert!(ask(&m, &a, "m", 1).is_ok() && ask(&m, &b, "m", 1).is_ok() && ask(&m, &a, "m", 1).is_ok());
        let e = ask(&m, &b, "m", 1).unwrap_err();
        assert_eq!(e.status(), 429);
        assert!(e.to_string().contains("rpm 3 of account a0"), "{e}");
        assert!(e.retry_after().unwrap() <= Duration::from_secs(60));
    }

    #[test]
    fn tpm_settles_to_actual() {
        let m = InMemoryMeter::default();
        let p = principal(vec![lim(None, Some(1000))], 1);
        let r = ask(&m, &p, "m", 900).unwrap();
        assert!(ask(&m, &p, "m", 200).is_err(), "900 reserved + 200 > 1000");
        m.record(record(&p, 100, 0), r);
        assert!(ask(&m, &p, "m", 800).is_ok());
        assert!(ask(&m, &p, "m", 200).is_err());
        assert_eq!(m.recent(10).len(), 1);
    }

    #[test]
    fn day_bounds_and_daily_credits() {
        let m = InMemoryMeter::default();
        let p = principal(vec![Policy { rpd: Some(2), daily_limit: Some(Micros(10)), ..Policy::default() }], 1);
        let r = ask(&m, &p, "m", 1).unwrap();
        m.record(record(&p, 1, 10), r);
        let e = ask(&m, &p, "m", 1).unwrap_err();
        assert!(e.to_string().contains("daily_limit"), "{e}");
        let q = principal(vec![Policy { rpd: Some(2), ..Policy::default() }], 2);
        let m2 = InMemoryMeter::default();
        ask(&m2, &q, "m", 1).unwrap();
        ask(&m2, &q, "m", 1).unwrap();
        assert!(ask(&m2, &q, "m", 1).unwrap_err().to_string().contains("rpd 2"));
    }

    #[test]
    fn per_model_rules_apply_to_matching_models_only() {
        let m = InMemoryMeter::default();
        let rule = Limits { rpm: Some(1), ..Limits::default() };
        let p = principal(
            vec![Policy { model_limits: vec![(ModelPattern::new("gpt-4o*").unwrap(), rule)], ..Policy::default() }],
            1,
        );
        ask(&m, &p, "gpt-4o", 1).unwrap();
        assert!(ask(&m, &p, "gpt-4o-mini", 1).unwrap_err().to_string().contains("for models gpt-4o*"));
        for _ in 0..5 {
            ask(&m, &p, "o3", 1).unwrap();
        }
    }

    #[test]
    fn a_bound_added_later_sees_the_days_earlier_traffic() {
        let m = InMemoryMeter::default();
        let p = principal(vec![lim(None, None)], 1);
        for _ in 0..4 {
            let r = ask(&m, &p, "m", 10).unwrap();
            m.record(record(&p, 3, 0), r);
        }
        let live = m.live(AccountId(1));
        assert_eq!((live.requests_today, live.tokens_today, live.requests_minute), (4, 12, 4));
        let bounded = principal(vec![Policy { rpd: Some(5), ..Policy::default() }], 1);
        ask(&m, &bounded, "m", 1).unwrap();
        assert!(ask(&m, &bounded, "m", 1).unwrap_err().to_string().contains("rpd 5"));
    }
}

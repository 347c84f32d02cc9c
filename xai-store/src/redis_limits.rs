//! Cluster-wide limits in Redis (DESIGN §4, §5): [`RedisMeter`] is the [`Meter`] every gateway instance of a
//! cluster shares.
//!
//! Admission is one Lua script: for every bounded node of the request (the caller's account and every ancestor,
//! their per-model rules matching the model, the key's own limits — the same node set and limits as
//! [`InMemoryMeter`]) it checks the sliding minute (per-second buckets in a hash) and today's counters, and only
//! when every bound passes it charges all of them.
//!
//! **Leases.** Where every bound on the path has plenty of headroom (at least [`LEASE_MIN_HEADROOM`] requests
//! left in the minute and the day, and no daily credit limit), the script charges up to [`LEASE_MAX`] requests
//! more than the one asked (never more than a sixteenth of what is left) and the instance keeps them as a lease for
//! the current second: the next requests of that path in the same second are admitted from memory, without a
//! round trip. The bound still holds exactly, since everything leased was charged in Redis first; what a lease
//! did not use is given back when its second ends. One admission per tree and instance asks for a lease at a
//! time; concurrent admissions that miss wait for its answer (bounded by the admit timeout) and take from the lease
//! it brings, so a burst costs one round trip instead of one each. Tight bounds (rpm = 20) are never leased: every request goes
//! to Redis, and two instances taking turns admit exactly the limit.
//!
//! **Budgets.** A request with a cost to hold (a priced model on a funded path) also checks the paying account's
//! fund hash in the same script: the control plane's view of the funds, minus the settlements it has not applied
//! yet, minus what is held, must cover the cost. Money is leased like requests, only when the funds have at least
//! [`LEASE_MIN_HEADROOM`] times the cost left (a sixteenth of it at most); tight funds go to Redis every time, so
//! twenty concurrent requests on funds for four admit four on any number of instances.
//!
//! **Settlement** (`record`) is batched: token corrections (actual − estimate) and spend are summed per path,
//! second and day, and written with the lease returns every [`FLUSH_EVERY`] in one pipelined round trip.
//!
//! Keys: `{prefix}{<root>}:<node>:w` (the minute: 60 one-second buckets, TTL two minutes) and
//! `{prefix}{<root>}:<node>:d<day>` (fields `r`, `t`, `s`: requests, tokens, micro-credits; TTL two days). The root
//! account's id is the hash tag, so one path's keys share a slot and the script stays atomic on Redis Cluster.
//! Seconds and days come from the gateway's clock (NTP-synchronised instances agree to well under a second).
//!
//! When Redis errors or does not answer within the admit timeout, admission falls back to an inner
//! [`InMemoryMeter`] (per-instance limits), a warning is logged once per outage and [`RedisMeter::degraded`]
//! counts the requests admitted locally. A background ping (at most every half second, never on the request path)
//! notices when Redis answers again, and admission goes back to it.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use tokio::sync::Notify;
use xai_core::error::RateBound;
use xai_core::memory::{InMemoryMeter, Who};
use xai_core::policy::Limits;
use xai_core::traits::{LimitNode, StoreError};
use xai_core::{
    AccountId, AdmitRequest, BoxFuture, Funds, GatewayError, Maybe, Meter, Micros, RateInfo, Reservation, UsageRecord,
};

/// Marks a reservation taken in Redis (its slot is the unix second); local reservations never set it.
const REDIS_SLOT: u64 = 1 << 63;
/// The sliding window, in seconds.
const WINDOW: u64 = 60;
/// TTL of the minute hashes.
const WINDOW_TTL: u64 = 2 * WINDOW;
/// TTL of the day hashes.
const DAY_TTL: u64 = 2 * 86_400;
/// TTL of a fund hash (refreshed by every admission and settlement of the account).
const FUND_TTL: u64 = 30 * 86_400;
/// Default bound on one admission round trip.
const ADMIT_TIMEOUT: Duration = Duration::from_millis(50);
/// Bound on one settlement round trip.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);
/// Minimum interval between two recovery probes.
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// Most requests one admission round trip may lease beyond the one asked.
pub const LEASE_MAX: u64 = 64;
/// Headroom (requests left in the minute or the day) below which a bound is never leased.
pub const LEASE_MIN_HEADROOM: u64 = 256;
/// How often lease returns and settlements are written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Checks every bounded node, then charges all of them or none.
///
/// KEYS: per node `i` (1-based), `KEYS[2i-1]` its minute hash, `KEYS[2i]` its day hash.
/// The minute hash holds 60 one-second buckets (`s<n>` the bucket's second, `r<n>` requests, `t<n>` tokens, `n` =
/// second mod 60), so it never grows; a bucket counts while its second is within the last minute.
/// With funds, the last key is the paying account's fund hash (`held`: cost held by admitted requests, `settled`:
/// cost settled in all, and per instance `g:<id>`/`b:<id>`: the control-plane generation and the `settled` value
/// its `applied` counts from).
/// ARGV: now (unix second), estimate tokens, minute TTL, day TTL, bucket index, lease wanted (extra requests),
/// lease minimum headroom, cost held (micro-credits), funded (`1`/`0`), available funds, applied, generation,
/// instance id, fund TTL, then per node five limits (rpm, tpm, rpd, tpd, daily micro-credits), an empty string
/// when unbounded. A day hash's `h` is the cost held against `daily_limit` by unsettled requests.
/// Returns `{1, leased, request limit, requests left, reset, token limit, tokens left, reset}` when admitted
/// (`leased` extra requests, each with the estimate in tokens and, when funded, the cost in money, were charged
/// too; a limit of 0 means none; a reset
/// of -1 means midnight), else `{0, node index, bound (1 rpm, 2 tpm, 3 rpd, 4 tpd, 5 daily, 6 funds), retry secs
/// or credits left}`.
const ADMIT_LUA: &str = r"
local now = tonumber(ARGV[1])
local est = tonumber(ARGV[2])
local wttl, dttl, idx = ARGV[3], ARGV[4], ARGV[5]
local g, lmin = tonumber(ARGV[6]), tonumber(ARGV[7])
local cost, funded = tonumber(ARGV[8]), ARGV[9] == '1'
local per = 16 * math.max(est, 1)
local n = #KEYS / 2
local fk = nil
if funded then
  n = (#KEYS - 1) / 2
  fk = KEYS[#KEYS]
  local inst = ARGV[13]
  local fv = redis.call('HMGET', fk, 'held', 'settled', 'g:' .. inst, 'b:' .. inst)
  local held, settled = tonumber(fv[1]) or 0, tonumber(fv[2]) or 0
  local applied = tonumber(ARGV[11])
  local base = tonumber(fv[4])
  if fv[3] ~= ARGV[12] or base == nil then
    base = settled - applied
    redis.call('HSET', fk, 'g:' .. inst, ARGV[12], 'b:' .. inst, base)
    redis.call('EXPIRE', fk, ARGV[14])
  end
  local unapplied = math.max(0, settled - base - applied)
  local free = tonumber(ARGV[10]) - unapplied - held
  if cost > free then return {0, 0, 6, math.max(free, 0)} end
  -- Money is leased like requests, only with plenty of headroom: a sixteenth of what is left at most.
  local fr = free - cost
  if cost > 0 and fr >= lmin * cost then g = math.min(g, math.floor(fr / (16 * cost))) else g = 0 end
end
local rrem, rlim, rres, trem, tlim, tres = -1, 0, 0, -1, 0, 0
for i = 1, n do
  local w = KEYS[2 * i - 1]
  local d = KEYS[2 * i]
  local b = 14 + (i - 1) * 5
  local rpm, tpm = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2])
  local rpd, tpd, daily = tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5])
  if rpm or tpm then
    local flat = redis.call('HGETALL', w)
    local st, rq, tk = {}, {}, {}
    for j = 1, #flat, 2 do
      local f = flat[j]
      local kind, at, v = string.sub(f, 1, 1), string.sub(f, 2), tonumber(flat[j + 1]) or 0
      if kind == 's' then st[at] = v elseif kind == 'r' then rq[at] = v else tk[at] = v end
    end
    local r, t, oldest = 0, 0, nil
    for at, sec in pairs(st) do
      if sec + 60 > now and sec < now + 60 then
        local rv, tv = rq[at] or 0, tk[at] or 0
        r = r + rv
        t = t + tv
        if (rv > 0 or tv > 0) and (oldest == nil or sec < oldest) then oldest = sec end
      end
    end
    local retry = 1
    if oldest then retry = math.max(1, oldest + 60 - now) end
    if rpm and r + 1 > rpm then return {0, i, 1, retry} end
    if tpm and t + est > tpm then return {0, i, 2, retry} end
    if rpm and (rrem < 0 or rpm - r - 1 < rrem) then rrem, rlim, rres = rpm - r - 1, rpm, retry end
    if tpm and (trem < 0 or tpm - t - est < trem) then trem, tlim, tres = tpm - t - est, tpm, retry end
    if rpm then
      local h = rpm - r - 1
      if h >= lmin then g = math.min(g, math.floor(h / 16)) else g = 0 end
    end
    if tpm then g = math.min(g, math.floor((tpm - t - est) / per)) end
  end
  if rpd or tpd or daily then
    local day = redis.call('HMGET', d, 'r', 't', 's', 'h')
    local dr, dt, ds = tonumber(day[1]) or 0, tonumber(day[2]) or 0, tonumber(day[3]) or 0
    local dh = tonumber(day[4]) or 0
    if rpd and dr + 1 > rpd then return {0, i, 3, 0} end
    if tpd and dt + est > tpd then return {0, i, 4, 0} end
    if daily and (ds + dh >= daily or ds + dh + cost > daily) then return {0, i, 5, math.max(0, daily - ds - dh)} end
    if rpd and (rrem < 0 or rpd - dr - 1 < rrem) then rrem, rlim, rres = rpd - dr - 1, rpd, -1 end
    if tpd and (trem < 0 or tpd - dt - est < trem) then trem, tlim, tres = tpd - dt - est, tpd, -1 end
    if daily then g = 0 end
    if rpd then
      local h = rpd - dr - 1
      if h >= lmin then g = math.min(g, math.floor(h / 16)) else g = 0 end
    end
    if tpd then g = math.min(g, math.floor((tpd - dt - est) / per)) end
  end
end
if g < 0 then g = 0 end
local rq, tk = 1 + g, est * (1 + g)
local sf, rf, tf = 's' .. idx, 'r' .. idx, 't' .. idx
for i = 1, n do
  local w = KEYS[2 * i - 1]
  local d = KEYS[2 * i]
  if tonumber(redis.call('HGET', w, sf)) == now then
    redis.call('HINCRBY', w, rf, rq)
    redis.call('HINCRBY', w, tf, tk)
  else
    redis.call('HSET', w, sf, ARGV[1], rf, rq, tf, tk)
  end
  redis.call('EXPIRE', w, wttl)
  redis.call('HINCRBY', d, 'r', rq)
  redis.call('HINCRBY', d, 't', tk)
  if cost > 0 then redis.call('HINCRBY', d, 'h', cost) end
  redis.call('EXPIRE', d, dttl)
end
if fk and cost > 0 then
  redis.call('HINCRBY', fk, 'held', cost * (1 + g))
  redis.call('EXPIRE', fk, ARGV[14])
end
return {1, g, rlim, rrem, rres, tlim, trem, tres}
";

/// Counts admissions on a node without limits (batched: the request path never waits for it).
///
/// KEYS: the node's minute hash, its day hash. ARGV: second, bucket index, requests, tokens, minute TTL, day TTL.
/// A bucket already reused by a later second keeps its count (the minute has moved on).
const ADD_LUA: &str = r"
local w, d = KEYS[1], KEYS[2]
local sec, idx = tonumber(ARGV[1]), ARGV[2]
local sf, rf, tf = 's' .. idx, 'r' .. idx, 't' .. idx
local cur = tonumber(redis.call('HGET', w, sf))
if cur == sec then
  redis.call('HINCRBY', w, rf, ARGV[3])
  redis.call('HINCRBY', w, tf, ARGV[4])
elseif cur == nil or cur < sec then
  redis.call('HSET', w, sf, ARGV[1], rf, ARGV[3], tf, ARGV[4])
end
redis.call('EXPIRE', w, ARGV[5])
redis.call('HINCRBY', d, 'r', ARGV[3])
redis.call('HINCRBY', d, 't', ARGV[4])
redis.call('EXPIRE', d, ARGV[6])
return 1
";

/// Gives back what a lease did not use.
///
/// KEYS: the node's minute hash, the day hash of the lease. ARGV: the lease's second, its bucket index, requests
/// and tokens to give back. A bucket already reused by a later second is left alone; counters never go below 0.
const RETURN_LUA: &str = r"
local w, d = KEYS[1], KEYS[2]
local rf, tf = 'r' .. ARGV[2], 't' .. ARGV[2]
local r, t = tonumber(ARGV[3]), tonumber(ARGV[4])
if tonumber(redis.call('HGET', w, 's' .. ARGV[2])) == tonumber(ARGV[1]) then
  if redis.call('HINCRBY', w, rf, -r) < 0 then redis.call('HSET', w, rf, 0) end
  if redis.call('HINCRBY', w, tf, -t) < 0 then redis.call('HSET', w, tf, 0) end
end
if redis.call('EXISTS', d) == 1 then
  if redis.call('HINCRBY', d, 'r', -r) < 0 then redis.call('HSET', d, 'r', 0) end
  if redis.call('HINCRBY', d, 't', -t) < 0 then redis.call('HSET', d, 't', 0) end
end
return 1
";

/// Gives back the money a fund lease did not use. KEYS: the fund hash. ARGV: micro-credits. Never below zero.
const RETURN_FUND_LUA: &str = r"
if redis.call('HINCRBY', KEYS[1], 'held', -tonumber(ARGV[1])) < 0 then redis.call('HSET', KEYS[1], 'held', 0) end
return 1
";

/// Settles a reservation.
///
/// KEYS: per node, its minute hash, the day hash of the reservation, the day hash of the record; last, when
/// funded, the paying account's fund hash.
/// ARGV: reservation second, token delta (actual − estimate), spend (micro-credits), day TTL, bucket index, cost
/// held at admission (released from the fund and the reservation day's `h`), funded (`1`/`0`), fund TTL.
/// Counters never go below zero; buckets and days already gone are left alone.
const SETTLE_LUA: &str = r"
local sf, tf = 's' .. ARGV[5], 't' .. ARGV[5]
local slot = tonumber(ARGV[1])
local delta = tonumber(ARGV[2])
local spend = tonumber(ARGV[3])
local held = tonumber(ARGV[6])
local nk = #KEYS
if ARGV[7] == '1' then
  local f = KEYS[nk]
  nk = nk - 1
  if redis.call('HINCRBY', f, 'held', -held) < 0 then redis.call('HSET', f, 'held', 0) end
  redis.call('HINCRBY', f, 'settled', ARGV[3])
  redis.call('EXPIRE', f, ARGV[8])
end
for i = 1, nk / 3 do
  local w, ds, dr = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  if delta ~= 0 then
    if tonumber(redis.call('HGET', w, sf)) == slot then
      if redis.call('HINCRBY', w, tf, ARGV[2]) < 0 then redis.call('HSET', w, tf, 0) end
    end
    if redis.call('EXISTS', ds) == 1 then
      if redis.call('HINCRBY', ds, 't', ARGV[2]) < 0 then redis.call('HSET', ds, 't', 0) end
    end
  end
  if held ~= 0 and redis.call('EXISTS', ds) == 1 then
    if redis.call('HINCRBY', ds, 'h', -held) < 0 then redis.call('HSET', ds, 'h', 0) end
  end
  if spend ~= 0 then
    redis.call('HINCRBY', dr, 's', ARGV[3])
    redis.call('EXPIRE', dr, ARGV[4])
  end
end
return 1
";

/// A bounded node of a request: its counter, its limits and who it is (for messages).
fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn day_of(t: SystemTime) -> i64 {
    xai_core::day::Day::of(t).0
}

/// The gateway's day (its configured time zone) of a Unix second.
fn day_of_secs(sec: u64) -> i64 {
    xai_core::day::Day::of_secs(sec as i64).0
}

fn until_midnight(now: u64) -> Duration {
    xai_core::day::calendar().until_midnight(UNIX_EPOCH + Duration::from_secs(now))
}

fn opt<T: ToString>(x: Option<T>) -> String {
    x.map(|x| x.to_string()).unwrap_or_default()
}

/// Requests and tokens charged in Redis for one node and not used yet, valid during second `sec`.
#[derive(Clone, Copy, Debug)]
struct Lease {
    sec: u64,
    requests: u64,
    tokens: u64,
}

/// The right of one in-flight admission to ask Redis for a lease on its tree (given back when dropped, waking the
/// admissions that waited for its answer).
struct LeaseAsk<'a> {
    shared: &'a Shared,
    root: u64,
}

/// What an admission that found another one asking for its tree's lease waits on (already registered, so the
/// answer cannot slip by between the check and the wait).
type LeaseWait = std::pin::Pin<Box<tokio::sync::futures::OwnedNotified>>;

impl<'a> LeaseAsk<'a> {
    /// The right to ask, or, when another admission of this instance asks for this tree right now, its answer to
    /// wait for.
    fn take(shared: &'a Shared, root: u64) -> Result<Self, LeaseWait> {
        let mut asking = shared.leasing.lock();
        match asking.entry(root) {
            Entry::Occupied(o) => {
                let mut wait = Box::pin(o.get().clone().notified_owned());
                wait.as_mut().enable();
                Err(wait)
            }
            Entry::Vacant(v) => {
                v.insert(Arc::new(Notify::new()));
                Ok(LeaseAsk { shared, root })
            }
        }
    }
}

impl Drop for LeaseAsk<'_> {
    fn drop(&mut self) {
        let waiting = self.shared.leasing.lock().remove(&self.root);
        if let Some(n) = waiting {
            n.notify_waiters();
        }
    }
}

/// Money held in Redis for one paying account, for this instance's admissions during one second.
#[derive(Clone, Copy, Debug)]
struct FundLease {
    sec: u64,
    micros: i64,
}

/// An unbounded node's count: (root, node, second).
type CountKey = (u64, LimitNode, u64);

/// Settlements of one path, second, day and paying account, summed until the next flush.
type SettleKey = (u64, u64, i64, Arc<[LimitNode]>, Option<u64>);

/// What a flush writes for one [`SettleKey`]: token delta, spend, cost held at admission.
#[derive(Debug, Default, Clone, Copy)]
struct Settle {
    delta: i64,
    spend: i64,
    held: i64,
}

/// State shared with the spawned flush and probe tasks.
#[derive(Debug)]
struct Shared {
    conn: ConnectionManager,
    prefix: String,
    settle: redis::Script,
    give_back: redis::Script,
    add: redis::Script,
    /// Per (root, node): the lease of the current second.
    leases: Mutex<HashMap<(u64, LimitNode), Lease>>,
    /// Leases replaced before the flusher saw them, to give back.
    returns: Mutex<Vec<(u64, LimitNode, Lease)>>,
    /// Per (root, paying account): money held in Redis for this instance's next admissions of the current second.
    fund_leases: Mutex<HashMap<(u64, u64), FundLease>>,
    /// Money of fund leases to give back: (root, paying account, micro-credits).
    fund_returns: Mutex<Vec<(u64, u64, i64)>>,
    give_back_fund: redis::Script,
    /// Token corrections and spend per (root, second, record day, nodes), to write.
    settlements: Mutex<HashMap<SettleKey, Settle>>,
    /// Admissions (requests, tokens) to count on unbounded nodes, per (root, node, second).
    counts: Mutex<HashMap<CountKey, (u64, u64)>>,
    /// Trees with an admission of this instance asking Redis for a lease right now: one at a time per tree, so
    /// a burst of concurrent misses does not lease a tree's whole headroom to this instance; the others wait for
    /// its answer (bounded by the admit timeout) and take from the lease it brings.
    leasing: Mutex<HashMap<u64, Arc<Notify>>>,
    /// Trees whose last lease ask, in the second noted, brought no lease (tight bounds or funds): admissions of that
    /// second do not wait for the next ask, which would bring none either.
    unleasable: Mutex<HashMap<u64, u64>>,
    /// The flush task runs.
    flusher: AtomicBool,
    /// Requests admitted from a lease.
    leased: AtomicU64,
    /// Admissions that waited for another one's lease request.
    lease_waits: AtomicU64,

    /// In an outage: admission runs on the local meter.
    down: AtomicBool,
    /// A recovery probe is running.
    probing: AtomicBool,
    last_probe: Mutex<Option<Instant>>,
    /// Requests admitted locally because Redis was unreachable.
    degraded: AtomicU64,
    /// Outages seen.
    outages: AtomicU64,
    /// Settlements in flight (for `flush`).
    pending: AtomicUsize,
    settled: Notify,
}

impl Shared {
    /// The fund hash of paying account `account` (under the path's root hash tag, so one script can use both).
    fn fund_key(&self, root: u64, account: u64) -> String {
        format!("{}{{{root}}}:f{account}", self.prefix)
    }

    fn key(&self, root: u64, node: LimitNode) -> String {
        let p = &self.prefix;
        match node {
            LimitNode::Account(a) => format!("{p}{{{root}}}:a{}", a.0),
            LimitNode::Key(k) => format!("{p}{{{root}}}:k{}", k.0),
            LimitNode::Model(a, i) => format!("{p}{{{root}}}:a{}:m{i}", a.0),
            LimitNode::KeyModel(k, i) => format!("{p}{{{root}}}:k{}:m{i}", k.0),
        }
    }

    /// Admits from the leases of the current second when every node has one with room and, with `funds`
    /// (paying account, cost), the paying account's fund lease covers the cost; charges them all or none.
    fn take_leased(
        &self,
        root: u64,
        nodes: &[(LimitNode, Limits, Who<'_>)],
        est: u64,
        now: u64,
        funds: Option<(u64, i64)>,
    ) -> bool {
        let mut leases = self.leases.lock();
        let fits = |l: Option<&Lease>| l.is_some_and(|l| l.sec == now && l.requests >= 1 && l.tokens >= est);
        if !nodes.iter().all(|(n, _, _)| fits(leases.get(&(root, *n)))) {
            return false;
        }
        if let Some((payer, cost)) = funds {
            let mut fl = self.fund_leases.lock();
            match fl.get_mut(&(root, payer)) {
                Some(f) if f.sec == now && f.micros >= cost => f.micros -= cost,
                _ => return false,
            }
        }
        for (n, _, _) in nodes {
            if let Some(l) = leases.get_mut(&(root, *n)) {
                l.requests -= 1;
                l.tokens -= est;
            }
        }
        drop(leases);
        self.leased.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Keeps the money an admission leased beyond its own cost.
    fn add_fund_lease(&self, root: u64, payer: u64, micros: i64, now: u64) {
        let mut fl = self.fund_leases.lock();
        let fresh = FundLease { sec: now, micros };
        match fl.entry((root, payer)) {
            Entry::Occupied(mut o) if o.get().sec == now => o.get_mut().micros += micros,
            Entry::Occupied(mut o) => {
                let old = std::mem::replace(o.get_mut(), fresh);
                self.fund_returns.lock().push((root, payer, old.micros));
            }
            Entry::Vacant(v) => {
                v.insert(fresh);
            }
        }
    }

    /// Counts an admission on the nodes without limits (written with the next flush).
    fn count_unbounded(&self, root: u64, free: &[(LimitNode, Limits, Who<'_>)], est: u64, now: u64) {
        let mut c = self.counts.lock();
        for (n, _, _) in free {
            let e = c.entry((root, *n, now)).or_insert((0, 0));
            e.0 += 1;
            e.1 += est;
        }
    }

    /// Keeps what an admission leased beyond its own request.
    fn add_lease(&self, root: u64, nodes: &[(LimitNode, Limits, Who<'_>)], extra: u64, est: u64, now: u64) {
        let mut leases = self.leases.lock();
        for (n, _, _) in nodes {
            let fresh = Lease { sec: now, requests: extra, tokens: extra * est };
            match leases.entry((root, *n)) {
                Entry::Occupied(mut o) if o.get().sec == now => {
                    let l = o.get_mut();
                    l.requests += extra;
                    l.tokens += extra * est;
                }
                Entry::Occupied(mut o) => {
                    let old = std::mem::replace(o.get_mut(), fresh);
                    self.returns.lock().push((root, *n, old));
                }
                Entry::Vacant(v) => {
                    v.insert(fresh);
                }
            }
        }
    }

    /// Writes lease returns (all of them, or only those of past seconds) and settlements in one round trip.
    async fn flush_now(&self, all: bool) {
        let now = unix_now();
        let mut returns = std::mem::take(&mut *self.returns.lock());
        self.leases.lock().retain(|(root, n), l| {
            if all || l.sec != now {
                returns.push((*root, *n, *l));
                false
            } else {
                true
            }
        });
        returns.retain(|(_, _, l)| l.requests > 0 || l.tokens > 0);
        let mut fund_returns = std::mem::take(&mut *self.fund_returns.lock());
        self.fund_leases.lock().retain(|(root, payer), f| {
            if all || f.sec != now {
                fund_returns.push((*root, *payer, f.micros));
                false
            } else {
                true
            }
        });
        fund_returns.retain(|(_, _, m)| *m > 0);
        self.unleasable.lock().retain(|_, sec| *sec == now);
        let settlements = std::mem::take(&mut *self.settlements.lock());
        let counts = std::mem::take(&mut *self.counts.lock());
        if returns.is_empty() && settlements.is_empty() && counts.is_empty() && fund_returns.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        pipe.load_script(&self.give_back).ignore().load_script(&self.settle).ignore();
        pipe.load_script(&self.add).ignore().load_script(&self.give_back_fund).ignore();
        for (root, payer, micros) in &fund_returns {
            let mut inv = self.give_back_fund.prepare_invoke();
            inv.key(self.fund_key(*root, *payer)).arg(*micros);
            pipe.invoke_script(&inv).ignore();
        }
        for ((root, n, sec), (r, t)) in &counts {
            let k = self.key(*root, *n);
            let mut inv = self.add.prepare_invoke();
            inv.key(format!("{k}:w")).key(format!("{k}:d{}", day_of_secs(*sec)));
            inv.arg(*sec).arg(*sec % WINDOW).arg(*r).arg(*t).arg(WINDOW_TTL).arg(DAY_TTL);
            pipe.invoke_script(&inv).ignore();
        }
        for (root, n, l) in &returns {
            let k = self.key(*root, *n);
            let mut inv = self.give_back.prepare_invoke();
            inv.key(format!("{k}:w")).key(format!("{k}:d{}", day_of_secs(l.sec)));
            inv.arg(l.sec).arg(l.sec % WINDOW).arg(l.requests).arg(l.tokens);
            pipe.invoke_script(&inv).ignore();
        }
        for ((root, sec, record_day, nodes, funder), x) in &settlements {
            if x.delta == 0 && x.spend == 0 && x.held == 0 {
                continue;
            }
            let slot_day = day_of_secs(*sec);
            let mut inv = self.settle.prepare_invoke();
            for n in nodes.iter() {
                let k = self.key(*root, *n);
                inv.key(format!("{k}:w")).key(format!("{k}:d{slot_day}")).key(format!("{k}:d{record_day}"));
            }
            if let Some(f) = funder {
                inv.key(self.fund_key(*root, *f));
            }
            inv.arg(*sec).arg(x.delta).arg(x.spend).arg(DAY_TTL).arg(*sec % WINDOW);
            inv.arg(x.held).arg(if funder.is_some() { "1" } else { "0" }).arg(FUND_TTL);
            pipe.invoke_script(&inv).ignore();
        }
        let mut conn = self.conn.clone();
        match tokio::time::timeout(SETTLE_TIMEOUT, pipe.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(
                error = %e,
                returns = returns.len(),
                settlements = settlements.len(),
                "lease returns and settlements not written to Redis: the estimates stay counted"
            ),
            Err(_) => tracing::warn!("lease returns and settlements timed out: the estimates stay counted"),
        }
    }

    fn fail(&self, why: &dyn std::fmt::Display) {
        if !self.down.swap(true, Ordering::AcqRel) {
            self.outages.fetch_add(1, Ordering::Relaxed);
            *self.last_probe.lock() = Some(Instant::now());
            tracing::warn!(error = %why, "Redis unreachable: limits fall back to per-instance counters until it answers");
        }
    }

    fn ok(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            tracing::info!("Redis answers again: limits are cluster-wide again");
        }
    }
}

/// The `x-ratelimit-*` figures the admission script answers: request limit, left, reset, then the same for tokens
/// (a limit of 0: none; a reset of -1: midnight).
fn rate_of(v: &[i64], now: u64) -> Option<RateInfo> {
    let [rl, rr, rs, tl, tr, ts] = v else { return None };
    let reset = |x: i64| if x < 0 { until_midnight(now).as_secs() } else { x as u64 };
    let mut rate = RateInfo::default();
    if *rl > 0 {
        rate.requests_bound(*rl as u64, (*rr).max(0) as u64, reset(*rs));
    }
    if *tl > 0 {
        rate.tokens_bound(*tl as u64, (*tr).max(0) as u64, reset(*ts));
    }
    (rate != RateInfo::default()).then_some(rate)
}

/// The cluster-wide [`Meter`] over Redis, with a local fallback (see the module documentation).
#[derive(Debug)]
pub struct RedisMeter {
    /// This process, for the fund hashes' per-instance baselines.
    instance: String,
    shared: Arc<Shared>,
    admit: redis::Script,
    local: Arc<InMemoryMeter>,
    admit_timeout: Duration,
}

impl RedisMeter {
    /// A meter over `conn`; every key starts with `prefix` (e.g. `xai:`; must not contain `{`). `local` serves
    /// `recent` and is the per-instance fallback during an outage.
    pub fn new(conn: ConnectionManager, prefix: impl Into<String>, local: Arc<InMemoryMeter>) -> Self {
        Self {
            instance: format!("{:016x}", rand::random::<u64>()),
            shared: Arc::new(Shared {
                conn,
                prefix: prefix.into(),
                settle: redis::Script::new(SETTLE_LUA),
                give_back: redis::Script::new(RETURN_LUA),
                add: redis::Script::new(ADD_LUA),
                leases: Mutex::new(HashMap::new()),
                returns: Mutex::new(Vec::new()),
                fund_leases: Mutex::new(HashMap::new()),
                fund_returns: Mutex::new(Vec::new()),
                give_back_fund: redis::Script::new(RETURN_FUND_LUA),
                settlements: Mutex::new(HashMap::new()),
                counts: Mutex::new(HashMap::new()),
                leasing: Mutex::new(HashMap::new()),
                unleasable: Mutex::new(HashMap::new()),
                flusher: AtomicBool::new(false),
                leased: AtomicU64::new(0),
                lease_waits: AtomicU64::new(0),
                down: AtomicBool::new(false),
                probing: AtomicBool::new(false),
                last_probe: Mutex::new(None),
                degraded: AtomicU64::new(0),
                outages: AtomicU64::new(0),
                pending: AtomicUsize::new(0),
                settled: Notify::new(),
            }),
            admit: redis::Script::new(ADMIT_LUA),
            local,
            admit_timeout: ADMIT_TIMEOUT,
        }
    }

    /// A meter over the Redis at `url` (`redis://…`), connecting lazily: an unreachable Redis at start is an outage
    /// like any other (the server starts, on local limits, and goes cluster-wide when Redis answers). Must be
    /// called within a Tokio runtime.
    pub fn connect(url: &str, prefix: impl Into<String>, local: Arc<InMemoryMeter>) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError(format!("redis url: {e}")))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn =
            ConnectionManager::new_lazy_with_config(client, config).map_err(|e| StoreError(format!("redis: {e}")))?;
        Ok(Self::new(conn, prefix, local))
    }

    /// Bounds one admission round trip (default 50 ms); past it, the request is admitted locally.
    pub fn with_admit_timeout(mut self, t: Duration) -> Self {
        self.admit_timeout = t;
        self
    }

    /// Requests admitted on per-instance counters because Redis was unreachable.
    pub fn degraded(&self) -> u64 {
        self.shared.degraded.load(Ordering::Relaxed)
    }

    /// Outages seen (each logged once).
    pub fn outages(&self) -> u64 {
        self.shared.outages.load(Ordering::Relaxed)
    }

    /// Whether admission currently runs on the local fallback.
    pub fn is_degraded(&self) -> bool {
        self.shared.down.load(Ordering::Acquire)
    }

    /// The local meter (records for `recent`, per-instance fallback counters).
    pub fn local(&self) -> &Arc<InMemoryMeter> {
        &self.local
    }

    /// Requests admitted from a lease, without a round trip.
    pub fn leased(&self) -> u64 {
        self.shared.leased.load(Ordering::Relaxed)
    }

    /// Admissions that waited for another admission's lease request on their tree.
    pub fn lease_waits(&self) -> u64 {
        self.shared.lease_waits.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    fn key(&self, root: u64, node: LimitNode) -> String {
        self.shared.key(root, node)
    }

    /// Starts the task that writes lease returns and settlements every [`FLUSH_EVERY`] (once, lazily: it needs
    /// the Tokio runtime). It ends when the meter is dropped.
    fn ensure_flusher(&self) {
        if self.shared.flusher.load(Ordering::Acquire) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        if self.shared.flusher.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(&self.shared);
        rt.spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(sh) = weak.upgrade() else { break };
                if sh.down.load(Ordering::Acquire) {
                    continue;
                }
                sh.pending.fetch_add(1, Ordering::AcqRel);
                sh.flush_now(false).await;
                if sh.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                    sh.settled.notify_waiters();
                }
            }
        });
    }

    /// Admission on the local fallback (and, at most every [`PROBE_EVERY`], a background probe of Redis).
    fn admit_local(&self, req: &AdmitRequest<'_>) -> Result<Reservation, GatewayError> {
        self.shared.degraded.fetch_add(1, Ordering::Relaxed);
        self.probe();
        match self.local.admit(req) {
            Maybe::Ready(r) => r,
            // The in-memory meter always answers at once.
            Maybe::Pending(_) => Err(GatewayError::Internal("local meter pending".into())),
        }
    }

    fn probe(&self) {
        let sh = &self.shared;
        {
            let mut last = sh.last_probe.lock();
            if last.is_some_and(|t| t.elapsed() < PROBE_EVERY) || sh.probing.load(Ordering::Acquire) {
                return;
            }
            *last = Some(Instant::now());
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        if sh.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let sh = self.shared.clone();
        rt.spawn(async move {
            let mut conn = sh.conn.clone();
            let ping =
                tokio::time::timeout(Duration::from_secs(1), redis::cmd("PING").query_async::<String>(&mut conn)).await;
            if matches!(ping, Ok(Ok(_))) {
                sh.ok();
            }
            sh.probing.store(false, Ordering::Release);
        });
    }

    async fn admit_redis(&self, req: &AdmitRequest<'_>) -> Result<Reservation, GatewayError> {
        let Some(root) = req.principal.chain_ids.first().map(|a| a.0) else {
            // No account path: nothing to count cluster-wide.
            return Ok(Reservation::default());
        };
        // The same counters as the in-memory meter, so both mean the same bound.
        let listed = xai_core::memory::limit_nodes(req.principal, req.model, req.resolution);
        let all: Arc<[LimitNode]> = listed.iter().map(|(n, _, _)| *n).collect();
        // Unbounded nodes (accounts without limits on the path) need no check: they are counted with the next
        // flush, so the admission script only touches nodes that can refuse.
        let (nodes, free): (Vec<_>, Vec<_>) = listed.into_iter().partition(|(_, l, _)| l.any());
        let mut now = unix_now();
        let est = req.estimate_tokens;
        let cost = req.cost;
        // Budgets apply to a request with something to hold on a funded path.
        let funds = req.funds.filter(|_| cost.0 > 0);
        let admitted = |rate: Option<RateInfo>, now: u64| {
            if !free.is_empty() {
                self.shared.count_unbounded(root, &free, est, now);
                self.ensure_flusher();
            }
            Reservation {
                chain: Some(req.principal.chain_ids.clone()),
                tokens: est,
                slot: REDIS_SLOT | now,
                nodes: all.clone(),
                cost,
                funder: funds.map(|f| f.account),
                rate,
            }
        };
        let lease_funds = funds.map(|f| (f.account.0, cost.0));
        if (funds.is_none() && nodes.is_empty()) || self.shared.take_leased(root, &nodes, est, now, lease_funds) {
            return Ok(admitted(None, now));
        }
        let leasing = match LeaseAsk::take(&self.shared, root) {
            Ok(ask) => Some(ask),
            Err(_) if self.shared.unleasable.lock().get(&root) == Some(&now) => None,
            Err(wait) => {
                // Another admission of this instance is asking Redis for this tree's lease: its answer is one
                // round trip away and usually covers this request too.
                self.shared.lease_waits.fetch_add(1, Ordering::Relaxed);
                let _ = tokio::time::timeout(self.admit_timeout, wait).await;
                now = unix_now();
                if self.shared.take_leased(root, &nodes, est, now, lease_funds) {
                    return Ok(admitted(None, now));
                }
                LeaseAsk::take(&self.shared, root).ok()
            }
        };
        let day = day_of_secs(now);
        let mut inv = self.admit.prepare_invoke();
        let lease = if leasing.is_some() { LEASE_MAX } else { 0 };
        inv.arg(now).arg(est).arg(WINDOW_TTL).arg(DAY_TTL).arg(now % WINDOW).arg(lease).arg(LEASE_MIN_HEADROOM);
        inv.arg(cost.0).arg(if funds.is_some() { "1" } else { "0" });
        let f = funds.unwrap_or(Funds { account: AccountId(0), available: Micros::ZERO, applied: 0, generation: 0 });
        inv.arg(f.available.0).arg(f.applied).arg(f.generation).arg(&self.instance).arg(FUND_TTL);
        for (n, l, _) in &nodes {
            let k = self.shared.key(root, *n);
            inv.key(format!("{k}:w")).key(format!("{k}:d{day}"));
            inv.arg(opt(l.rpm)).arg(opt(l.tpm)).arg(opt(l.rpd)).arg(opt(l.tpd)).arg(opt(l.daily_limit.map(|m| m.0)));
        }
        if let Some(f) = &funds {
            inv.key(self.shared.fund_key(root, f.account.0));
        }
        let mut conn = self.shared.conn.clone();
        let answer = match tokio::time::timeout(self.admit_timeout, inv.invoke_async::<Vec<i64>>(&mut conn)).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                self.shared.fail(&e);
                return self.admit_local(req);
            }
            Err(_) => {
                self.shared.fail(&format_args!("no answer within {:?}", self.admit_timeout));
                return self.admit_local(req);
            }
        };
        self.shared.ok();
        if leasing.is_some() {
            // Whether this tree leases in this second: if not, concurrent admissions need not wait for an ask.
            let mut unleasable = self.shared.unleasable.lock();
            match answer.as_slice() {
                [1, extra, ..] if *extra > 0 => unleasable.remove(&root),
                _ => unleasable.insert(root, now),
            };
        }
        match answer.as_slice() {
            [1, extra, rest @ ..] => {
                if *extra > 0 {
                    self.shared.add_lease(root, &nodes, *extra as u64, est, now);
                    if let Some(f) = &funds {
                        self.shared.add_fund_lease(root, f.account.0, *extra * cost.0, now);
                    }
                    self.ensure_flusher();
                }
                Ok(admitted(rate_of(rest, now), now))
            }
            [0, ..] if self.shared.take_leased(root, &nodes, est, now, lease_funds) => {
                // A concurrent admission of this instance leased what Redis has left: use it.
                Ok(admitted(None, now))
            }
            [0, 0, 6, free] => {
                let path = req.principal.chain.iter().find(|a| a.id == f.account).map_or("?", |a| &*a.path);
                Err(xai_core::memory::no_funds(path, *free, cost.0))
            }
            [0, i, bound, retry] => {
                let Some((_, l, who)) = usize::try_from(*i - 1).ok().and_then(|i| nodes.get(i)) else {
                    return Err(GatewayError::Internal(format!("limit script answered {answer:?}")));
                };
                let minute = |bound: &str, limit: Option<u64>| GatewayError::RateLimited {
                    message: format!("rate limit reached: {bound} {} of {who}", opt(limit)),
                    retry_after: Some(Duration::from_secs((*retry).clamp(1, WINDOW as i64) as u64)),
                    bound: limit.map(|n| if bound == "rpm" { RateBound::Requests(n) } else { RateBound::Tokens(n) }),
                };
                let daily = |bound: &str, limit: String| GatewayError::RateLimited {
                    message: format!("daily limit reached: {bound} {limit} of {who}"),
                    retry_after: Some(until_midnight(now)),
                    bound: match (bound, limit.parse::<u64>()) {
                        ("rpd", Ok(n)) => Some(RateBound::Requests(n)),
                        ("tpd", Ok(n)) => Some(RateBound::Tokens(n)),
                        _ => None,
                    },
                };
                Err(match bound {
                    1 => minute("rpm", l.rpm),
                    2 => minute("tpm", l.tpm),
                    3 => daily("rpd", opt(l.rpd)),
                    4 => daily("tpd", opt(l.tpd)),
                    _ => daily(
                        "daily_limit",
                        l.daily_limit
                            .map(|x| {
                                format!("{x} credits ({} left; this request may cost up to {cost})", Micros(*retry))
                            })
                            .unwrap_or_default(),
                    ),
                })
            }
            _ => Err(GatewayError::Internal(format!("limit script answered {answer:?}"))),
        }
    }

    /// Queues the settlement of a Redis reservation for the next flush.
    fn settle(&self, record: &UsageRecord, reservation: &Reservation) {
        let Some(root) = reservation.chain.as_ref().and_then(|c| c.first()).map(|a| a.0) else { return };
        if reservation.nodes.is_empty() {
            return;
        }
        let delta = record.usage.total() as i64 - reservation.tokens as i64;
        let spend = record.cost.0;
        let held = reservation.cost.0;
        if delta == 0 && spend == 0 && held == 0 {
            return;
        }
        let sec = reservation.slot & !REDIS_SLOT;
        let funder = reservation.funder.map(|a| a.0);
        let key = (root, sec, day_of(record.time), reservation.nodes.clone(), funder);
        {
            let mut pending = self.shared.settlements.lock();
            let e = pending.entry(key).or_default();
            e.delta += delta;
            e.spend += spend;
            e.held += held;
        }
        self.ensure_flusher();
    }
}

impl Meter for RedisMeter {
    fn admit<'a>(&'a self, req: &'a AdmitRequest<'a>) -> Maybe<'a, Result<Reservation, GatewayError>> {
        if self.is_degraded() {
            return Maybe::Ready(self.admit_local(req));
        }
        Maybe::Pending(Box::pin(self.admit_redis(req)))
    }

    fn record(&self, record: UsageRecord, reservation: Reservation) {
        if reservation.slot & REDIS_SLOT == 0 {
            // Admitted locally: the local meter settles it.
            self.local.record(record, reservation);
            return;
        }
        self.settle(&record, &reservation);
        // The local meter keeps the record for `recent`; its counters were not charged.
        self.local.record(record, Reservation { nodes: Arc::from(Vec::new()), funder: None, ..reservation });
    }

    fn recent(&self, limit: usize) -> Vec<UsageRecord> {
        self.local.recent(limit)
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let sh = &self.shared;
            sh.flush_now(true).await;
            let wait = async {
                loop {
                    let notified = sh.settled.notified();
                    if sh.pending.load(Ordering::Acquire) == 0 {
                        break;
                    }
                    notified.await;
                }
            };
            let _ = tokio::time::timeout(SETTLE_TIMEOUT + Duration::from_secs(1), wait).await;
            self.local.flush().await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testenv;
    use xai_core::policy::{Account, Limits, ModelPattern, Policy, Principal, Role, Status, VirtualKey};
    use xai_core::usage::{RecordStatus, Usage};
    use xai_core::{KeyDigest, KeyId, Protocol, RequestId};

    const T: Duration = Duration::from_secs(2);

    fn account(id: u64, parent: Option<u64>, policy: Policy) -> Arc<Account> {
        Arc::new(Account {
            id: AccountId(id),
            parent: parent.map(AccountId),
            name: format!("a{id}").into(),
            path: format!("a{id}").into(),
            status: Status::Active,
            role: Role::Member,
            policy,
            balance: Micros::ZERO,
        })
    }

    fn principal(chain: Vec<Arc<Account>>, key: u64) -> Principal {
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
            request_id: RequestId::generate(),
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

    async fn ask(m: &RedisMeter, p: &Principal, model: &str, est: u64) -> Result<Reservation, GatewayError> {
        let req = AdmitRequest {
            principal: p,
            model,
            estimate_tokens: est,
            resolution: None,
            cost: Micros::ZERO,
            funds: None,
        };
        tokio::time::timeout(T, m.admit(&req).get()).await.expect("admission is bounded in time")
    }

    /// Two instances (two connection managers) over one Redis and one key prefix; `None` when Redis is absent.
    async fn cluster() -> Option<(RedisMeter, RedisMeter, ConnectionManager, String)> {
        let (c1, prefix) = testenv::redis().await?;
        let (c2, _) = testenv::redis().await?;
        let m1 = RedisMeter::new(c1.clone(), prefix.clone(), Arc::default()).with_admit_timeout(T);
        let m2 = RedisMeter::new(c2, prefix.clone(), Arc::default()).with_admit_timeout(T);
        Some((m1, m2, c1, prefix))
    }

    async fn ask_funded(
        m: &RedisMeter,
        p: &Principal,
        cost: i64,
        funds: Option<Funds>,
    ) -> Result<Reservation, GatewayError> {
        let req =
            AdmitRequest { principal: p, model: "m", estimate_tokens: 10, resolution: None, cost: Micros(cost), funds };
        tokio::time::timeout(T, m.admit(&req).get()).await.expect("admission is bounded in time")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn funds_for_four_admit_four_across_two_instances_and_settle_to_actual() {
        let Some((m1, m2, mut conn, prefix)) = cluster().await else { return };
        let p = principal(vec![account(1, None, Policy::default()), account(2, Some(1), Policy::default())], 1);
        // Both instances' control planes say 4000 available, nothing applied yet.
        let funds = Funds { account: AccountId(2), available: Micros(4000), applied: 0, generation: 0 };
        let (m1, m2, p) = (Arc::new(m1), Arc::new(m2), Arc::new(p));
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let m = if i % 2 == 0 { m1.clone() } else { m2.clone() };
                let p = p.clone();
                tokio::spawn(async move { ask_funded(&m, &p, 1000, Some(funds)).await })
            })
            .collect();
        let mut ok = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(r) => ok.push(r),
                Err(e) => assert!(e.to_string().contains("insufficient credits: account a2"), "{e}"),
            }
        }
        assert_eq!(ok.len(), 4, "funds for four admit four across both instances");
        // Settled at 600 each on instance 1; its control plane applied them (available 4000 − 2400, applied
        // 2400); instance 2's control plane has not heard of them: the fund hash makes it see them anyway.
        for r in ok {
            m1.record(record(&p, 10, 600), r);
        }
        m1.flush().await;
        let seen_by_1 = Funds { available: Micros(1600), applied: 2400, ..funds };
        let r = ask_funded(&m2, &p, 1600, Some(funds)).await.expect("1600 left, seen from instance 2");
        assert!(ask_funded(&m1, &p, 1, Some(seen_by_1)).await.is_err(), "all 1600 held");
        m2.record(record(&p, 10, 1600), r);
        m2.flush().await;
        assert!(ask_funded(&m2, &p, 1, Some(funds)).await.is_err(), "nothing left");
        // A reload on instance 2 (new generation): its view now includes everything settled.
        let reloaded = Funds { available: Micros(500), applied: 0, generation: 1, ..funds };
        assert!(ask_funded(&m2, &p, 500, Some(reloaded)).await.is_ok());
        assert_eq!((m1.degraded(), m2.degraded()), (0, 0));
        testenv::redis_cleanup(&mut conn, &prefix).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ample_funds_are_leased_and_what_a_lease_left_is_given_back() {
        let Some((m1, _m2, mut conn, prefix)) = cluster().await else { return };
        let p = principal(vec![account(1, None, Policy::default())], 1);
        let funds = Funds { account: AccountId(1), available: Micros(1_000_000_000), applied: 0, generation: 0 };
        let mut held = Vec::new();
        for _ in 0..20 {
            held.push(ask_funded(&m1, &p, 1000, Some(funds)).await.expect("ample funds"));
        }
        assert!(m1.leased() > 0, "admissions after the first come from the fund lease");
        let fund = m1.shared.fund_key(1, 1);
        let in_redis: i64 = redis::cmd("HGET").arg(&fund).arg("held").query_async(&mut conn).await.unwrap();
        assert!(in_redis >= 20 * 1000, "everything admitted is held in Redis first: {in_redis}");
        for r in held {
            m1.record(record(&p, 10, 400), r);
        }
        m1.flush().await;
        let (held, settled): (i64, i64) = redis::cmd("HMGET")
            .arg(&fund)
            .arg("held")
            .arg("settled")
            .query_async(&mut conn)
            .await
            .map(|v: Vec<i64>| (v[0], v[1]))
            .unwrap();
        assert_eq!((held, settled), (0, 20 * 400), "settled at cost, the lease's rest given back");
        testenv::redis_cleanup(&mut conn, &prefix).await;
    }

    #[tokio::test]
    async fn daily_credit_limit_holds_estimates_cluster_wide() {
        let Some((m1, m2, mut conn, prefix)) = cluster().await else { return };
        let root = account(1, None, Policy { daily_limit: Some(Micros(3000)), ..Policy::default() });
        let p = principal(vec![root, account(2, Some(1), Policy::default())], 1);
        let a = ask_funded(&m1, &p, 1000, None).await.unwrap();
        let b = ask_funded(&m2, &p, 1000, None).await.unwrap();
        let c = ask_funded(&m1, &p, 1000, None).await.unwrap();
        let e = ask_funded(&m2, &p, 1, None).await.unwrap_err();
        assert!(e.to_string().contains("daily_limit 0.003 credits (0 left"), "{e}");
        m1.record(record(&p, 10, 100), a);
        m2.record(record(&p, 10, 100), b);
        m1.record(record(&p, 10, 100), c);
        m1.flush().await;
        m2.flush().await;
        assert!(ask_funded(&m2, &p, 2701, None).await.is_err());
        let r = ask_funded(&m2, &p, 2700, None).await.unwrap();
        assert_eq!(r.cost, Micros(2700));
        testenv::redis_cleanup(&mut conn, &prefix).await;
    }

    #[tokio::test]
    async fn admission_answers_the_tightest_bounds_for_headers() {
        let Some((m1, _m2, mut conn, prefix)) = cluster().await else { return };
        let root = account(1, None, Policy { rpm: Some(50), rpd: Some(10), tpm: Some(1000), ..Policy::default() });
        let p = principal(vec![root], 1);
        let r = ask(&m1, &p, "m", 100).await.unwrap();
        let rate = r.rate.expect("bounded");
        assert_eq!(rate.requests.map(|(l, left, _)| (l, left)), Some((10, 9)), "rpd is tighter than rpm");
        assert_eq!(rate.tokens.map(|(l, left, _)| (l, left)), Some((1000, 900)));
        assert!(rate.requests.unwrap().2 > 0);
        testenv::redis_cleanup(&mut conn, &prefix).await;
    }

    #[tokio::test]
    async fn rpm_is_shared_by_two_instances() {
        let Some((m1, m2, mut conn, prefix)) = cluster().await else { return };
        let p = principal(vec![account(1, None, lim(Some(20), None)), account(2, Some(1), Policy::default())], 1);
        for i in 0..20 {
            let m = if i % 2 == 0 { &m1 } else { &m2 };
            ask(m, &p, "m", 1).await.unwrap_or_else(|e| panic!("request {i}: {e}"));
        }
        for m in [&m1, &m2] {
            let e = ask(m, &p, "m", 1).await.unwrap_err();
            assert_eq!(e.status(), 429);
            assert!(e.to_string().contains("rpm 20 of account a1"), "{e}");
            assert!(e.retry_after().is_some_and(|r| r >= Duration::from_secs(1) && r <= Duration::from_secs(60)));
        }
        assert_eq!((m1.degraded(), m2.degraded()), (0, 0));
        testenv::redis_cleanup(&mut conn, &prefix).await;
    }

    #[tokio::test]
    async fn a_parent_bound_holds_across_children_and_instances() {
        let Some((m1, m2, mut conn, prefix)) = cluster().await else { return };
        let root = account(10, None, lim(Some(3), None));
        let a = principal(vec![root.clone(), account(11, Some(10), Policy::default())], 1);
        let b = principal(vec![root, account(12, Some(10), lim(Some(100), None))], 2);
        ask(&m1, &a, "m", 1).await.unwrap();
        ask(&m2, &b, "m", 1).await.unwrap();
        ask(&m1, &a, "m", 1).await.unwrap();
        let e = ask(&m2, &b, "m", 1).await.unwrap_err();
        assert!(e.to_string().contains("rpm 3 of account a10"), "{e}");
        let e = ask(&m1, &a, "m", 1).await.unwrap_err();
        assert!(e.to_string().contains("of account a10"), "{e}");
        testenv::redis_cleanup(&mut conn, &prefix).await;
    }

    #[tokio::test]
    async fn tpm_settlement_frees_tokens() {
        let Some((m1, m2, mut conn, prefix)) = cluster().await else { return };
        let p = principal(vec![account(1, None, lim(None, Some(1000)))], 1);
        let r = ask(&m1, &p, "m", 900).await.unwrap();
        let e = ask(&m2, &p, "m", 200).await.unwrap_err();
        assert!(e.to_string().contains("tpm 1000 of account a1"), "{e}");
        m1.record(record(&p, 100, 0), r);
        m1.flush().await;
        ask(&m2, &p, "m", 800).await.unwrap();
        assert!(ask(&m1, &p, "m", 200).await.is_err(), "100 + 800 + 200 > 1000");
        assert_eq!(m1.recent(10).len(), 1);
        testenv::redis_cleanup(&mut conn, &prefix).await;
    }

    #[tokio::test]
    async fn day_bounds_daily_credits_and_model_rules() {
        let Some((m1, m2, mut conn, prefix)) = cluster().await else { return };
        let p = principal(vec![account(1, None, Policy { daily_limit: Some(Micros(10)), ..Policy::default() })], 1);
        let r = ask(&m1, &p, "m", 1).await.unwrap();
        m1.record(record(&p, 1, 10), r);
        m1.flush().await;
        let e = ask(&m2, &p, "m", 1).await.unwrap_err();
        assert!(e.to_string().contains("daily_limit"), "{e}");
        assert!(e.retry_after().is_some_and(|r| r <= Duration::from_secs(86_400)));

        let q = principal(vec![account(2, None, Policy { rpd: Some(2), ..Policy::default() })], 2);
        ask(&m1, &q, "m", 1).await.unwrap();
        ask(&m2, &q, "m", 1).await.unwrap();
        assert!(ask(&m1, &q, "m", 1).await.unwrap_err().to_string().contains("rpd 2 of account a2"));

        let rule = Limits { rpm: Some(1), ..Limits::default() };
        let policy = Policy { model_limits: vec![(ModelPattern::new("gpt-4o*").unwrap(), rule)], ..Policy::default() };
        let s = principal(vec![account(3, None, policy)], 3);
        ask(&m1, &s, "gpt-4o", 1).await.unwrap();
        let e = ask(&m2, &s, "gpt-4o-mini", 1).await.unwrap_err();
        assert!(e.to_string().contains("for models gpt-4o*"), "{e}");
        for _ in 0..5 {
            ask(&m2, &s, "o3", 1).await.unwrap();
        }
        testenv::redis_cleanup(&mut conn, &prefix).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_admissions_never_exceed_the_bound() {
        let Some((m1, m2, mut conn, prefix)) = cluster().await else { return };
        let (m1, m2) = (Arc::new(m1), Arc::new(m2));
        let root = account(1, None, Policy { rpm: Some(25), tpm: Some(10_000), ..Policy::default() });
        let mut tasks = Vec::new();
        for i in 0..120u64 {
            let m = if i % 2 == 0 { m1.clone() } else { m2.clone() };
            // Children of one root, each with its own key.
            let p = principal(vec![root.clone(), account(100 + i % 7, Some(1), Policy::default())], i);
            tasks.push(tokio::spawn(async move { ask(&m, &p, "m", 100).await.is_ok() }));
        }
        let mut admitted = 0;
        for t in tasks {
            admitted += usize::from(t.await.unwrap());
        }
        assert_eq!(admitted, 25);
        assert_eq!((m1.degraded(), m2.degraded()), (0, 0));
        testenv::redis_cleanup(&mut conn, &prefix).await;
    }

    /// Requests and tokens Redis counts in the minute of a node (all buckets).
    async fn minute_count(conn: &mut ConnectionManager, m: &RedisMeter, root: u64, node: LimitNode) -> (u64, u64) {
        let fields: HashMap<String, u64> =
            redis::cmd("HGETALL").arg(format!("{}:w", m.key(root, node))).query_async(conn).await.unwrap();
        let sum = |kind: char| fields.iter().filter(|(k, _)| k.starts_with(kind)).map(|(_, v)| *v).sum::<u64>();
        (sum('r'), sum('t'))
    }

    #[tokio::test]
    async fn wide_bounds_are_leased_and_what_a_lease_left_is_given_back() {
        let Some((m1, m2, mut conn, prefix)) = cluster().await else { return };
        let root = account(1, None, Policy { rpm: Some(100_000), tpm: Some(100_000_000), ..Policy::default() });
        let p = principal(vec![root, account(2, Some(1), Policy::default())], 1);
        for i in 0..200 {
            let m = if i % 2 == 0 { &m1 } else { &m2 };
            ask(m, &p, "m", 50).await.unwrap_or_else(|e| panic!("request {i}: {e}"));
        }
        let leased = m1.leased() + m2.leased();
        assert!(leased >= 150, "most admissions come from leases without a round trip: {leased} of 200");
        // Settle a few with their real usage, then flush: the minute counts exactly what was admitted.
        m1.flush().await;
        m2.flush().await;
        let (r, t) = minute_count(&mut conn, &m1, 1, LimitNode::Account(AccountId(1))).await;
        assert_eq!((r, t), (200, 200 * 50), "unused leases were given back");
        let (r2, _) = minute_count(&mut conn, &m1, 1, LimitNode::Account(AccountId(2))).await;
        assert_eq!(r2, 200);
        testenv::redis_cleanup(&mut conn, &prefix).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tight_bound_is_never_waited_for() {
        let Some((m1, _m2, mut conn, prefix)) = cluster().await else { return };
        let m1 = Arc::new(m1);
        // rpm 200: too tight to lease (headroom < LEASE_MIN_HEADROOM), every admission goes to Redis.
        let root = account(1, None, Policy { rpm: Some(200), ..Policy::default() });
        let p = Arc::new(principal(vec![root, account(2, Some(1), Policy::default())], 1));
        let burst = |n: usize| {
            let tasks: Vec<_> = (0..n)
                .map(|_| {
                    let (m, p) = (m1.clone(), p.clone());
                    tokio::spawn(async move { ask(&m, &p, "m", 1).await.is_ok() })
                })
                .collect();
            async move {
                let mut ok = 0;
                for t in tasks {
                    ok += usize::from(t.await.unwrap());
                }
                ok
            }
        };
        // Learn that the tree does not lease, then a burst within the same second waits for no ask.
        for attempt in 0.. {
            let second = unix_now();
            assert_eq!(burst(1).await, 1);
            let waits = m1.lease_waits();
            assert_eq!(burst(20).await, 20);
            if unix_now() == second {
                assert_eq!(m1.lease_waits(), waits, "admissions waited for an ask that could bring no lease");
                break;
            }
            // The burst straddled a second (the note is per second): try again, within the bound.
            assert!(attempt < 5, "never measured a burst within one second");
        }
        assert_eq!(m1.leased(), 0, "a tight bound is never leased");
        testenv::redis_cleanup(&mut conn, &prefix).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_waits_for_the_lease_one_admission_asks_for() {
        let Some((m1, _m2, mut conn, prefix)) = cluster().await else { return };
        let m1 = Arc::new(m1);
        let root = account(1, None, Policy { rpm: Some(1_000_000), tpm: Some(1_000_000_000), ..Policy::default() });
        let p = Arc::new(principal(vec![root, account(2, Some(1), Policy::default())], 1));
        // One burst of 40 concurrent admissions on a cold tree: one asks Redis for a lease, the others wait for
        // its answer and take from it instead of each making its own round trip.
        let tasks: Vec<_> = (0..40)
            .map(|_| {
                let (m, p) = (m1.clone(), p.clone());
                tokio::spawn(async move { ask(&m, &p, "m", 10).await.is_ok() })
            })
            .collect();
        let mut admitted = 0;
        for t in tasks {
            admitted += usize::from(t.await.unwrap());
        }
        assert_eq!(admitted, 40);
        let leased = m1.leased();
        // Unless the burst straddles a second (leases are per second), at most the first and the asker miss.
        assert!(leased >= 30, "only {leased} of 40 concurrent admissions came from the lease");
        m1.flush().await;
        let (r, _) = minute_count(&mut conn, &m1, 1, LimitNode::Account(AccountId(1))).await;
        assert_eq!(r, 40, "Redis counts exactly the admitted requests once the lease is given back");
        testenv::redis_cleanup(&mut conn, &prefix).await;
    }

    #[tokio::test]
    async fn leases_never_let_two_instances_exceed_a_bound() {
        let Some((m1, m2, mut conn, prefix)) = cluster().await else { return };
        let (m1, m2) = (Arc::new(m1), Arc::new(m2));
        // Wide enough to lease (headroom ≥ LEASE_MIN_HEADROOM) but reachable within the test.
        let root = account(1, None, Policy { rpm: Some(1_000), ..Policy::default() });
        let mut admitted = 0;
        // Waves of 100 concurrent requests, alternating instances and children.
        for wave in 0..14u64 {
            let mut tasks = Vec::new();
            for j in 0..100u64 {
                let i = wave * 100 + j;
                let m = if i % 2 == 0 { m1.clone() } else { m2.clone() };
                let p = principal(vec![root.clone(), account(100 + i % 5, Some(1), Policy::default())], i % 5);
                tasks.push(tokio::spawn(async move { ask(&m, &p, "m", 1).await.is_ok() }));
            }
            for t in tasks {
                admitted += usize::from(t.await.unwrap());
            }
        }
        assert!(admitted <= 1_000, "rpm 1000 across two leasing instances admitted {admitted}");
        // Leases outstanding on the other instance may refuse a few requests below the bound, never many.
        assert!(admitted >= 900, "rpm 1000, 1400 requests in waves: only {admitted} admitted");
        assert!(m1.leased() + m2.leased() > 0, "the bound was wide enough to lease");
        m1.flush().await;
        m2.flush().await;
        let (r, _) = minute_count(&mut conn, &m1, 1, LimitNode::Account(AccountId(1))).await;
        assert_eq!(r as usize, admitted, "after the returns Redis counts exactly the admitted requests");
        testenv::redis_cleanup(&mut conn, &prefix).await;
    }

    #[tokio::test]
    async fn unreachable_redis_falls_back_to_local_limits() {
        let m = RedisMeter::connect("redis://127.0.0.1:1", "xai-test-closed:", Arc::default()).unwrap();
        let p = principal(vec![account(1, None, lim(Some(2), None))], 1);
        let started = Instant::now();
        let r = ask(&m, &p, "m", 5).await.expect("admitted by the local fallback");
        ask(&m, &p, "m", 5).await.unwrap();
        let e = ask(&m, &p, "m", 5).await.unwrap_err();
        assert!(e.to_string().contains("rpm 2 of account a1"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(1), "degraded admission must not wait on Redis");
        assert!(m.is_degraded());
        assert_eq!((m.degraded(), m.outages()), (3, 1));
        assert_eq!(r.slot & REDIS_SLOT, 0);
        m.record(record(&p, 1, 0), r);
        m.flush().await;
        assert_eq!(m.recent(10).len(), 1);
    }

    #[tokio::test]
    async fn recovery_is_automatic() {
        let Some((m, _m2, mut conn, prefix)) = cluster().await else { return };
        let p = principal(vec![account(1, None, lim(Some(100), None))], 1);
        // An outage as an error or timeout would declare it.
        m.shared.fail(&"simulated");
        let r = ask(&m, &p, "m", 1).await.unwrap();
        assert_eq!(r.slot & REDIS_SLOT, 0, "admitted locally during the outage");
        assert!(m.is_degraded());
        let deadline = Instant::now() + Duration::from_secs(3);
        while m.is_degraded() {
            assert!(Instant::now() < deadline, "Redis answers: the meter must leave degraded mode");
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = ask(&m, &p, "m", 1).await;
        }
        let r = ask(&m, &p, "m", 1).await.unwrap();
        assert_ne!(r.slot & REDIS_SLOT, 0, "admitted by Redis again");
        assert_eq!(m.outages(), 1);
        testenv::redis_cleanup(&mut conn, &prefix).await;
    }

    #[tokio::test]
    async fn the_minute_slides_and_its_hash_stays_bounded() {
        let Some((m1, m2, mut conn, prefix)) = cluster().await else { return };
        let p = principal(vec![account(1, None, lim(Some(5), None))], 1);
        let w = format!("{prefix}{{1}}:a1:w");
        let now = unix_now();
        let bucket = |sec: u64, r: u64| {
            let i = sec % WINDOW;
            let mut c = redis::cmd("HSET");
            c.arg(&w).arg(format!("s{i}")).arg(sec).arg(format!("r{i}")).arg(r).arg(format!("t{i}")).arg(0);
            c
        };
        // A full bucket that left the window does not count.
        let _: () = bucket(now - 61, 1000).query_async(&mut conn).await.unwrap();
        ask(&m1, &p, "m", 1).await.unwrap();
        // Four requests 30 s ago fill the window: the next one is refused until they leave it.
        let _: () = bucket(now - 30, 4).query_async(&mut conn).await.unwrap();
        let e = ask(&m2, &p, "m", 1).await.unwrap_err();
        let retry = e.retry_after().unwrap();
        assert!(retry >= Duration::from_secs(28) && retry <= Duration::from_secs(31), "{retry:?}");
        for _ in 0..200 {
            let _ = ask(&m1, &p, "m", 1).await;
        }
        let fields: u64 = redis::cmd("HLEN").arg(&w).query_async(&mut conn).await.unwrap();
        assert!(fields <= 3 * WINDOW, "{fields}");
        testenv::redis_cleanup(&mut conn, &prefix).await;
    }

    /// A loopback TCP proxy to the test Redis that can be cut and restored: a real outage.
    struct Proxy {
        port: u16,
        tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    }

    impl Proxy {
        async fn start(port: u16) -> Proxy {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let target = testenv::redis_url().trim_start_matches("redis://").trim_end_matches('/').to_string();
            let tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
            let inner = tasks.clone();
            let accept = tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let target = target.clone();
                    let conn = tokio::spawn(async move {
                        if let Ok(mut server) = tokio::net::TcpStream::connect(target.as_str()).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    inner.lock().push(conn.abort_handle());
                }
            });
            tasks.lock().push(accept.abort_handle());
            Proxy { port, tasks }
        }

        fn cut(&self) {
            for t in self.tasks.lock().drain(..) {
                t.abort();
            }
        }
    }

    #[tokio::test]
    async fn an_outage_degrades_then_recovers() {
        let Some((_, _, mut conn, prefix)) = cluster().await else { return };
        let proxy = Proxy::start(0).await;
        let url = format!("redis://127.0.0.1:{}", proxy.port);
        let m = RedisMeter::connect(&url, prefix.clone(), Arc::default()).unwrap().with_admit_timeout(T);
        let p = principal(vec![account(1, None, lim(Some(1000), None))], 1);
        assert_ne!(ask(&m, &p, "m", 1).await.unwrap().slot & REDIS_SLOT, 0, "admitted by Redis");

        proxy.cut();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !m.is_degraded() {
            assert!(Instant::now() < deadline, "an unreachable Redis must be noticed");
            ask(&m, &p, "m", 1).await.expect("requests keep flowing during the outage");
        }
        let r = ask(&m, &p, "m", 1).await.unwrap();
        assert_eq!(r.slot & REDIS_SLOT, 0, "admitted locally during the outage");
        assert_eq!(m.outages(), 1);
        assert!(m.degraded() >= 1);

        let back = Proxy::start(proxy.port).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while m.is_degraded() {
            assert!(Instant::now() < deadline, "Redis is back: the meter must leave degraded mode");
            tokio::time::sleep(Duration::from_millis(50)).await;
            ask(&m, &p, "m", 1).await.unwrap();
        }
        assert_ne!(ask(&m, &p, "m", 1).await.unwrap().slot & REDIS_SLOT, 0, "admitted by Redis again");
        assert_eq!(m.outages(), 1);
        back.cut();
        testenv::redis_cleanup(&mut conn, &prefix).await;
    }

    #[test]
    fn keys_of_one_tree_share_the_root_hash_tag() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _g = rt.enter();
        let m = RedisMeter::connect("redis://127.0.0.1:1", "xai:", Arc::default()).unwrap();
        assert_eq!(m.key(7, LimitNode::Account(AccountId(9))), "xai:{7}:a9");
        assert_eq!(m.key(7, LimitNode::KeyModel(KeyId(3), 2)), "xai:{7}:k3:m2");
    }
}

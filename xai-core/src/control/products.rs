//! Products that fund spending (subscriptions, add-ons, pay-as-you-go cards), the spending order, and the
//! "today" view.

use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{AdminError, ControlPlane, EntryKind, Scope, State};
use crate::day::Day;
use crate::ids::AccountId;
use crate::money::Micros;
use crate::policy::effective_of;
use crate::traits::{AdmitRequest, BoxFuture, Maybe, Meter, Reservation};
use crate::usage::UsageRecord;

/// `POST /admin/v1/accounts/{id}/products`
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProductSpec {
    /// A daily allowance within dates.
    Subscription {
        /// Credits per day.
        daily_allowance: Micros,
        /// First day.
        starts: Day,
        /// Last day (inclusive).
        ends: Day,
    },
    /// Extra credits for a window.
    Addon {
        /// Credits.
        credits: Micros,
        /// First day.
        starts: Day,
        /// Last day (inclusive).
        ends: Day,
    },
    /// Prepaid credits, optionally expiring.
    Card {
        /// Credits.
        credits: Micros,
        /// Last day usable (inclusive).
        #[serde(default)]
        expires: Option<Day>,
    },
}

/// The kind of a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProductKind {
    /// Daily allowance.
    Subscription,
    /// Window credits.
    Addon,
    /// Prepaid card.
    Card,
}

/// A product on an account.
#[derive(Debug, Clone, Serialize)]
pub struct Product {
    /// Id.
    pub id: u64,
    /// Owner.
    pub account: AccountId,
    /// Kind.
    pub kind: ProductKind,
    /// Subscriptions: credits per day.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daily_allowance: Option<Micros>,
    /// Add-ons and cards: credits bought.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credits: Option<Micros>,
    /// Add-ons and cards: credits left; subscriptions: today's allowance left.
    pub remaining: Micros,
    /// Window start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starts: Option<Day>,
    /// Window end (inclusive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ends: Option<Day>,
    /// Card expiry (inclusive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<Day>,
    /// Usable today.
    pub active: bool,
    #[serde(skip)]
    pub(crate) used: (Day, Micros),
}

impl Product {
    fn active_on(&self, day: Day) -> bool {
        let window = self.starts.is_none_or(|s| s <= day)
            && self.ends.is_none_or(|e| day <= e)
            && self.expires.is_none_or(|e| day <= e);
        window && self.left_on(day).0 > 0
    }

    fn in_window(&self, day: Day) -> bool {
        self.starts.is_none_or(|s| s <= day)
            && self.ends.is_none_or(|e| day <= e)
            && self.expires.is_none_or(|e| day <= e)
    }

    fn left_on(&self, day: Day) -> Micros {
        match self.kind {
            ProductKind::Subscription => {
                let used = if self.used.0 == day { self.used.1 } else { Micros::ZERO };
                Micros((self.daily_allowance.unwrap_or_default().0 - used.0).max(0))
            }
            _ => self.remaining,
        }
    }

    pub(crate) fn refresh(&mut self, day: Day) {
        if self.kind == ProductKind::Subscription {
            self.remaining = self.left_on(day);
        }
        self.active = self.active_on(day);
    }

    fn order_key(&self) -> (u8, Day) {
        match self.kind {
            ProductKind::Subscription => (0, Day(0)),
            ProductKind::Addon => (1, self.ends.unwrap_or(Day(i64::MAX))),
            ProductKind::Card => (2, self.expires.unwrap_or(Day(i64::MAX))),
        }
    }
}

/// Today's own usage of an account.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DayUsage {
    day: Option<Day>,
    requests: u64,
    prompt: u64,
    completion: u64,
    spent: Micros,
}

/// One funding source in the "today" view.
#[derive(Debug, Clone, Serialize)]
pub struct SourceProgress {
    /// `subscription` | `addon` | `card` | `balance`.
    pub kind: &'static str,
    /// Product id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// Subscriptions: today's allowance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowance: Option<Micros>,
    /// Subscriptions: used today.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used: Option<Micros>,
    /// Left.
    pub remaining: Micros,
}

/// `GET /admin/v1/accounts/{id}/today`
#[derive(Debug, Clone, Serialize)]
pub struct Today {
    /// Account.
    pub account: AccountId,
    /// Its path.
    pub path: String,
    /// The day (UTC).
    pub date: Day,
    /// Funding sources in spending order.
    pub sources: Vec<SourceProgress>,
    /// Requests today (the account and its subtree).
    pub requests: u64,
    /// Prompt tokens today.
    pub prompt_tokens: u64,
    /// Completion tokens today.
    pub completion_tokens: u64,
    /// Credits spent today.
    pub spent: Micros,
    /// Day bounds in force, with today's use.
    pub limits: serde_json::Value,
}

fn positive(m: Micros, what: &str) -> Result<Micros, AdminError> {
    if m.0 > 0 { Ok(m) } else { Err(AdminError::BadRequest(format!("{what} must be positive"))) }
}

impl State {
    /// Who pays for a request of the account path `chain` (root first): the caller or its nearest ancestor that
    /// was ever funded; `None` when nobody on the path was.
    fn payer(&self, chain: &[AccountId]) -> Option<AccountId> {
        chain.iter().rev().copied().find(|a| self.funded.contains(a))
    }

    /// The products of `account` active on `day`.
    fn active_products(&self, account: AccountId, day: Day) -> impl Iterator<Item = &Product> {
        self.products_of
            .get(&account)
            .into_iter()
            .flatten()
            .filter_map(|id| self.products.get(id))
            .filter(move |p| p.active_on(day))
    }

    fn subtree_usage(&self, id: AccountId, day: Day) -> DayUsage {
        let mut t = DayUsage::default();
        for (a, u) in &self.usage {
            if u.day == Some(day) && self.is_within(*a, id) {
                t.requests += u.requests;
                t.prompt += u.prompt;
                t.completion += u.completion;
                t.spent = t.spent.saturating_add(u.spent);
            }
        }
        t
    }
}

impl ControlPlane {
    /// Adds a product.
    pub fn add_product(&self, scope: Scope, account: AccountId, spec: ProductSpec) -> Result<Product, AdminError> {
        self.change_quiet(|st| {
            st.writable(account, scope)?;
            let today = Day::today();
            let (kind, daily, credits, starts, ends, expires) = match spec {
                ProductSpec::Subscription { daily_allowance, starts, ends } => (
                    ProductKind::Subscription,
                    Some(positive(daily_allowance, "daily_allowance")?),
                    None,
                    Some(starts),
                    Some(ends),
                    None,
                ),
                ProductSpec::Addon { credits, starts, ends } => {
                    (ProductKind::Addon, None, Some(positive(credits, "credits")?), Some(starts), Some(ends), None)
                }
                ProductSpec::Card { credits, expires } => {
                    (ProductKind::Card, None, Some(positive(credits, "credits")?), None, None, expires)
                }
            };
            if let (Some(s), Some(e)) = (starts, ends)
                && s > e
            {
                return Err(AdminError::BadRequest(format!("starts {s} is after ends {e}")));
            }
            let mut p = Product {
                id: super::cluster_id(&mut st.next_product, st.salt),
                account,
                kind,
                daily_allowance: daily,
                credits,
                remaining: credits.or(daily).unwrap_or_default(),
                starts,
                ends,
                expires,
                active: false,
                used: (today, Micros::ZERO),
            };
            p.refresh(today);
            st.products.insert(p.id, p.clone());
            st.products_of.entry(p.account).or_default().push(p.id);
            st.dirty.products.insert(p.id);
            st.funded.insert(p.account);
            Ok(p)
        })
    }

    /// Products of an account.
    pub fn products(&self, scope: Scope, account: AccountId) -> Result<Vec<Product>, AdminError> {
        let today = Day::today();
        self.read(|st| {
            st.account(account, scope)?;
            Ok(st
                .products
                .values()
                .filter(|p| p.account == account)
                .map(|p| {
                    let mut p = p.clone();
                    p.refresh(today);
                    p
                })
                .collect())
        })
    }

    /// Charges the cost of a request to its account in the spending order: today's subscription allowance,
    /// add-ons (earliest end first), cards (earliest expiry first), then the allocated balance (never below zero;
    /// what no source covers is noted in the ledger as unfunded).
    pub fn spend(&self, rec: &UsageRecord) {
        let day = Day::of(rec.time);
        let _ = self.change_quiet(|st| {
            let u = st.usage.entry(rec.account).or_default();
            if u.day != Some(day) {
                *u = DayUsage { day: Some(day), ..DayUsage::default() };
            }
            u.requests += 1;
            u.prompt += rec.usage.prompt_tokens;
            u.completion += rec.usage.completion_tokens;
            u.spent = u.spent.saturating_add(rec.cost);
            let mut left = rec.cost.0;
            if left <= 0 {
                return Ok(());
            }
            // The payer: the caller, or its nearest funded ancestor (the caller itself when nobody on the path
            // was ever funded: the cost is then booked as unfunded).
            let payer = st.payer(&rec.chain).unwrap_or(rec.account);
            *st.applied.entry(payer).or_default() += left;
            let mut ids: Vec<(u8, Day, u64)> = st
                .active_products(payer, day)
                .map(|p| {
                    let (o, d) = p.order_key();
                    (o, d, p.id)
                })
                .collect();
            ids.sort();
            for (_, _, id) in ids {
                let p = st.products.get_mut(&id).expect("listed");
                let take = left.min(p.left_on(day).0);
                match p.kind {
                    ProductKind::Subscription => {
                        let used = if p.used.0 == day { p.used.1.0 } else { 0 };
                        p.used = (day, Micros(used + take));
                    }
                    _ => p.remaining = Micros(p.remaining.0 - take),
                }
                p.refresh(day);
                st.dirty.products.insert(id);
                left -= take;
                if left == 0 {
                    return Ok(());
                }
            }
            let Some(a) = st.accounts.get_mut(&payer) else { return Ok(()) };
            let take = left.min(a.balance.0.max(0));
            a.balance = Micros(a.balance.0 - take);
            let unfunded = left - take;
            // One spend entry per account and day, updated in place: the ledger grows with days, not requests.
            let entry = match st.spend_entry.get(&payer) {
                Some((d, i)) if *d == day && *i < st.ledger.len() => *i,
                _ => {
                    st.push_entry(Some(payer), None, Micros::ZERO, EntryKind::Spend, None, SystemTime::now());
                    let i = st.ledger.len() - 1;
                    st.spend_entry.insert(payer, (day, i));
                    i
                }
            };
            st.dirty.accounts.insert(payer);
            let e = &mut st.ledger[entry];
            st.dirty.entries.insert(e.id);
            e.amount = e.amount.saturating_add(Micros(take));
            e.time = SystemTime::now();
            if unfunded > 0 {
                let prev = e
                    .note
                    .as_deref()
                    .and_then(|n| n.strip_suffix(" unfunded today"))
                    .and_then(|n| n.parse::<Micros>().ok());
                let total = prev.unwrap_or_default().saturating_add(Micros(unfunded));
                e.note = Some(format!("{total} unfunded today"));
            }
            Ok(())
        });
    }

    /// Sets (`Some`) or removes (`None`) the price of `model` (a name or a pattern such as `claude-*`); root only.
    pub fn set_price(&self, scope: Scope, model: &str, price: Option<crate::usage::Price>) -> Result<(), AdminError> {
        if scope != Scope::Root {
            return Err(AdminError::Forbidden("only the root admin sets prices".into()));
        }
        if model.is_empty() || model.len() > 256 {
            return Err(AdminError::BadRequest("a model name is 1 to 256 characters".into()));
        }
        crate::policy::ModelPattern::new(model).map_err(|e| AdminError::BadRequest(format!("model {model:?}: {e}")))?;
        if let Some(p) = &price {
            let rates = [Some(p.input), Some(p.output), p.cached_input, p.cache_write, p.reasoning];
            if rates.into_iter().flatten().chain([p.per_image, p.per_search]).any(|m| m.0 < 0) {
                return Err(AdminError::BadRequest("prices must not be negative".into()));
            }
        }
        self.change(|st| {
            match price {
                Some(p) => {
                    st.base.prices.insert(Arc::from(model), p);
                }
                None => {
                    st.base
                        .prices
                        .remove(model)
                        .ok_or_else(|| AdminError::NotFound(format!("no price for {model:?}")))?;
                }
            }
            Ok(())
        })
    }

    /// Replaces every price at once (a reload: the configuration's prices overlaid with those set through the API).
    pub fn replace_prices(
        &self,
        prices: std::collections::HashMap<Arc<str>, crate::usage::Price>,
    ) -> Result<(), AdminError> {
        self.change(|st| {
            st.base.prices = prices;
            Ok(())
        })
    }

    /// Every price, by model.
    pub fn prices(&self) -> std::collections::BTreeMap<String, crate::usage::Price> {
        self.read(|st| st.base.prices.iter().map(|(m, p)| (m.to_string(), *p)).collect())
    }

    /// The funds a request of the account path `chain` (root first) draws on: those of the caller or of its
    /// nearest funded ancestor; `None` when nobody on the path was ever funded (budgets do not apply).
    pub fn funds(&self, chain: &[AccountId]) -> Option<crate::traits::Funds> {
        let day = Day::today();
        self.read(|st| {
            let payer = st.payer(chain)?;
            let products: i64 = st.active_products(payer, day).map(|p| p.left_on(day).0).sum();
            let balance = st.accounts.get(&payer).map_or(0, |a| a.balance.0.max(0));
            Some(crate::traits::Funds {
                account: payer,
                available: Micros(products.saturating_add(balance)),
                applied: st.applied.get(&payer).copied().unwrap_or(0),
                generation: st.generation,
            })
        })
    }

    /// Today's quota status.
    pub fn today(&self, scope: Scope, account: AccountId) -> Result<Today, AdminError> {
        let day = Day::today();
        self.read(|st| {
            let a = st.account(account, scope)?;
            let mut prods: Vec<Product> = st.products.values().filter(|p| p.account == account && p.in_window(day)).cloned().collect();
            prods.sort_by_key(|p| (p.order_key(), p.id));
            let mut sources: Vec<SourceProgress> = prods
                .iter()
                .map(|p| SourceProgress {
                    kind: match p.kind {
                        ProductKind::Subscription => "subscription",
                        ProductKind::Addon => "addon",
                        ProductKind::Card => "card",
                    },
                    id: Some(p.id),
                    allowance: p.daily_allowance,
                    used: p.daily_allowance.map(|d| Micros(d.0 - p.left_on(day).0)),
                    remaining: p.left_on(day),
                })
                .collect();
            sources.push(SourceProgress { kind: "balance", id: None, allowance: None, used: None, remaining: a.balance });
            let u = st.subtree_usage(account, day);
            let eff = effective_of(&st.chain(account));
            let live = self.live.get();
            // The use that counts against a bound is that of the account that set it (aggregate over its subtree),
            // as the meter sees it; without a meter, the control plane's own day totals.
            let used = |src: &crate::policy::Source, field: &str| -> serde_json::Value {
                let own = src.account.map(|a| st.subtree_usage(a, day)).unwrap_or_default();
                match (live, src.account) {
                    (Some(l), Some(a)) => {
                        let x = l.live_usage(a);
                        match field {
                            "rpm" => x.requests_minute.into(),
                            "tpm" => x.tokens_minute.into(),
                            "rpd" => x.requests_today.into(),
                            "tpd" => x.tokens_today.into(),
                            _ => x.spent_today.to_string().into(),
                        }
                    }
                    _ => match field {
                        "rpd" => own.requests.into(),
                        "tpd" => (own.prompt + own.completion).into(),
                        "daily_limit" => own.spent.to_string().into(),
                        _ => serde_json::Value::Null,
                    },
                }
            };
            let lim = |field: &str, b: Option<(serde_json::Value, &crate::policy::Source)>| match b {
                Some((limit, src)) => serde_json::json!({"limit": limit, "used": used(src, field), "set_by": &*src.path}),
                None => serde_json::Value::Null,
            };
            let limits = serde_json::json!({
                "rpm": lim("rpm", eff.rpm.as_ref().map(|b| (b.value.into(), &b.set_by))),
                "rpd": lim("rpd", eff.rpd.as_ref().map(|b| (b.value.into(), &b.set_by))),
                "tpm": lim("tpm", eff.tpm.as_ref().map(|b| (b.value.into(), &b.set_by))),
                "tpd": lim("tpd", eff.tpd.as_ref().map(|b| (b.value.into(), &b.set_by))),
                "daily_limit": lim("daily_limit", eff.daily_limit.as_ref().map(|b| (b.value.to_string().into(), &b.set_by))),
            });
            Ok(Today {
                account,
                path: st.path_of(account),
                date: day,
                sources,
                requests: u.requests,
                prompt_tokens: u.prompt,
                completion_tokens: u.completion,
                spent: u.spent,
                limits,
            })
        })
    }
}

/// A [`Meter`] that also charges every record to the control plane's funding sources.
pub struct SpendingMeter {
    inner: Arc<dyn Meter>,
    control: Arc<ControlPlane>,
}

impl std::fmt::Debug for SpendingMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpendingMeter")
    }
}

impl SpendingMeter {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Meter>, control: Arc<ControlPlane>) -> Self {
        Self { inner, control }
    }
}

impl Meter for SpendingMeter {
    fn admit<'a>(&'a self, req: &'a AdmitRequest<'a>) -> Maybe<'a, Result<Reservation, crate::GatewayError>> {
        if req.cost.0 <= 0 || req.funds.is_some() {
            return self.inner.admit(req);
        }
        let Some(funds) = self.control.funds(&req.principal.chain_ids) else { return self.inner.admit(req) };
        let inner = self.inner.clone();
        let principal = req.principal;
        let (model, estimate_tokens, resolution, cost) = (req.model, req.estimate_tokens, req.resolution, req.cost);
        Maybe::Pending(Box::pin(async move {
            let ask = AdmitRequest { principal, model, estimate_tokens, resolution, cost, funds: Some(funds) };
            inner.admit(&ask).get().await
        }))
    }

    fn record(&self, record: UsageRecord, reservation: Reservation) {
        self.control.spend(&record);
        self.inner.record(record, reservation);
    }

    fn recent(&self, limit: usize) -> Vec<UsageRecord> {
        self.inner.recent(limit)
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        self.inner.flush()
    }
}

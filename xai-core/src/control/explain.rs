//! `POST /admin/v1/explain`: every decision the request path would take for a key or account, model and
//! endpoint, and the first that refuses.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{AdminError, ControlPlane, Scope};
use crate::ids::{AccountId, KeyId};
use crate::policy::{Principal, Status, VirtualKey};
use crate::routing::PlanError;
use crate::secret::KeyDigest;
use crate::traits::PolicyStore;

/// Who to explain for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    /// The key itself.
    #[serde(default)]
    pub key: Option<String>,
    /// A key id.
    #[serde(default)]
    pub key_id: Option<KeyId>,
    /// An account (no key policy).
    #[serde(default)]
    pub account: Option<AccountId>,
    /// Model asked.
    pub model: String,
    /// Endpoint resource (`chat` by default).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Client address.
    #[serde(default)]
    pub ip: Option<IpAddr>,
}

/// One decision.
#[derive(Debug, Clone, Serialize)]
pub struct ExplainStep {
    /// `key`, `status`, `ip`, `resource`, `allow_models`, `model_mapper`, `level`, `route`, `limits`.
    pub step: &'static str,
    /// The account (or key) deciding.
    pub account: String,
    /// Passed.
    pub ok: bool,
    /// Why.
    pub detail: String,
}

/// The whole explanation.
#[derive(Debug, Clone, Serialize)]
pub struct Explain {
    /// Would be served.
    pub allowed: bool,
    /// The first refusing step.
    pub refused_by: Option<&'static str>,
    /// Its reason.
    pub reason: Option<String>,
    /// Model sent upstream.
    pub upstream_model: Option<String>,
    /// Primary level.
    pub level: Option<u32>,
    /// Levels tried in order.
    pub plan: Vec<u32>,
    /// Every step.
    pub steps: Vec<ExplainStep>,
}

impl ControlPlane {
    /// Explains a decision.
    pub fn explain(&self, scope: Scope, s: Subject) -> Result<Explain, AdminError> {
        let endpoint = s.endpoint.clone().unwrap_or_else(|| "chat".into());
        if !crate::policy::wire::RESOURCES.contains(&endpoint.as_str()) {
            return Err(AdminError::BadRequest(format!("unknown endpoint {endpoint:?}")));
        }
        let table = self.store().route_table();
        let (key, chain) =
            self.read(|st| -> Result<(Arc<VirtualKey>, Vec<Arc<crate::policy::Account>>), AdminError> {
                let rec = match (&s.key, s.key_id, s.account) {
                    (Some(k), None, None) => {
                        let d = KeyDigest::of(k.trim());
                        st.keys
                            .values()
                            .find(|r| r.key.digest.ct_eq(&d))
                            .map(|r| r.key.clone())
                            .ok_or_else(|| AdminError::NotFound("no such key".into()))?
                    }
                    (None, Some(id), None) => st
                        .keys
                        .get(&id)
                        .map(|r| r.key.clone())
                        .ok_or_else(|| AdminError::NotFound(format!("no key {id}")))?,
                    (None, None, Some(a)) => {
                        st.account(a, scope)?;
                        VirtualKey {
                            id: KeyId(0),
                            account: a,
                            prefix: "(account)".into(),
                            digest: KeyDigest::of(""),
                            status: Status::Active,
                            expires_at: None,
                            policy: None,
                        }
                    }
                    _ => return Err(AdminError::BadRequest("give exactly one of key, key_id, account".into())),
                };
                st.account(rec.account, scope).map_err(|_| AdminError::NotFound("no such key".into()))?;
                Ok((Arc::new(rec.clone()), st.chain(rec.account)))
            })?;
        let p = Principal::new(key.clone(), chain);
        let mut steps = Vec::new();
        let mut step = |step: &'static str, who: String, ok: bool, detail: String| {
            steps.push(ExplainStep { step, account: who, ok, detail })
        };

        if s.account.is_none() {
            let expired = key.expires_at.is_some_and(|t| t <= SystemTime::now());
            let ok = key.status == Status::Active && !expired;
            let detail = if key.status != Status::Active {
                "revoked"
            } else if expired {
                "expired"
            } else {
                "active"
            };
            step("key", format!("key {}", key.prefix), ok, format!("key {} is {detail}", key.prefix));
        }
        for a in p.chain.iter() {
            let ok = a.status == Status::Active;
            step(
                "status",
                a.path.to_string(),
                ok,
                format!("account {} is {}", a.path, if ok { "active" } else { "disabled" }),
            );
        }
        let label = |o: crate::policy::PolicyOwner<'_>| match o {
            crate::policy::PolicyOwner::Key(k) => format!("key {}", k.prefix),
            crate::policy::PolicyOwner::Account(a) => a.path.to_string(),
        };
        for (owner, pol) in p.policies() {
            if let Some(nets) = &pol.allow_ips {
                let list: Vec<String> = nets.iter().map(ToString::to_string).collect();
                match s.ip {
                    Some(ip) if pol.allows_ip(ip) => {
                        step("ip", label(owner), true, format!("{ip} is within {}", list.join(", ")))
                    }
                    Some(ip) => step(
                        "ip",
                        label(owner),
                        false,
                        format!("client address {ip} is not allowed (allowed: {})", list.join(", ")),
                    ),
                    None => step(
                        "ip",
                        label(owner),
                        false,
                        format!("addresses are restricted to {}; no ip given", list.join(", ")),
                    ),
                }
            }
            if let Some(r) = &pol.resources {
                let ok = pol.allows_resource(&endpoint);
                let verdict = if ok { "is allowed" } else { "is not allowed" };
                step(
                    "resource",
                    label(owner),
                    ok,
                    format!("endpoint {endpoint:?} {verdict} (allowed: {})", r.join(", ")),
                );
            }
        }
        let mut name = s.model.clone();
        let mut walk_ok = true;
        for (owner, pol) in p.policies() {
            if let Some(allow) = &pol.allow_models {
                let ok = allow.iter().any(|g| g.matches(&name));
                let list: Vec<&str> = allow.iter().map(|g| g.as_str()).collect();
                let detail = if ok {
                    format!("model {name:?} matches {}", list.join(", "))
                } else {
                    format!("model {name:?} is not allowed for {owner} (allowed: {})", list.join(", "))
                };
                step("allow_models", label(owner), ok, detail);
                if !ok {
                    walk_ok = false;
                    break;
                }
            }
            if let Some((g, to)) = pol.model_mapper.iter().find(|(g, _)| g.matches(&name)) {
                step("model_mapper", label(owner), true, format!("{name:?} → {to:?} by rule {:?}", g.as_str()));
                name = to.to_string();
            }
        }
        let (mut upstream_model, mut level, mut plan) = (None, None, vec![]);
        if walk_ok && let Ok(r) = p.resolve_uncached(&s.model) {
            upstream_model = Some(r.upstream_model.to_string());
            match table.plan(&r) {
                Ok(pl) => {
                    level = pl.levels.first().map(|l| l.0);
                    plan = pl.levels.iter().map(|l| l.0).collect();
                    step(
                        "level",
                        p.account().path.to_string(),
                        true,
                        format!(
                            "level {} (allowed: {:?})",
                            pl.levels[0],
                            r.allowed_levels.as_ref().map(|v| v.iter().map(|l| l.0).collect::<Vec<_>>())
                        ),
                    );
                    step("route", "providers".into(), true, format!("levels in order: {plan:?}"));
                }
                Err(PlanError::LevelRefused(l)) => {
                    step("level", p.account().path.to_string(), false, p.level_refusal(l).message)
                }
                Err(PlanError::NotServed) => step(
                    "route",
                    "providers".into(),
                    false,
                    format!("no provider serves {:?} on a level this caller may use", r.upstream_model),
                ),
            }
        }
        let today = self.today(Scope::Root, p.account().id)?;
        for (k, v) in today.limits.as_object().into_iter().flatten() {
            if v.is_null() {
                continue;
            }
            let ok = match (v["limit"].as_u64(), v["used"].as_u64()) {
                (Some(l), Some(u)) => u < l,
                _ => match (v["limit"].as_str(), v["used"].as_str()) {
                    (Some(l), Some(u)) => u.parse::<crate::Micros>().ok() < l.parse::<crate::Micros>().ok(),
                    _ => true,
                },
            };
            step(
                "limits",
                v["set_by"].as_str().unwrap_or("-").to_string(),
                ok,
                format!("{k}: {} used of {}", v["used"], v["limit"]),
            );
        }
        let first = steps.iter().find(|s| !s.ok);
        Ok(Explain {
            allowed: first.is_none(),
            refused_by: first.map(|s| s.step),
            reason: first.map(|s| s.detail.clone()),
            upstream_model,
            level,
            plan,
            steps,
        })
    }
}

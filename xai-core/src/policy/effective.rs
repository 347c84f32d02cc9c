//! The effective policy of an account or key (every bound with the account that set it) and the narrowing check
//! that refuses a policy widening what its ancestors allow.

use std::fmt;
use std::sync::Arc;

use ipnet::IpNet;
use serde::Serialize;

use super::{Account, ModelPattern, Policy};
use crate::ids::{AccountId, Level};
use crate::money::Micros;

/// Who set a bound.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Source {
    /// The account (`None` for a key's own policy).
    pub account: Option<AccountId>,
    /// Its path, or `key <prefix>`.
    pub path: Arc<str>,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.account {
            Some(_) => write!(f, "account {}", self.path),
            None => f.write_str(&self.path),
        }
    }
}

/// A bound and who set it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Bound<T> {
    /// The value.
    pub value: T,
    /// Who set it.
    pub set_by: Source,
}

/// The effective policy along a path: the tightest numeric bounds, and every list each ancestor sets (globs and
/// CIDRs do not intersect into one list, so each is kept with its owner and all must pass).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EffectivePolicy {
    /// Every `allow_models` on the path, caller first.
    pub allow_models: Vec<Bound<Vec<ModelPattern>>>,
    /// Every `allow_ips` on the path.
    #[serde(serialize_with = "ser_nets")]
    pub allow_ips: Vec<Bound<Vec<IpNet>>>,
    /// Every `resources` list on the path.
    pub resources: Vec<Bound<Vec<String>>>,
    /// Levels usable: the intersection along the path, with the nearest account that restricted it.
    pub levels: Option<Bound<Vec<Level>>>,
    /// Tightest requests per minute.
    pub rpm: Option<Bound<u64>>,
    /// Tightest requests per day.
    pub rpd: Option<Bound<u64>>,
    /// Tightest tokens per minute.
    pub tpm: Option<Bound<u64>>,
    /// Tightest tokens per day.
    pub tpd: Option<Bound<u64>>,
    /// Tightest credits per day.
    pub daily_limit: Option<Bound<Micros>>,
    /// The nearest `freeze_on_anomaly` on the path (a setting: the most specific account decides).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freeze_on_anomaly: Option<Bound<bool>>,
}

fn ser_nets<S: serde::Serializer>(v: &[Bound<Vec<IpNet>>], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for b in v {
        let nets: Vec<String> = b.value.iter().map(ToString::to_string).collect();
        seq.serialize_element(&serde_json::json!({"value": nets, "set_by": b.set_by}))?;
    }
    seq.end()
}

fn tighter<T: Ord + Copy>(cur: &mut Option<Bound<T>>, v: Option<T>, src: &Source) {
    if let Some(v) = v
        && cur.as_ref().is_none_or(|c| v < c.value)
    {
        *cur = Some(Bound { value: v, set_by: src.clone() });
    }
}

impl EffectivePolicy {
    /// Folds policies in walk order (the most specific first, the root last).
    pub fn from_policies<'a>(policies: impl IntoIterator<Item = (Source, &'a Policy)>) -> Self {
        let mut e = EffectivePolicy::default();
        for (src, p) in policies {
            e.add(&src, p);
        }
        e
    }

    /// Adds one policy's bounds.
    pub fn add(&mut self, src: &Source, p: &Policy) {
        if let Some(a) = &p.allow_models {
            self.allow_models.push(Bound { value: a.clone(), set_by: src.clone() });
        }
        if let Some(a) = &p.allow_ips {
            self.allow_ips.push(Bound { value: a.clone(), set_by: src.clone() });
        }
        if let Some(r) = &p.resources {
            self.resources.push(Bound { value: r.clone(), set_by: src.clone() });
        }
        if p.restricts_levels() {
            let own: Vec<Level> = p.allowed_levels().collect();
            self.levels = Some(match self.levels.take() {
                None => Bound { value: own, set_by: src.clone() },
                Some(b) => {
                    let inter: Vec<Level> = b.value.iter().copied().filter(|l| own.contains(l)).collect();
                    if inter.len() < b.value.len() { Bound { value: inter, set_by: src.clone() } } else { b }
                }
            });
        }
        tighter(&mut self.rpm, p.rpm, src);
        tighter(&mut self.rpd, p.rpd, src);
        tighter(&mut self.tpm, p.tpm, src);
        tighter(&mut self.tpd, p.tpd, src);
        tighter(&mut self.daily_limit, p.daily_limit, src);
        if self.freeze_on_anomaly.is_none()
            && let Some(v) = p.freeze_on_anomaly
        {
            self.freeze_on_anomaly = Some(Bound { value: v, set_by: src.clone() });
        }
    }

    /// Whether `model` passes every allowlist (no mapping: used for direct names such as mapper targets).
    pub fn allows_model(&self, model: &str) -> Result<(), &Source> {
        match self.allow_models.iter().find(|b| !b.value.iter().any(|g| g.matches(model))) {
            Some(b) => Err(&b.set_by),
            None => Ok(()),
        }
    }
}

/// The effective policy of an account path (root first), as inherited by a new child or key below it.
pub fn effective_of(chain: &[Arc<Account>]) -> EffectivePolicy {
    EffectivePolicy::from_policies(
        chain.iter().rev().map(|a| (Source { account: Some(a.id), path: a.path.clone() }, &a.policy)),
    )
}

/// A policy that would widen its ancestors'.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {detail} (bound set by {set_by})")]
pub struct Widening {
    /// The policy field.
    pub field: &'static str,
    /// What exceeds.
    pub detail: String,
    /// The ancestor whose bound it exceeds.
    pub set_by: Source,
}

/// Refuses `p` when it would give more than `inherited` (the effective policy of everything above it).
///
/// Model globs are compared conservatively ([`ModelPattern::is_covered_by`]): a child pattern must be covered by
/// every ancestor list, unless the child's own mapper rewrites every name it matches (then the mapper targets are
/// what the ancestors see, and those are checked). CIDRs must be contained in a network of every ancestor list.
pub fn check_narrowing(p: &Policy, inherited: &EffectivePolicy) -> Result<(), Widening> {
    let widen = |field, detail: String, b: &Source| Widening { field, detail, set_by: b.clone() };
    for (from, to) in &p.model_mapper {
        if let Err(src) = inherited.allows_model(to) {
            return Err(widen("model_mapper", format!("{from} → {to}: model {to:?} is not allowed"), src));
        }
    }
    if let Some(own) = &p.allow_models {
        for pat in own {
            let rewritten = p.model_mapper.iter().any(|(g, _)| pat.is_covered_by(g));
            if rewritten {
                continue;
            }
            if let Some(b) = inherited.allow_models.iter().find(|b| !b.value.iter().any(|g| pat.is_covered_by(g))) {
                return Err(widen(
                    "allow_models",
                    format!("pattern {:?} is not within {:?}", pat.as_str(), names(&b.value)),
                    &b.set_by,
                ));
            }
        }
    }
    if let Some(own) = &p.allow_ips {
        for net in own {
            if let Some(b) = inherited.allow_ips.iter().find(|b| !b.value.iter().any(|n| n.contains(net))) {
                return Err(widen(
                    "allow_ips",
                    format!("{net} is outside {:?}", b.value.iter().map(ToString::to_string).collect::<Vec<_>>()),
                    &b.set_by,
                ));
            }
        }
    }
    if let Some(own) = &p.resources {
        for r in own {
            if let Some(b) = inherited.resources.iter().find(|b| !b.value.iter().any(|x| x == r || x == "*")) {
                return Err(widen("resources", format!("endpoint {r:?} is not in {:?}", b.value), &b.set_by));
            }
        }
    }
    if let Some(b) = &inherited.levels {
        for l in p.allowed_levels() {
            if !b.value.contains(&l) {
                return Err(widen(
                    "level",
                    format!("level {l} is not in {:?}", b.value.iter().map(|l| l.0).collect::<Vec<_>>()),
                    &b.set_by,
                ));
            }
        }
    }
    let num = |field: &'static str, own: Option<u64>, b: &Option<Bound<u64>>| match (own, b) {
        (Some(v), Some(b)) if v > b.value => Err(widen(field, format!("{v} is above {}", b.value), &b.set_by)),
        _ => Ok(()),
    };
    num("rpm", p.rpm, &inherited.rpm)?;
    num("rpd", p.rpd, &inherited.rpd)?;
    num("tpm", p.tpm, &inherited.tpm)?;
    num("tpd", p.tpd, &inherited.tpd)?;
    if let (Some(v), Some(b)) = (p.daily_limit, &inherited.daily_limit)
        && v > b.value
    {
        return Err(widen("daily_limit", format!("{v} is above {}", b.value), &b.set_by));
    }
    Ok(())
}

fn names(v: &[ModelPattern]) -> Vec<&str> {
    v.iter().map(ModelPattern::as_str).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Role, Status};

    fn acct(id: u64, path: &str, p: Policy) -> Arc<Account> {
        Arc::new(Account {
            id: AccountId(id),
            parent: None,
            name: path.into(),
            path: path.into(),
            status: Status::Active,
            role: Role::Member,
            policy: p,
            balance: Micros::ZERO,
        })
    }

    fn pats(v: &[&str]) -> Option<Vec<ModelPattern>> {
        Some(v.iter().map(|s| ModelPattern::new(s).unwrap()).collect())
    }

    #[test]
    fn effective_keeps_tightest_with_source() {
        let root = acct(
            1,
            "acme",
            Policy {
                rpm: Some(600),
                tpm: Some(1000),
                allow_models: pats(&["*"]),
                level: Some(Level(1)),
                level_mapper: vec![(ModelPattern::new("c*").unwrap(), Level(2))],
                ..Policy::default()
            },
        );
        let team = acct(
            2,
            "acme/r",
            Policy { rpm: Some(60), allow_models: pats(&["gpt-*"]), level: Some(Level(2)), ..Policy::default() },
        );
        let e = effective_of(&[root, team]);
        assert_eq!(e.rpm.as_ref().unwrap().value, 60);
        assert_eq!(&*e.rpm.as_ref().unwrap().set_by.path, "acme/r");
        assert_eq!(&*e.tpm.as_ref().unwrap().set_by.path, "acme");
        assert_eq!(e.allow_models.len(), 2);
        assert_eq!(e.levels.as_ref().unwrap().value, vec![Level(2)]);
        assert_eq!(&*e.levels.as_ref().unwrap().set_by.path, "acme/r");
        assert!(e.allows_model("gpt-4o").is_ok());
        assert_eq!(&*e.allows_model("claude").unwrap_err().path, "acme/r");
    }

    #[test]
    fn widening_is_refused_naming_the_bound() {
        let root = acct(
            1,
            "acme",
            Policy {
                rpm: Some(100),
                allow_models: pats(&["gpt-4o*"]),
                allow_ips: Some(vec!["10.0.0.0/8".parse().unwrap()]),
                level: Some(Level(1)),
                ..Policy::default()
            },
        );
        let inh = effective_of(&[root]);
        let ok = Policy {
            rpm: Some(50),
            allow_models: pats(&["gpt-4o-mini"]),
            allow_ips: Some(vec!["10.1.0.0/16".parse().unwrap()]),
            level: Some(Level(1)),
            ..Policy::default()
        };
        assert!(check_narrowing(&ok, &inh).is_ok());
        let cases: Vec<(Policy, &str)> = vec![
            (Policy { rpm: Some(101), ..Policy::default() }, "rpm"),
            (Policy { allow_models: pats(&["gpt-*"]), ..Policy::default() }, "allow_models"),
            (Policy { allow_ips: Some(vec!["192.168.0.0/16".parse().unwrap()]), ..Policy::default() }, "allow_ips"),
            (Policy { allow_ips: Some(vec!["10.0.0.0/7".parse().unwrap()]), ..Policy::default() }, "allow_ips"),
            (Policy { level: Some(Level(2)), ..Policy::default() }, "level"),
            (
                Policy { model_mapper: vec![(ModelPattern::new("*").unwrap(), "o3".into())], ..Policy::default() },
                "model_mapper",
            ),
        ];
        for (p, field) in cases {
            let e = check_narrowing(&p, &inh).unwrap_err();
            assert_eq!(e.field, field);
            assert!(e.to_string().contains("account acme"), "{e}");
        }
        // A child pattern the parent refuses is fine when the child's mapper rewrites it into an allowed name.
        let mapped = Policy {
            allow_models: pats(&["claude-*"]),
            model_mapper: vec![(ModelPattern::new("claude-*").unwrap(), "gpt-4o".into())],
            ..Policy::default()
        };
        assert!(check_narrowing(&mapped, &inh).is_ok());
    }
}

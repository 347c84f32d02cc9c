//! The JSON form of policy fields, shared by the admin API and configuration: ordered mapper tables, and
//! patches where a missing field means "keep" and `null` means "unset".

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use ipnet::IpNet;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::{Limits, ModelPattern, Policy};
use crate::ids::Level;
use crate::money::Micros;

/// A table `{glob: value}` kept in document order, keys validated as model globs.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderedMap<V>(pub Vec<(ModelPattern, V)>);

impl<V> Default for OrderedMap<V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Vis<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for Vis<V> {
            type Value = OrderedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of model glob = value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut v = Vec::new();
                while let Some((k, val)) = m.next_entry::<ModelPattern, V>()? {
                    v.push((k, val));
                }
                Ok(OrderedMap(v))
            }
        }
        d.deserialize_map(Vis(PhantomData))
    }
}

impl<V: Serialize> Serialize for OrderedMap<V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k.as_str(), v)?;
        }
        m.end()
    }
}

/// `Option<Option<T>>` from JSON: absent → `None`, `null` → `Some(None)`, value → `Some(Some(v))`.
pub fn patch<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Policy fields in a patch (admin `PATCH`, and `POST` bodies where absent = unset).
#[derive(Debug, Default, Deserialize)]
#[allow(missing_docs)]
pub struct PolicyPatch {
    #[serde(default, deserialize_with = "patch")]
    pub allow_models: Option<Option<Vec<ModelPattern>>>,
    #[serde(default, deserialize_with = "patch")]
    pub model_mapper: Option<Option<OrderedMap<String>>>,
    #[serde(default, deserialize_with = "patch")]
    pub level_mapper: Option<Option<OrderedMap<u32>>>,
    #[serde(default, deserialize_with = "patch")]
    pub level: Option<Option<u32>>,
    #[serde(default, deserialize_with = "patch")]
    pub allow_ips: Option<Option<Vec<IpNet>>>,
    #[serde(default, deserialize_with = "patch")]
    pub resources: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "patch")]
    pub rpm: Option<Option<u64>>,
    #[serde(default, deserialize_with = "patch")]
    pub rpd: Option<Option<u64>>,
    #[serde(default, deserialize_with = "patch")]
    pub tpm: Option<Option<u64>>,
    #[serde(default, deserialize_with = "patch")]
    pub tpd: Option<Option<u64>>,
    #[serde(default, deserialize_with = "patch")]
    pub daily_limit: Option<Option<Micros>>,
    #[serde(default, deserialize_with = "patch")]
    pub model_limits: Option<Option<OrderedMap<Limits>>>,
    #[serde(default, deserialize_with = "patch")]
    pub freeze_on_anomaly: Option<Option<bool>>,
}

/// Endpoint resource names.
pub const RESOURCES: [&str; 8] =
    ["chat", "responses", "messages", "count_tokens", "generate", "models", "embeddings", "*"];

impl PolicyPatch {
    /// Whether no field is given.
    pub fn is_empty(&self) -> bool {
        self.allow_models.is_none()
            && self.model_mapper.is_none()
            && self.level_mapper.is_none()
            && self.level.is_none()
            && self.allow_ips.is_none()
            && self.resources.is_none()
            && self.rpm.is_none()
            && self.rpd.is_none()
            && self.tpm.is_none()
            && self.tpd.is_none()
            && self.daily_limit.is_none()
            && self.model_limits.is_none()
            && self.freeze_on_anomaly.is_none()
    }

    /// Applies to `p`; refuses unknown resource names.
    pub fn apply(self, p: &mut Policy) -> Result<(), String> {
        if let Some(v) = self.allow_models {
            p.allow_models = v;
        }
        if let Some(v) = self.model_mapper {
            p.model_mapper = v.unwrap_or_default().0.into_iter().map(|(k, v)| (k, Arc::from(v.as_str()))).collect();
        }
        if let Some(v) = self.level_mapper {
            p.level_mapper = v.unwrap_or_default().0.into_iter().map(|(k, v)| (k, Level(v))).collect();
        }
        if let Some(v) = self.level {
            p.level = v.map(Level);
        }
        if let Some(v) = self.allow_ips {
            p.allow_ips = v;
        }
        if let Some(v) = self.resources {
            if let Some(bad) = v.iter().flatten().find(|r| !RESOURCES.contains(&r.as_str())) {
                return Err(format!("resources: unknown endpoint {bad:?} (expected one of {RESOURCES:?})"));
            }
            p.resources = v;
        }
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { p.$f = v; } )* };
        }
        set!(rpm, rpd, tpm, tpd, daily_limit, freeze_on_anomaly);
        if let Some(v) = self.model_limits {
            p.model_limits = v.unwrap_or_default().0;
        }
        Ok(())
    }
}

/// The policy fields as JSON (flattened into account and key objects).
pub fn policy_json(p: &Policy) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::{Value, json};
    let mut m = serde_json::Map::new();
    let pats = |v: &Vec<ModelPattern>| Value::from(v.iter().map(|g| g.as_str()).collect::<Vec<_>>());
    m.insert("allow_models".into(), p.allow_models.as_ref().map_or(Value::Null, pats));
    let mut mm = serde_json::Map::new();
    for (k, v) in &p.model_mapper {
        mm.insert(k.as_str().into(), Value::from(&**v));
    }
    m.insert("model_mapper".into(), Value::Object(mm));
    let mut lm = serde_json::Map::new();
    for (k, v) in &p.level_mapper {
        lm.insert(k.as_str().into(), Value::from(v.0));
    }
    m.insert("level_mapper".into(), Value::Object(lm));
    m.insert("level".into(), p.level.map_or(Value::Null, |l| Value::from(l.0)));
    m.insert(
        "allow_ips".into(),
        p.allow_ips
            .as_ref()
            .map_or(Value::Null, |v| Value::from(v.iter().map(ToString::to_string).collect::<Vec<_>>())),
    );
    m.insert("resources".into(), p.resources.as_ref().map_or(Value::Null, |v| json!(v)));
    for (k, v) in [("rpm", p.rpm), ("rpd", p.rpd), ("tpm", p.tpm), ("tpd", p.tpd)] {
        m.insert(k.into(), v.map_or(Value::Null, Value::from));
    }
    m.insert("daily_limit".into(), p.daily_limit.map_or(Value::Null, |d| Value::from(d.to_string())));
    let mut ml = serde_json::Map::new();
    for (k, l) in &p.model_limits {
        ml.insert(k.as_str().into(), serde_json::to_value(l).unwrap_or(Value::Null));
    }
    m.insert("model_limits".into(), Value::Object(ml));
    // Shown only when set: a setting most accounts never touch.
    if let Some(f) = p.freeze_on_anomaly {
        m.insert("freeze_on_anomaly".into(), Value::from(f));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_distinguishes_absent_null_value() {
        let mut p = Policy { rpm: Some(5), tpm: Some(9), ..Policy::default() };
        let patch: PolicyPatch =
            serde_json::from_str(r#"{"rpm": null, "model_mapper": {"b*": "x", "a*": "y"}}"#).unwrap();
        patch.apply(&mut p).unwrap();
        assert_eq!((p.rpm, p.tpm), (None, Some(9)));
        assert_eq!(p.model_mapper.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["b*", "a*"]);
        let j = policy_json(&p);
        assert_eq!(j["model_mapper"].as_object().unwrap().keys().map(String::as_str).collect::<Vec<_>>(), ["b*", "a*"]);
        let bad: Result<PolicyPatch, _> = serde_json::from_str(r#"{"allow_models": ["gpt-["]}"#);
        assert!(bad.is_err());
        let res: PolicyPatch = serde_json::from_str(r#"{"resources": ["chat", "nope"]}"#).unwrap();
        assert!(res.apply(&mut p).unwrap_err().contains("nope"));
    }
}

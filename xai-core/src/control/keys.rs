//! Virtual keys: issued once, stored as digests, revocable, optionally expiring and narrower than their account.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde::{Deserialize, Deserializer, Serialize};

use super::{AdminError, ControlPlane, KeyRecord, Scope, State};
use crate::day::Day;
use crate::ids::{AccountId, KeyId};
use crate::policy::wire::{PolicyPatch, policy_json};
use crate::policy::{EffectivePolicy, Policy, Source, Status, VirtualKey, check_narrowing, effective_of};
use crate::secret::KeyDigest;
use crate::usage::rfc3339;

/// `POST /admin/v1/accounts/{id}/keys`
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// A label.
    #[serde(default)]
    pub name: Option<String>,
    /// Expiry (RFC 3339).
    #[serde(default, deserialize_with = "de_time")]
    pub expires_at: Option<SystemTime>,
    /// A narrower policy.
    #[serde(flatten)]
    pub policy: PolicyPatch,
}

/// A key as listed (never the key itself).
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    /// Id.
    pub id: u64,
    /// Recognisable start.
    pub prefix: String,
    /// Owner.
    pub account: u64,
    /// Label.
    pub name: Option<String>,
    /// `active` | `revoked`.
    pub status: &'static str,
    /// Expiry.
    pub expires_at: Option<String>,
    /// Issue time.
    pub created_at: String,
    /// Its own policy fields.
    #[serde(flatten)]
    pub policy: serde_json::Map<String, serde_json::Value>,
}

/// The answer to an issue: the only time the key is shown.
#[derive(Debug, Clone, Serialize)]
pub struct IssuedKey {
    /// The key. Shown once.
    pub key: String,
    /// The rest.
    #[serde(flatten)]
    pub info: KeyInfo,
}

const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A new key: `xai-` and 43 base62 characters (about 256 random bits).
pub fn generate_key() -> String {
    let mut rng = rand::rng();
    let mut s = String::with_capacity(47);
    s.push_str("xai-");
    for _ in 0..43 {
        s.push(ALPHABET[rng.random_range(0..ALPHABET.len())] as char);
    }
    s
}

/// Parses an RFC 3339 time (`2026-12-31T23:59:59Z`, fractions and offsets accepted).
pub fn parse_time(s: &str) -> Result<SystemTime, String> {
    let err = || format!("{s:?} is not an RFC 3339 time (e.g. 2026-12-31T23:59:59Z)");
    let (date, rest) = s.split_once(['T', 't', ' ']).ok_or_else(err)?;
    let day: Day = date.parse().map_err(|_| err())?;
    let (clock, offset_secs) = if let Some(c) = rest.strip_suffix(['Z', 'z']) {
        (c, 0i64)
    } else {
        let i = rest.rfind(['+', '-']).ok_or_else(err)?;
        let (c, off) = rest.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (h, m) = off[1..].split_once(':').ok_or_else(err)?;
        let (h, m): (i64, i64) = (h.parse().map_err(|_| err())?, m.parse().map_err(|_| err())?);
        (c, sign * (h * 3600 + m * 60))
    };
    let clock = clock.split('.').next().unwrap_or(clock);
    let mut it = clock.split(':');
    let mut next = || -> Result<i64, String> { it.next().ok_or_else(err)?.parse().map_err(|_| err()) };
    let (h, m, sec) = (next()?, next()?, next()?);
    if !(0..24).contains(&h) || !(0..60).contains(&m) || !(0..61).contains(&sec) {
        return Err(err());
    }
    let secs = day.0 * 86_400 + h * 3600 + m * 60 + sec - offset_secs;
    u64::try_from(secs).map(|s| UNIX_EPOCH + Duration::from_secs(s)).map_err(|_| err())
}

fn de_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) => parse_time(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

impl State {
    pub(crate) fn key_info(&self, r: &KeyRecord) -> KeyInfo {
        KeyInfo {
            id: r.key.id.0,
            prefix: r.key.prefix.to_string(),
            account: r.key.account.0,
            name: r.name.clone(),
            status: if r.key.status == Status::Active { "active" } else { "revoked" },
            expires_at: r.key.expires_at.map(rfc3339),
            created_at: rfc3339(r.created_at),
            policy: policy_json(r.key.policy.as_ref().unwrap_or(&Policy::default())),
        }
    }

    fn key(&self, id: KeyId, scope: Scope) -> Result<&KeyRecord, AdminError> {
        let r = self.keys.get(&id).ok_or_else(|| AdminError::NotFound(format!("no key {id}")))?;
        self.account(r.key.account, scope).map_err(|_| AdminError::NotFound(format!("no key {id}")))?;
        Ok(r)
    }
}

impl ControlPlane {
    /// Issues a key; the answer holds the key, which is never stored.
    pub fn issue_key(&self, scope: Scope, account: AccountId, new: NewKey) -> Result<IssuedKey, AdminError> {
        self.change(|st| {
            st.account(account, scope)?;
            let mut policy = Policy::default();
            let narrower = !new.policy.is_empty();
            new.policy.apply(&mut policy).map_err(AdminError::BadRequest)?;
            check_narrowing(&policy, &effective_of(&st.chain(account)))
                .map_err(|w| AdminError::Widening(w.to_string()))?;
            if new.expires_at.is_some_and(|t| t <= SystemTime::now()) {
                return Err(AdminError::BadRequest("expires_at is in the past".into()));
            }
            let key = generate_key();
            let id = KeyId(st.next_key);
            st.next_key += 1;
            let rec = KeyRecord {
                key: VirtualKey {
                    id,
                    account,
                    prefix: key[..10].into(),
                    digest: KeyDigest::of(&key),
                    status: Status::Active,
                    expires_at: new.expires_at,
                    policy: narrower.then_some(policy),
                },
                name: new.name,
                created_at: SystemTime::now(),
            };
            let info = st.key_info(&rec);
            st.keys.insert(id, rec);
            Ok(IssuedKey { key, info })
        })
    }

    /// Keys of an account.
    pub fn keys(&self, scope: Scope, account: AccountId) -> Result<Vec<KeyInfo>, AdminError> {
        self.read(|st| {
            st.account(account, scope)?;
            Ok(st.keys.values().filter(|r| r.key.account == account).map(|r| st.key_info(r)).collect())
        })
    }

    /// One key.
    pub fn key(&self, scope: Scope, id: KeyId) -> Result<KeyInfo, AdminError> {
        self.read(|st| st.key(id, scope).map(|r| st.key_info(r)))
    }

    /// Revokes a key: refused from the next request on.
    pub fn revoke_key(&self, scope: Scope, id: KeyId) -> Result<KeyInfo, AdminError> {
        self.change(|st| {
            st.key(id, scope)?;
            let r = st.keys.get_mut(&id).expect("checked");
            r.key.status = Status::Disabled;
            let r = r.clone();
            Ok(st.key_info(&r))
        })
    }

    /// The effective policy of a key (its own policy first).
    pub fn key_effective(&self, scope: Scope, id: KeyId) -> Result<(KeyInfo, EffectivePolicy), AdminError> {
        self.read(|st| {
            let r = st.key(id, scope)?;
            let chain = st.chain(r.key.account);
            let key_src = Source { account: None, path: format!("key {}", r.key.prefix).into() };
            let own = r.key.policy.iter().map(|p| (key_src.clone(), p));
            let rest = chain.iter().rev().map(|a| (Source { account: Some(a.id), path: a.path.clone() }, &a.policy));
            Ok((st.key_info(r), EffectivePolicy::from_policies(own.chain(rest))))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_and_distinct() {
        let a = generate_key();
        assert_eq!(a.len(), 47);
        assert!(a.starts_with("xai-"));
        assert_ne!(a, generate_key());
    }

    #[test]
    fn parses_times() {
        let t = parse_time("1970-01-02T00:00:01Z").unwrap();
        assert_eq!(t, UNIX_EPOCH + Duration::from_secs(86_401));
        assert_eq!(parse_time("1970-01-02T02:00:01.5+02:00").unwrap(), t);
        assert!(parse_time("tomorrow").is_err());
        assert!(parse_time("2026-01-01T25:00:00Z").is_err());
    }
}

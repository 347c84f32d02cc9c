//! Typed command-line values and their parsers.
//!
//! Everything a user types is checked here, before any request is built, so that a typo is a usage error (exit 2)
//! with a message that says what was expected, never a round trip to the server.

use std::fmt;
use std::net::IpAddr;

use serde_json::Value;

/// The word that unsets a policy field (`--rpm none` sends `"rpm": null`).
pub const NONE: &str = "none";

/// A policy value on the command line: either a value to set or `none` to unset the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting<T> {
    /// `none`: sent as JSON `null`, which unsets the field on the server.
    Unset,
    /// A value to set.
    Set(T),
}

impl<T> Setting<T> {
    /// Parses `none` as [`Setting::Unset`], anything else with `parse`.
    pub fn parse_with(s: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<Self, String> {
        if s.trim().eq_ignore_ascii_case(NONE) { Ok(Self::Unset) } else { parse(s).map(Self::Set) }
    }
}

/// A credit amount: a non-negative decimal string with at most 6 decimals, passed to the server as written.
///
/// Money is a decimal string on the wire (1 credit = 1 000 000 micro-credits), so the CLI never turns it into a
/// float: `"0.1"` stays `"0.1"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amount(String);

impl Amount {
    /// The amount as sent to the server.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the amount is zero (`0`, `0.000`).
    pub fn is_zero(&self) -> bool {
        self.0.bytes().all(|b| b == b'0' || b == b'.')
    }

    /// Parses a non-negative amount.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix('-') {
            return Err(format!("amounts are never negative (got -{rest})"));
        }
        let (int, frac) = match s.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (s, None),
        };
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(int) || frac.is_some_and(|f| !digits(f)) {
            return Err(format!(
                "{s:?} is not an amount: write digits with an optional decimal point, e.g. 100 or 2.5"
            ));
        }
        if frac.is_some_and(|f| f.len() > 6) {
            return Err(format!("{s:?} has more than 6 decimals (the smallest unit is 0.000001 credit)"));
        }
        Ok(Self(s.to_owned()))
    }

    /// Parses a strictly positive amount (for transfers, where zero would do nothing).
    pub fn parse_positive(s: &str) -> Result<Self, String> {
        let a = Self::parse(s)?;
        if a.is_zero() {
            return Err("the amount must be greater than zero".into());
        }
        Ok(a)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses a transfer amount for `credits allocate` / `credits reclaim`, with a hint on a negative one.
pub fn parse_transfer(s: &str) -> Result<Amount, String> {
    if s.trim().starts_with('-') {
        return Err("the amount must not be negative: use `xai credits allocate` to give credits to an account \
                    and `xai credits reclaim` to take unspent credits back"
            .into());
    }
    Amount::parse_positive(s)
}

/// A comma-separated list (`a,b,c`); blanks around items are dropped, an empty string is the empty list.
pub fn parse_list(s: &str) -> Result<Vec<String>, String> {
    let items: Vec<String> = s.split(',').map(str::trim).filter(|i| !i.is_empty()).map(String::from).collect();
    Ok(items)
}

/// A list of IP networks (`10.0.0.0/8,192.168.1.7`); a bare address is a single host.
pub fn parse_cidrs(s: &str) -> Result<Vec<String>, String> {
    let items = parse_list(s)?;
    for item in &items {
        let (addr, len) = match item.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (item.as_str(), None),
        };
        let ip: IpAddr =
            addr.parse().map_err(|_| format!("{item:?} is not an IP address or CIDR (e.g. 10.0.0.0/8)"))?;
        if let Some(len) = len {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            match len.parse::<u8>() {
                Ok(l) if l <= max => {}
                _ => return Err(format!("{item:?}: the prefix length must be 0..={max}")),
            }
        }
    }
    Ok(items)
}

/// `GLOB=MODEL`, one rule of a model mapper.
pub fn parse_model_rule(s: &str) -> Result<(String, String), String> {
    let (glob, model) = split_rule(s, "GLOB=MODEL, e.g. 'gpt-3.5*=gpt-4o-mini'")?;
    Ok((glob, model.to_owned()))
}

/// `GLOB=LEVEL`, one rule of a level mapper.
pub fn parse_level_rule(s: &str) -> Result<(String, u64), String> {
    let (glob, level) = split_rule(s, "GLOB=LEVEL, e.g. 'claude-*=2'")?;
    let level = level.parse().map_err(|_| format!("{level:?} is not a level (a whole number, e.g. 2)"))?;
    Ok((glob, level))
}

fn split_rule<'a>(s: &'a str, form: &str) -> Result<(String, &'a str), String> {
    match s.split_once('=') {
        Some((g, v)) if !g.trim().is_empty() && !v.trim().is_empty() => Ok((g.trim().to_owned(), v.trim())),
        _ => Err(format!("{s:?} is not a rule: write {form}")),
    }
}

/// The bounds a model limit may set, in the order they are shown.
pub const MODEL_LIMIT_BOUNDS: [&str; 5] = ["rpm", "rpd", "tpm", "tpd", "daily_limit"];

/// `GLOB=BOUND:VALUE,…`, the limits for the models matching a glob, e.g. `gpt-4o*=rpm:10,daily_limit:5`.
pub fn parse_model_limit(s: &str) -> Result<(String, serde_json::Map<String, Value>), String> {
    let (glob, rest) = split_rule(s, "GLOB=BOUND:VALUE,..., e.g. 'gpt-4o*=rpm:10,daily_limit:5'")?;
    let mut bounds = serde_json::Map::new();
    for part in parse_list(rest)? {
        let (name, value) = part
            .split_once(':')
            .map(|(n, v)| (n.trim(), v.trim()))
            .ok_or_else(|| format!("{part:?} is not a bound: write BOUND:VALUE, e.g. rpm:10"))?;
        let value = match name {
            "daily_limit" => Value::String(Amount::parse(value)?.0),
            "rpm" | "rpd" | "tpm" | "tpd" => Value::from(parse_count(value)?),
            _ => return Err(format!("unknown bound {name:?}: use one of {}", MODEL_LIMIT_BOUNDS.join(", "))),
        };
        bounds.insert(name.to_owned(), value);
    }
    Ok((glob, bounds))
}

/// A whole number for a limit (requests or tokens).
pub fn parse_count(s: &str) -> Result<u64, String> {
    s.trim().parse().map_err(|_| format!("{s:?} is not a whole number"))
}

/// A calendar date `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Result<String, String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not a date: write YYYY-MM-DD, e.g. 2026-12-01");
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| s.get(r).filter(|p| p.bytes().all(|c| c.is_ascii_digit()))?.parse().ok();
    let (Some(year), Some(month), Some(day)) = (num(0..4), num(5..7), num(8..10)) else {
        return Err(bad());
    };
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(format!("{s:?} is not a day of the calendar"));
    }
    Ok(s.to_owned())
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// An RFC 3339 time (`2027-01-01T00:00:00Z`, `2027-01-01T09:30:00+02:00`); a bare date means its midnight UTC.
pub fn parse_timestamp(s: &str) -> Result<String, String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not an RFC 3339 time: write e.g. 2027-01-01T00:00:00Z (or a date, 2027-01-01)");
    if s.len() == 10 {
        return parse_date(s).map(|d| format!("{d}T00:00:00Z"));
    }
    let (date, rest) = s.split_at_checked(10).ok_or_else(bad)?;
    parse_date(date).map_err(|_| bad())?;
    let rest = rest.strip_prefix(['T', 't']).ok_or_else(bad)?;
    let b = rest.as_bytes();
    let two = |i: usize, max: u32| {
        rest.get(i..i + 2)
            .filter(|p| p.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|v| v <= max)
    };
    if b.len() < 8 || b[2] != b':' || b[5] != b':' || !two(0, 23) || !two(3, 59) || !two(6, 60) {
        return Err(bad());
    }
    let mut zone = &rest[8..];
    if let Some(frac) = zone.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return Err(bad());
        }
        zone = &frac[n..];
    }
    let zb = zone.as_bytes();
    let zone_ok = zone.eq_ignore_ascii_case("z")
        || (zb.len() == 6
            && (zb[0] == b'+' || zb[0] == b'-')
            && zb[3] == b':'
            && zone[1..3].parse::<u32>().is_ok_and(|h| h <= 23)
            && zone[4..6].parse::<u32>().is_ok_and(|m| m <= 59));
    if !zone_ok {
        return Err(bad());
    }
    Ok(s.to_owned())
}

/// A secret (the admin token, a virtual key): its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret string.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::str::FromStr for Secret {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        // Say nothing about the value: a mistyped secret must not end up in a terminal or a CI log.
        if s.trim().is_empty() { Err("must not be empty".into()) } else { Ok(Self(s.trim().to_owned())) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts() {
        for ok in ["0", "100", "2.5", "0.000001", "007.10"] {
            assert_eq!(Amount::parse(ok).unwrap().as_str(), ok);
        }
        for bad in ["", ".5", "5.", "1e3", "1,5", "abc", "1.0000001", " -1", "+1", "1.2.3"] {
            assert!(Amount::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Amount::parse("-3").unwrap_err().contains("negative"));
        assert!(parse_transfer("0.000").unwrap_err().contains("greater than zero"));
        assert!(parse_transfer("-5").unwrap_err().contains("reclaim"));
        assert_eq!(parse_transfer("12.5").unwrap().as_str(), "12.5");
    }

    #[test]
    fn settings() {
        assert_eq!(Setting::parse_with("none", parse_count), Ok(Setting::Unset));
        assert_eq!(Setting::parse_with("NONE", parse_count), Ok(Setting::Unset));
        assert_eq!(Setting::parse_with("60", parse_count), Ok(Setting::Set(60)));
        assert!(Setting::parse_with("sixty", parse_count).is_err());
    }

    #[test]
    fn lists_and_rules() {
        assert_eq!(parse_list(" a, b ,,c").unwrap(), ["a", "b", "c"]);
        assert!(parse_list("").unwrap().is_empty());
        assert_eq!(parse_cidrs("10.0.0.0/8, ::1, 192.168.1.7/32").unwrap().len(), 3);
        assert!(parse_cidrs("10.0.0.0/33").is_err());
        assert!(parse_cidrs("10.0.0/8").is_err());
        assert_eq!(parse_model_rule("gpt-3.5*=gpt-4o-mini").unwrap(), ("gpt-3.5*".into(), "gpt-4o-mini".into()));
        assert!(parse_model_rule("gpt-3.5*").is_err());
        assert!(parse_model_rule("=x").is_err());
        assert_eq!(parse_level_rule("claude-*=2").unwrap(), ("claude-*".into(), 2));
        assert!(parse_level_rule("claude-*=two").is_err());
        let (glob, b) = parse_model_limit("gpt-4o*=rpm:10,daily_limit:5.5").unwrap();
        assert_eq!(glob, "gpt-4o*");
        assert_eq!(Value::Object(b), serde_json::json!({"rpm": 10, "daily_limit": "5.5"}));
        assert!(parse_model_limit("gpt-4o*=rpx:10").unwrap_err().contains("unknown bound"));
    }

    #[test]
    fn dates_and_times() {
        assert_eq!(parse_date("2026-02-28").unwrap(), "2026-02-28");
        assert!(parse_date("2026-02-29").is_err());
        assert!(parse_date("2028-02-29").is_ok());
        assert!(parse_date("2026-13-01").is_err());
        assert!(parse_date("26-1-1").is_err());
        assert_eq!(parse_timestamp("2027-01-01").unwrap(), "2027-01-01T00:00:00Z");
        for ok in ["2027-01-01T00:00:00Z", "2027-01-01T09:30:00.123+02:00", "2027-01-01t23:59:60z"] {
            assert_eq!(parse_timestamp(ok).unwrap(), ok);
        }
        for bad in ["2027-01-01 00:00:00Z", "2027-01-01T24:00:00Z", "2027-01-01T00:00:00", "tomorrow"] {
            assert!(parse_timestamp(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn secrets_stay_secret() {
        let s: Secret = "sk-very-secret".parse().unwrap();
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(s.expose(), "sk-very-secret");
    }
}

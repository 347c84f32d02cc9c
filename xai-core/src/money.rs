//! Money as integer micro-credits (1 credit = 1 000 000 micro-credits).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An amount of credits in micro-credits. Shown and accepted in JSON as a decimal string (`"12.5"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Micros(pub i64);

/// Micro-credits in one credit.
pub const MICROS_PER_CREDIT: i64 = 1_000_000;

/// Why a decimal amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AmountError {
    /// Not a decimal number.
    #[error("amount {0:?} is not a decimal number")]
    Malformed(String),
    /// More than six decimal places.
    #[error("amount {0:?} has more than 6 decimal places")]
    TooPrecise(String),
    /// Does not fit.
    #[error("amount {0:?} is out of range")]
    OutOfRange(String),
}

impl Micros {
    /// Zero.
    pub const ZERO: Micros = Micros(0);

    /// From a float number of credits per million tokens (config prices), rounded to the nearest micro-credit.
    pub fn from_credits_f64(credits: f64) -> Option<Self> {
        let v = (credits * MICROS_PER_CREDIT as f64).round();
        (v.is_finite() && v.abs() < i64::MAX as f64).then_some(Micros(v as i64))
    }

    /// Saturating addition.
    pub fn saturating_add(self, o: Micros) -> Micros {
        Micros(self.0.saturating_add(o.0))
    }
}

impl FromStr for Micros {
    type Err = AmountError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let (neg, body) = match t.as_bytes().first() {
            Some(b'-') => (true, &t[1..]),
            Some(b'+') => (false, &t[1..]),
            _ => (false, t),
        };
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) {
            return Err(AmountError::Malformed(s.to_string()));
        }
        if frac.len() > 6 {
            return Err(AmountError::TooPrecise(s.to_string()));
        }
        let range = || AmountError::OutOfRange(s.to_string());
        let i: i64 = if int.is_empty() { 0 } else { int.parse().map_err(|_| range())? };
        let mut f: i64 = if frac.is_empty() { 0 } else { frac.parse().map_err(|_| range())? };
        for _ in frac.len()..6 {
            f *= 10;
        }
        let v = i.checked_mul(MICROS_PER_CREDIT).and_then(|v| v.checked_add(f)).ok_or_else(range)?;
        Ok(Micros(if neg { -v } else { v }))
    }
}

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let a = self.0.unsigned_abs();
        let (i, fr) = (a / MICROS_PER_CREDIT as u64, a % MICROS_PER_CREDIT as u64);
        if fr == 0 {
            write!(f, "{sign}{i}")
        } else {
            let s = format!("{fr:06}");
            write!(f, "{sign}{i}.{}", s.trim_end_matches('0'))
        }
    }
}

impl Serialize for Micros {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Micros {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_prints() {
        assert_eq!("12.5".parse::<Micros>().unwrap(), Micros(12_500_000));
        assert_eq!("-0.000001".parse::<Micros>().unwrap(), Micros(-1));
        assert_eq!(".5".parse::<Micros>().unwrap(), Micros(500_000));
        assert_eq!(Micros(12_500_000).to_string(), "12.5");
        assert_eq!(Micros(-1).to_string(), "-0.000001");
        assert_eq!(Micros(3_000_000).to_string(), "3");
        for bad in ["", "-", "1.2.3", "abc", "1e5", " . "] {
            assert!(matches!(bad.parse::<Micros>(), Err(AmountError::Malformed(_))), "{bad}");
        }
        assert!(matches!("0.0000001".parse::<Micros>(), Err(AmountError::TooPrecise(_))));
        assert!(matches!("99999999999999999".parse::<Micros>(), Err(AmountError::OutOfRange(_))));
    }

    proptest! {
        #[test]
        fn display_round_trips(v in any::<i64>().prop_filter("min", |v| *v != i64::MIN)) {
            let m = Micros(v);
            prop_assert_eq!(m.to_string().parse::<Micros>().unwrap(), m);
        }
    }
}

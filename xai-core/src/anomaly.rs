//! Anomaly detection over usage: each account's spend and tokens today against its own trailing baseline, and
//! hour-over-hour spikes. Pure functions over series the caller reads from its store (no I/O here).
//!
//! ```
//! use xai_core::anomaly::{AccountSeries, AnomalyConfig, Rule, Totals, evaluate};
//! use xai_core::{AccountId, Micros};
//!
//! let day = |c: i64| Totals { spend: Micros(c * 1_000_000), tokens: 10_000 };
//! let series = AccountSeries {
//!     account: AccountId(7),
//!     path: "acme/bot".into(),
//!     daily: vec![day(10); 14],
//!     today: day(100),
//!     hours: [Totals::default(); 3],
//! };
//! let flags = evaluate(&AnomalyConfig::default(), &series);
//! assert_eq!(flags.len(), 1);
//! assert_eq!(flags[0].rule, Rule::DailySpend);
//! ```
//!
//! # Rules
//!
//! **Daily** (`daily_spend`, `daily_tokens`), for each metric `x`. The history `h₁…h₁₄` is the account's own
//! traffic on each of the `history_days` days before today (a day without traffic counts as 0); `t` is today so far.
//!
//! ```text
//! median = median(h)
//! MAD    = median(|hᵢ − median|)
//! scale  = max(1.4826 · MAD, scale_floor_fraction · median, min_scale)
//! z      = (t − median) / scale
//! flag   ⇔ z ≥ threshold  ∧  t ≥ minimum  ∧  |{i : hᵢ > 0}| ≥ min_history_days
//! ```
//!
//! 1.4826 · MAD estimates the standard deviation of normal noise while ignoring outliers (a single busy day in
//! the history does not raise the bar). The floor on the scale keeps a flat history (MAD = 0) from flagging every
//! small change: with the defaults, today must exceed the median by at least 3.5 × 10 % of it, and by
//! 3.5 × `min_scale` in absolute terms. An account with fewer than `min_history_days` days of traffic has no
//! baseline yet and is never flagged by these rules ("insufficient history").
//!
//! **Hourly** (`hourly_spike_spend`, `hourly_spike_tokens`). Hours are UTC clock hours; `h₋₂` and `h₋₁` are the two
//! last complete hours, `h₀` the current hour so far (not extrapolated, so a quiet start of an hour is no signal).
//!
//! ```text
//! ratio(a, b) = a / max(b, 1)
//! flag ⇔ (ratio(h₋₁, h₋₂) ≥ hourly_factor ∧ h₋₁ ≥ hourly_minimum)      window "last_hour"
//!      ∨ (ratio(h₀,  h₋₁) ≥ hourly_factor ∧ h₀  ≥ hourly_minimum)      window "current_hour"
//! ```
//!
//! Only increases flag (a drop in traffic is not an anomaly). When both windows qualify, the last complete hour
//! is reported. Spend is in micro-credits inside the comparisons and reported in credits; tokens are prompt plus
//! completion.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::AccountId;
use crate::money::{MICROS_PER_CREDIT, Micros};

/// Thresholds of the rules (`[anomalies]` in the server configuration). Every field has a default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnomalyConfig {
    /// How often a server scans for anomalies (and applies `freeze_on_anomaly`), in seconds.
    pub scan_every_secs: u64,
    /// Days of history behind the daily baseline.
    pub history_days: u32,
    /// Days with traffic the history needs before the daily rules may flag.
    pub min_history_days: u32,
    /// Robust z-score at or above which a daily value is flagged.
    pub threshold: f64,
    /// The scale is at least this fraction of the median.
    pub scale_floor_fraction: f64,
    /// Daily spend: the scale is at least this (credits, decimal string).
    pub min_spend_scale: Micros,
    /// Daily spend: today must be at least this to be flagged (credits).
    pub min_daily_spend: Micros,
    /// Daily tokens: the scale is at least this.
    pub min_tokens_scale: u64,
    /// Daily tokens: today must be at least this to be flagged.
    pub min_daily_tokens: u64,
    /// Hour over hour: the ratio at or above which an hour is flagged.
    pub hourly_factor: f64,
    /// Hourly spend: the hour must be at least this to be flagged (credits).
    pub min_hourly_spend: Micros,
    /// Hourly tokens: the hour must be at least this to be flagged.
    pub min_hourly_tokens: u64,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        Self {
            scan_every_secs: 60,
            history_days: 14,
            min_history_days: 7,
            threshold: 3.5,
            scale_floor_fraction: 0.1,
            min_spend_scale: Micros(100_000),
            min_daily_spend: Micros(MICROS_PER_CREDIT),
            min_tokens_scale: 1_000,
            min_daily_tokens: 10_000,
            hourly_factor: 5.0,
            min_hourly_spend: Micros(MICROS_PER_CREDIT / 2),
            min_hourly_tokens: 5_000,
        }
    }
}

/// Spend and tokens over some period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Cost.
    pub spend: Micros,
    /// Prompt plus completion tokens.
    pub tokens: u64,
}

/// What the rules read for one account (its own traffic).
#[derive(Clone, Debug, PartialEq)]
pub struct AccountSeries {
    /// The account.
    pub account: AccountId,
    /// Its path (for messages).
    pub path: String,
    /// The days before today, oldest first (missing days are zero). Rules use the last `history_days`.
    pub daily: Vec<Totals>,
    /// Today so far.
    pub today: Totals,
    /// Two hours ago (complete), the last complete hour, the current hour so far.
    pub hours: [Totals; 3],
}

/// Which rule flagged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Today's spend against the daily baseline.
    DailySpend,
    /// Today's tokens against the daily baseline.
    DailyTokens,
    /// Spend of an hour against the hour before.
    HourlySpikeSpend,
    /// Tokens of an hour against the hour before.
    HourlySpikeTokens,
}

impl Rule {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::DailySpend => "daily_spend",
            Rule::DailyTokens => "daily_tokens",
            Rule::HourlySpikeSpend => "hourly_spike_spend",
            Rule::HourlySpikeTokens => "hourly_spike_tokens",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The window a flag looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// Today so far vs the trailing days.
    Today,
    /// The last complete hour vs the one before.
    LastHour,
    /// The current hour so far vs the last complete hour.
    CurrentHour,
}

/// One anomaly, with the numbers behind it. Spend is in credits, tokens in tokens (`unit`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Flag {
    /// The account.
    pub account: AccountId,
    /// Its path.
    pub path: String,
    /// The rule.
    pub rule: Rule,
    /// What was compared.
    pub window: Window,
    /// `credits` or `tokens`.
    pub unit: &'static str,
    /// Today so far, or the hour's value.
    pub value: f64,
    /// Daily: the median of the history; hourly: the hour before.
    pub baseline: f64,
    /// Daily: the median absolute deviation of the history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mad: Option<f64>,
    /// Daily: the scale the score divides by (after the floors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    /// Daily: the robust z-score; hourly: the ratio.
    pub score: f64,
    /// The score at or above which it flags.
    pub threshold: f64,
    /// The value below which it never flags.
    pub minimum: f64,
    /// Daily: days of the history with traffic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_days: Option<u32>,
    /// For people.
    pub message: String,
}

/// The robust score of `today` against `history`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RobustScore {
    /// Median of the history.
    pub median: f64,
    /// Median absolute deviation from it.
    pub mad: f64,
    /// `max(1.4826 · mad, floor_fraction · median, min_scale)`.
    pub scale: f64,
    /// `(today − median) / scale`.
    pub z: f64,
}

/// Consistency constant: 1.4826 · MAD estimates σ for normally distributed values.
pub const MAD_TO_SIGMA: f64 = 1.4826;

/// The median (the mean of the two middle values for an even count); 0 for an empty slice.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The robust z-score of `today` (see the module docs). The scale is never below `min_scale` (nor below a tiny
/// positive number, so the score is always finite).
pub fn robust_score(history: &[f64], today: f64, floor_fraction: f64, min_scale: f64) -> RobustScore {
    let med = median(history);
    let dev: Vec<f64> = history.iter().map(|h| (h - med).abs()).collect();
    let mad = median(&dev);
    let scale = (MAD_TO_SIGMA * mad).max(floor_fraction * med).max(min_scale).max(f64::MIN_POSITIVE);
    RobustScore { median: med, mad, scale, z: (today - med) / scale }
}

fn credits(m: i64) -> f64 {
    m as f64 / MICROS_PER_CREDIT as f64
}

/// One metric of a series, in its reporting unit, with its rule names and limits.
struct Metric {
    daily: Rule,
    hourly: Rule,
    unit: &'static str,
    /// Converts the raw value (micros or tokens) to the reporting unit.
    to_unit: fn(f64) -> f64,
    get: fn(&Totals) -> f64,
    min_scale: f64,
    min_daily: f64,
    min_hourly: f64,
}

fn metrics(cfg: &AnomalyConfig) -> [Metric; 2] {
    [
        Metric {
            daily: Rule::DailySpend,
            hourly: Rule::HourlySpikeSpend,
            unit: "credits",
            to_unit: |v| v / MICROS_PER_CREDIT as f64,
            get: |t| t.spend.0 as f64,
            min_scale: cfg.min_spend_scale.0 as f64,
            min_daily: cfg.min_daily_spend.0 as f64,
            min_hourly: cfg.min_hourly_spend.0 as f64,
        },
        Metric {
            daily: Rule::DailyTokens,
            hourly: Rule::HourlySpikeTokens,
            unit: "tokens",
            to_unit: |v| v,
            get: |t| t.tokens as f64,
            min_scale: cfg.min_tokens_scale as f64,
            min_daily: cfg.min_daily_tokens as f64,
            min_hourly: cfg.min_hourly_tokens as f64,
        },
    ]
}

fn fmt_value(unit: &str, v: f64) -> String {
    if unit == "credits" { format!("{} credits", round(v, 6)) } else { format!("{} tokens", round(v, 0)) }
}

fn round(v: f64, places: i32) -> f64 {
    let p = 10f64.powi(places);
    (v * p).round() / p
}

/// The flags of one account, daily rules first.
pub fn evaluate(cfg: &AnomalyConfig, s: &AccountSeries) -> Vec<Flag> {
    let mut out = Vec::new();
    let n = (cfg.history_days as usize).min(s.daily.len());
    let history = &s.daily[s.daily.len() - n..];
    let active = history.iter().filter(|t| t.spend.0 > 0 || t.tokens > 0).count() as u32;
    for m in metrics(cfg) {
        let h: Vec<f64> = history.iter().map(m.get).collect();
        let today = (m.get)(&s.today);
        let sc = robust_score(&h, today, cfg.scale_floor_fraction, m.min_scale);
        if active >= cfg.min_history_days && sc.z >= cfg.threshold && today >= m.min_daily {
            let u = m.to_unit;
            out.push(Flag {
                account: s.account,
                path: s.path.clone(),
                rule: m.daily,
                window: Window::Today,
                unit: m.unit,
                value: u(today),
                baseline: u(sc.median),
                mad: Some(u(sc.mad)),
                scale: Some(u(sc.scale)),
                score: round(sc.z, 3),
                threshold: cfg.threshold,
                minimum: u(m.min_daily),
                history_days: Some(active),
                message: format!(
                    "{} today is {} against a median of {} over the last {n} days (robust z = {:.1}, threshold {})",
                    m.daily,
                    fmt_value(m.unit, u(today)),
                    fmt_value(m.unit, u(sc.median)),
                    sc.z,
                    cfg.threshold
                ),
            });
        }
    }
    for m in metrics(cfg) {
        let [before, last, current] = s.hours.map(|t| (m.get)(&t));
        let ratio = |a: f64, b: f64| a / b.max(1.0);
        let spike = [(Window::LastHour, last, before), (Window::CurrentHour, current, last)]
            .into_iter()
            .find(|(_, v, b)| ratio(*v, *b) >= cfg.hourly_factor && *v >= m.min_hourly);
        if let Some((window, value, base)) = spike {
            let u = m.to_unit;
            let which = if window == Window::LastHour { "the last hour" } else { "this hour so far" };
            out.push(Flag {
                account: s.account,
                path: s.path.clone(),
                rule: m.hourly,
                window,
                unit: m.unit,
                value: u(value),
                baseline: u(base),
                mad: None,
                scale: None,
                score: round(ratio(value, base), 3),
                threshold: cfg.hourly_factor,
                minimum: u(m.min_hourly),
                history_days: None,
                message: format!(
                    "{}: {which} is {} against {} the hour before ({:.1}x, threshold {}x)",
                    m.hourly,
                    fmt_value(m.unit, u(value)),
                    fmt_value(m.unit, u(base)),
                    ratio(value, base),
                    cfg.hourly_factor
                ),
            });
        }
    }
    out
}

/// The flags of every account, in input order.
pub fn evaluate_all(cfg: &AnomalyConfig, series: &[AccountSeries]) -> Vec<Flag> {
    series.iter().flat_map(|s| evaluate(cfg, s)).collect()
}

/// The numbers of a flag as credits (for spend) — used by callers that show money as strings.
pub fn credits_of(m: Micros) -> f64 {
    credits(m.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: a tiny deterministic generator, so every history below is the same on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        /// Uniform in `[lo, hi]`.
        fn between(&mut self, lo: i64, hi: i64) -> i64 {
            lo + (self.next() % (hi - lo + 1) as u64) as i64
        }
    }

    const C: i64 = MICROS_PER_CREDIT;

    /// `days` days of spend around `mean` credits (± `jitter` %), tokens 1000 per credit; `None` days are empty.
    fn history(seed: u64, days: usize, mean: i64, jitter: i64, quiet: &[usize]) -> Vec<Totals> {
        let mut r = Rng(seed);
        (0..days)
            .map(|i| {
                let pct = r.between(100 - jitter, 100 + jitter);
                if quiet.contains(&i) {
                    Totals::default()
                } else {
                    let spend = mean * C * pct / 100;
                    Totals { spend: Micros(spend), tokens: (spend / 1000) as u64 }
                }
            })
            .collect()
    }

    fn series(daily: Vec<Totals>, today: Totals, hours: [Totals; 3]) -> AccountSeries {
        AccountSeries { account: AccountId(42), path: "acme/bot".into(), daily, today, hours }
    }

    fn spend(credits: i64) -> Totals {
        Totals { spend: Micros(credits * C), tokens: (credits * 1000) as u64 }
    }

    fn rules(flags: &[Flag]) -> Vec<Rule> {
        flags.iter().map(|f| f.rule).collect()
    }

    #[test]
    fn median_and_mad() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        let s = robust_score(&[1.0, 2.0, 3.0, 4.0, 100.0], 10.0, 0.0, 0.0);
        assert_eq!((s.median, s.mad), (3.0, 1.0), "one outlier moves neither");
        assert!((s.scale - MAD_TO_SIGMA).abs() < 1e-12);
        assert!((s.z - 7.0 / MAD_TO_SIGMA).abs() < 1e-12);
    }

    #[test]
    fn daily_spike_flags_spend_and_tokens_with_the_numbers() {
        let cfg = AnomalyConfig::default();
        let daily = history(0x5eed, 14, 20, 10, &[]);
        let s = series(daily.clone(), spend(200), [Totals::default(); 3]);
        let flags = evaluate(&cfg, &s);
        assert_eq!(rules(&flags), [Rule::DailySpend, Rule::DailyTokens]);
        let f = &flags[0];
        let h: Vec<f64> = daily.iter().map(|t| t.spend.0 as f64 / C as f64).collect();
        let expect = robust_score(&h, 200.0, 0.1, 0.1);
        assert_eq!((f.value, f.unit, f.window), (200.0, "credits", Window::Today));
        assert!((f.baseline - expect.median).abs() < 1e-9);
        assert!((f.mad.unwrap() - expect.mad).abs() < 1e-9);
        assert!((f.scale.unwrap() - expect.scale).abs() < 1e-9);
        assert!((f.score - round(expect.z, 3)).abs() < 1e-9 && f.score >= 3.5);
        assert_eq!((f.threshold, f.history_days, f.minimum), (3.5, Some(14), 1.0));
        assert!(f.message.contains("daily_spend") && f.message.contains("200 credits"), "{}", f.message);
        assert_eq!((flags[1].unit, flags[1].value), ("tokens", 200_000.0));
    }

    #[test]
    fn steady_noise_stays_quiet() {
        let cfg = AnomalyConfig::default();
        // Many seeds: today drawn from the same ±30 % noise as the history never flags.
        for seed in 1..200u64 {
            let all = history(seed, 15, 50, 30, &[]);
            let s = series(all[..14].to_vec(), all[14], [all[14]; 3]);
            assert!(evaluate(&cfg, &s).is_empty(), "seed {seed}: {:?}", evaluate(&cfg, &s));
        }
    }

    #[test]
    fn short_history_never_flags_daily() {
        let cfg = AnomalyConfig::default();
        // Six days of traffic out of fourteen: below `min_history_days`.
        let quiet: Vec<usize> = (0..8).collect();
        let s = series(history(7, 14, 20, 10, &quiet), spend(10_000), [Totals::default(); 3]);
        assert!(evaluate(&cfg, &s).is_empty());
        // Seven days of traffic: the baseline exists (the median of 14 values, 7 of them zero, is small).
        let quiet: Vec<usize> = (0..7).collect();
        let s = series(history(7, 14, 20, 10, &quiet), spend(10_000), [Totals::default(); 3]);
        assert_eq!(rules(&evaluate(&cfg, &s)), [Rule::DailySpend, Rule::DailyTokens]);
        assert_eq!(evaluate(&cfg, &s)[0].history_days, Some(7));
    }

    #[test]
    fn the_scale_floor_keeps_a_flat_history_from_flagging_small_changes() {
        let cfg = AnomalyConfig::default();
        let flat = vec![spend(100); 14];
        // MAD = 0: without a floor any increase would be an infinite score. The floor is 10 % of the median
        // (10 credits), so 3.5 × 10 = 35 credits above the median is needed.
        let s = series(flat.clone(), spend(130), [Totals::default(); 3]);
        assert!(evaluate(&cfg, &s).is_empty(), "30 % above a flat history is not an anomaly");
        let s = series(flat.clone(), spend(135), [Totals::default(); 3]);
        let f = evaluate(&cfg, &s);
        assert_eq!(rules(&f), [Rule::DailySpend, Rule::DailyTokens]);
        assert_eq!((f[0].mad, f[0].scale, f[0].score), (Some(0.0), Some(10.0), 3.5));
        // The absolute floor: a tiny flat history (0.01 credits a day) against 0.5 credits today.
        let tiny = vec![Totals { spend: Micros(10_000), tokens: 10 }; 14];
        let s = series(tiny, Totals { spend: Micros(300_000), tokens: 300 }, [Totals::default(); 3]);
        assert!(evaluate(&cfg, &s).is_empty(), "below the minimum scale and the minimum value");
    }

    #[test]
    fn below_the_minimum_value_never_flags() {
        let cfg =
            AnomalyConfig { min_daily_spend: Micros(500 * C), min_daily_tokens: 10_000_000, ..Default::default() };
        let s = series(history(3, 14, 20, 10, &[]), spend(400), [Totals::default(); 3]);
        assert!(evaluate(&cfg, &s).is_empty());
    }

    #[test]
    fn hourly_spikes_flag_increases_only() {
        let cfg = AnomalyConfig::default();
        let daily = history(11, 14, 100, 20, &[]);
        let today = spend(90);
        // Last complete hour 6× the hour before (both above the minimum).
        let s = series(daily.clone(), today, [spend(2), spend(12), spend(1)]);
        let f = evaluate(&cfg, &s);
        assert_eq!(rules(&f), [Rule::HourlySpikeSpend, Rule::HourlySpikeTokens]);
        assert_eq!(
            (f[0].window, f[0].value, f[0].baseline, f[0].score, f[0].threshold),
            (Window::LastHour, 12.0, 2.0, 6.0, 5.0)
        );
        assert!(f[0].message.contains("6.0x"), "{}", f[0].message);
        // The other direction: a drop to a sixth is not an anomaly.
        let s = series(daily.clone(), today, [spend(12), spend(2), spend(1)]);
        assert!(evaluate(&cfg, &s).is_empty());
        // Just under the factor.
        let s = series(daily.clone(), today, [spend(3), spend(14), spend(1)]);
        assert!(evaluate(&cfg, &s).is_empty());
        // The current hour so far already 5× the last complete hour.
        let s = series(daily.clone(), today, [spend(2), spend(2), spend(10)]);
        let f = evaluate(&cfg, &s);
        assert_eq!(rules(&f), [Rule::HourlySpikeSpend, Rule::HourlySpikeTokens]);
        assert_eq!((f[0].window, f[0].score), (Window::CurrentHour, 5.0));
        // From nothing to something: a spike when above the minimum, not below.
        let s = series(daily.clone(), today, [Totals::default(), spend(1), Totals::default()]);
        assert_eq!(rules(&evaluate(&cfg, &s)), [Rule::HourlySpikeSpend]);
        let small = Totals { spend: Micros(C / 4), tokens: 250 };
        let s = series(daily, today, [Totals::default(), small, Totals::default()]);
        assert!(evaluate(&cfg, &s).is_empty(), "below the hourly minimum");
    }

    #[test]
    fn seeded_population_flags_exactly_the_spiking_accounts() {
        let cfg = AnomalyConfig::default();
        let mut r = Rng(0xC0FFEE);
        let mut all = Vec::new();
        for i in 0..50u64 {
            let mean = r.between(5, 500);
            let mut s = series(history(i + 100, 15, mean, 25, &[]), spend(0), [Totals::default(); 3]);
            s.account = AccountId(i);
            s.today = s.daily.pop().expect("15 days");
            let hour = Totals { spend: Micros(s.today.spend.0 / 24), tokens: s.today.tokens / 24 };
            s.hours = [hour; 3];
            if i % 10 == 3 {
                s.today = Totals { spend: Micros(s.today.spend.0 * 4), tokens: s.today.tokens * 4 };
            }
            all.push(s);
        }
        let flagged: Vec<u64> =
            evaluate_all(&cfg, &all).iter().filter(|f| f.rule == Rule::DailySpend).map(|f| f.account.0).collect();
        assert_eq!(flagged, [3, 13, 23, 33, 43]);
    }

    #[test]
    fn config_defaults_and_partial_overrides() {
        let c: AnomalyConfig = serde_json::from_str(r#"{"threshold": 5.0, "min_daily_spend": "2.5"}"#).unwrap();
        assert_eq!((c.threshold, c.min_daily_spend, c.history_days), (5.0, Micros(2_500_000), 14));
        assert!(serde_json::from_str::<AnomalyConfig>(r#"{"treshold": 1}"#).is_err());
        assert_eq!(credits_of(Micros(1_500_000)), 1.5);
    }
}

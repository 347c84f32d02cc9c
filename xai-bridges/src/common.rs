//! Pieces every adapter shares: upstream failure classification, retry-after parsing, JSON helpers.

use std::time::Duration;

use http::{HeaderMap, StatusCode};
use xai_core::Outcome;

/// `retry-after-ms`, else `retry-after` in seconds (HTTP dates are treated as unknown).
pub fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok()).filter(|v| v.is_finite() && *v >= 0.0) {
        return Some(Duration::from_millis(ms as u64));
    }
    get("retry-after")
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(Duration::from_secs_f64)
}

/// The classification shared by all protocols; `quota_markers` are body substrings that mean "billing quota
/// exhausted" rather than "slow down".
pub fn classify(
    status: StatusCode,
    h: &HeaderMap,
    body: &[u8],
    default_retry: Duration,
    quota_markers: &[&str],
) -> Outcome {
    let has = |m: &str| memchr::memmem::find(body, m.as_bytes()).is_some();
    match status.as_u16() {
        429 if quota_markers.iter().any(|m| has(m)) => Outcome::QuotaExhausted,
        429 => Outcome::RateLimited {
            retry_after_ms: retry_after(h).unwrap_or(default_retry).as_millis().min(u64::MAX as u128) as u64,
        },
        401 | 403 => Outcome::AuthRejected,
        402 => Outcome::QuotaExhausted,
        408 => Outcome::Timeout,
        s if s >= 500 => Outcome::Overloaded,
        _ => Outcome::Ok,
    }
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// Byte range of a borrowed slice inside the buffer it was parsed from.
pub fn span_in(buf: &[u8], part: &str) -> Option<std::ops::Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(buf.as_ptr() as usize)?;
    let end = start + part.len();
    (end <= buf.len()).then_some(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        let mut h = HeaderMap::new();
        let d = Duration::from_secs(5);
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, &h, b"", d, &[]),
            Outcome::RateLimited { retry_after_ms: 5000 }
        );
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, &h, b"", d, &[]),
            Outcome::RateLimited { retry_after_ms: 2000 }
        );
        h.insert("retry-after-ms", "150".parse().unwrap());
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, &h, b"", d, &[]),
            Outcome::RateLimited { retry_after_ms: 150 }
        );
        assert_eq!(
            classify(
                StatusCode::TOO_MANY_REQUESTS,
                &h,
                b"{\"code\":\"insufficient_quota\"}",
                d,
                &["insufficient_quota"]
            ),
            Outcome::QuotaExhausted
        );
        assert_eq!(classify(StatusCode::UNAUTHORIZED, &h, b"", d, &[]), Outcome::AuthRejected);
        assert_eq!(classify(StatusCode::BAD_GATEWAY, &h, b"", d, &[]), Outcome::Overloaded);
        assert_eq!(classify(StatusCode::from_u16(529).unwrap(), &h, b"", d, &[]), Outcome::Overloaded);
        assert_eq!(classify(StatusCode::BAD_REQUEST, &h, b"", d, &[]), Outcome::Ok);
    }
}

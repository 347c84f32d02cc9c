//! `GET /metrics`: the operational counters of this instance in the Prometheus text format (version 0.0.4).
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `xai_up_seconds` | gauge | seconds since start |
//! | `xai_responses_total{class}` | counter | gateway answers by status class (`2xx`, `4xx`, `5xx`, …) |
//! | `xai_upstream_key_disabled{provider,key}` | gauge | 1 when the key was disabled after an upstream 401/403 |
//! | `xai_upstream_key_cooldown_seconds{provider,key}` | gauge | remaining cooldown of the key |
//! | `xai_redis_degraded` | gauge | 1 while Redis is unreachable and limits are per instance |
//! | `xai_redis_degraded_admissions_total` | counter | requests admitted on per-instance limits during outages |
//! | `xai_redis_outages_total` | counter | Redis outages seen |
//! | `xai_redis_leased_admissions_total` | counter | requests admitted from a lease, without a Redis round trip |
//! | `xai_redis_lease_waits_total` | counter | admissions that waited for another one's lease request on their tree |
//! | `xai_unpriced_requests_total` | counter | requests served at zero cost because their model has no price |
//! | `xai_catalog_loads_total{source}` | counter | catalog reloads through the Redis tier, by source (`redis`, `database`) |
//! | `xai_catalog_cache_errors_total` | counter | failures of the catalog's Redis tier (unreachable, copy not opening) |
//! | `xai_usage_queued` | gauge | usage records waiting for the database writer |
//! | `xai_usage_written_total` | counter | usage records inserted |
//! | `xai_usage_spooled_total` | counter | usage records appended to the local spool (database unreachable) |
//! | `xai_usage_spool_pending` | gauge | usage records in the spool now |
//! | `xai_usage_replayed_total` | counter | usage records replayed from the spool |

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use xai_core::memory::InMemoryKeyPool;
use xai_store::redis_limits::RedisMeter;
use xai_store::usage::DurableMeter;

/// What `/metrics` reads.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    responses: [AtomicU64; 6],
    /// The key pool (health per upstream key).
    pub pool: Arc<InMemoryKeyPool>,
    /// The cluster meter, when Redis is configured.
    pub redis: Option<Arc<RedisMeter>>,
    /// The durable usage writer, when state is durable.
    pub usage: Option<Arc<DurableMeter>>,
}

impl Metrics {
    /// Over the instance's components.
    pub fn new(pool: Arc<InMemoryKeyPool>, redis: Option<Arc<RedisMeter>>, usage: Option<Arc<DurableMeter>>) -> Self {
        Self { started: Instant::now(), responses: Default::default(), pool, redis, usage }
    }

    /// Counts one gateway answer.
    pub fn response(&self, status: http::StatusCode) {
        let class = (status.as_u16() / 100) as usize;
        self.responses[class.min(5)].fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut o = String::with_capacity(2048);
        push_header(&mut o, "xai_up_seconds", "gauge", "Seconds since this instance started.");
        let _ = writeln!(o, "xai_up_seconds {:.3}", self.started.elapsed().as_secs_f64());
        push_header(
            &mut o,
            "xai_unpriced_requests_total",
            "counter",
            "Requests served at zero cost because their model has no price.",
        );
        let unpriced = xai_core::layers::admit::UNPRICED_REQUESTS.load(std::sync::atomic::Ordering::Relaxed);
        let _ = writeln!(o, "xai_unpriced_requests_total {unpriced}");
        {
            use xai_store::catalog_cache::{ERRORS, FROM_DATABASE, FROM_REDIS};
            push_header(
                &mut o,
                "xai_catalog_loads_total",
                "counter",
                "Catalog reloads through the Redis tier, by where the catalog came from.",
            );
            let _ = writeln!(o, "xai_catalog_loads_total{{source=\"redis\"}} {}", FROM_REDIS.load(Ordering::Relaxed));
            let _ =
                writeln!(o, "xai_catalog_loads_total{{source=\"database\"}} {}", FROM_DATABASE.load(Ordering::Relaxed));
            push_header(
                &mut o,
                "xai_catalog_cache_errors_total",
                "counter",
                "Failures of the catalog's Redis tier (unreachable, or a copy that does not open).",
            );
            let _ = writeln!(o, "xai_catalog_cache_errors_total {}", ERRORS.load(Ordering::Relaxed));
        }
        push_header(&mut o, "xai_responses_total", "counter", "Gateway answers by HTTP status class.");
        for (i, c) in self.responses.iter().enumerate().skip(1) {
            let _ = writeln!(o, "xai_responses_total{{class=\"{i}xx\"}} {}", c.load(Ordering::Relaxed));
        }
        let health = self.pool.health();
        push_header(&mut o, "xai_upstream_key_disabled", "gauge", "1 when an upstream key is disabled (401/403).");
        for k in &health {
            let _ = writeln!(
                o,
                "xai_upstream_key_disabled{{provider=\"{}\",key=\"{}\"}} {}",
                escape(&k.provider),
                k.id,
                u8::from(k.disabled)
            );
        }
        push_header(&mut o, "xai_upstream_key_cooldown_seconds", "gauge", "Remaining cooldown of an upstream key.");
        for k in &health {
            let _ = writeln!(
                o,
                "xai_upstream_key_cooldown_seconds{{provider=\"{}\",key=\"{}\"}} {:.3}",
                escape(&k.provider),
                k.id,
                k.cooldown_ms as f64 / 1000.0
            );
        }
        if let Some(r) = &self.redis {
            let rows: [(&str, &str, &str, u64); 5] = [
                ("xai_redis_degraded", "gauge", "1 while Redis is unreachable.", u64::from(r.is_degraded())),
                (
                    "xai_redis_degraded_admissions_total",
                    "counter",
                    "Requests admitted on per-instance limits while Redis was unreachable.",
                    r.degraded(),
                ),
                ("xai_redis_outages_total", "counter", "Redis outages seen.", r.outages()),
                (
                    "xai_redis_leased_admissions_total",
                    "counter",
                    "Requests admitted from a lease without a Redis round trip.",
                    r.leased(),
                ),
                (
                    "xai_redis_lease_waits_total",
                    "counter",
                    "Admissions that waited for another one's lease request on their tree.",
                    r.lease_waits(),
                ),
            ];
            push_rows(&mut o, &rows);
        }
        if let Some(u) = &self.usage {
            let s = u.stats();
            let rows: [(&str, &str, &str, u64); 5] = [
                ("xai_usage_queued", "gauge", "Usage records waiting for the database writer.", s.queued),
                ("xai_usage_written_total", "counter", "Usage records inserted.", s.written),
                ("xai_usage_spooled_total", "counter", "Usage records appended to the local spool.", s.spooled),
                ("xai_usage_spool_pending", "gauge", "Usage records in the spool now.", s.pending_spool),
                ("xai_usage_replayed_total", "counter", "Usage records replayed from the spool.", s.replayed),
            ];
            push_rows(&mut o, &rows);
        }
        o
    }
}

fn push_header(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn push_rows(o: &mut String, rows: &[(&str, &str, &str, u64)]) {
    for (name, kind, help, v) in rows {
        push_header(o, name, kind, help);
        let _ = writeln!(o, "{name} {v}");
    }
}

/// A label value: backslash, quote and newline escaped.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use xai_core::memory::PoolConfig;

    #[test]
    fn renders_counters_and_pool_health() {
        let pool = Arc::new(InMemoryKeyPool::new(&xai_core::RouteTable::default(), PoolConfig::default()));
        let m = Metrics::new(pool, None, None);
        m.response(http::StatusCode::OK);
        m.response(http::StatusCode::OK);
        m.response(http::StatusCode::TOO_MANY_REQUESTS);
        let t = m.render();
        assert!(t.contains("xai_responses_total{class=\"2xx\"} 2\n"), "{t}");
        assert!(t.contains("xai_responses_total{class=\"4xx\"} 1\n"), "{t}");
        assert!(t.contains("# TYPE xai_up_seconds gauge\n"), "{t}");
        assert!(!t.contains("xai_redis_degraded"), "no Redis configured: {t}");
        for line in t.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "every sample has a numeric value: {line}");
        }
        assert_eq!(escape("a\"b\\c"), "a\\\"b\\\\c");
    }
}

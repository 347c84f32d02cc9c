//! The admin API (docs/admin-api.md): accounts, keys, credits, products, today, explain, providers, key health
//! and usage, each authorised as the root admin or as an owner/admin key acting on its subtree.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use xai_core::control::{AdminError, ControlPlane, Scope};
use xai_core::memory::InMemoryKeyPool;
use xai_core::policy::{Role, Status};
use xai_core::usage::UsageRecord;
use xai_core::{AccountId, Body, KeyDigest, KeyId, Meter, Micros, PolicyStore, body};
use xai_store::usage::{UsageDb, UsageRow};
use xai_store::usage_query::{self, Format, GroupKey, UsageFilter, UsageQuery, records_csv};

/// What the admin API needs.
#[derive(Clone)]
pub struct Admin {
    /// SHA-256 of the root admin token.
    pub token_digest: [u8; 32],
    /// The control plane.
    pub control: Arc<ControlPlane>,
    /// Where changes are saved (none: in memory only).
    pub sql: Option<Arc<xai_store::sql::SqlStore>>,
    /// Where saved changes are announced to the other instances.
    pub feed: crate::feed::Feed,
    /// This instance's id on the feed.
    pub instance: String,
    /// Usage source.
    pub meter: Arc<dyn Meter>,
    /// Key health source.
    pub pool: Arc<InMemoryKeyPool>,
    /// The pool as the cluster shares it (enabling a key again reaches every instance).
    pub keys: Arc<crate::pool_sync::SharedPool>,
    /// What happens to unpriced models (`free` or `refuse`), for `GET /pricing`.
    pub unpriced: &'static str,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Admin")
    }
}

/// A JSON response.
pub fn json(status: StatusCode, v: &impl serde::Serialize) -> Response<Body> {
    let mut r = Response::new(body::full(Bytes::from(serde_json::to_vec(v).unwrap_or_default())));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// The admin error shape `{"error":{"code","message"}}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({"error": {"code": code, "message": message}}))
}

fn admin_error(e: AdminError) -> Response<Body> {
    error(StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST), e.code(), &e.to_string())
}

fn bad(msg: impl Into<String>) -> AdminError {
    AdminError::BadRequest(msg.into())
}

type Answer = Result<Response<Body>, AdminError>;

/// An authorisation refusal: status, code, message.
type Refused = (StatusCode, &'static str, &'static str);

fn ok(v: &impl serde::Serialize) -> Answer {
    Ok(json(StatusCode::OK, v))
}

fn created(v: &impl serde::Serialize) -> Answer {
    Ok(json(StatusCode::CREATED, v))
}

fn parse<T: DeserializeOwned>(b: &Bytes) -> Result<T, AdminError> {
    if b.is_empty() {
        return Err(bad("a JSON body is required"));
    }
    serde_json::from_slice(b).map_err(|e| bad(format!("invalid request body: {e}")))
}

fn id(s: &str, what: &str) -> Result<u64, AdminError> {
    s.parse().map_err(|_| AdminError::NotFound(format!("no {what} {s:?}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreditsBody {
    amount: Micros,
    #[serde(default)]
    note: Option<String>,
}

impl Admin {
    /// Who is asking. Unknown tokens are 401; member keys 403.
    fn scope<B>(&self, req: &Request<B>) -> Result<Scope, Refused> {
        let unauthorized = || -> Refused {
            (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "admin API needs `Authorization: Bearer <admin token or owner/admin key>`",
            )
        };
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(unauthorized)?;
        let d: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if bool::from(d.ct_eq(&self.token_digest)) {
            return Ok(Scope::Root);
        }
        let store = self.control.store();
        let Some(Ok(Some(p))) = futures_ready(store.principal(&KeyDigest::of(token))) else {
            return Err(unauthorized());
        };
        if p.key.status != Status::Active
            || p.key.expires_at.is_some_and(|t| t <= std::time::SystemTime::now())
            || p.chain.iter().any(|a| a.status != Status::Active)
        {
            return Err(unauthorized());
        }
        match p.account().role {
            Role::Owner | Role::Admin => Ok(Scope::Subtree(p.account().id)),
            Role::Member => Err((
                StatusCode::FORBIDDEN,
                "forbidden",
                "this key's account is a member: admin rights need role owner or admin",
            )),
        }
    }

    /// Handles `/admin/v1/...`.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<xai_core::BoxError>,
    {
        let scope = match self.scope(&req) {
            Ok(s) => s,
            Err((status, code, message)) => return error(status, code, message),
        };
        let (parts, b) = req.into_parts();
        let body = match Limited::new(b, 1 << 20).collect().await {
            Ok(c) => c.to_bytes(),
            Err(_) => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "bad_request",
                    "admin request bodies are limited to 1 MiB",
                );
            }
        };
        let path = parts.uri.path().trim_end_matches('/').to_string();
        let segs: Vec<&str> = path.trim_start_matches("/admin/v1/").split('/').collect();
        if let (&Method::POST, ["upstream-keys", k, "enable"]) = (&parts.method, &segs[..]) {
            return self.enable_key(scope, k).await.unwrap_or_else(admin_error);
        }
        if segs.first() == Some(&"pricing") {
            return self.pricing(scope, &parts.method, &segs, &body).await.unwrap_or_else(admin_error);
        }
        if parts.method == Method::GET && segs == ["usage"] {
            return self.usage(scope, &parts.uri).await.unwrap_or_else(admin_error);
        }
        if parts.method == Method::GET && matches!(segs[..], ["anomalies"] | ["audit"]) {
            let r = if segs == ["audit"] {
                crate::admin_anomaly::audit(self, scope, &parts.uri).await
            } else {
                crate::admin_anomaly::anomalies(self, scope, &parts.uri).await
            };
            return r.unwrap_or_else(admin_error);
        }
        let answer = match self.route(scope, &parts.method, &segs, &body) {
            Ok(r) => r,
            Err(e) => return admin_error(e),
        };
        // A change is answered once it is saved, then announced to the other instances (reads and explain
        // change nothing and announce nothing).
        if parts.method != Method::GET {
            let changes = self.control.take_changes();
            let changed = !changes.is_empty();
            if let Some(sql) = &self.sql
                && let Err(e) = crate::durable::save(sql, &self.control, changes).await
            {
                tracing::error!(error = %e, "saving an admin change failed");
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_saved",
                    "the change is applied but could not be saved yet; it is retried in the background",
                );
            }
            if changed {
                self.feed.publish(&self.instance).await;
            }
        }
        answer
    }

    fn route(&self, scope: Scope, m: &Method, segs: &[&str], body: &Bytes) -> Answer {
        let c = &self.control;
        match (m, segs) {
            (&Method::GET, ["accounts"]) => ok(&serde_json::json!({ "accounts": c.accounts(scope) })),
            (&Method::POST, ["accounts"]) => created(&c.create_account(scope, parse(body)?)?),
            (&Method::GET, ["accounts", a]) => ok(&c.account(scope, AccountId(id(a, "account")?))?),
            (&Method::PATCH, ["accounts", a]) => {
                ok(&c.update_account(scope, AccountId(id(a, "account")?), parse(body)?)?)
            }
            (&Method::DELETE, ["accounts", a]) => ok(&c.disable_account(scope, AccountId(id(a, "account")?))?),
            (&Method::GET, ["accounts", a, "effective"]) => {
                let (acc, eff) = c.effective(scope, AccountId(id(a, "account")?))?;
                ok(&serde_json::json!({"account": acc.account.id, "path": &*acc.account.path, "effective": eff}))
            }
            (&Method::GET, ["accounts", a, "keys"]) => {
                ok(&serde_json::json!({"keys": c.keys(scope, AccountId(id(a, "account")?))?}))
            }
            (&Method::POST, ["accounts", a, "keys"]) => {
                let new = if body.is_empty() { Default::default() } else { parse(body)? };
                created(&c.issue_key(scope, AccountId(id(a, "account")?), new)?)
            }
            (&Method::GET, ["keys", k]) => ok(&c.key(scope, KeyId(id(k, "key")?))?),
            (&Method::DELETE, ["keys", k]) => ok(&c.revoke_key(scope, KeyId(id(k, "key")?))?),
            (&Method::GET, ["keys", k, "effective"]) => {
                let (key, eff) = c.key_effective(scope, KeyId(id(k, "key")?))?;
                let path =
                    c.account(scope, AccountId(key.account)).map(|a| a.account.path.to_string()).unwrap_or_default();
                ok(&serde_json::json!({"key": key.id, "account": key.account, "path": path, "effective": eff}))
            }
            (&Method::GET, ["accounts", a, "credits"]) => {
                let (balance, ledger) = c.ledger(scope, AccountId(id(a, "account")?))?;
                ok(&serde_json::json!({"balance": balance, "ledger": ledger}))
            }
            (&Method::POST, ["accounts", a, "credits"]) => {
                let b: CreditsBody = parse(body)?;
                ok(&c.transfer(scope, AccountId(id(a, "account")?), b.amount, b.note)?)
            }
            (&Method::GET, ["accounts", a, "products"]) => {
                ok(&serde_json::json!({"products": c.products(scope, AccountId(id(a, "account")?))?}))
            }
            (&Method::POST, ["accounts", a, "products"]) => {
                created(&c.add_product(scope, AccountId(id(a, "account")?), parse(body)?)?)
            }
            (&Method::GET, ["accounts", a, "today"]) => ok(&c.today(scope, AccountId(id(a, "account")?))?),
            (&Method::POST, ["explain"]) => ok(&c.explain(scope, parse(body)?)?),
            (&Method::GET, ["providers"]) => ok(&self.providers()),
            (&Method::GET, ["upstream-keys"]) => ok(&serde_json::json!({ "keys": self.pool.health() })),
            (&Method::GET, ["upstream-keys", k]) => {
                let k = id(k, "upstream key")?;
                let h = self
                    .pool
                    .health()
                    .into_iter()
                    .find(|h| h.id.0 as u64 == k)
                    .ok_or_else(|| AdminError::NotFound(format!("no upstream key {k}")))?;
                ok(&h)
            }
            // GET is answered by `crate::admin_anomaly` before `route` (it reads the usage database).
            (_, ["anomalies"] | ["audit"]) => {
                Err(AdminError::BadRequest(format!("/admin/v1/{} is read-only: use GET", segs.join("/"))))
            }
            _ => Err(AdminError::NotFound(format!("no admin endpoint {m} /admin/v1/{}", segs.join("/")))),
        }
    }

    /// `GET /admin/v1/usage`: without `group_by`, the most recent records (what the database holds plus what is
    /// still on its way there, newest last); with it, aggregates (xai_store::usage_query). Both take the filters
    /// `account` (and its subtree), `model`, `key`, `from`, `to`, and answer JSON or, with `format=csv`, CSV.
    async fn usage(&self, scope: Scope, uri: &http::Uri) -> Answer {
        let q = UsageQuery::parse(uri.query()).map_err(bad)?;
        // `account=` is resolved through the control plane, which refuses accounts outside the caller's subtree.
        let (under, path) = match (q.account, scope) {
            (Some(a), _) => {
                let a = self.control.account(scope, AccountId(a))?;
                (Some(a.account.id), Some(a.account.path.to_string()))
            }
            (None, Scope::Subtree(s)) => (Some(s), Some(self.control.account(scope, s)?.account.path.to_string())),
            (None, Scope::Root) => (None, None),
        };
        let filter = q.filter(path.clone());
        let db = self.sql.as_ref().and_then(|sql| {
            sql.sqlite_pool()
                .cloned()
                .map(UsageDb::Sqlite)
                .or_else(|| sql.postgres_pool().cloned().map(UsageDb::Postgres))
        });
        let unavailable = |e: sqlx::Error| {
            tracing::warn!(error = %e, "reading usage failed");
            AdminError::Invalid("usage records are unavailable: the database did not answer".into())
        };
        // In memory: the meter's recent records under the account (by its id chain, so renames do not matter),
        // through the same filter minus the path.
        let memory = || -> Vec<UsageRecord> {
            let rest = UsageFilter { path: None, ..filter.clone() };
            let mut m = self.meter.recent(10_000);
            m.retain(|r| under.is_none_or(|a| r.chain.contains(&a)) && rest.matches(&UsageRow::from(r)));
            m
        };
        let Some(by) = q.group_by else {
            let limit = q.limit;
            let mut rows: Vec<serde_json::Value> = match &db {
                Some(db) => db.records(limit as i64, &filter).await.map_err(unavailable)?,
                None => vec![],
            };
            let seen: std::collections::HashSet<String> =
                rows.iter().filter_map(|r| r["request_id"].as_str().map(str::to_string)).collect();
            for r in memory().into_iter().filter(|r| !seen.contains(&*r.request_id.0)) {
                rows.push(serde_json::to_value(&r).unwrap_or_default());
            }
            rows.sort_by(|a, b| a["time"].as_str().cmp(&b["time"].as_str()));
            let skip = rows.len().saturating_sub(limit);
            rows.drain(..skip);
            return match q.format {
                Format::Json => ok(&serde_json::json!({ "records": rows })),
                Format::Csv => Ok(csv(records_csv(&rows))),
            };
        };
        // With a database, aggregates are over what it holds (records reach it within the writer's batch wait);
        // without one, over the meter's recent records.
        let groups = match &db {
            Some(db) => db.aggregate(&filter, by).await.map_err(unavailable)?,
            None => {
                let rows: Vec<UsageRow> = memory().iter().map(UsageRow::from).collect();
                usage_query::aggregate(&rows, &UsageFilter { path: None, ..filter.clone() }, by)
            }
        };
        let mut report = usage_query::report(groups, &q, path.as_deref());
        if report.rows.iter().any(|r| matches!(r.key, GroupKey::Account { id: None, .. })) {
            let ids =
                self.control.accounts(scope).into_iter().map(|a| (a.account.path.to_string(), a.account.id.0 as i64));
            usage_query::fill_account_ids(&mut report.rows, &ids.collect());
        }
        match q.format {
            Format::Json => ok(&report.to_json()),
            Format::Csv => Ok(csv(report.to_csv())),
        }
    }

    /// `GET /pricing` (every price and what happens to unpriced models), `PUT /pricing/{model}` (root: set, saved
    /// and announced to every instance), `DELETE /pricing/{model}`.
    async fn pricing(&self, scope: Scope, m: &Method, segs: &[&str], body: &Bytes) -> Answer {
        let model = segs.get(1..).map(|s| s.join("/")).filter(|s| !s.is_empty());
        let model: Option<String> =
            model.map(|s| percent_encoding::percent_decode_str(&s).decode_utf8_lossy().into_owned());
        match (m, model) {
            (&Method::GET, None) => ok(&serde_json::json!({
                "unpriced": self.unpriced,
                "unpriced_requests": xai_core::layers::admit::UNPRICED_REQUESTS.load(std::sync::atomic::Ordering::Relaxed),
                "prices": self.control.prices(),
            })),
            (&Method::GET, Some(model)) => {
                let prices = self.control.prices();
                let p = prices.get(&model).ok_or_else(|| AdminError::NotFound(format!("no price for {model:?}")))?;
                ok(&serde_json::json!({"model": model, "price": p}))
            }
            (&Method::PUT | &Method::DELETE, Some(model)) => {
                let price: Option<xai_core::Price> = if m == Method::PUT { Some(parse(body)?) } else { None };
                self.control.set_price(scope, &model, price)?;
                if let Some(sql) = &self.sql {
                    if let Err(e) = sql.save_price(&model, price.as_ref()).await {
                        tracing::error!(error = %e, "saving a price failed");
                        return Err(AdminError::Invalid("the price is applied here but could not be saved".into()));
                    }
                    // A deleted price falls back to the configuration file's, when it has one.
                    crate::durable::apply_saved_prices(sql, &self.control).await;
                }
                self.feed.publish(&self.instance).await;
                let now = self.control.prices().get(&model).copied();
                ok(&serde_json::json!({"model": model, "price": now}))
            }
            _ => Err(AdminError::NotFound(format!("no admin endpoint {m} /admin/v1/{}", segs.join("/")))),
        }
    }

    /// `POST /upstream-keys/{id}/enable` (root): a key disabled after an upstream rejected it (it stays disabled
    /// across restarts) is used again, on every instance.
    async fn enable_key(&self, scope: Scope, k: &str) -> Answer {
        if scope != Scope::Root {
            return Err(AdminError::Forbidden("only the root admin enables upstream keys".into()));
        }
        let id = xai_core::UpstreamKeyId(
            u32::try_from(id(k, "upstream key")?).map_err(|_| AdminError::NotFound(format!("no upstream key {k}")))?,
        );
        match self.keys.enable(id).await {
            Ok(true) => {}
            Ok(false) => return Err(AdminError::NotFound(format!("no upstream key {k}"))),
            Err(e) => {
                tracing::error!(error = %e, "forgetting a disabled upstream key failed");
                return Err(AdminError::Invalid("the key is enabled here but that could not be saved".into()));
            }
        }
        let h = self.pool.health().into_iter().find(|h| h.id == id);
        ok(&h)
    }

    fn providers(&self) -> serde_json::Value {
        let table = self.control.store().route_table();
        let list: Vec<serde_json::Value> = table
            .providers()
            .iter()
            .map(|p| {
                serde_json::json!({
                    "id": p.id.0, "name": &*p.name, "protocol": p.protocol, "base_url": &*p.base_url, "level": p.level.0,
                    "models": p.models.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
                    "keys": p.keys.iter().map(|k| serde_json::json!({"id": k.id.0, "weight": k.weight})).collect::<Vec<_>>(),
                })
            })
            .collect();
        serde_json::json!({ "providers": list })
    }
}

/// The value of a `Maybe` that is ready (the in-memory store always is).
fn futures_ready<T>(m: xai_core::Maybe<'_, T>) -> Option<T> {
    match m {
        xai_core::Maybe::Ready(t) => Some(t),
        xai_core::Maybe::Pending(_) => None,
    }
}

/// A `text/csv` answer.
fn csv(text: String) -> Response<Body> {
    let mut r = Response::new(body::full(Bytes::from(text)));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    r
}

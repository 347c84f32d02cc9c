//! A request to the admin API as a plain value, and the reading of its answer.
//!
//! Commands build an [`ApiRequest`] without any I/O, so the mapping from arguments to method, path and body is
//! tested on its own; [`crate::client`] sends it; [`read_answer`] turns status and body into JSON or an [`ApiError`].

use std::fmt;

use http::{Method, StatusCode};
use serde_json::Value;

/// The admin API's path prefix.
pub const PREFIX: &str = "/admin/v1";

/// One admin API call: method, path (with query, below the server's base URL) and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    /// HTTP method.
    pub method: Method,
    /// Path and query, e.g. `/admin/v1/usage?limit=20`.
    pub path: String,
    /// JSON body, for POST and PATCH.
    pub body: Option<Value>,
}

impl ApiRequest {
    /// `GET {PREFIX}{path}`.
    pub fn get(path: impl fmt::Display) -> Self {
        Self { method: Method::GET, path: format!("{PREFIX}{path}"), body: None }
    }

    /// `POST {PREFIX}{path}` with a JSON body.
    pub fn post(path: impl fmt::Display, body: Value) -> Self {
        Self { method: Method::POST, path: format!("{PREFIX}{path}"), body: Some(body) }
    }

    /// `PATCH {PREFIX}{path}` with a JSON body.
    pub fn patch(path: impl fmt::Display, body: Value) -> Self {
        Self { method: Method::PATCH, path: format!("{PREFIX}{path}"), body: Some(body) }
    }

    /// `PUT {PREFIX}{path}` with a JSON body.
    pub fn put(path: impl fmt::Display, body: Value) -> Self {
        Self { method: Method::PUT, path: format!("{PREFIX}{path}"), body: Some(body) }
    }

    /// `DELETE {PREFIX}{path}`.
    pub fn delete(path: impl fmt::Display) -> Self {
        Self { method: Method::DELETE, path: format!("{PREFIX}{path}"), body: None }
    }
}

/// The server answered, but not with success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// `error.code` (empty when the body was not the admin error shape).
    pub code: String,
    /// `error.message`, or what could be made of the body.
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = if self.code.is_empty() { String::new() } else { format!(" {}", self.code) };
        write!(f, "{} (HTTP {}{code})", self.message, self.status.as_u16())
    }
}

/// Reads an answer: a 2xx with a JSON body (an empty body reads as `null`), else the admin error shape
/// `{"error": {"code", "message"}}`, or failing that whatever the body says.
pub fn read_answer(status: StatusCode, body: &[u8]) -> Result<Value, ApiError> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    if status.is_success() {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        return parsed.ok_or_else(|| ApiError {
            status,
            code: String::new(),
            message: format!("the server answered with something that is not JSON: {}", snippet(body)),
        });
    }
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let code = error.and_then(|e| e.get("code")).and_then(Value::as_str).unwrap_or_default().to_owned();
    let message = match error.and_then(|e| e.get("message")).and_then(Value::as_str) {
        Some(m) if !m.is_empty() => m.to_owned(),
        _ if !body.is_empty() => snippet(body),
        _ => status.canonical_reason().unwrap_or("request failed").to_lowercase(),
    };
    Err(ApiError { status, code, message })
}

/// The start of a body, on one line, for an error message.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn success_is_json() {
        assert_eq!(read_answer(StatusCode::OK, br#"{"a":1}"#), Ok(json!({"a": 1})));
        assert_eq!(read_answer(StatusCode::CREATED, b""), Ok(Value::Null));
        let e = read_answer(StatusCode::OK, b"<html>hi</html>").unwrap_err();
        assert!(e.message.contains("not JSON: <html>hi</html>"), "{e}");
    }

    #[test]
    fn errors_keep_code_and_message() {
        let body = br#"{"error":{"code":"policy_widening","message":"rpm 100 exceeds acme's 60"}}"#;
        let e = read_answer(StatusCode::UNPROCESSABLE_ENTITY, body).unwrap_err();
        assert_eq!(e.to_string(), "rpm 100 exceeds acme's 60 (HTTP 422 policy_widening)");
    }

    #[test]
    fn odd_errors_still_say_something() {
        let e = read_answer(StatusCode::BAD_GATEWAY, b"").unwrap_err();
        assert_eq!(e.to_string(), "bad gateway (HTTP 502)");
        let e = read_answer(StatusCode::NOT_FOUND, b"no such\n  page").unwrap_err();
        assert_eq!(e.to_string(), "no such page (HTTP 404)");
    }
}

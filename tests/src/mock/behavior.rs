//! The wire types of the mock's control API: what a test scripts and what the mock recorded.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One scripted reply of the mock upstream.
///
/// Every field is optional. What a behaviour leaves out comes from the default reply for the request
/// (docs/test-contract.md): `Behavior::default()` is the default reply itself, `{"interval_ms": 300}` is the default
/// stream sent slowly, `{"status": 503}` is a 503 with an error body in the endpoint's native shape.
///
/// When both `sse` and `body` are set, `sse` wins.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Behavior {
    /// HTTP status of the reply (200 when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Extra response headers (e.g. `retry-after`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Wait this long before sending the response headers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// A JSON value sent as the whole body (`content-type: application/json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// Raw SSE events, each sent as its own chunk, e.g. `"data: {...}\n\n"` (`content-type: text/event-stream`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sse: Option<Vec<String>>,
    /// Pause between two chunks of a stream (also before the first chunk after the headers: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    /// Close the connection abruptly after sending this many chunks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop_after: Option<usize>,
    /// Never respond (the request stays open until the peer goes away).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub hang: bool,
}

/// Builder methods `fn NAME(self, value: TYPE) -> Self` that set the optional field `FIELD` to `Some(value)`.
macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident => $field:ident: $ty:ty;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: $ty) -> Self {
                self.$field = Some(value);
                self
            }
        )*
    };
}

impl Behavior {
    /// The default reply (the same as no script at all); a starting point for the builder methods.
    pub fn ok() -> Self {
        Self::default()
    }

    /// A reply with this status; a non-2xx status without a body gets an error body in the endpoint's native shape.
    pub fn status(status: u16) -> Self {
        Self::ok().with_status(status)
    }

    /// A reply that never comes.
    pub fn hang() -> Self {
        Self { hang: true, ..Self::default() }
    }

    /// A 200 stream of these raw SSE events.
    pub fn sse<I, S>(events: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self { sse: Some(events.into_iter().map(Into::into).collect()), ..Self::default() }
    }

    /// A 200 reply with this JSON body.
    pub fn json(body: Value) -> Self {
        Self::ok().with_body(body)
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    setters! {
        /// Sets the status.
        with_status => status: u16;
        /// Sets the JSON body.
        with_body => body: Value;
        /// Waits before the headers.
        with_delay_ms => delay_ms: u64;
        /// Pauses between stream chunks.
        with_interval_ms => interval_ms: u64;
        /// Closes the connection abruptly after `chunks` chunks.
        with_drop_after => drop_after: usize;
    }
}

/// The body of `POST /_mock/script`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScriptRequest {
    /// The upstream key whose queue receives the behaviours; the shared queue when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Behaviours, consumed first in first out.
    pub behaviors: Vec<Behavior>,
}

/// One request the mock received (control requests excluded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// Sequence number, from 1, also sent back in `x-mock-request`; never reused, even across resets.
    pub seq: u64,
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The `Authorization` header as received.
    pub authorization: Option<String>,
    /// The credential the request carried (bearer token, `x-api-key`, `x-goog-api-key` or `?key=`), echoed in
    /// `x-mock-key`.
    pub key: Option<String>,
    /// Request headers (lower-case names; repeated headers joined with `, `).
    pub headers: BTreeMap<String, String>,
    /// The body parsed as JSON, `null` when empty or not JSON.
    pub body: Value,
    /// The raw body when it was not JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_body: Option<String>,
    /// Unix time in milliseconds when the request head and body had been read.
    pub received_ms: u64,
    /// Which behaviour answered: `"key"`, `"shared"` or `"default"`.
    pub source: String,
    /// The status the mock answered with (absent while it has not answered yet, or for a hang).
    #[serde(default)]
    pub status: Option<u16>,
    /// The mock handed the complete response to the connection.
    pub finished: bool,
    /// The peer went away before the mock had finished sending (or while it was still delaying or hanging).
    pub cancelled: bool,
    /// The mock closed the connection itself on purpose (`drop_after`).
    #[serde(default)]
    pub dropped: bool,
    /// Why the mock refused the request with 400 (its strict validation, docs/test-contract.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
}

impl RecordedRequest {
    /// The model named in the JSON body.
    pub fn model(&self) -> Option<&str> {
        self.body.get("model").and_then(Value::as_str)
    }

    /// Whether the request asked for a stream (`"stream": true`, or Gemini's `:streamGenerateContent`).
    pub fn is_stream(&self) -> bool {
        self.body.get("stream").and_then(Value::as_bool).unwrap_or(false)
            || self.path.contains(":streamGenerateContent")
    }
}

/// The body of `GET /_mock/requests`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestLog {
    /// Every request, oldest first.
    pub requests: Vec<RecordedRequest>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn all_fields_are_optional() {
        let b: Behavior = serde_json::from_value(json!({})).unwrap();
        assert_eq!(b, Behavior::default());
        let b: Behavior = serde_json::from_value(json!({"status": 429, "headers": {"retry-after": "1"}})).unwrap();
        assert_eq!(b, Behavior::status(429).with_header("retry-after", "1"));
    }

    #[test]
    fn round_trips_through_json() {
        let b = Behavior::sse(["data: {}\n\n", "data: [DONE]\n\n"]).with_interval_ms(10).with_drop_after(1);
        let text = serde_json::to_string(&b).unwrap();
        assert!(!text.contains("hang"), "false flags are left out: {text}");
        assert_eq!(serde_json::from_str::<Behavior>(&text).unwrap(), b);
        let s = ScriptRequest { key: Some("sk-up-2".into()), behaviors: vec![Behavior::hang()] };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v, json!({"key": "sk-up-2", "behaviors": [{"hang": true}]}));
    }
}

//! The four protocols of the mock, each read back the way its official client would ([`crate::fixtures::wire`]).

use http::Method;
use serde_json::{Value, json};

use super::WAIT;
use crate::client;
use crate::fixtures::wire::{Entry, Mode, Reply, Wire};
use crate::mock::reply::{ANTHROPIC_SIGNATURE, GEMINI_SIGNATURE, REASONING_TEXT, RESPONSES_SIGNATURE};
use crate::mock::{Behavior, MockUpstream};

const MODEL: &str = "mock-model";

fn user(text: &str) -> Vec<Entry> {
    vec![Entry::User(text.into())]
}

fn modes(wire: Wire) -> Vec<Mode> {
    let mut m = vec![Mode::Unary];
    m.extend_from_slice(wire.stream_modes());
    m
}

/// Sends `body` in `mode` and reads the reply as the client would; panics on a malformed reply or stream.
async fn ask(mock: &MockUpstream, wire: Wire, body: &Value, mode: Mode) -> Reply {
    if mode == Mode::Unary {
        let resp = wire.send(&mock.url(), "sk-up", MODEL, body, mode).await;
        assert_eq!(resp.status, 200, "{wire}: {}", resp.text());
        assert_eq!(resp.header("content-type"), Some("application/json"));
        return wire.parse_reply(&resp.json()).unwrap_or_else(|e| panic!("{wire}: {e}"));
    }
    let resp = wire.open(&mock.url(), "sk-up", MODEL, body, mode).await;
    assert_eq!(resp.status, 200, "{wire} {mode:?}");
    let expected_type = if mode == Mode::JsonArray { "application/json" } else { "text/event-stream" };
    assert_eq!(resp.header("content-type"), Some(expected_type), "{wire} {mode:?}");
    assert!(resp.header("content-length").is_none(), "{wire} {mode:?}: streams are chunked");
    let streamed = wire.read_stream(resp, mode).await;
    assert!(streamed.problems.is_empty(), "{wire} {mode:?}: {:#?}", streamed.problems);
    assert!(streamed.terminal && streamed.error.is_none() && !streamed.broken, "{wire} {mode:?}: {streamed:#?}");
    streamed.reply
}

#[tokio::test]
async fn default_reply_and_stream_in_every_protocol() {
    let mock = MockUpstream::start().await;
    for wire in Wire::ALL {
        for mode in modes(wire) {
            let body = wire.request(MODEL, &user("hello there"), &[], false, mode);
            let reply = ask(&mock, wire, &body, mode).await;
            assert_eq!(reply.text, "mock reply: hello there", "{wire} {mode:?}");
            assert_eq!(reply.usage, Some((10, 5)), "{wire} {mode:?}");
            assert_eq!(reply.stop.as_deref(), Some(wire.text_stop()), "{wire} {mode:?}");
            assert!(reply.tool_calls.is_empty() && reply.reasoning.is_none(), "{wire} {mode:?}: {reply:?}");
        }
    }
    let log = mock.wait_for("all finished", WAIT, |l| l.len() == 9 && l.iter().all(|r| r.finished)).await;
    assert!(log.iter().all(|r| r.status == Some(200) && r.rejected.is_none()));
    assert_eq!(log.iter().filter(|r| r.is_stream()).count(), 5);
}

#[tokio::test]
async fn native_usage_shapes() {
    let mock = MockUpstream::start().await;
    let mut usage = Vec::new();
    for wire in Wire::ALL {
        let body = wire.request(MODEL, &user("u"), &[], false, Mode::Unary);
        let body = wire.send(&mock.url(), "k", MODEL, &body, Mode::Unary).await.json();
        usage.push(body.get("usage").or_else(|| body.get("usageMetadata")).cloned().unwrap_or_default());
    }
    assert_eq!(usage[0], json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}));
    assert_eq!(
        usage[1],
        json!({"input_tokens": 10, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 5,
               "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 15})
    );
    assert_eq!(
        usage[2],
        json!({"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
    );
    assert_eq!(usage[3], json!({"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15}));
}

#[tokio::test]
async fn streams_end_with_their_terminal_events() {
    let mock = MockUpstream::start().await;
    let raw = |wire: Wire, mode: Mode| {
        let url = format!("{}{}", mock.url(), wire.path(MODEL, mode));
        let body = wire.request(MODEL, &user("raw"), &[], false, mode);
        let headers = wire.headers("k");
        async move {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            client::send(Method::POST, &url, &headers, body.to_string()).await.text()
        }
    };
    // Chat: no event lines, five content chunks, then [DONE].
    let chat = raw(Wire::Chat, Mode::Sse).await;
    assert!(chat.ends_with("data: [DONE]\n\n") && !chat.contains("event:"), "{chat}");
    assert_eq!(chat.matches("\"content\":\"").count(), 1 + 5, "{chat}");
    // Anthropic: every event named, message_stop last.
    let anthropic = raw(Wire::Anthropic, Mode::Sse).await;
    let events: Vec<&str> = anthropic.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert!(events.iter().all(|e| e.starts_with("event: ")), "{anthropic}");
    assert!(events.last().unwrap().starts_with("event: message_stop\n"), "{anthropic}");
    assert_eq!(anthropic.matches("text_delta").count(), 5);
    // Responses: named events numbered from 0, response.completed last.
    let responses = raw(Wire::Responses, Mode::Sse).await;
    let events: Vec<&str> = responses.split("\n\n").filter(|e| !e.is_empty()).collect();
    let last: Value = serde_json::from_str(events.last().unwrap().split_once("data: ").unwrap().1).unwrap();
    assert!(events.last().unwrap().starts_with("event: response.completed\n"), "{responses}");
    assert_eq!(last["sequence_number"], events.len() - 1);
    assert_eq!(last["response"]["output"][0]["content"][0]["text"], "mock reply: raw");
    // Gemini: `data: ` lines only, the last chunk finishes with STOP; the JSON array form is one array.
    let gemini = raw(Wire::Gemini, Mode::Sse).await;
    let chunks: Vec<Value> = gemini
        .split("\r\n\r\n")
        .filter(|e| !e.is_empty())
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect();
    assert_eq!(chunks.len(), 5);
    assert_eq!(chunks[4]["candidates"][0]["finishReason"], "STOP");
    assert!(chunks[..4].iter().all(|c| c["candidates"][0].get("finishReason").is_none()));
    let array: Value = serde_json::from_str(&raw(Wire::Gemini, Mode::JsonArray).await).unwrap();
    assert_eq!(array.as_array().map(Vec::len), Some(5));
}

#[tokio::test]
async fn tool_calls_and_tool_results_in_every_protocol() {
    let mock = MockUpstream::start().await;
    for wire in Wire::ALL {
        for mode in modes(wire) {
            let what = format!("{wire} {mode:?}");
            // One call; a trigger naming a tool that is not offered is plain text.
            let history = user("weather? use_tool:get_weather");
            let not_offered = ask(&mock, wire, &wire.request(MODEL, &history, &["other"], false, mode), mode).await;
            assert_eq!(not_offered.text, "mock reply: weather? use_tool:get_weather", "{what}");
            let reply = ask(&mock, wire, &wire.request(MODEL, &history, &["get_weather"], false, mode), mode).await;
            assert_eq!(reply.tool_calls.len(), 1, "{what}: {reply:?}");
            assert_eq!(reply.tool_calls[0].name, "get_weather", "{what}");
            assert_eq!(reply.tool_calls[0].arguments, json!({"arg": "get_weather-value"}), "{what}");
            assert_eq!(reply.stop.as_deref(), Some(wire.tool_stop()), "{what}");
            assert_eq!(reply.usage, Some((10, 5)), "{what}");
            assert!(reply.text.is_empty(), "{what}: {reply:?}");

            // The result goes back: "tool said: …".
            let mut history = history;
            history.push(Entry::Assistant(reply.clone()));
            history.push(Entry::ToolResults(vec![(reply.tool_calls[0].clone(), "sunny".into())]));
            let answer = ask(&mock, wire, &wire.request(MODEL, &history, &["get_weather"], false, mode), mode).await;
            let said = if wire == Wire::Gemini { r#"tool said: {"result":"sunny"}"# } else { "tool said: sunny" };
            assert_eq!(answer.text, said, "{what}");
            assert_eq!(answer.stop.as_deref(), Some(wire.text_stop()), "{what}");

            // Two parallel calls, a then b, and both results back.
            let history = user("use_tools:a,b");
            let reply = ask(&mock, wire, &wire.request(MODEL, &history, &["a", "b"], false, mode), mode).await;
            let names: Vec<&str> = reply.tool_calls.iter().map(|c| c.name.as_str()).collect();
            assert_eq!(names, ["a", "b"], "{what}");
            assert_eq!(reply.tool_calls[1].arguments, json!({"arg": "b-value"}), "{what}");
            if wire != Wire::Gemini {
                assert_ne!(reply.tool_calls[0].id, reply.tool_calls[1].id, "{what}: distinct ids");
            }
            let mut history = history;
            history.push(Entry::Assistant(reply.clone()));
            let results = reply.tool_calls.iter().map(|c| (c.clone(), format!("{}-out", c.name))).collect();
            history.push(Entry::ToolResults(results));
            let answer = ask(&mock, wire, &wire.request(MODEL, &history, &["a", "b"], false, mode), mode).await;
            let said = if wire == Wire::Gemini {
                r#"tool said: {"result":"a-out"}; {"result":"b-out"}"#
            } else {
                "tool said: a-out; b-out"
            };
            assert_eq!(answer.text, said, "{what}");
        }
    }
    assert!(mock.requests().iter().all(|r| r.rejected.is_none()));
}

#[tokio::test]
async fn streamed_tool_arguments_come_the_protocols_way() {
    let mock = MockUpstream::start().await;
    let mut texts = Vec::new();
    for wire in Wire::ALL {
        let body = wire.request(MODEL, &user("use_tools:a,b"), &["a", "b"], false, Mode::Sse);
        let resp = wire.open(&mock.url(), "k", MODEL, &body, Mode::Sse).await;
        let events = resp.sse().collect().await.expect("clean end");
        texts.push(events.iter().map(|e| e.data.clone()).collect::<Vec<_>>());
    }
    let count = |i: usize, needle: &str| texts[i].iter().filter(|d| d.contains(needle)).count();
    // Chat: per call an opening chunk (id, name, empty arguments) and two fragments.
    assert_eq!(count(0, r#""arguments":"""#), 2);
    assert_eq!(count(0, r#""tool_calls":["#), 2 + 4);
    assert_eq!(count(0, r#""finish_reason":"tool_calls""#), 1);
    // Responses: argument deltas and a .done per call.
    assert_eq!(count(1, "response.function_call_arguments.delta"), 4);
    assert_eq!(count(1, "response.function_call_arguments.done"), 2);
    // Anthropic: a tool_use block with empty input, then input_json_delta fragments.
    assert_eq!(count(2, r#""input":{}"#), 2);
    assert_eq!(count(2, "input_json_delta"), 4);
    assert_eq!(count(2, r#""stop_reason":"tool_use""#), 1);
    // Gemini: both calls whole in one chunk, finishing with STOP.
    assert_eq!(texts[3].len(), 1);
    assert_eq!(count(3, r#""functionCall""#), 1);
    assert_eq!(count(3, r#""finishReason":"STOP""#), 1);
}

#[tokio::test]
async fn reasoning_in_every_protocol_with_its_signature() {
    let mock = MockUpstream::start().await;
    for wire in Wire::ALL {
        let signature = match wire {
            Wire::Chat => None,
            Wire::Responses => Some(RESPONSES_SIGNATURE),
            Wire::Anthropic => Some(ANTHROPIC_SIGNATURE),
            Wire::Gemini => Some(GEMINI_SIGNATURE),
        };
        for mode in modes(wire) {
            let what = format!("{wire} {mode:?}");
            let plain = ask(&mock, wire, &wire.request(MODEL, &user("think"), &[], false, mode), mode).await;
            assert_eq!(plain.reasoning, None, "{what}");
            let reply = ask(&mock, wire, &wire.request(MODEL, &user("think"), &[], true, mode), mode).await;
            assert_eq!(reply.reasoning.as_deref(), Some(REASONING_TEXT), "{what}");
            assert_eq!(reply.signature.as_deref(), signature, "{what}");
            assert_eq!(reply.text, "mock reply: think", "{what}");
            // Sent back on the next turn, it is accepted.
            let history = vec![Entry::User("think".into()), Entry::Assistant(reply), Entry::User("again".into())];
            let next = ask(&mock, wire, &wire.request(MODEL, &history, &[], true, mode), mode).await;
            assert_eq!(next.text, "mock reply: again", "{what}");
            if let Some(sig) = signature {
                let last = mock.requests().pop().unwrap();
                assert!(last.body.to_string().contains(sig), "{what}: the signature went back: {}", last.body);
            }
        }
    }
    // Reasoning and a tool call together: the reasoning block comes first.
    let wire = Wire::Anthropic;
    let reply =
        ask(&mock, wire, &wire.request(MODEL, &user("use_tool:t"), &["t"], true, Mode::Unary), Mode::Unary).await;
    assert_eq!(reply.assistant["content"][0]["type"], "thinking");
    assert_eq!(reply.assistant["content"][1]["type"], "tool_use");
}

#[tokio::test]
async fn count_tokens_and_model_listings() {
    let mock = MockUpstream::start().await;
    let anthropic = Wire::Anthropic.headers("k");
    let anthropic: Vec<(&str, &str)> = anthropic.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "count"}]}).to_string();
    let r = client::send(Method::POST, &format!("{}/v1/messages/count_tokens", mock.url()), &anthropic, body).await;
    assert_eq!((r.status.as_u16(), r.json()), (200, json!({"input_tokens": 10})));
    for version in ["v1beta", "v1"] {
        let url = format!("{}/{version}/models/{MODEL}:countTokens", mock.url());
        let body = json!({"contents": [{"role": "user", "parts": [{"text": "count"}]}]}).to_string();
        let r = client::send(Method::POST, &url, &[("x-goog-api-key", "g")], body).await;
        assert_eq!((r.status.as_u16(), r.json()), (200, json!({"totalTokens": 10})), "{version}");
        let url = format!("{}/{version}/models/{MODEL}:generateContent", mock.url());
        let body = json!({"contents": [{"role": "user", "parts": [{"text": "v"}]}]}).to_string();
        let r = client::send(Method::POST, &url, &[("x-goog-api-key", "g")], body).await;
        assert_eq!(r.json()["candidates"][0]["content"]["parts"][0]["text"], "mock reply: v", "{version}");
    }
    let r = client::send(Method::GET, &format!("{}/v1/models", mock.url()), &anthropic, "").await;
    assert_eq!(r.json()["data"][0]["type"], "model");
    let r = client::send(Method::GET, &format!("{}/v1beta/models", mock.url()), &[("x-goog-api-key", "g")], "").await;
    assert_eq!(r.json()["models"][0]["name"], "models/gpt-4o");
}

#[tokio::test]
async fn scripted_errors_take_the_endpoints_shape() {
    let mock = MockUpstream::start().await;
    for wire in Wire::ALL {
        for status in [400, 429, 500, 503] {
            mock.script(None, vec![Behavior::status(status)]);
            let body = wire.request(MODEL, &user("e"), &[], false, Mode::Unary);
            let resp = wire.send(&mock.url(), "k", MODEL, &body, Mode::Unary).await;
            assert_eq!(resp.status, status, "{wire}");
            wire.error_message(status, &resp.json()).unwrap_or_else(|e| panic!("{wire} {status}: {e}"));
        }
    }
    mock.script(None, vec![Behavior::status(429), Behavior::status(529)]);
    let wire = Wire::Anthropic;
    let body = wire.request(MODEL, &user("e"), &[], false, Mode::Unary);
    let r = wire.send(&mock.url(), "k", MODEL, &body, Mode::Unary).await;
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    let r = wire.send(&mock.url(), "k", MODEL, &body, Mode::Unary).await;
    assert_eq!(r.json()["error"]["type"], "overloaded_error");
    mock.script(None, vec![Behavior::status(429)]);
    let wire = Wire::Gemini;
    let r =
        wire.send(&mock.url(), "k", MODEL, &wire.request(MODEL, &user("e"), &[], false, Mode::Sse), Mode::Sse).await;
    assert_eq!(r.json()["error"]["status"], "RESOURCE_EXHAUSTED");
}

/// A request the real provider rejects, and a word its 400 must name.
struct Case {
    wire: Wire,
    path: Option<&'static str>,
    headers: Option<Vec<(String, String)>>,
    body: Value,
    names: &'static str,
}

fn case(wire: Wire, body: Value, names: &'static str) -> Case {
    Case { wire, path: None, headers: None, body, names }
}

fn u(content: Value) -> Value {
    json!({"role": "user", "content": content})
}

fn a(content: Value) -> Value {
    json!({"role": "assistant", "content": content})
}

fn anthropic(messages: Value) -> Value {
    json!({"model": MODEL, "max_tokens": 100, "messages": messages})
}

fn cases() -> Vec<Case> {
    let tool_use = |id: &str| json!({"type": "tool_use", "id": id, "name": "t", "input": {}});
    let tool_result = |id: &str| json!({"type": "tool_result", "tool_use_id": id, "content": "r"});
    let chat_call = json!({"role": "assistant", "content": null, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "t", "arguments": "{}"}}]});
    let mut thinking_temperature = anthropic(json!([u(json!("hi"))]));
    thinking_temperature["max_tokens"] = json!(4096);
    thinking_temperature["thinking"] = json!({"type": "enabled", "budget_tokens": 1024});
    thinking_temperature["temperature"] = json!(0.5);
    let mut object_args = chat_call.clone();
    object_args["tool_calls"][0]["function"]["arguments"] = json!({});
    let gemini_user = json!({"role": "user", "parts": [{"text": "hi"}]});
    vec![
        // Anthropic.
        case(Wire::Anthropic, json!({"model": MODEL, "messages": [u(json!("hi"))]}), "max_tokens"),
        case(Wire::Anthropic, anthropic(json!([])), "at least one message"),
        case(Wire::Anthropic, anthropic(json!([u(json!("a")), u(json!("b"))])), "alternate"),
        case(Wire::Anthropic, anthropic(json!([a(json!("a"))])), "alternate"),
        case(Wire::Anthropic, anthropic(json!([u(json!([{"type": "text", "text": ""}]))])), "non-empty"),
        case(Wire::Anthropic, anthropic(json!([u(json!(""))])), "non-empty"),
        case(Wire::Anthropic, anthropic(json!([u(json!([tool_result("x")]))])), "tool_use_id"),
        case(
            Wire::Anthropic,
            anthropic(json!([
                u(json!("q")),
                a(json!([tool_use("t1")])),
                u(json!([{"type": "text", "text": "x"}, tool_result("t1")]))
            ])),
            "come first",
        ),
        case(
            Wire::Anthropic,
            anthropic(json!([u(json!("q")), a(json!([tool_use("t1")])), u(json!("hi"))])),
            "without `tool_result`",
        ),
        case(
            Wire::Anthropic,
            anthropic(json!([u(json!("q")), a(json!([{"type": "tool_use", "id": "t1", "name": "t", "input": "x"}]))])),
            "dictionary",
        ),
        case(
            Wire::Anthropic,
            anthropic(json!([
                u(json!("q")),
                a(json!([{"type": "thinking", "thinking": "hm"}, {"type": "text", "text": "a"}])),
                u(json!("r"))
            ])),
            "signature",
        ),
        case(Wire::Anthropic, thinking_temperature, "temperature"),
        Case {
            headers: Some(vec![("x-api-key".into(), "k".into()), ("content-type".into(), "application/json".into())]),
            ..case(Wire::Anthropic, anthropic(json!([u(json!("hi"))])), "anthropic-version")
        },
        // Chat.
        case(Wire::Chat, json!({"model": MODEL, "messages": []}), "messages"),
        case(Wire::Chat, json!({"model": MODEL}), "messages"),
        case(
            Wire::Chat,
            json!({"model": MODEL, "messages": [u(json!("q")), {"role": "tool", "tool_call_id": "c9", "content": "r"}]}),
            "role 'tool'",
        ),
        case(Wire::Chat, json!({"model": MODEL, "messages": [u(json!("q")), chat_call, u(json!("next"))]}), "c1"),
        case(Wire::Chat, json!({"model": MODEL, "messages": [u(json!("q")), object_args]}), "must be a string"),
        case(
            Wire::Chat,
            json!({"model": MODEL, "messages": [u(json!("q"))], "tools": [{"type": "custom", "name": "t"}]}),
            "tools[0].type",
        ),
        // Responses.
        case(Wire::Responses, json!({"model": MODEL}), "'input'"),
        case(
            Wire::Responses,
            json!({"model": MODEL, "input": [{"type": "function_call_output", "call_id": "c9", "output": "r"}]}),
            "No tool call found",
        ),
        case(
            Wire::Responses,
            json!({"model": MODEL, "input": "hi", "tools": [{"type": "function", "function": {"name": "t"}}]}),
            "tools[0].name",
        ),
        // Gemini.
        case(Wire::Gemini, json!({"contents": []}), "contents"),
        case(Wire::Gemini, json!({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}), "valid role"),
        case(
            Wire::Gemini,
            json!({"contents": [gemini_user, {"role": "model", "parts": [{"functionCall": {"name": "t", "args": {}}}]},
                                {"role": "user", "parts": [{"functionResponse": {"response": {}}}]}]}),
            "Name cannot be empty",
        ),
        Case {
            path: Some("/v1beta/models/:generateContent"),
            ..case(Wire::Gemini, json!({"contents": [gemini_user]}), "model name")
        },
    ]
}

#[tokio::test]
async fn invalid_requests_get_native_400s_naming_the_problem() {
    let mock = MockUpstream::start().await;
    let mut failures = Vec::new();
    for (n, c) in cases().into_iter().enumerate() {
        let path = c.path.map_or_else(|| c.wire.path(MODEL, Mode::Unary), str::to_owned);
        let headers = c.headers.unwrap_or_else(|| c.wire.headers("k"));
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let resp = client::send(Method::POST, &format!("{}{path}", mock.url()), &headers, c.body.to_string()).await;
        let message = c.wire.error_message(400, &resp.json());
        let rejected = mock.requests().pop().and_then(|r| r.rejected);
        match message {
            Ok(m) if resp.status == 400 && m.contains(c.names) && rejected.as_deref() == Some(m.as_str()) => {}
            other => failures
                .push(format!("case {n} ({} {}): {} {other:?} logged {rejected:?}", c.wire, c.names, resp.status)),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

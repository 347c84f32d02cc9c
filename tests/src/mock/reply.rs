//! What the mock answers, whatever the wire protocol (docs/test-contract.md, "Default replies"): the turn a request
//! ends with ([`Turn`]), the answer to it ([`Answer`]), and what every protocol's default reply shares.
//!
//! Each protocol module reads its own request into a [`Turn`] and renders the [`Answer`] in its own shapes, so the
//! triggers (`use_tool:`, `use_tools:`, a tool result, a reasoning request) mean the same on every endpoint.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// Prompt tokens of every default reply.
pub const DEFAULT_PROMPT_TOKENS: u64 = 10;
/// Completion tokens of every default reply.
pub const DEFAULT_COMPLETION_TOKENS: u64 = 5;
/// Number of content chunks of a default stream.
pub const DEFAULT_CONTENT_CHUNKS: usize = 5;
/// Number of fragments a streamed tool call's arguments come in (Chat, Anthropic, Responses).
pub const ARGUMENT_FRAGMENTS: usize = 2;
/// Models listed by the mock's model listings.
pub const MOCK_MODELS: &[&str] = &["gpt-4o", "gpt-4o-mini", "gpt-5", "gpt-3.5-turbo", "o3-mini"];
/// The text of every reasoning block.
pub const REASONING_TEXT: &str = "mock thinking";
/// The signature of an Anthropic thinking block.
pub const ANTHROPIC_SIGNATURE: &str = "mock-signature-anthropic";
/// The `encrypted_content` of a Responses reasoning item.
pub const RESPONSES_SIGNATURE: &str = "mock-signature-responses";
/// The `thoughtSignature` of a Gemini thought part.
pub const GEMINI_SIGNATURE: &str = "bW9jay1zaWduYXR1cmUtZ2VtaW5p"; // base64: google-genai decodes it
/// What a reply to a tool result starts with.
pub const TOOL_SAID: &str = "tool said: ";
/// What a default text reply starts with.
pub const MOCK_REPLY: &str = "mock reply: ";

pub(crate) fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub(crate) fn unix_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The arguments of every mock tool call to `name`: `{"arg":"<name>-value"}`.
pub fn tool_arguments(name: &str) -> Value {
    json!({"arg": format!("{name}-value")})
}

/// Splits `text` into `n` pieces by characters, none lost; the pieces concatenate back to `text`.
pub fn split_content(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let len = chars.len();
    (0..n).map(|i| chars[i * len / n..(i + 1) * len / n].iter().collect()).collect()
}

/// The last user turn of a request, as every protocol module reads it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Turn {
    /// The text of the last user message (text parts joined).
    pub text: String,
    /// The results the turn hands back, in order, when it answers tool calls (Gemini: each response as compact JSON).
    pub tool_results: Vec<String>,
    /// The names of the tools the request offers.
    pub tools: Vec<String>,
    /// Whether the request asks for reasoning.
    pub reasoning: bool,
}

/// What the answer holds after its optional reasoning block.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// A text reply.
    Text(String),
    /// Calls to these tools, in order, each with [`tool_arguments`].
    ToolCalls(Vec<String>),
}

/// The mock's answer to a [`Turn`].
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// Starts with a reasoning block ([`REASONING_TEXT`] and the protocol's signature).
    pub reasoning: bool,
    /// Text or tool calls.
    pub content: Content,
}

impl Answer {
    /// Whether the answer calls tools.
    pub fn calls_tools(&self) -> bool {
        matches!(self.content, Content::ToolCalls(_))
    }
}

impl Turn {
    /// The answer: `tool said: <results joined with "; ">` to tool results, else the tool calls the text asks for
    /// (`use_tools:a,b` or `use_tool:name`, offered tools only), else `mock reply: <text>`.
    pub fn answer(&self) -> Answer {
        let content = if !self.tool_results.is_empty() {
            Content::Text(format!("{TOOL_SAID}{}", self.tool_results.join("; ")))
        } else {
            let calls = requested_tools(&self.text, &self.tools);
            if calls.is_empty() {
                Content::Text(format!("{MOCK_REPLY}{}", self.text))
            } else {
                Content::ToolCalls(calls)
            }
        };
        Answer { reasoning: self.reasoning, content }
    }
}

/// The tools `text` asks for: the names after `use_tools:` (comma-separated) or after `use_tool:`, up to white space,
/// kept only when all of them are `offered`.
pub fn requested_tools(text: &str, offered: &[String]) -> Vec<String> {
    let names_after = |marker: &str| -> Option<Vec<String>> {
        let start = text.find(marker)? + marker.len();
        let rest = &text[start..];
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let names: Vec<String> = rest[..end]
            .split(',')
            .filter(|n| !n.is_empty())
            .map(|n| n.trim_end_matches(['.', '!', '?']))
            .map(str::to_owned)
            .collect();
        Some(names)
    };
    let names = names_after("use_tools:").or_else(|| names_after("use_tool:")).unwrap_or_default();
    if !names.is_empty() && names.iter().all(|n| offered.contains(n)) { names } else { Vec::new() }
}

/// The text of a message content: a string, or the `text` of its parts whose `type` is one of `kinds` (any part with
/// a `text` when `kinds` is empty), joined.
pub fn content_text(content: Option<&Value>, kinds: &[&str]) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter(|p| kinds.is_empty() || p.get("type").and_then(Value::as_str).is_some_and(|t| kinds.contains(&t)))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// The `model` of a request body, or `mock-model`.
pub(crate) fn model_of(request: &Value) -> Value {
    request.get("model").cloned().unwrap_or(Value::String("mock-model".into()))
}

/// An SSE event without an `event:` line.
pub(crate) fn data_event(data: &Value) -> String {
    format!("data: {data}\n\n")
}

/// An SSE event with an `event:` line.
pub(crate) fn named_event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// A problem found while validating a request: what a real provider would say before answering 400.
pub(crate) type Invalid = String;

/// `Err` with a formatted message, for validators.
macro_rules! invalid {
    ($($arg:tt)*) => { return Err(format!($($arg)*)) };
}
pub(crate) use invalid;

#[cfg(test)]
mod tests {
    use super::*;

    fn offered(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn split_keeps_every_character() {
        for text in ["mock reply: hi", "mock reply: héllo wörld, a longer sentence", "abc"] {
            let parts = split_content(text, 5);
            assert_eq!(parts.len(), 5);
            assert_eq!(parts.concat(), text);
        }
    }

    #[test]
    fn tool_triggers_need_offered_tools() {
        let tools = offered(&["get_weather", "a", "b"]);
        assert_eq!(requested_tools("please use_tool:get_weather now", &tools), ["get_weather"]);
        assert_eq!(requested_tools("use_tools:a,b", &tools), ["a", "b"]);
        assert_eq!(requested_tools("use_tools:b,a.", &tools), ["b", "a"]);
        assert!(requested_tools("use_tool:nope", &tools).is_empty());
        assert!(requested_tools("use_tools:a,nope", &tools).is_empty());
        assert!(requested_tools("use_tool:a", &[]).is_empty());
        assert!(requested_tools("no trigger", &tools).is_empty());
    }

    #[test]
    fn tool_results_win_over_triggers() {
        let turn = Turn {
            text: "use_tool:a".into(),
            tool_results: vec!["sunny".into(), "cold".into()],
            tools: offered(&["a"]),
            reasoning: true,
        };
        assert_eq!(turn.answer(), Answer { reasoning: true, content: Content::Text("tool said: sunny; cold".into()) });
        let turn = Turn { tool_results: vec![], ..turn };
        assert_eq!(turn.answer().content, Content::ToolCalls(vec!["a".into()]));
        let turn = Turn { tools: vec![], ..turn };
        assert_eq!(turn.answer().content, Content::Text("mock reply: use_tool:a".into()));
    }
}

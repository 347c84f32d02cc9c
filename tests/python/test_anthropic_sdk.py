"""The official Anthropic Python SDK as a black-box client of a real xai-server, against every upstream protocol.

Every test runs once per upstream wire protocol (`upstream`: openai, openai-responses, anthropic, gemini): its model
routes to that protocol's provider on the mock, so the Anthropic-protocol case is passthrough and the other three go
through the gateway's translation. The mock's behaviour (replies, tool calls, reasoning, native errors) is the
contract in docs/test-contract.md; what the upstream received is checked through the mock's request log.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest

from xai_harness import (
    TOOL_ARGS,
    TOOL_DESCRIPTION,
    TOOL_NAME,
    TOOL_SCHEMA,
    XPROTO_KEYS,
    Gateway,
    Mock,
    assert_xproto_record,
    single_upstream_request,
    upstream_requests_on,
)

TOOLS = [{"name": TOOL_NAME, "description": TOOL_DESCRIPTION, "input_schema": TOOL_SCHEMA}]
THINKING = {"type": "enabled", "budget_tokens": 1024}

SIGNATURES = {  # what each mock upstream signs its reasoning with (docs/test-contract.md)
    "anthropic": "mock-signature-anthropic",
    "openai-responses": "mock-signature-responses",
    "gemini": "bW9jay1zaWduYXR1cmUtZ2VtaW5p",
}



def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def blocks(message: anthropic.types.Message) -> list[dict[str, Any]]:
    """A reply's content as request blocks, unchanged (how a client replays an assistant turn)."""
    return [b.model_dump(exclude_none=True) for b in message.content]


# --------------------------------------------------------------------------------------------------------------------
# Replies and streams
# --------------------------------------------------------------------------------------------------------------------


def test_messages_create(
    gateway: Gateway, mock: Mock, anthropic_client: anthropic.Anthropic, upstream: str, xmodel: str
) -> None:
    prompt = "hello from the anthropic sdk"
    message = anthropic_client.messages.create(model=xmodel, max_tokens=256, messages=user(prompt))

    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_"), message.id
    assert [b.type for b in message.content] == ["text"], message.content
    assert message.content[0].text == f"mock reply: {prompt}"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (10, 5), message.usage

    upstream_request = single_upstream_request(mock, upstream)
    assert prompt in json.dumps(upstream_request["body"]), upstream_request["body"]
    assert_xproto_record(gateway, model=xmodel, upstream=upstream)


def test_messages_system_prompt_reaches_the_upstream(
    mock: Mock, anthropic_client: anthropic.Anthropic, upstream: str, xmodel: str
) -> None:
    system = "You are terse. SYSTEM-MARKER-42"
    message = anthropic_client.messages.create(model=xmodel, max_tokens=256, system=system, messages=user("hi"))
    assert message.content[0].text == "mock reply: hi"
    upstream_request = single_upstream_request(mock, upstream)
    assert "SYSTEM-MARKER-42" in json.dumps(upstream_request["body"]), "the system prompt was dropped"


def test_messages_stream_text_stream(
    gateway: Gateway, mock: Mock, anthropic_client: anthropic.Anthropic, upstream: str, xmodel: str
) -> None:
    prompt = "stream to me"
    with anthropic_client.messages.stream(model=xmodel, max_tokens=256, messages=user(prompt)) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()

    assert "".join(pieces) == f"mock reply: {prompt}"
    assert len(pieces) > 1, f"a stream should arrive in several deltas: {pieces}"
    assert final.content[0].text == f"mock reply: {prompt}"
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (10, 5), final.usage

    upstream_request = single_upstream_request(mock, upstream)
    assert upstream_request["finished"] is True
    assert_xproto_record(gateway, model=xmodel, upstream=upstream)


def test_messages_raw_stream_events(
    anthropic_client: anthropic.Anthropic, mock: Mock, upstream: str, xmodel: str
) -> None:
    """The event sequence the protocol prescribes, as the SDK parses it (it drops events without `event:` lines)."""
    events = list(anthropic_client.messages.create(model=xmodel, max_tokens=256, messages=user("events"), stream=True))
    kinds = [e.type for e in events if e.type != "ping"]
    assert kinds[0] == "message_start", kinds
    assert kinds[-2:] == ["message_delta", "message_stop"], kinds
    assert kinds[1] == "content_block_start" and "content_block_stop" in kinds, kinds
    if upstream == "anthropic":
        # Only an Anthropic upstream knows the input count at message_start; the others report it at the end,
        # and the gateway repeats it in message_delta (checked with the final usage below).
        assert events[0].message.usage.input_tokens == 10, events[0]
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta")
    assert text == "mock reply: events"
    delta = next(e for e in events if e.type == "message_delta")
    assert delta.delta.stop_reason == "end_turn" and delta.usage.output_tokens == 5, delta
    if upstream != "anthropic":  # passthrough keeps Anthropic's own message_delta, which carries no input count
        assert delta.usage.input_tokens == 10, delta
    single_upstream_request(mock, upstream)


# --------------------------------------------------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------------------------------------------------


def test_tool_use_then_tool_result(
    gateway: Gateway, mock: Mock, anthropic_client: anthropic.Anthropic, upstream: str, xmodel: str
) -> None:
    first_turn = user(f"what is the weather? use_tool:{TOOL_NAME}")
    message = anthropic_client.messages.create(model=xmodel, max_tokens=256, tools=TOOLS, messages=first_turn)

    assert message.stop_reason == "tool_use", message
    calls = [b for b in message.content if b.type == "tool_use"]
    assert len(calls) == 1, message.content
    assert calls[0].name == TOOL_NAME and calls[0].input == TOOL_ARGS, calls[0]
    assert calls[0].id, "a tool_use block needs an id"

    messages = [
        *first_turn,
        {"role": "assistant", "content": blocks(message)},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": calls[0].id, "content": "sunny"}]},
    ]
    answer = anthropic_client.messages.create(model=xmodel, max_tokens=256, tools=TOOLS, messages=messages)
    assert answer.stop_reason == "end_turn", answer
    text = "".join(b.text for b in answer.content if b.type == "text")
    assert text.startswith("tool said: ") and "sunny" in text, text

    first, second = upstream_requests_on(mock, upstream, count=2)
    assert TOOL_NAME in json.dumps(first["body"]), "the tool was not offered upstream"
    assert "sunny" in json.dumps(second["body"]), "the tool result did not reach the upstream"


def test_tool_use_streamed(mock: Mock, anthropic_client: anthropic.Anthropic, upstream: str, xmodel: str) -> None:
    """Streamed tool arguments arrive as input_json_delta fragments the SDK assembles into `input`."""
    with anthropic_client.messages.stream(
        model=xmodel, max_tokens=256, tools=TOOLS, messages=user(f"use_tool:{TOOL_NAME} please")
    ) as stream:
        partial = [e.partial_json for e in stream if e.type == "input_json"]
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use", final
    calls = [b for b in final.content if b.type == "tool_use"]
    assert [(c.name, c.input) for c in calls] == [(TOOL_NAME, TOOL_ARGS)], final.content
    assert json.loads("".join(partial)) == TOOL_ARGS, partial
    single_upstream_request(mock, upstream)


def test_parallel_tool_use(mock: Mock, anthropic_client: anthropic.Anthropic, upstream: str, xmodel: str) -> None:
    tools = [*TOOLS, {"name": "get_time", "description": "The time at a place", "input_schema": TOOL_SCHEMA}]
    message = anthropic_client.messages.create(
        model=xmodel, max_tokens=256, tools=tools, messages=user(f"use_tools:{TOOL_NAME},get_time")
    )
    calls = [b for b in message.content if b.type == "tool_use"]
    assert [(c.name, c.input) for c in calls] == [(TOOL_NAME, TOOL_ARGS), ("get_time", {"arg": "get_time-value"})]
    assert len({c.id for c in calls}) == 2, "each tool call needs an id of its own"
    assert message.stop_reason == "tool_use"
    single_upstream_request(mock, upstream)


# --------------------------------------------------------------------------------------------------------------------
# Thinking
# --------------------------------------------------------------------------------------------------------------------


def test_thinking_signature_round_trip(
    mock: Mock, anthropic_client: anthropic.Anthropic, upstream: str, xmodel: str
) -> None:
    first_turn = user("think first")
    message = anthropic_client.messages.create(model=xmodel, max_tokens=2048, thinking=THINKING, messages=first_turn)

    kinds = [b.type for b in message.content]
    assert kinds == ["thinking", "text"], message.content
    thinking = message.content[0]
    assert thinking.thinking == "mock thinking", thinking
    if upstream != "openai":  # Chat upstreams give reasoning without any signature
        assert thinking.signature, "a signed upstream's reasoning must come with a signature"
    assert message.content[1].text == "mock reply: think first"

    # The client replays the assistant turn unchanged: the upstream must get its own signature back.
    messages = [*first_turn, {"role": "assistant", "content": blocks(message)}, *user("and now?")]
    answer = anthropic_client.messages.create(model=xmodel, max_tokens=2048, thinking=THINKING, messages=messages)
    assert answer.content[-1].type == "text" and answer.content[-1].text == "mock reply: and now?", answer.content

    _, second = upstream_requests_on(mock, upstream, count=2)
    if upstream != "openai":
        assert SIGNATURES[upstream] in json.dumps(second["body"]), (
            f"the {upstream} upstream did not get its reasoning signature back: {json.dumps(second['body'])[:2000]}"
        )


def test_thinking_streamed_with_signature(
    mock: Mock, anthropic_client: anthropic.Anthropic, upstream: str, xmodel: str
) -> None:
    with anthropic_client.messages.stream(
        model=xmodel, max_tokens=2048, thinking=THINKING, messages=user("think in a stream")
    ) as stream:
        thinking_deltas = [e.thinking for e in stream if e.type == "thinking"]
        final = stream.get_final_message()
    assert "".join(thinking_deltas) == "mock thinking", thinking_deltas
    assert [b.type for b in final.content] == ["thinking", "text"], final.content
    if upstream != "openai":
        assert final.content[0].signature, "the signature_delta was lost"
    assert final.content[1].text == "mock reply: think in a stream"
    single_upstream_request(mock, upstream)


# --------------------------------------------------------------------------------------------------------------------
# Errors: the SDK's error classes, in the Anthropic error shape whatever the upstream spoke
# --------------------------------------------------------------------------------------------------------------------


def test_upstream_rate_limit_is_rate_limit_error(
    fresh_gateway: Gateway, mock: Mock, upstream: str, xmodel: str
) -> None:
    # A long retry-after: the provider's only key cools down past the request deadline, so the 429 reaches the client.
    mock.script([{"status": 429, "headers": {"retry-after": "30"}}] * 6, key=XPROTO_KEYS[upstream])
    with fresh_gateway.anthropic() as c, pytest.raises(anthropic.RateLimitError) as caught:
        c.messages.create(model=xmodel, max_tokens=64, messages=user("too fast"))
    assert caught.value.status_code == 429
    assert isinstance(caught.value.body, dict) and caught.value.body.get("type") == "error", caught.value.body
    assert caught.value.body["error"]["type"] == "rate_limit_error", caught.value.body


def test_upstream_bad_request_is_bad_request_error(
    fresh_gateway: Gateway, mock: Mock, upstream: str, xmodel: str
) -> None:
    mock.script([{"status": 400}], key=XPROTO_KEYS[upstream])
    with fresh_gateway.anthropic() as c, pytest.raises(anthropic.BadRequestError) as caught:
        c.messages.create(model=xmodel, max_tokens=64, messages=user("refused"))
    assert caught.value.status_code == 400
    assert isinstance(caught.value.body, dict) and caught.value.body.get("type") == "error", caught.value.body
    assert caught.value.body["error"]["type"] == "invalid_request_error", caught.value.body


def test_unknown_key_is_authentication_error(gateway: Gateway, mock: Mock, upstream: str, xmodel: str) -> None:
    with gateway.anthropic(api_key="sk-not-a-key-of-anyone") as c, pytest.raises(anthropic.AuthenticationError) as e:
        c.messages.create(model=xmodel, max_tokens=64, messages=user("who am i"))
    assert e.value.status_code == 401
    assert isinstance(e.value.body, dict) and e.value.body["error"]["type"] == "authentication_error", e.value.body
    assert mock.requests() == [], "an unauthenticated request reached the upstream"

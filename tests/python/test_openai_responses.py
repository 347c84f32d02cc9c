"""The official OpenAI Python SDK's Responses API as a black-box client of a real xai-server, against every upstream.

Every test runs once per upstream wire protocol (`upstream`): the openai-responses case is passthrough, the other
three go through the gateway's translation. Requests are stateless as Codex sends them (`store: false`, every item of
the conversation replayed in `input`).
"""

from __future__ import annotations

import json
from typing import Any

import openai
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

TOOLS: list[Any] = [
    {"type": "function", "name": TOOL_NAME, "description": TOOL_DESCRIPTION, "parameters": TOOL_SCHEMA, "strict": False}
]

SIGNATURES = {  # what each mock upstream signs its reasoning with (docs/test-contract.md)
    "anthropic": "mock-signature-anthropic",
    "openai-responses": "mock-signature-responses",
    "gemini": "bW9jay1zaWduYXR1cmUtZ2VtaW5p",
}



def items(response: Any) -> list[dict[str, Any]]:
    """A response's output items as input items, unchanged (how Codex replays a turn)."""
    return [item.model_dump(exclude_none=True) for item in response.output]


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


# --------------------------------------------------------------------------------------------------------------------
# Replies and streams
# --------------------------------------------------------------------------------------------------------------------


def test_responses_create(gateway: Gateway, mock: Mock, client: openai.OpenAI, upstream: str, xmodel: str) -> None:
    prompt = "hello from the responses api"
    response = client.responses.create(model=xmodel, input=prompt)

    assert response.object == "response" and response.status == "completed", response
    assert response.id.startswith("resp_"), response.id
    assert response.output_text == f"mock reply: {prompt}"
    messages = [i for i in response.output if i.type == "message"]
    assert len(messages) == 1 and messages[0].role == "assistant", response.output
    usage = response.usage
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (10, 5, 15), usage
    assert usage.input_tokens_details is not None and usage.output_tokens_details is not None, usage

    upstream_request = single_upstream_request(mock, upstream)
    assert prompt in json.dumps(upstream_request["body"]), upstream_request["body"]
    assert_xproto_record(gateway, model=xmodel, upstream=upstream)


def test_instructions_reach_the_upstream(mock: Mock, client: openai.OpenAI, upstream: str, xmodel: str) -> None:
    response = client.responses.create(
        model=xmodel,
        instructions="Be brief. SYSTEM-MARKER-42",
        input=[{"role": "developer", "content": "DEVELOPER-MARKER-7"}, user("hi")],
    )
    assert response.output_text == "mock reply: hi"
    body = json.dumps(single_upstream_request(mock, upstream)["body"])
    assert "SYSTEM-MARKER-42" in body and "DEVELOPER-MARKER-7" in body, f"a system prompt was dropped: {body}"


def test_responses_stream_true_events(
    gateway: Gateway, mock: Mock, client: openai.OpenAI, upstream: str, xmodel: str
) -> None:
    prompt = "stream the events"
    events = list(client.responses.create(model=xmodel, input=prompt, stream=True))
    kinds = [e.type for e in events]

    assert kinds[:2] == ["response.created", "response.in_progress"], kinds
    assert kinds[-1] == "response.completed", kinds
    assert [e.sequence_number for e in events] == list(range(len(events))), "sequence_number must count from 0"
    # Items and parts are opened before any delta and closed with the full text.
    first_delta = kinds.index("response.output_text.delta")
    assert kinds.index("response.output_item.added") < first_delta, kinds
    assert kinds.index("response.content_part.added") < first_delta, kinds
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == f"mock reply: {prompt}" and len(deltas) > 1, deltas
    done = next(e for e in events if e.type == "response.output_text.done")
    assert done.text == f"mock reply: {prompt}"
    completed = events[-1].response
    assert completed.status == "completed" and completed.output_text == f"mock reply: {prompt}", completed
    assert completed.usage is not None and (completed.usage.input_tokens, completed.usage.output_tokens) == (10, 5)

    assert single_upstream_request(mock, upstream)["finished"] is True
    assert_xproto_record(gateway, model=xmodel, upstream=upstream)


def test_responses_stream_helper(mock: Mock, client: openai.OpenAI, upstream: str, xmodel: str) -> None:
    prompt = "stream with the helper"
    with client.responses.stream(model=xmodel, input=prompt) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == f"mock reply: {prompt}"
    assert final.output_text == f"mock reply: {prompt}"
    assert final.usage is not None and final.usage.total_tokens == 15, final.usage
    single_upstream_request(mock, upstream)


# --------------------------------------------------------------------------------------------------------------------
# Function calls
# --------------------------------------------------------------------------------------------------------------------


def test_function_call_round_trip(
    gateway: Gateway, mock: Mock, client: openai.OpenAI, upstream: str, xmodel: str
) -> None:
    first_turn = [user(f"what is the weather? use_tool:{TOOL_NAME}")]
    response = client.responses.create(model=xmodel, input=first_turn, tools=TOOLS, store=False)

    calls = [i for i in response.output if i.type == "function_call"]
    assert len(calls) == 1, response.output
    assert calls[0].name == TOOL_NAME and json.loads(calls[0].arguments) == TOOL_ARGS, calls[0]
    assert calls[0].call_id, "a function_call needs a call_id"

    follow_up = [
        *first_turn,
        *items(response),
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"},
    ]
    answer = client.responses.create(model=xmodel, input=follow_up, tools=TOOLS, store=False)
    assert answer.output_text.startswith("tool said: ") and "sunny" in answer.output_text, answer.output
    assert not [i for i in answer.output if i.type == "function_call"]

    first, second = upstream_requests_on(mock, upstream, count=2)
    assert TOOL_NAME in json.dumps(first["body"]), "the tool was not offered upstream"
    assert "sunny" in json.dumps(second["body"]), "the function output did not reach the upstream"


def test_function_call_streamed(mock: Mock, client: openai.OpenAI, upstream: str, xmodel: str) -> None:
    events = list(client.responses.create(model=xmodel, input=f"use_tool:{TOOL_NAME} now", tools=TOOLS, stream=True))
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds, kinds
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert json.loads(done.arguments) == TOOL_ARGS, done
    item = next(e.item for e in events if e.type == "response.output_item.done" and e.item.type == "function_call")
    assert item.name == TOOL_NAME and json.loads(item.arguments) == TOOL_ARGS and item.call_id, item
    completed = events[-1]
    assert completed.type == "response.completed", kinds
    assert [i.type for i in completed.response.output if i.type == "function_call"] == ["function_call"]
    single_upstream_request(mock, upstream)


def test_parallel_function_calls(mock: Mock, client: openai.OpenAI, upstream: str, xmodel: str) -> None:
    tools = [*TOOLS, {**TOOLS[0], "name": "get_time", "description": "The time"}]
    response = client.responses.create(model=xmodel, input=f"use_tools:{TOOL_NAME},get_time", tools=tools)
    calls = [i for i in response.output if i.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        (TOOL_NAME, TOOL_ARGS),
        ("get_time", {"arg": "get_time-value"}),
    ], response.output
    assert len({c.call_id for c in calls}) == 2, "each call needs a call_id of its own"
    single_upstream_request(mock, upstream)


# --------------------------------------------------------------------------------------------------------------------
# Reasoning: encrypted_content round trip, as Codex does it
# --------------------------------------------------------------------------------------------------------------------


def test_reasoning_encrypted_content_round_trip(mock: Mock, client: openai.OpenAI, upstream: str, xmodel: str) -> None:
    ask: dict[str, Any] = {
        "reasoning": {"effort": "medium", "summary": "auto"},
        "include": ["reasoning.encrypted_content"],
        "store": False,
    }
    first_turn = [user("think first")]
    response = client.responses.create(model=xmodel, input=first_turn, **ask)
    reasoning = [i for i in response.output if i.type == "reasoning"]
    assert len(reasoning) == 1, response.output
    summary = "".join(s.text for s in reasoning[0].summary)
    content = "".join(c.text for c in (reasoning[0].content or []))
    assert "mock thinking" in summary + content, reasoning[0]
    if upstream != "openai":  # Chat upstreams give reasoning without any signature
        assert reasoning[0].encrypted_content, "a signed upstream's reasoning must come with encrypted_content"
    assert response.output_text == "mock reply: think first"

    again = client.responses.create(model=xmodel, input=[*first_turn, *items(response), user("and now?")], **ask)
    assert again.output_text == "mock reply: and now?"
    _, second = upstream_requests_on(mock, upstream, count=2)
    if upstream != "openai":
        assert SIGNATURES[upstream] in json.dumps(second["body"]), f"the {upstream} signature did not come back"


# --------------------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------------------


def test_upstream_rate_limit_is_rate_limit_error(
    fresh_gateway: Gateway, mock: Mock, upstream: str, xmodel: str
) -> None:
    mock.script([{"status": 429, "headers": {"retry-after": "30"}}] * 6, key=XPROTO_KEYS[upstream])
    with fresh_gateway.client() as c, pytest.raises(openai.RateLimitError) as caught:
        c.responses.create(model=xmodel, input="too fast")
    assert caught.value.status_code == 429
    assert isinstance(caught.value.body, dict) and caught.value.body.get("message"), caught.value.body


def test_upstream_bad_request_is_bad_request_error(
    fresh_gateway: Gateway, mock: Mock, upstream: str, xmodel: str
) -> None:
    mock.script([{"status": 400}], key=XPROTO_KEYS[upstream])
    with fresh_gateway.client() as c, pytest.raises(openai.BadRequestError) as caught:
        c.responses.create(model=xmodel, input="refused")
    assert caught.value.status_code == 400


def test_unknown_key_is_authentication_error(gateway: Gateway, mock: Mock, upstream: str, xmodel: str) -> None:
    with gateway.client(api_key="sk-not-a-key-of-anyone") as c, pytest.raises(openai.AuthenticationError):
        c.responses.create(model=xmodel, input="who am i")
    assert mock.requests() == [], "an unauthenticated request reached the upstream"

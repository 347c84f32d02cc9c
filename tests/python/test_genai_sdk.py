"""The official google-genai SDK as a black-box client of a real xai-server, against every upstream protocol.

`http_options.base_url` points the SDK at the gateway; with `api_version` unset google-genai 3.x calls
`/v1/models/{model}:…`, with "v1beta" `/v1beta/models/{model}:…`: the gateway serves both. Every test runs once per
upstream wire protocol (`upstream`): the Gemini case is passthrough, the other three go through translation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from google import genai
from google.genai import errors, types

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


@pytest.fixture(params=[None, "v1beta"], ids=["default-api-version", "v1beta"])
def api_version(request: pytest.FixtureRequest) -> str | None:
    return request.param


@pytest.fixture
def genai_client(gateway: Gateway, api_version: str | None) -> Iterator[genai.Client]:
    c = gateway.genai(api_version=api_version)
    yield c
    c.close()

SIGNATURES = {  # what each mock upstream signs its reasoning with (docs/test-contract.md)
    "anthropic": "mock-signature-anthropic",
    "openai-responses": "mock-signature-responses",
    "gemini": "bW9jay1zaWduYXR1cmUtZ2VtaW5p",
}



def weather_tool() -> types.Tool:
    return types.Tool(
        function_declarations=[
            types.FunctionDeclaration(name=TOOL_NAME, description=TOOL_DESCRIPTION, parameters_json_schema=TOOL_SCHEMA)
        ]
    )


def tool_config(*tools: types.Tool, **extra: object) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(
        tools=list(tools),
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        **extra,
    )


def user(text: str) -> types.Content:
    return types.Content(role="user", parts=[types.Part(text=text)])


# --------------------------------------------------------------------------------------------------------------------
# Replies and streams (default api_version and v1beta)
# --------------------------------------------------------------------------------------------------------------------


def test_generate_content(gateway: Gateway, mock: Mock, genai_client: genai.Client, upstream: str, xmodel: str) -> None:
    prompt = "hello from google-genai"
    response = genai_client.models.generate_content(model=xmodel, contents=prompt)

    assert response.text == f"mock reply: {prompt}"
    candidate = response.candidates[0]
    assert candidate.content.role == "model"
    assert candidate.finish_reason == types.FinishReason.STOP
    usage = response.usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count, usage.total_token_count) == (10, 5, 15), usage

    upstream_request = single_upstream_request(mock, upstream)
    assert prompt in json.dumps(upstream_request["body"]), upstream_request["body"]
    assert_xproto_record(gateway, model=xmodel, upstream=upstream)


def test_generate_content_stream(
    gateway: Gateway, mock: Mock, genai_client: genai.Client, upstream: str, xmodel: str
) -> None:
    prompt = "stream it"
    chunks = list(genai_client.models.generate_content_stream(model=xmodel, contents=prompt))

    text = "".join(c.text or "" for c in chunks)
    assert text == f"mock reply: {prompt}"
    assert len(chunks) > 1, "a stream should arrive in several chunks"
    finish = [c.candidates[0].finish_reason for c in chunks if c.candidates and c.candidates[0].finish_reason]
    assert finish == [types.FinishReason.STOP], finish
    usage = chunks[-1].usage_metadata  # running totals: the last chunk holds the final counts
    assert usage is not None and (usage.prompt_token_count, usage.candidates_token_count) == (10, 5), usage

    upstream_request = single_upstream_request(mock, upstream)
    assert upstream_request["finished"] is True
    assert_xproto_record(gateway, model=xmodel, upstream=upstream)


def test_system_instruction_reaches_the_upstream(
    mock: Mock, genai_client: genai.Client, upstream: str, xmodel: str
) -> None:
    config = types.GenerateContentConfig(system_instruction="Be brief. SYSTEM-MARKER-42")
    response = genai_client.models.generate_content(model=xmodel, contents="hi", config=config)
    assert response.text == "mock reply: hi"
    assert "SYSTEM-MARKER-42" in json.dumps(single_upstream_request(mock, upstream)["body"]), "system dropped"


# --------------------------------------------------------------------------------------------------------------------
# Function calling
# --------------------------------------------------------------------------------------------------------------------


def test_function_call_then_function_response(gateway: Gateway, mock: Mock, upstream: str, xmodel: str) -> None:
    with gateway.genai(api_version="v1beta") as client:
        first_turn = user(f"what is the weather? use_tool:{TOOL_NAME}")
        config = tool_config(weather_tool())
        response = client.models.generate_content(model=xmodel, contents=[first_turn], config=config)

        calls = response.function_calls or []
        assert [(c.name, c.args) for c in calls] == [(TOOL_NAME, TOOL_ARGS)], response
        assert response.candidates[0].finish_reason == types.FinishReason.STOP

        reply = types.Content(
            role="user", parts=[types.Part.from_function_response(name=TOOL_NAME, response={"result": "sunny"})]
        )
        contents = [first_turn, response.candidates[0].content, reply]
        answer = client.models.generate_content(model=xmodel, contents=contents, config=config)
    assert answer.text is not None and answer.text.startswith("tool said: ") and "sunny" in answer.text, answer
    assert not answer.function_calls

    first, second = upstream_requests_on(mock, upstream, count=2)
    assert TOOL_NAME in json.dumps(first["body"]), "the function was not offered upstream"
    assert "sunny" in json.dumps(second["body"]), "the function response did not reach the upstream"


def test_function_call_streamed(gateway: Gateway, mock: Mock, upstream: str, xmodel: str) -> None:
    with gateway.genai() as client:
        chunks = list(
            client.models.generate_content_stream(
                model=xmodel, contents=f"use_tool:{TOOL_NAME} now", config=tool_config(weather_tool())
            )
        )
    calls = [c for chunk in chunks for c in (chunk.function_calls or [])]
    assert [(c.name, c.args) for c in calls] == [(TOOL_NAME, TOOL_ARGS)], chunks
    single_upstream_request(mock, upstream)


def test_parallel_function_calls(gateway: Gateway, mock: Mock, upstream: str, xmodel: str) -> None:
    time_tool = types.Tool(
        function_declarations=[
            types.FunctionDeclaration(name="get_time", description="The time", parameters_json_schema=TOOL_SCHEMA)
        ]
    )
    with gateway.genai() as client:
        response = client.models.generate_content(
            model=xmodel, contents=f"use_tools:{TOOL_NAME},get_time", config=tool_config(weather_tool(), time_tool)
        )
    calls = response.function_calls or []
    assert [(c.name, c.args) for c in calls] == [(TOOL_NAME, TOOL_ARGS), ("get_time", {"arg": "get_time-value"})]
    single_upstream_request(mock, upstream)


# --------------------------------------------------------------------------------------------------------------------
# Thinking
# --------------------------------------------------------------------------------------------------------------------


def test_thoughts_and_signature_round_trip(gateway: Gateway, mock: Mock, upstream: str, xmodel: str) -> None:
    config = types.GenerateContentConfig(thinking_config=types.ThinkingConfig(include_thoughts=True))
    with gateway.genai() as client:
        first_turn = user("think first")
        response = client.models.generate_content(model=xmodel, contents=[first_turn], config=config)
        parts = response.candidates[0].content.parts
        thoughts = [p for p in parts if p.thought]
        assert [p.text for p in thoughts] == ["mock thinking"], parts
        if upstream != "openai":  # Chat upstreams give reasoning without any signature
            assert any(p.thought_signature for p in parts), f"the {upstream} reasoning lost its signature: {parts}"
        assert response.text == "mock reply: think first"

        again = client.models.generate_content(
            model=xmodel, contents=[first_turn, response.candidates[0].content, user("and now?")], config=config
        )
    assert again.text == "mock reply: and now?"
    _, second = upstream_requests_on(mock, upstream, count=2)
    if upstream in ("anthropic", "openai-responses"):
        assert SIGNATURES[upstream] in json.dumps(second["body"]), f"the {upstream} signature did not come back"
    elif upstream == "gemini":
        assert "thoughtSignature" in json.dumps(second["body"]), "the thoughtSignature did not come back"


# --------------------------------------------------------------------------------------------------------------------
# Errors: google-genai's error classes, from the Gemini error shape whatever the upstream spoke
# --------------------------------------------------------------------------------------------------------------------


def test_upstream_rate_limit_is_client_error_429(
    fresh_gateway: Gateway, mock: Mock, upstream: str, xmodel: str
) -> None:
    mock.script([{"status": 429, "headers": {"retry-after": "30"}}] * 6, key=XPROTO_KEYS[upstream])
    with fresh_gateway.genai() as client, pytest.raises(errors.ClientError) as caught:
        client.models.generate_content(model=xmodel, contents="too fast")
    assert caught.value.code == 429
    assert caught.value.status == "RESOURCE_EXHAUSTED", caught.value.details


def test_upstream_bad_request_is_client_error_400(
    fresh_gateway: Gateway, mock: Mock, upstream: str, xmodel: str
) -> None:
    mock.script([{"status": 400}], key=XPROTO_KEYS[upstream])
    with fresh_gateway.genai() as client, pytest.raises(errors.ClientError) as caught:
        client.models.generate_content(model=xmodel, contents="refused")
    assert caught.value.code == 400
    assert caught.value.status == "INVALID_ARGUMENT", caught.value.details


def test_unknown_key_is_rejected(gateway: Gateway, mock: Mock, upstream: str, xmodel: str) -> None:
    with gateway.genai(api_key="sk-not-a-key-of-anyone") as client, pytest.raises(errors.ClientError) as caught:
        client.models.generate_content(model=xmodel, contents="who am i")
    assert caught.value.code in (401, 403), caught.value
    assert mock.requests() == [], "an unauthenticated request reached the upstream"

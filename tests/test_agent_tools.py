"""Tool calls over HTTP, with the official `openai` and `ollama` clients:
a tiny llama with random weights (the grammar alone makes its answer a
valid call), and SmolLM2 for a call a real model chooses."""

from __future__ import annotations

import json

import httpx
import jsonschema
import ollama
import openai
import pytest
from gateway_fixture import ECHO, gateway, gateway_factory  # noqa: F401  (fixtures)
from tiny_models import write_tiny_llama_gguf

from conftest import SMOLLM2

pytestmark = pytest.mark.integration

# enums: free strings from random weights over a byte vocabulary are noise
# (a grammar char can be half a UTF-8 sequence), not a test of anything
WEATHER_ARGS = {
    "type": "object",
    "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo", "Lima"]}, "unit": {"type": "string", "enum": ["C", "F"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city", "parameters": WEATHER_ARGS}},
    {"type": "function", "function": {"name": "get_time", "description": "The time now", "parameters": {"type": "object", "properties": {}}}},
]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture
def tiny_tools(corral_home, tmp_path) -> str:
    """A tiny random llama with room in its context for the tools' description."""
    corral_home.mkdir(parents=True, exist_ok=True)
    path = write_tiny_llama_gguf(tmp_path / "tiny-tools.gguf", n_ctx=4096)
    (corral_home / "models.toml").write_text(f'[models."test/tiny-tools"]\npath = "{path}"\nbackend = "llama.cpp"\ncontext_length = 4096\n')
    return "test/tiny-tools"


def sdk(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)


def _weather_args(call) -> dict:
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, WEATHER_ARGS)
    return args


def test_a_named_tool_is_called_with_arguments_that_match_its_schema(gateway_factory, tiny_tools):
    gw = gateway_factory()
    answer = sdk(gw).chat.completions.create(
        model=tiny_tools, messages=ASK, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=400, seed=3,
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls and all(_weather_args(c) for c in choice.message.tool_calls)


def test_required_streams_tool_calls_as_the_sdk_accumulates_them(gateway_factory, tiny_tools):
    gw = gateway_factory()
    stream = sdk(gw).chat.completions.create(model=tiny_tools, messages=ASK, tools=TOOLS, tool_choice="required",
                                             parallel_tool_calls=False, max_tokens=400, seed=5, stream=True)
    calls: dict[int, dict] = {}
    finishes = []
    for chunk in stream:
        choice = chunk.choices[0]
        finishes += [choice.finish_reason] if choice.finish_reason else []
        for piece in choice.delta.tool_calls or []:
            call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += piece.id or ""
            call["name"] += (piece.function.name or "") if piece.function else ""
            call["arguments"] += (piece.function.arguments or "") if piece.function else ""
    assert finishes == ["tool_calls"]
    assert len(calls) == 1  # parallel_tool_calls=False
    (call,) = calls.values()
    assert call["id"].startswith("call_") and call["name"] in ("get_weather", "get_time")
    json.loads(call["arguments"])


def test_a_conversation_with_a_tool_result_goes_on(gateway_factory, tiny_tools):
    gw = gateway_factory()
    history = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "C"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C and sunny"},
    ]
    answer = sdk(gw).chat.completions.create(model=tiny_tools, messages=history, tools=TOOLS, tool_choice="none", max_tokens=8)
    assert answer.choices[0].finish_reason in ("stop", "length") and answer.choices[0].message.tool_calls is None


@pytest.mark.parametrize("tools, choice, field", [
    ([{"type": "function", "function": {"name": "bad name"}}], None, "tools[0].function.name"),
    ([{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}], None, "tools[0].function.parameters.type"),
    ([{"type": "retrieval"}], None, "tools[0].type"),
    (TOOLS, {"type": "function", "function": {"name": "nope"}}, "tool_choice.function.name"),
    (None, "required", "tool_choice"),
])
def test_invalid_tools_are_400_naming_the_field(gateway, tools, choice, field):
    body = {"model": ECHO, "messages": ASK, **({"tools": tools} if tools else {}), **({"tool_choice": choice} if choice else {})}
    with gateway.client() as http:
        response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"].startswith(field + ":")


def test_tools_on_a_backend_without_grammars_is_a_clear_400(gateway):
    with pytest.raises(openai.BadRequestError) as info:
        sdk(gateway).chat.completions.create(model=ECHO, messages=ASK, tools=TOOLS)
    assert "grammar" in info.value.message


def test_ollama_chat_with_tools(gateway_factory, tiny_tools):
    gw = gateway_factory()
    client = ollama.Client(host=gw.url)
    # Ollama has no tool_choice: with a single tool and random weights the
    # model may answer in words or call it; either way the shape is Ollama's.
    for seed in range(4):
        answer = client.chat(model=tiny_tools, messages=ASK, tools=TOOLS[:1], options={"seed": seed, "num_predict": 300})
        assert answer.done and answer.message.role == "assistant"
        for call in answer.message.tool_calls or []:
            assert call.function.name == "get_weather"
            jsonschema.validate(dict(call.function.arguments), WEATHER_ARGS)
    streamed = list(client.chat(model=tiny_tools, messages=ASK, tools=TOOLS[:1], options={"seed": 1, "num_predict": 300}, stream=True))
    assert streamed[-1].done
    history = ASK + [
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}}]},
        {"role": "tool", "content": "18 C", "tool_name": "get_weather"},
    ]
    assert client.chat(model=tiny_tools, messages=history, options={"num_predict": 4}).done


def test_ollama_show_lists_tools_for_llama_cpp_models(gateway):
    with gateway.client() as http:
        shown = http.post("/api/show", json={"model": SMOLLM2}).json()
    assert "tools" in shown["capabilities"]


@pytest.mark.e2e
def test_smollm2_calls_the_tool_it_is_asked_for(gateway):
    answer = sdk(gateway).chat.completions.create(model=SMOLLM2, messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=200, temperature=0)
    calls = answer.choices[0].message.tool_calls
    assert answer.choices[0].finish_reason == "tool_calls"
    assert calls[0].function.name == "get_weather"
    assert _weather_args(calls[0])["city"] == "Paris"
    # the answer in words once the tool has answered
    history = ASK + [answer.choices[0].message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": calls[0].id, "content": "18 C and sunny"}]
    final = sdk(gateway).chat.completions.create(model=SMOLLM2, messages=history, tools=TOOLS, max_tokens=60, temperature=0)
    assert final.choices[0].message.content or final.choices[0].message.tool_calls


def test_httpx_sees_openai_shape_for_tool_calls(gateway_factory, tiny_tools):
    gw = gateway_factory()
    with httpx.Client(base_url=gw.url, timeout=120) as http:
        body = http.post("/v1/chat/completions", json={"model": tiny_tools, "messages": ASK, "tools": TOOLS, "tool_choice": "required", "max_tokens": 400}).json()
    message = body["choices"][0]["message"]
    assert message["content"] is None and message["tool_calls"][0]["type"] == "function"
    assert isinstance(message["tool_calls"][0]["function"]["arguments"], str)


def test_ten_thousand_tools_or_a_5_mib_schema_is_a_one_line_400(gateway):
    many = [{"type": "function", "function": {"name": f"f{i}"}} for i in range(10_000)]
    huge = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "description": "x" * (5 << 20)}}}]
    with gateway.client() as http:
        for tools in (many, huge):
            response = http.post("/v1/chat/completions", json={"model": ECHO, "messages": ASK, "tools": tools})
            assert response.status_code == 400, response.text
            message = response.json()["error"]["message"]
            assert message.startswith("tools")
            assert "\n" not in message and len(message) < 300
        # and the gateway goes on serving
        assert http.post("/v1/chat/completions", json={"model": ECHO, "messages": ASK, "max_tokens": 1}).status_code == 200


@pytest.mark.e2e
def test_smollm2_through_the_ollama_client_with_tools(gateway):
    answer = ollama.Client(host=gateway.url).chat(model=SMOLLM2, messages=ASK, tools=TOOLS[:1], options={"temperature": 0, "num_predict": 200})
    assert answer.done and answer.message.role == "assistant"
    assert answer.message.tool_calls or answer.message.content  # auto: the model chooses; either way Ollama's shape
    for call in answer.message.tool_calls or []:
        jsonschema.validate(dict(call.function.arguments), WEATHER_ARGS)

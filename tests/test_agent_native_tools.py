"""Tool calls in a model's own syntax: a tiny llama whose GGUF carries a
Qwen/Hermes-style chat template that renders tools. The worker renders the
tools and the tool turns with that template; the gateway reads calls back
from ``<tool_call>`` tags, whole and streamed, through the official SDKs."""

from __future__ import annotations

import json

import anthropic
import jsonschema
import openai
import pytest
from gateway_fixture import gateway_factory  # noqa: F401  (fixture)
from test_agent_tools import ASK, TOOLS, WEATHER_ARGS
from tiny_models import HERMES_TEMPLATE, write_tiny_llama_gguf

from corral.configs.settings import load_settings
from corral.gateway import tool_formats
from corral.gateway.model_listing import tool_format
from corral.workers.backend import backend_class
from corral.workers.chat_context import template_message
from corral.supervisor import protocol

MODEL = "test/tiny-hermes"


@pytest.fixture
def tiny_hermes(corral_home, tmp_path) -> str:
    corral_home.mkdir(parents=True, exist_ok=True)
    path = write_tiny_llama_gguf(tmp_path / "tiny-hermes.gguf", n_ctx=4096, chat_template=HERMES_TEMPLATE)
    (corral_home / "models.toml").write_text(f'[models."{MODEL}"]\npath = "{path}"\nbackend = "llama.cpp"\ncontext_length = 4096\n')
    return str(path)


def test_the_gateway_reads_the_templates_call_syntax(tiny_hermes):
    assert tool_format(load_settings(), MODEL) is tool_formats.HERMES
    assert tool_format(load_settings(), "test/not-there") is None


def test_the_worker_renders_tools_and_tool_turns_with_the_template(tiny_hermes):
    backend = backend_class("llama.cpp")({"name": MODEL, "path": tiny_hermes, "backend": "llama.cpp", "context_length": 512})
    backend.load()
    try:
        wire = [protocol.Message(role="user", content="Weather in Oslo?"),
                protocol.Message(role="assistant", content="", tool_calls=json.dumps([{"id": "call_1", "name": "get_weather",
                                                                                        "arguments": {"city": "Oslo"}}])),
                protocol.Message(role="tool", content="12 C", tool_call_id="call_1")]
        prompt, _ = backend.chat_prompt([template_message(m) for m in wire], TOOLS)
    finally:
        backend.close()
    assert '<tools>\n{"type": "function", "function": {"name": "get_weather"' in prompt
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>' in prompt
    assert "<tool_response>\n12 C\n</tool_response>" in prompt
    assert "You can call these tools" not in prompt  # not the generic form's instructions


@pytest.mark.integration
def test_calls_in_the_models_syntax_whole_streamed_and_round_trip(gateway_factory, tiny_hermes):
    gw = gateway_factory()
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    answer = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=300, seed=1)
    call = answer.choices[0].message.tool_calls[0]
    assert answer.choices[0].finish_reason == "tool_calls" and call.id.startswith("call_")
    assert call.function.name in ("get_weather", "get_time")
    if call.function.name == "get_weather":
        jsonschema.validate(json.loads(call.function.arguments), WEATHER_ARGS)
    # the template told the model its tools: the prompt is longer by them
    plain = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=1)
    assert answer.usage.prompt_tokens > plain.usage.prompt_tokens + len(json.dumps(TOOLS)) // 2

    with client.beta.chat.completions.stream(model=MODEL, messages=ASK, tools=TOOLS, max_tokens=300, seed=2,
                                             tool_choice={"type": "function", "function": {"name": "get_weather"}}) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    streamed = final.choices[0].message.tool_calls[0]
    assert streamed.function.name == "get_weather"
    jsonschema.validate(json.loads(streamed.function.arguments), WEATHER_ARGS)

    history = ASK + [answer.choices[0].message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": "18 C and sunny"}]
    follow = client.chat.completions.create(model=MODEL, messages=history, tools=TOOLS, max_tokens=4)
    assert follow.choices[0].finish_reason in ("stop", "length", "tool_calls")

    used = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0).messages.create(
        model=MODEL, max_tokens=300, messages=ASK, tool_choice={"type": "tool", "name": "get_weather"},
        tools=[{"name": "get_weather", "description": "The weather", "input_schema": WEATHER_ARGS}])
    block = [b for b in used.content if b.type == "tool_use"][0]
    assert used.stop_reason == "tool_use" and block.name == "get_weather"
    jsonschema.validate(block.input, WEATHER_ARGS)

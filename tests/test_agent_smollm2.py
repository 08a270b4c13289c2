"""The agent APIs on the bundled SmolLM2, the model a new user has: the
cases the tiny random llama covers for shape (test_agent_*), here with a
real model's choices: a named and a streamed tool call through the
`openai` SDK, a Responses conversation carried on by previous_response_id,
and the `anthropic` SDK's stream, `tool_use` with `any`, and count_tokens;
`llm -T` with a tool."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from importlib.metadata import version

import anthropic
import jsonschema
import openai
import pytest
from gateway_fixture import gateway, gateway_factory  # noqa: F401  (fixtures)
from test_agent_tools import ASK, TOOLS, WEATHER_ARGS

from conftest import SMOLLM2

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

ANTHROPIC_TOOLS = [{"name": t["function"]["name"], "description": t["function"]["description"], "input_schema": t["function"]["parameters"]}
                   for t in TOOLS]


def openai_sdk(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)


def anthropic_sdk(gw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)


def test_named_and_streamed_tool_calls(gateway):
    client = openai_sdk(gateway)
    named = client.chat.completions.create(model=SMOLLM2, messages=ASK, tools=TOOLS, temperature=0, max_tokens=200,
                                           tool_choice={"type": "function", "function": {"name": "get_weather"}})
    call = named.choices[0].message.tool_calls[0]
    assert named.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] == "Paris"

    # streamed: the SDK's own accumulator puts the pieces back together
    with client.beta.chat.completions.stream(model=SMOLLM2, messages=ASK, tools=TOOLS, tool_choice="required",
                                             temperature=0, max_tokens=200) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    streamed = final.choices[0].message.tool_calls[0]
    assert final.choices[0].finish_reason == "tool_calls" and streamed.id.startswith("call_")
    assert streamed.function.name == "get_weather"
    jsonschema.validate(json.loads(streamed.function.arguments), WEATHER_ARGS)


def test_previous_response_id_remembers(gateway):
    client = openai_sdk(gateway)
    first = client.responses.create(model=SMOLLM2, input="Remember this number: 42.", max_output_tokens=20, temperature=0)
    ask = "Which number did I ask you to remember?"
    alone = client.responses.create(model=SMOLLM2, input=ask, max_output_tokens=15, temperature=0)
    second = client.responses.create(model=SMOLLM2, input=ask, max_output_tokens=15, temperature=0, previous_response_id=first.id)
    # the earlier turn reached the model: its prompt holds it, and a 135M model can quote it
    assert second.usage.input_tokens > alone.usage.input_tokens + first.usage.output_tokens
    assert "42" in second.output_text


def test_anthropic_stream_tool_use_and_count_tokens(gateway):
    client = anthropic_sdk(gateway)
    # the SDK's stream() takes no temperature (Claude models fix it): sent as an extra field
    with client.messages.stream(model=SMOLLM2, max_tokens=30, extra_body={"temperature": 0},
                                messages=[{"role": "user", "content": "What is the capital of France?"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert "Paris" in text and final.content[0].text == text and final.stop_reason in ("end_turn", "max_tokens")

    used = client.messages.create(model=SMOLLM2, max_tokens=200, extra_body={"temperature": 0}, messages=ASK, tools=ANTHROPIC_TOOLS,
                                  tool_choice={"type": "any"})
    (block,) = [b for b in used.content if b.type == "tool_use"][:1]
    assert used.stop_reason == "tool_use" and block.name == "get_weather" and block.id.startswith("toolu_")
    assert block.input["city"] == "Paris"

    plain = client.messages.count_tokens(model=SMOLLM2, messages=ASK).input_tokens
    told = client.messages.count_tokens(model=SMOLLM2, messages=ASK, tools=ANTHROPIC_TOOLS).input_tokens
    # the tools' description goes into the prompt, so it costs tokens
    assert 5 < plain < told


def test_llm_calls_a_tool_through_corral(gateway, tmp_path):
    """simonw's `llm` with the README's settings: `-T` sends the tool and
    the model's call comes back to llm, which runs it."""
    (tmp_path / "extra-openai-models.yaml").write_text(
        f'- model_id: corral-smollm2\n  model_name: {SMOLLM2}\n  api_base: "{gateway.url}/v1"\n  supports_tools: true\n')
    done = subprocess.run([shutil.which("llm") or "llm", "-m", "corral-smollm2", "-T", "llm_version", "--td", "--cl", "2",
                           "-o", "temperature", "0", "Which version of llm is installed? Use the tool."],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "LLM_USER_PATH": str(tmp_path)})
    said = done.stdout + done.stderr  # --td writes the calls to stderr
    assert "does not support tools" not in said
    assert "Tool call: llm_version({})" in said and version("llm") in said, said

"""Anthropic's Messages API with the official `anthropic` SDK: text whole
and streamed (the SDK's own accumulator), stop reasons, tool_use on a tiny
random llama (the grammar makes it valid), tool_result history,
count_tokens, errors in Anthropic's shape and x-api-key."""

from __future__ import annotations

import anthropic
import httpx
import jsonschema
import pytest
from gateway_fixture import ECHO, gateway, gateway_factory  # noqa: F401  (fixtures)
from registry import missing_model  # noqa: F401  (fixture)
from test_agent_tools import WEATHER_ARGS, tiny_tools  # noqa: F401  (fixture)

from conftest import SMOLLM2

pytestmark = pytest.mark.integration

TOOLS = [{"name": "get_weather", "description": "The weather in a city", "input_schema": WEATHER_ARGS}]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def sdk(gw, key: str = "unused") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)


def test_text_whole(gateway):
    message = sdk(gateway).messages.create(model=ECHO, max_tokens=50, system="Be brief.",
                                           messages=[{"role": "user", "content": "echo:Hello there"}])
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert [b.type for b in message.content] == ["text"] and message.content[0].text == "Hello there"
    assert message.stop_reason == "end_turn" and message.usage.output_tokens == 2


def test_max_tokens_and_stop_sequences_are_the_stop_reason(gateway):
    client = sdk(gateway)
    cut = client.messages.create(model=ECHO, max_tokens=3, messages=[{"role": "user", "content": "Hi"}])
    assert cut.stop_reason == "max_tokens" and cut.content[0].text == "tok tok tok "
    stopped = client.messages.create(model=ECHO, max_tokens=50, stop_sequences=["three"],
                                     messages=[{"role": "user", "content": [{"type": "text", "text": "echo:one two three four"}]}])
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "three"
    assert stopped.content[0].text == "one two "


def test_streamed_events_are_anthropics_and_add_up(gateway):
    with sdk(gateway).messages.stream(model=ECHO, max_tokens=50, messages=[{"role": "user", "content": "echo:one two three"}]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert kinds.index("content_block_start") < kinds.index("content_block_delta") < kinds.index("content_block_stop") < kinds.index("message_delta")
    assert final.content[0].text == "one two three" and final.stop_reason == "end_turn"


def test_tool_use_with_any_and_a_named_tool(gateway_factory, tiny_tools):
    client = sdk(gateway_factory())
    for choice in ({"type": "any"}, {"type": "tool", "name": "get_weather"}):
        message = client.messages.create(model=tiny_tools, max_tokens=400, messages=ASK, tools=TOOLS, tool_choice=choice)
        assert message.stop_reason == "tool_use"
        (block,) = [b for b in message.content if b.type == "tool_use"][:1]
        assert block.name == "get_weather" and block.id.startswith("toolu_")
        jsonschema.validate(block.input, WEATHER_ARGS)
    with client.messages.stream(model=tiny_tools, max_tokens=400, messages=ASK, tools=TOOLS, tool_choice={"type": "any"}) as stream:
        final = stream.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use" and uses and jsonschema.validate(uses[0].input, WEATHER_ARGS) is None
    history = ASK + [{"role": "assistant", "content": [{"type": "tool_use", "id": block.id, "name": "get_weather", "input": block.input}]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "18 C"}]}]
    follow = client.messages.create(model=tiny_tools, max_tokens=6, messages=history, tools=TOOLS, tool_choice={"type": "none"})
    assert follow.content[0].type == "text"


def test_count_tokens_grows_with_the_text(gateway_factory, tiny_tools):
    client = sdk(gateway_factory())
    short = client.messages.count_tokens(model=tiny_tools, messages=[{"role": "user", "content": "Hi"}]).input_tokens
    long = client.messages.count_tokens(model=tiny_tools, messages=[{"role": "user", "content": "Hi " * 50}]).input_tokens
    with_tools = client.messages.count_tokens(model=tiny_tools, messages=[{"role": "user", "content": "Hi"}], tools=TOOLS).input_tokens
    assert 0 < short < long and short < with_tools


def test_errors_have_anthropics_shape(gateway, missing_model):
    client = sdk(gateway)
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model=ECHO, messages=ASK, max_tokens=0)
    assert info.value.body["type"] == "error" and info.value.body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in info.value.body["error"]["message"]
    with pytest.raises(anthropic.NotFoundError) as info:
        client.messages.create(model=missing_model, messages=ASK, max_tokens=5)
    assert info.value.body["error"]["type"] == "not_found_error"
    with httpx.Client(base_url=gateway.url) as http:
        missing = http.post("/v1/messages", json={"model": ECHO, "messages": ASK})
        image = http.post("/v1/messages", json={"model": ECHO, "max_tokens": 5, "messages": [
            {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}]}]})
    assert missing.status_code == 400 and "max_tokens" in missing.json()["error"]["message"]
    assert image.status_code == 400 and image.json()["error"]["message"].startswith("messages[0].content[0].type")


def test_x_api_key_is_the_key(gateway_factory):
    gw = gateway_factory(CORRAL_ENABLE_ECHO_BACKEND="1", CORRAL_API_KEY="sesame")
    ok = sdk(gw, key="sesame").messages.create(model=ECHO, max_tokens=2, messages=[{"role": "user", "content": "Hi"}])
    assert ok.content[0].text == "tok tok "
    with pytest.raises(anthropic.AuthenticationError) as info:
        sdk(gw, key="wrong").messages.create(model=ECHO, max_tokens=2, messages=[{"role": "user", "content": "Hi"}])
    assert info.value.status_code == 401


@pytest.mark.e2e
def test_smollm2_answers_hi_with_text(gateway):
    message = sdk(gateway).messages.create(model=SMOLLM2, max_tokens=30, messages=[{"role": "user", "content": "Hi"}])
    assert message.content[0].type == "text" and message.content[0].text.strip()
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0

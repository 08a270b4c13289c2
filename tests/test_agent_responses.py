"""OpenAI's Responses API with the official `openai` SDK: text whole and
streamed (the SDK's own event models and accumulator), function calls on a
tiny random llama (the grammar makes them valid), a conversation carried
on by previous_response_id, and errors."""

from __future__ import annotations

import json
import os
import signal
import stat

import httpx
import jsonschema
import openai
import pytest
from gateway_fixture import ECHO, gateway, gateway_factory, port_open  # noqa: F401  (fixtures)
from test_agent_tools import WEATHER_ARGS, tiny_tools  # noqa: F401  (fixture)

from corral.gateway.errors import HTTPError
from corral.gateway.response_store import Store

from conftest import SMOLLM2, wait_for

pytestmark = pytest.mark.integration

TOOLS = [{"type": "function", "name": "get_weather", "description": "The weather in a city", "parameters": WEATHER_ARGS}]


def sdk(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)


def test_a_string_input_is_answered_whole(gateway):
    response = sdk(gateway).responses.create(model=ECHO, input="echo:Hello there", instructions="Be brief.")
    assert response.output_text == "Hello there"
    assert response.status == "completed" and response.id.startswith("resp_")
    assert response.output[0].type == "message" and response.output[0].role == "assistant"
    assert response.usage.output_tokens == 2 and response.usage.total_tokens == response.usage.input_tokens + 2


def test_max_output_tokens_makes_it_incomplete(gateway):
    response = sdk(gateway).responses.create(model=ECHO, input="Hi", max_output_tokens=3)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "tok tok tok "


def test_streamed_events_come_in_order_and_add_up(gateway):
    with sdk(gateway).responses.stream(model=ECHO, input="echo:one two three") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert kinds.index("response.output_item.added") < kinds.index("response.output_text.delta") < kinds.index("response.output_text.done")
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "one two three"
    assert final.output_text == "one two three"


def test_previous_response_id_carries_the_conversation_on(gateway_factory, tiny_tools):
    client = sdk(gateway_factory())
    first = client.responses.create(model=tiny_tools, input="My name is Ada.", max_output_tokens=4)
    alone = client.responses.create(model=tiny_tools, input="What is my name?", max_output_tokens=4)
    second = client.responses.create(model=tiny_tools, input="What is my name?", max_output_tokens=4, previous_response_id=first.id)
    assert second.previous_response_id == first.id
    # the earlier turn and its answer reached the model: the prompt is longer by them
    assert second.usage.input_tokens > alone.usage.input_tokens + 4
    assert client.responses.retrieve(first.id).output_text == first.output_text
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model=tiny_tools, input="x", previous_response_id=first.id)
    assert "previous_response_id" in info.value.message


def test_function_calls_whole_and_streamed(gateway_factory, tiny_tools):
    client = sdk(gateway_factory())
    response = client.responses.create(model=tiny_tools, input="Weather in Paris?", tools=TOOLS, tool_choice="required", max_output_tokens=400)
    (call,) = [item for item in response.output if item.type == "function_call"][:1]
    assert call.name == "get_weather" and call.call_id.startswith("call_")
    jsonschema.validate(json.loads(call.arguments), WEATHER_ARGS)
    with client.responses.stream(model=tiny_tools, input="Weather?", tools=TOOLS, tool_choice={"type": "function", "name": "get_weather"},
                                 max_output_tokens=400) as stream:
        events = list(stream)
        final = stream.get_final_response()
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert done and jsonschema.validate(json.loads(done[0].arguments), WEATHER_ARGS) is None
    assert final.output[0].type == "function_call"
    # the result handed back: the conversation goes on
    follow = client.responses.create(model=tiny_tools, previous_response_id=response.id, max_output_tokens=8, tools=TOOLS, tool_choice="none",
                                     input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18 C"}])
    assert follow.output[0].type == "message"


@pytest.mark.parametrize("body, field", [
    ({"input": [{"type": "input_image", "image_url": "x"}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image"}]}]}, "input[0].content[0].type"),
    ({"input": [{"role": "robot", "content": "hi"}]}, "input[0].role"),
    ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": "hi", "tool_choice": "required"}, "tool_choice"),
    ({"input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
])
def test_bad_input_is_400_naming_the_field(gateway, body, field):
    with gateway.client() as http:
        response = http.post("/v1/responses", json={"model": ECHO, **body})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"].startswith(field)


def test_unknown_response_is_404(gateway):
    with httpx.Client(base_url=gateway.url) as http:
        assert http.get("/v1/responses/resp_nothing").status_code == 404


@pytest.mark.e2e
def test_smollm2_answers_through_responses(gateway):
    response = sdk(gateway).responses.create(model=SMOLLM2, input="What is the capital of France?", max_output_tokens=30, temperature=0)
    assert "Paris" in response.output_text


@pytest.mark.e2e
def test_smollm2_calls_a_function_through_responses(gateway):
    response = sdk(gateway).responses.create(model=SMOLLM2, input="What is the weather in Paris?", tools=TOOLS,
                                             tool_choice="required", max_output_tokens=200, temperature=0)
    call = response.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments)["city"] == "Paris"


def test_stored_responses_outlive_the_gateway(gateway):
    """Kept in CORRAL_HOME: a gateway killed and restarted by its
    supervisor still knows them, and the file is the owner's alone."""
    client = sdk(gateway)
    first = client.responses.create(model=ECHO, input="echo:kept across restarts")
    old_pid = gateway.pid()
    os.kill(old_pid, signal.SIGKILL)
    def restarted() -> bool:
        try:
            return gateway.pid() != old_pid
        except AssertionError:  # nothing listens: the old one gone, the new one not up yet
            return False

    wait_for(restarted, timeout=60)
    assert client.responses.retrieve(first.id).output_text == "kept across restarts"
    follow = client.responses.create(model=ECHO, input="Hi", previous_response_id=first.id, max_output_tokens=1)
    assert follow.previous_response_id == first.id
    assert stat.S_IMODE((gateway.home / "responses.db").stat().st_mode) == 0o600


def test_the_store_keeps_the_newest(tmp_path):
    store = Store(tmp_path / "responses.db", keep=5)
    for i in range(8):
        store.put({"id": f"resp_{i}"}, [{"role": "user", "content": str(i)}])
    store.close()
    again = Store(tmp_path / "responses.db", keep=5)
    assert again.get("resp_7") == ({"id": "resp_7"}, [{"role": "user", "content": "7"}])
    assert again.get("resp_3")[0] == {"id": "resp_3"}
    with pytest.raises(HTTPError):
        again.get("resp_2")  # the oldest went
    again.delete("resp_3")
    with pytest.raises(HTTPError):
        again.get("resp_3")
    with pytest.raises(HTTPError):
        again.get("x' OR '1'='1")  # ids are bound, never spliced into SQL

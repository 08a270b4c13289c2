"""The OpenAI routes, driven by the official `openai` SDK (sync and async,
streamed and not) against a real gateway, supervisor and worker: the echo
backend for the fast tests, the tiny GGUF llama for grammar and
embeddings, SmolLM2 for the end-to-end ones."""

from __future__ import annotations

import asyncio
import json
import subprocess

import jsonschema
import openai
import pytest
from gateway_fixture import ECHO, gateway, gateway_factory  # noqa: F401  (fixtures)
from registry import missing_model  # noqa: F401  (fixture)

from conftest import SMOLLM2

pytestmark = pytest.mark.integration

HI = [{"role": "user", "content": "Hi"}]


def sdk(gw, cls=openai.OpenAI, prefix: str = "/v1"):
    return cls(base_url=gw.url + prefix, api_key="unused", max_retries=0)


def test_chat_completion_is_answered_whole(gateway):
    answer = sdk(gateway).chat.completions.create(model=ECHO, messages=HI, max_tokens=3)
    choice = answer.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "tok tok tok "
    assert choice.finish_reason == "length"
    assert (answer.usage.completion_tokens, answer.usage.total_tokens) == (3, 3 + answer.usage.prompt_tokens)
    assert answer.model == ECHO and answer.id.startswith("chatcmpl-")


def test_chat_completion_streams_with_usage(gateway):
    chunks = list(sdk(gateway).chat.completions.create(
        model=ECHO, messages=HI, max_tokens=4, stream=True, stream_options={"include_usage": True}
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tok " * 4
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4


def test_stream_without_include_usage_has_no_usage_chunk(gateway):
    chunks = list(sdk(gateway).chat.completions.create(model=ECHO, messages=HI, max_tokens=2, stream=True))
    assert all(c.choices for c in chunks)
    assert all(getattr(c, "usage", None) is None for c in chunks)


def test_max_completion_tokens_and_stop_list_are_honoured(gateway):
    answer = sdk(gateway).chat.completions.create(model=ECHO, messages=HI, max_completion_tokens=2, stop=["never", "nope"])
    assert answer.choices[0].message.content == "tok tok "


def test_async_sdk_streams_and_answers(gateway):
    async def main():
        client = sdk(gateway, openai.AsyncOpenAI)
        whole = await client.chat.completions.create(model=ECHO, messages=HI, max_tokens=2)
        stream = await client.chat.completions.create(model=ECHO, messages=HI, max_tokens=3, stream=True)
        pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        await client.close()
        return whole, "".join(pieces)

    whole, streamed = asyncio.run(main())
    assert whole.choices[0].message.content == "tok tok "
    assert streamed == "tok tok tok "


def test_completions_route(gateway):
    client = sdk(gateway)
    answer = client.completions.create(model=ECHO, prompt="Once", max_tokens=2)
    assert answer.choices[0].text == "tok tok " and answer.choices[0].finish_reason == "length"
    streamed = "".join(c.choices[0].text for c in client.completions.create(model=ECHO, prompt="Once", max_tokens=3, stream=True) if c.choices)
    assert streamed == "tok tok tok "


@pytest.mark.parametrize("prefix", ["/engines/v1", "/engines/llama.cpp/v1"])
def test_docker_model_runner_prefixes_serve_the_same_api(gateway, prefix):
    answer = sdk(gateway, prefix=prefix).chat.completions.create(model=ECHO, messages=HI, max_tokens=1)
    assert answer.choices[0].message.content == "tok "


def test_models_are_listed_and_retrieved(gateway):
    client = sdk(gateway)
    ids = [m.id for m in client.models.list()]
    assert SMOLLM2 in ids and ECHO in ids
    assert client.models.retrieve(SMOLLM2).id == SMOLLM2
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no/such-model")


def test_unknown_model_is_not_found(gateway, missing_model):
    with pytest.raises(openai.NotFoundError) as info:
        sdk(gateway).chat.completions.create(model=missing_model, messages=HI)
    assert info.value.body["code"] == "model_not_found"


def test_n_choices_whole_and_streamed_and_more_than_8_refused(gateway):
    client = sdk(gateway)
    answer = client.chat.completions.create(model=ECHO, messages=[{"role": "user", "content": "echo:a b c"}], n=4)
    assert [c.index for c in answer.choices] == [0, 1, 2, 3]
    assert all(c.message.content == "a b c" for c in answer.choices)
    one = client.chat.completions.create(model=ECHO, messages=[{"role": "user", "content": "echo:a b c"}])
    # every choice's tokens, the prompt counted once
    assert answer.usage.completion_tokens == 4 * one.usage.completion_tokens and answer.usage.prompt_tokens == one.usage.prompt_tokens
    legacy = client.completions.create(model=ECHO, prompt="echo:x y", n=3, max_tokens=5)
    assert sorted(c.index for c in legacy.choices) == [0, 1, 2] and all(c.text == "x y" for c in legacy.choices)
    stream = client.chat.completions.create(model=ECHO, messages=[{"role": "user", "content": "echo:one two"}], n=3, stream=True,
                                            stream_options={"include_usage": True})
    texts, usage = {}, None
    for chunk in stream:
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + (c.delta.content or "")
        usage = chunk.usage or usage
    assert texts == {0: "one two", 1: "one two", 2: "one two"} and usage.completion_tokens == 6
    for n in (0, 9, 100):
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model=ECHO, messages=HI, n=n)
        assert info.value.body["message"].startswith("n: ")


SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}, "sure": {"type": "boolean"}},
    "required": ["answer", "sure"],
    "additionalProperties": False,
}


def _json_schema_format() -> dict:
    return {"type": "json_schema", "json_schema": {"name": "verdict", "schema": SCHEMA, "strict": True}}


def test_response_format_json_schema_output_validates(gateway_factory, tiny_catalog):
    """Random weights, yet the grammar leaves only schema-valid JSON."""
    gw = gateway_factory()
    answer = sdk(gw).chat.completions.create(
        model=tiny_catalog["llama"], messages=[{"role": "user", "content": "Well?"}], response_format=_json_schema_format(), max_tokens=200, seed=1,
    )
    jsonschema.validate(json.loads(answer.choices[0].message.content), SCHEMA)
    assert answer.choices[0].finish_reason == "stop"


def test_response_format_on_a_backend_without_grammars_is_400(gateway):
    with pytest.raises(openai.BadRequestError) as info:
        sdk(gateway).chat.completions.create(model=ECHO, messages=HI, response_format={"type": "json_object"})
    assert "echo" in info.value.body["message"]


def test_embeddings_from_the_llama_cpp_worker(gateway_factory, tiny_catalog):
    gw = gateway_factory()
    result = sdk(gw).embeddings.create(model=tiny_catalog["llama"], input=["one", "two words"])
    assert [d.index for d in result.data] == [0, 1]
    vectors = [d.embedding for d in result.data]
    assert len(vectors[0]) == len(vectors[1]) > 0 and vectors[0] != vectors[1]
    assert result.usage.prompt_tokens > 0


def test_embeddings_on_a_backend_without_them_is_400(gateway):
    with pytest.raises(openai.BadRequestError):
        sdk(gateway).embeddings.create(model=ECHO, input="hi")


@pytest.mark.e2e
def test_curl_streams_smollm2_with_no_model_loaded(gateway_factory):
    gw = gateway_factory()
    body = json.dumps({"model": SMOLLM2, "messages": [{"role": "user", "content": "Hi"}], "stream": True})
    out = subprocess.run(["curl", "-sN", f"{gw.url}/v1/chat/completions", "-d", body], capture_output=True, text=True, timeout=180)
    events = [line[6:] for line in out.stdout.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])
    assert text.strip()
    assert json.loads(events[-2])["choices"][0]["finish_reason"] in ("stop", "length")


@pytest.mark.e2e
def test_smollm2_json_schema_answer_parses_and_validates(gateway_factory):
    gw = gateway_factory()
    answer = sdk(gw).chat.completions.create(
        model=SMOLLM2, messages=[{"role": "user", "content": "Is the sky blue? Answer in JSON."}],
        response_format=_json_schema_format(), temperature=0, max_tokens=100,
    )
    jsonschema.validate(json.loads(answer.choices[0].message.content), SCHEMA)


@pytest.mark.e2e
def test_smollm2_stops_on_its_own_with_finish_reason_stop(gateway_factory):
    gw = gateway_factory()
    answer = sdk(gw).chat.completions.create(model=SMOLLM2, messages=[{"role": "user", "content": "Say hello."}], temperature=0, max_tokens=200)
    assert answer.choices[0].finish_reason == "stop"
    cut = sdk(gw).chat.completions.create(model=SMOLLM2, messages=[{"role": "user", "content": "Write a long story about a dragon."}], temperature=0, max_tokens=5)
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 5

"""Log probabilities with the official `openai` SDK: on the tiny llama
(random weights, greedy) and SmolLM2; refused where a backend cannot."""

from __future__ import annotations

import math

import httpx
import openai
import pytest
from gateway_fixture import ECHO, gateway, gateway_factory  # noqa: F401  (fixtures)

from conftest import SMOLLM2

pytestmark = pytest.mark.integration

HI = [{"role": "user", "content": "Hi"}]


def sdk(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)


def _check(entries, top: int) -> None:
    for e in entries:
        assert e.logprob <= 0 and len(e.top_logprobs) == top
        alternatives = [t.logprob for t in e.top_logprobs]
        assert alternatives == sorted(alternatives, reverse=True)
        assert bytes(e.bytes).decode("utf-8", "replace") == e.token


def test_greedy_tokens_are_the_likeliest_and_join_to_the_text(gateway_factory, tiny_catalog):
    client = sdk(gateway_factory())
    answer = client.chat.completions.create(model=tiny_catalog["llama"], messages=HI, max_tokens=12, temperature=0,
                                            logprobs=True, top_logprobs=3)
    entries = answer.choices[0].logprobs.content
    assert len(entries) == answer.usage.completion_tokens or answer.choices[0].finish_reason == "stop"
    _check(entries, 3)
    for e in entries:  # greedy: the chosen token is the top alternative
        assert math.isclose(e.logprob, e.top_logprobs[0].logprob, abs_tol=1e-5)
    assert b"".join(bytes(e.bytes) for e in entries).decode("utf-8", "replace") == answer.choices[0].message.content
    streamed = client.chat.completions.create(model=tiny_catalog["llama"], messages=HI, max_tokens=12, temperature=0,
                                              logprobs=True, top_logprobs=3, stream=True)
    pieces = [e for chunk in streamed if chunk.choices and chunk.choices[0].logprobs for e in chunk.choices[0].logprobs.content]
    assert [(p.token, round(p.logprob, 4)) for p in pieces] == [(e.token, round(e.logprob, 4)) for e in entries]


def test_logprobs_without_top_and_legacy_completions(gateway_factory, tiny_catalog):
    client = sdk(gateway_factory())
    answer = client.chat.completions.create(model=tiny_catalog["llama"], messages=HI, max_tokens=5, logprobs=True)
    _check(answer.choices[0].logprobs.content, 0)
    legacy = client.completions.create(model=tiny_catalog["llama"], prompt="Once", max_tokens=5, temperature=0, logprobs=2)
    lp = legacy.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) > 0
    assert lp.text_offset[0] == 0 and all(len(t) == 2 for t in lp.top_logprobs)


@pytest.mark.parametrize("body, field", [
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),
])
def test_out_of_range_is_400_naming_the_field(gateway, body, field):
    with gateway.client() as http:
        response = http.post("/v1/chat/completions", json={"model": ECHO, "messages": HI, **body})
    assert response.status_code == 400 and response.json()["error"]["message"].startswith(field)


def test_a_backend_without_logprobs_refuses_clearly(gateway):
    with pytest.raises(openai.BadRequestError) as info:
        sdk(gateway).chat.completions.create(model=ECHO, messages=HI, logprobs=True)
    assert "log probabilities" in info.value.message and "echo" in info.value.message


def test_without_logprobs_there_are_none(gateway):
    with httpx.Client(base_url=gateway.url) as http:
        body = http.post("/v1/chat/completions", json={"model": ECHO, "messages": HI, "max_tokens": 2}).json()
    assert body["choices"][0]["logprobs"] is None


@pytest.mark.e2e
def test_smollm2_distribution_is_a_distribution(gateway):
    answer = sdk(gateway).chat.completions.create(model=SMOLLM2, messages=[{"role": "user", "content": "What is 2+2?"}],
                                                  max_tokens=8, temperature=0, logprobs=True, top_logprobs=20)
    entries = answer.choices[0].logprobs.content
    _check(entries, 20)
    for e in entries:
        assert sum(math.exp(t.logprob) for t in e.top_logprobs) <= 1.0 + 1e-4
        assert e.token == e.top_logprobs[0].token

"""llama-server's own API, as front ends and scripts written for it call
it: /completion whole and streamed, `grammar` on it and on the OpenAI
routes (llama.cpp's parse message for a bad one), /health, /props (no
worker started), the OpenAI routes at the root, and the model left out."""

from __future__ import annotations

import json

import pytest
from gateway_fixture import ECHO, gateway, gateway_factory, ps_rows  # noqa: F401  (fixtures)

from conftest import SMOLLM2

pytestmark = pytest.mark.integration

YES_NO = 'root ::= "yes" | "no"'


@pytest.fixture
def tiny(gateway_factory, tiny_catalog):
    return gateway_factory(), tiny_catalog["llama"]


def test_completion_whole_and_streamed(tiny):
    gw, model = tiny
    ask = {"model": model, "prompt": "hello world", "n_predict": 6, "temperature": 0, "seed": 1}
    with gw.client() as http:
        whole = http.post("/completion", json=ask).json()
        assert whole["stop"] is True and whole["tokens_predicted"] == 6 and whole["stop_type"] == "limit"
        assert whole["tokens_evaluated"] > 0 and whole["model"] == model and whole["content"]
        assert set(whole["timings"]) >= {"prompt_n", "prompt_ms", "predicted_n", "predicted_ms", "predicted_per_second"}
        assert whole["timings"]["predicted_n"] == 6
        with http.stream("POST", "/completion", json={**ask, "stream": True}) as r:
            chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert all(c["stop"] is False for c in chunks[:-1]) and chunks[-1]["stop"] is True
    assert "".join(c["content"] for c in chunks) == whole["content"]  # greedy: the same answer
    assert chunks[-1]["timings"]["predicted_n"] == 6 and chunks[-1]["stop_type"] == "limit"


def test_grammar_holds_the_answer_on_every_route(tiny):
    gw, model = tiny
    with gw.client() as http:
        for seed in range(3):
            native = http.post("/completion", json={"model": model, "prompt": "Is it?", "grammar": YES_NO, "seed": seed}).json()
            assert native["content"] in ("yes", "no") and native["stop_type"] == "eos"
        chat = http.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "Is it?"}],
                                                       "grammar": YES_NO, "max_tokens": 10})
        assert chat.status_code == 200, chat.text
        assert chat.json()["choices"][0]["message"]["content"] in ("yes", "no")
        legacy = http.post("/v1/completions", json={"model": model, "prompt": "Is it?", "grammar": YES_NO, "max_tokens": 10})
        assert legacy.status_code == 200, legacy.text
        assert legacy.json()["choices"][0]["text"] in ("yes", "no")


@pytest.mark.parametrize("body, field, says", [
    ({"grammar": "root ::= foo"}, "grammar", "Undefined rule identifier 'foo'"),  # llama.cpp's own words
    ({"grammar": "root ::= [a-"}, "grammar", "unexpected end of input"),
    ({"grammar": "root ::= root \"a\""}, "grammar", "left recursion"),  # it could never end
    ({"grammar": "root ::= [z-a]"}, "grammar", "runs backwards"),  # llama.cpp would abort the worker on it
    ({"grammar": 'root ::= "a"{5,2}'}, "grammar", "at most 2"),  # ... or grow it past any memory
    ({"grammar": "x" * (1 << 20)}, "grammar", ""),
    ({"n_probs": 10000}, "n_probs", ""),
    ({"id_slot": 3}, "id_slot", ""),
    ({"n_predict": 0}, "n_predict", ""),
    ({"grammar": YES_NO, "json_schema": {"type": "string"}}, "grammar", ""),
])
def test_bad_input_is_400_naming_the_field(tiny, body, field, says):
    gw, model = tiny
    with gw.client() as http:
        r = http.post("/completion", json={"model": model, "prompt": "hi", **body})
        assert r.status_code == 400, r.text
        message = r.json()["error"]["message"]
        assert field in message and says in message and "\n" not in message
        # and the model goes on answering
        assert http.post("/completion", json={"model": model, "prompt": "hi", "n_predict": 1}).status_code == 200


def test_the_model_may_be_left_out(gateway_factory, tiny_catalog, monkeypatch):
    gw = gateway_factory()
    model = tiny_catalog["llama"]
    with gw.client() as http:
        none = http.post("/completion", json={"prompt": "hi", "n_predict": 1})
        assert none.status_code == 400 and none.json()["error"]["message"].startswith("model: ")
        assert http.post("/completion", json={"model": model, "prompt": "hi", "n_predict": 1}).status_code == 200
        alone = http.post("/completion", json={"prompt": "hi", "n_predict": 1})  # the one loaded runs it
        assert alone.status_code == 200 and alone.json()["model"] == model
        chat = http.post("/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
        assert chat.status_code == 200 and chat.json()["model"] == model  # the OpenAI routes too, as llama-server's


def test_a_default_model_and_health_and_props_start_no_worker(gateway_factory, tiny_catalog):
    model = tiny_catalog["llama"]
    gw = gateway_factory(CORRAL_DEFAULT_MODEL=model)
    with gw.client() as http:
        assert http.get("/health").json() == {"status": "ok"}
        props = http.get("/props").json()
        assert props["default_generation_settings"]["n_ctx"] == 256 and props["total_slots"] >= 1
        assert "<|assistant|>" in props["chat_template"] and props["model_alias"] == model
        assert "path" not in json.dumps(props)  # never the file's place on disk
        assert ps_rows(gw.home) == []  # nothing was loaded to answer them
        assert http.post("/completion", json={"prompt": "hi", "n_predict": 2}).json()["model"] == model


def test_openai_routes_at_the_root(gateway):
    with gateway.client() as http:
        chat = http.post("/chat/completions", json={"model": ECHO, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
        assert chat.json()["choices"][0]["message"]["content"] == "tok tok "
        legacy = http.post("/completions", json={"model": ECHO, "prompt": "Hi", "max_tokens": 1})
        assert legacy.json()["object"] == "text_completion"
        assert http.get("/models").status_code == 200  # still Docker Model Runner's list there


def test_tokenize_detokenize_apply_template_and_token_prompts(gateway):
    """On SmolLM2, as a front end counts tokens and renders its prompt."""
    with gateway.client() as http:
        ids = http.post("/tokenize", json={"model": SMOLLM2, "content": "Hello world"}).json()["tokens"]
        assert len(ids) == 2 and all(isinstance(i, int) for i in ids)
        pieces = http.post("/tokenize", json={"model": SMOLLM2, "content": "Hello world", "with_pieces": True}).json()["tokens"]
        assert pieces == [{"id": ids[0], "piece": "Hello"}, {"id": ids[1], "piece": " world"}]
        assert http.post("/detokenize", json={"model": SMOLLM2, "tokens": ids}).json() == {"content": "Hello world"}
        prompt = http.post("/apply-template", json={"model": SMOLLM2, "messages": [{"role": "user", "content": "Hi"}]}).json()["prompt"]
        assert prompt.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        # the same prompt as text and as its tokens: the same greedy answer
        as_text = http.post("/completion", json={"model": SMOLLM2, "prompt": "The capital of France is", "n_predict": 4, "temperature": 0}).json()
        tokens = http.post("/tokenize", json={"model": SMOLLM2, "content": "The capital of France is"}).json()["tokens"]
        as_ids = http.post("/completion", json={"model": SMOLLM2, "prompt": tokens, "n_predict": 4, "temperature": 0}).json()
        assert as_ids["content"] == as_text["content"] and as_ids["tokens_evaluated"] == len(tokens)
        for path, body in (("/completion", {"prompt": [1, 2, 10**9]}), ("/detokenize", {"tokens": [10**9]})):
            bad = http.post(path, json={"model": SMOLLM2, **body})
            assert bad.status_code == 400 and "not in the vocabulary" in bad.json()["error"]["message"], bad.text
        echo = http.post("/tokenize", json={"model": ECHO, "content": "hi"})
        assert echo.status_code == 400 and "token ids" in echo.json()["error"]["message"]
        assert http.post("/completion", json={"model": SMOLLM2, "prompt": "Hi", "n_predict": 1}).status_code == 200

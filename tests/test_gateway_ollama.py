"""The Ollama routes, driven by the official `ollama` Python client."""

from __future__ import annotations

import asyncio

import ollama
import pytest
from gateway_fixture import ECHO, gateway, gateway_factory, ps_rows  # noqa: F401  (fixtures)
from registry import missing_model  # noqa: F401  (fixture)

from conftest import SMOLLM2, wait_for

pytestmark = pytest.mark.integration

HI = [{"role": "user", "content": "Hi"}]


def client(gw) -> ollama.Client:
    return ollama.Client(host=gw.url, timeout=120)


def test_chat_streams_ndjson_by_default_and_ends_with_stats(gateway):
    parts = list(client(gateway).chat(model=ECHO, messages=HI, stream=True, options={"num_predict": 3}))
    assert "".join(p.message.content for p in parts) == "tok tok tok "
    assert [p.done for p in parts] == [False, False, False, True]
    last = parts[-1]
    assert last.done_reason == "length" and last.eval_count == 3 and last.prompt_eval_count >= 1
    assert last.total_duration > 0 and last.eval_duration >= 0


def test_chat_without_stream_is_one_object(gateway):
    answer = client(gateway).chat(model=ECHO, messages=HI, stream=False, options={"num_predict": 2, "temperature": 0, "seed": 1, "stop": ["zzz"]})
    assert answer.message.role == "assistant" and answer.message.content == "tok tok "
    assert answer.done and answer.done_reason == "length"


def test_generate_streams_and_answers(gateway):
    c = client(gateway)
    assert "".join(p.response for p in c.generate(model=ECHO, prompt="Once", stream=True, options={"num_predict": 2})) == "tok tok "
    whole = c.generate(model=ECHO, prompt="Once", system="Be brief.", options={"num_predict": 1})
    assert whole.response == "tok " and whole.done
    raw = c.generate(model=ECHO, prompt="Once", raw=True, options={"num_predict": 1})
    assert raw.response == "tok "


def test_empty_prompt_loads_and_keep_alive_zero_unloads(gateway):
    c = client(gateway)
    loaded = c.generate(model=ECHO, prompt="", keep_alive="10m")
    assert loaded.done and loaded.done_reason == "load"
    row = next(r for r in ps_rows(gateway.home) if r["model"] == ECHO)
    assert row["keep_alive_s"] == 600
    names = [m.model for m in c.ps().models]
    assert names == [f"{ECHO}:latest"]
    unloaded = c.generate(model=ECHO, prompt="", keep_alive=0)
    assert unloaded.done_reason == "unload"
    wait_for(lambda: ps_rows(gateway.home) == [])


def test_keep_alive_per_request_has_ollamas_meaning(gateway):
    c = client(gateway)
    c.chat(model=ECHO, messages=HI, options={"num_predict": 1}, keep_alive=-1)
    assert next(r for r in ps_rows(gateway.home) if r["model"] == ECHO)["expires_at"] is None
    c.chat(model=ECHO, messages=HI, options={"num_predict": 1}, keep_alive=0)
    wait_for(lambda: ps_rows(gateway.home) == [])


def test_tags_show_version_and_ps(gateway):
    c = client(gateway)
    names = [m.model for m in c.list().models]
    assert f"{SMOLLM2}:latest" in names
    smol = next(m for m in c.list().models if m.model == f"{SMOLLM2}:latest")
    assert smol.size > 50_000_000 and smol.details.format == "gguf" and smol.details.quantization_level == "Q4_1"
    shown = c.show(SMOLLM2)
    assert shown.details.family == "llama" and shown.modelinfo["general.architecture"] == "llama"
    assert c.ps().models == []
    assert ollama.Client(host=gateway.url)._request_raw("GET", "/api/version").json()["version"]


def test_unknown_model_is_a_response_error_404(gateway, missing_model):
    with pytest.raises(ollama.ResponseError) as info:
        client(gateway).chat(model=missing_model, messages=HI)
    assert info.value.status_code == 404 and "nobody/nothing" in info.value.error
    with pytest.raises(ollama.ResponseError) as info:
        client(gateway).show(missing_model)
    assert info.value.status_code == 404


def test_bad_option_is_400_naming_it(gateway):
    with pytest.raises(ollama.ResponseError) as info:
        client(gateway).chat(model=ECHO, messages=HI, options={"temperature": -1})
    assert info.value.status_code == 400 and "temperature" in info.value.error


def test_async_client(gateway):
    async def main():
        c = ollama.AsyncClient(host=gateway.url)
        stream = await c.chat(model=ECHO, messages=HI, stream=True, options={"num_predict": 2})
        return "".join([p.message.content async for p in stream])

    assert asyncio.run(main()) == "tok tok "


@pytest.mark.e2e
def test_ollama_chat_with_smollm2(gateway_factory):
    gw = gateway_factory()
    answer = client(gw).chat(model=SMOLLM2, messages=[{"role": "user", "content": "What is 2+2?"}], options={"temperature": 0, "num_predict": 40})
    assert answer.message.content.strip() and answer.done_reason in ("stop", "length")
    assert answer.eval_count > 0 and answer.load_duration > 0

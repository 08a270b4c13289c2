"""Two backends behind one worker contract: ctransformers (GGML) beside
llama.cpp (GGUF), on tiny models the suite writes itself."""

from __future__ import annotations

import json
import os
import signal

import psutil
import pytest

from conftest import assert_one_line_error, wait_for
from corral.client import Client
from corral.workers.backend import BACKENDS, Sampling, Usage, backend_class
from corral.workers.text_stream import TextStream


def test_run_tiny_gpt2_through_ctransformers(corral, tiny_catalog):
    result = corral("run", tiny_catalog["gpt2"], "hello", "--max-tokens", "8", "--verbose")
    assert result.code == 0, result
    assert result.out.strip()
    assert "completion tokens: 8" in result.err
    (model,) = json.loads(corral("ps", "--json").out)
    assert model["backend"] == "ctransformers"
    assert model["model"] == "test/tiny-gpt2"
    assert model["context_length"] == 128  # from the GGML file


def test_ggml_path_needs_model_type(corral, tiny_files):
    result = corral("run", str(tiny_files["gpt2"]), "hello")
    assert_one_line_error(result, 2)
    assert "--model-type" in result.err
    ok = corral("run", str(tiny_files["gpt2"]), "hello", "--model-type", "gpt2", "--max-tokens", "4")
    assert ok.code == 0, ok
    bad = corral("run", str(tiny_files["gpt2"]), "hello", "--model-type", "gpt5")
    assert_one_line_error(bad, 2)


def test_gguf_path_runs_on_llama_cpp(corral, tiny_files):
    result = corral("run", str(tiny_files["llama"]), "hello", "--max-tokens", "6", "--temperature", "0")
    assert result.code == 0, result
    assert json.loads(corral("ps", "--json").out)[0]["backend"] == "llama.cpp"


def test_both_backends_loaded_and_isolated(monkeypatch, tiny_catalog):
    monkeypatch.setenv("CORRAL_MAX_LOADED_MODELS", "2")
    with Client() as client:
        for name in tiny_catalog.values():
            assert client.generate(name, "hello", max_tokens=4, temperature=0).text()
        loaded = {m["backend"]: m for m in client.ps()}
        assert set(loaded) == {"llama.cpp", "ctransformers"}
        for victim, survivor in (("ctransformers", "llama.cpp"), ("llama.cpp", "ctransformers")):
            pid = loaded[victim]["pid"]
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: victim not in {m["backend"] for m in client.ps()})
            # the other backend's worker did not notice
            assert client.generate(loaded[survivor]["model"], "hello", max_tokens=4, temperature=0).text()
            assert psutil.pid_exists(loaded[survivor]["pid"])
            # the killed one comes back on its next request
            assert client.generate(loaded[victim]["model"], "hello", max_tokens=4, temperature=0).text()
            loaded = {m["backend"]: m for m in client.ps()}
            assert loaded[victim]["pid"] != pid


def test_ctransformers_chat_and_stop_words(tiny_catalog):
    with Client() as client:
        answer = client.chat(tiny_catalog["gpt2"], [{"role": "user", "content": "hello"}], max_tokens=30, seed=3)
        text = answer.text()
        assert answer.usage["prompt_tokens"] > 5  # the default template wrapped the message
        same = client.chat(tiny_catalog["gpt2"], [{"role": "user", "content": "hello"}], max_tokens=30, seed=3).text()
        assert same == text  # seed honoured
        assert len(text) > 4, text  # 30 tokens of a random model: enough to cut in the middle
        stop_at = text[len(text) // 2 :][:2]
        cut = client.chat(tiny_catalog["gpt2"], [{"role": "user", "content": "hello"}], max_tokens=30, seed=3, stop=[stop_at]).text()
        assert stop_at not in cut and text.startswith(cut) and len(cut) < len(text)


def test_backend_contract_in_process(tiny_files):
    """A backend runs without any process wrapper: the seam tests and
    benchmarks use."""
    # ctransformers takes its context from the GGML file (128), llama.cpp from the spec
    for name, path, model_type, context in (("llama.cpp", tiny_files["llama"], None, 64),
                                            ("ctransformers", tiny_files["gpt2"], "gpt2", 128)):
        backend = backend_class(name)({"name": "t", "path": str(path), "backend": name, "model_type": model_type, "context_length": 64})
        info = backend.load()
        assert info["context_length"] == context
        usage = Usage()
        pieces = list(backend.stream("hello", Sampling(max_tokens=5, temperature=0), usage))
        assert usage.completion_tokens == 5 and usage.finish_reason == "length"
        assert "".join(pieces)
        prompt, _ = backend.chat_prompt([{"role": "user", "content": "hi"}])
        assert "hi" in prompt
        backend.close()
    assert set(BACKENDS) == {"llama.cpp", "ctransformers", "echo"}


@pytest.mark.parametrize(
    "chunks, stop, shown",
    [
        ([b"hel", b"lo"], [], "hello"),
        ([b"a", b"\xe2\x82", b"\xac", b"b"], [], "a€b"),  # a UTF-8 character split across tokens
        ([b"one ", b"ST", b"OP", b" two"], ["STOP"], "one "),
        ([b"one ", b"ST", b"ay"], ["STOP"], "one STay"),  # a false start is released
    ],
)
def test_text_stream(chunks, stop, shown):
    stream = TextStream(stop)
    out = "".join(stream.push(c) for c in chunks) + stream.flush()
    assert out == shown

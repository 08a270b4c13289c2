"""Pulling over HTTP: Ollama's /api/pull (with the official client's
progress stream) and Docker Model Runner's /models/create, from a real
local OCI registry."""

from __future__ import annotations

import ollama
import pytest
from gateway_fixture import gateway, gateway_factory  # noqa: F401  (fixtures)
from registry import dmr_config, push_with_oras, registry, tiny_gguf  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration

GGUF = "application/vnd.docker.ai.gguf.v3"
CONFIG = "application/vnd.docker.ai.model.config.v0.1+json"


def test_a_route_naming_a_missing_model_pulls_it(gateway, registry, tmp_path):
    ref = f"{registry.host}/http/implicit"
    push_with_oras(registry.host, "http/implicit", [(tiny_gguf(tmp_path, seed=4), GGUF)], dmr_config(256), CONFIG)
    with gateway.client() as http:
        assert f"{ref}:latest" not in [t for m in http.get("/models").json() for t in m["tags"]]
        r = http.post("/v1/completions", json={"model": ref, "prompt": "Hi", "max_tokens": 2})
        assert r.status_code == 200, r.text
        assert f"{ref}:latest" in [t for m in http.get("/models").json() for t in m["tags"]]
        absent = http.post("/v1/completions", json={"model": f"{registry.host}/http/absent", "prompt": "Hi"})
        assert absent.status_code == 404 and absent.json()["error"]["code"] == "model_not_found"


def test_ollama_pull_streams_progress_then_the_model_answers(gateway, registry, tmp_path):
    ref = f"{registry.host}/http/tiny"
    push_with_oras(registry.host, "http/tiny", [(tiny_gguf(tmp_path, seed=5), GGUF)], dmr_config(256), CONFIG)
    client = ollama.Client(host=gateway.url, timeout=120)
    events = list(client.pull(ref, stream=True))
    assert events[-1].status == "success"
    assert any(e.total for e in events[:-1])
    assert f"{ref}:latest" in [m.model for m in client.list().models]
    assert client.generate(model=ref, prompt="Hi", options={"num_predict": 2}).done


def test_models_create_pulls_and_errors_keep_their_status(gateway, registry, tmp_path):
    push_with_oras(registry.host, "http/created", [(tiny_gguf(tmp_path, seed=6), GGUF)], dmr_config(256), CONFIG)
    with gateway.client() as http:
        r = http.post("/models/create", json={"from": f"{registry.host}/http/created"})
        assert r.status_code == 200 and r.json()["status"] == "success"
        assert f"{registry.host}/http/created:latest" in [t for m in http.get("/models").json() for t in m["tags"]]
        missing = http.post("/models/create", json={"from": f"{registry.host}/http/absent"})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
        assert http.post("/api/pull", json={"model": "/etc/passwd"}).status_code == 404
        stream_error = http.post("/api/pull", json={"model": f"{registry.host}/http/absent"}).text.strip().splitlines()
        assert "error" in stream_error[-1]


def test_an_unreachable_registry_is_502(gateway):
    with gateway.client() as http:
        r = http.post("/models/create", json={"from": "localhost:1/nobody/here"})
    assert r.status_code == 502 and r.json()["error"]["code"] == "registry_error"

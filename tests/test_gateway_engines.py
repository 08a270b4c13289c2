"""Docker Model Runner's paths, the metrics, and the OpenAPI schema that
describes every route."""

from __future__ import annotations

import pytest
from gateway_fixture import ECHO, gateway, gateway_factory, ps_rows  # noqa: F401  (fixtures)
from prometheus_client.parser import text_string_to_metric_families
from registry import missing_model  # noqa: F401  (fixture)

from conftest import SMOLLM2, wait_for

pytestmark = pytest.mark.integration

HI = {"model": ECHO, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


def test_root_says_corral_is_running(gateway):
    with gateway.client() as http:
        r = http.get("/")
    assert r.status_code == 200 and r.text.strip() == "corral is running"


def test_engines_ps_lists_runners_with_docker_model_runner_fields(gateway):
    with gateway.client() as http:
        assert http.get("/engines/ps").json() == []
        http.post("/v1/chat/completions", json=HI)
        [runner] = http.get("/engines/ps").json()
    assert runner["backend_name"] == "echo" and runner["model_name"] == ECHO and runner["mode"] == "completion"
    assert runner["in_use"] is False and runner["loading"] is False and runner["keep_alive"] == 300
    assert runner["last_used"].endswith("Z")
    assert runner["pid"] == ps_rows(gateway.home)[0]["pid"] and runner["served"] == 1 and runner["rss_bytes"] > 0


def test_engines_unload_all_and_by_name(gateway):
    with gateway.client() as http:
        http.post("/v1/chat/completions", json=HI)
        assert http.post("/engines/unload", json={"models": [ECHO]}).json() == {"unloaded_runners": 1}
        wait_for(lambda: ps_rows(gateway.home) == [])
        assert http.post("/engines/unload", json={"models": ["not/loaded"]}).json() == {"unloaded_runners": 0}
        http.post("/v1/chat/completions", json=HI)
        assert http.post("/engines/unload", json={"all": True}).json() == {"unloaded_runners": 1}
        wait_for(lambda: ps_rows(gateway.home) == [])


def test_engines_status_and_models(gateway):
    with gateway.client() as http:
        status = http.get("/engines/status").json()
        assert status["llama.cpp"] == "not running"
        models = http.get("/models").json()
        smol = next(m for m in models if m["tags"] == [f"{SMOLLM2}:latest"])
        assert smol["id"].startswith("sha256:") and smol["config"]["format"] == "gguf" and smol["config"]["architecture"] == "llama"
        # the memory a worker of it will take, before it is loaded (the page shows it)
        from corral.configs.catalog import resolve
        from corral.configs.settings import load_settings
        from corral.supervisor.memory import estimate_memory

        assert smol["config"]["estimate_bytes"] == estimate_memory(resolve(SMOLLM2, load_settings())).total_bytes
        assert http.get(f"/models/{SMOLLM2}").json()["tags"] == [f"{SMOLLM2}:latest"]
        assert http.get("/models/no/such").status_code == 404


def test_preload_only_header_loads_without_generating(gateway):
    with gateway.client() as http:
        r = http.post("/engines/v1/chat/completions", json=HI, headers={"X-Preload-Only": "true"})
    assert r.status_code == 200
    [row] = ps_rows(gateway.home)
    assert row["model"] == ECHO and row["served"] == 0


def _families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_metrics_count_requests_tokens_and_models(gateway, missing_model):
    with gateway.client() as http:
        http.post("/v1/chat/completions", json=HI)
        http.post("/v1/chat/completions", json={**HI, "stream": True})
        http.post("/v1/chat/completions", json={**HI, "model": missing_model})
        text = http.get("/metrics").text
    families = _families(text)
    requests = {(s.labels["route"], s.labels["status"]): s.value for s in families["corral_http_requests"].samples if s.name.endswith("_total")}
    assert requests[("/v1/chat/completions", "200")] == 2 and requests[("/v1/chat/completions", "404")] == 1
    assert next(s.value for s in families["corral_generated_tokens"].samples if s.name.endswith("_total")) == 4
    assert next(s.value for s in families["corral_time_to_first_token_seconds"].samples if s.name.endswith("_count")) == 2
    assert next(s.value for s in families["corral_decode_tokens_per_second"].samples if s.name.endswith("_count")) >= 1
    assert families["corral_loaded_models"].samples[0].value == 1
    assert {s.labels["model"]: s.value for s in families["corral_queue_depth"].samples} == {ECHO: 0}


def test_openapi_schema_lists_exactly_the_routes(gateway):
    from corral.gateway.app import api_routes
    from corral.gateway.openapi import openapi_path
    from starlette.routing import Mount, Route

    with gateway.client() as http:
        schema = http.get("/openapi.json").json()
    served = {(openapi_path(r.path), m.lower()) for r in api_routes() if isinstance(r, Route) for m in r.methods if m != "HEAD"}
    served |= {(r.path + "/", "get") for r in api_routes() if isinstance(r, Mount)}  # the browser page, when installed
    described = {(p, m) for p, ops in schema["paths"].items() for m in ops}
    assert described == served
    body = schema["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ChatCompletionRequest"}
    assert "max_completion_tokens" in schema["components"]["schemas"]["ChatCompletionRequest"]["properties"]


def test_a_store_model_is_listed_and_answered_by_name(gateway, tiny_files, corral):
    packaged = corral("package", "--gguf", str(tiny_files["llama"]), "--context-size", "256", "test/packaged:v1", "-q")
    assert packaged.code == 0, packaged
    with gateway.client() as http:
        assert "test/packaged:v1" in [m["id"] for m in http.get("/v1/models").json()["data"]]
        assert "test/packaged:v1" in [m["model"] for m in http.get("/api/tags").json()["models"]]
        r = http.post("/v1/completions", json={"model": "test/packaged:v1", "prompt": "Hi", "max_tokens": 3})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] >= 1


def test_docker_model_runners_anthropic_and_responses_paths(gateway):
    """DMR serves Anthropic Messages under /anthropic and Responses at /responses too."""
    with gateway.client() as http:
        message = http.post("/anthropic/v1/messages", json={"model": ECHO, "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]})
        assert message.status_code == 200 and message.json()["content"][0]["text"] == "tok tok "
        bad = http.post("/anthropic/v1/messages", json={"model": ECHO, "messages": []})
        assert bad.status_code == 400 and bad.json()["type"] == "error"  # Anthropic's error shape there too
        response = http.post("/responses", json={"model": ECHO, "input": "echo:hello", "store": False})
        assert response.status_code == 200 and response.json()["output"][0]["content"][0]["text"] == "hello"

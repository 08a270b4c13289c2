"""Every error status of the HTTP API, with httpx: what a client sees when a
field is wrong, a model is unknown, a body is too large, the model is busy,
memory is short or the worker dies."""

from __future__ import annotations

import contextlib
import os
import signal
import threading

import httpx
import pytest
from gateway_fixture import ECHO, gateway, gateway_factory, ps_rows  # noqa: F401  (fixtures)

from registry import missing_model  # noqa: F401  (fixture)

from conftest import wait_for

pytestmark = pytest.mark.integration

HI = [{"role": "user", "content": "Hi"}]


def _openai_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["type"] and error["message"]
    return error["message"]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"model": ECHO, "messages": HI, "max_tokens": "ten"}, "max_tokens"),
        ({"model": ECHO, "messages": HI, "temperature": 7}, "temperature"),
        ({"model": ECHO, "messages": [{"role": "king", "content": "x"}]}, "messages[0].role"),
        ({"model": ECHO, "messages": []}, "messages"),
        ({"messages": HI}, "model"),
        ({"model": ECHO, "messages": HI, "stop": 3}, "stop"),
        ({"model": ECHO, "messages": HI, "response_format": {"type": "xml"}}, "response_format"),
    ],
)
def test_bad_field_is_400_naming_the_field(gateway, body, field):
    with gateway.client() as http:
        message = _openai_error(http.post("/v1/chat/completions", json=body), 400, "bad_request")
    assert field in message


def test_body_that_is_not_json_is_400(gateway):
    with gateway.client() as http:
        message = _openai_error(http.post("/v1/chat/completions", content=b"{not json"), 400, "bad_request")
    assert "JSON" in message


def test_unknown_model_is_404(gateway, missing_model):
    # a registry that answers: it has no such model (with none reachable
    # the answer is 502 naming the registry: tests/test_gateway_failure_paths.py)
    with gateway.client() as http:
        message = _openai_error(http.post("/v1/chat/completions", json={"model": missing_model, "messages": HI}), 404, "model_not_found")
    assert "nobody/nothing" in message and "was not found" in message


@pytest.mark.parametrize("name", ["/etc/passwd", "../../etc/passwd", "etc/passwd", "models/x.gguf", "~/m.gguf", "a//b"])
def test_a_path_as_model_is_404_and_the_file_is_never_opened(gateway, tmp_path, name):
    # A FIFO: whoever opens it to read blocks there, and a non-blocking
    # open for writing then succeeds, which is how an open is detected.
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    # "etc/passwd" is also a registry name (docker.io/etc/passwd): with no
    # network here, the auto-pull's answer is 502 naming docker.io
    statuses = {404, 502} if name == "etc/passwd" else {404}
    with gateway.client() as http:
        for model in (name, str(fifo)):
            r = http.post("/v1/chat/completions", json={"model": model, "messages": HI})
            assert r.status_code in statuses and r.json()["error"]["message"], r.text
            r = http.post("/api/generate", json={"model": model, "prompt": "hi", "stream": False})
            assert r.status_code in statuses and isinstance(r.json()["error"], str)
    with pytest.raises(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # ENXIO: no reader ever came
    assert ps_rows(gateway.home) == []


def test_body_over_10_mib_is_413(gateway):
    limit = 10 * 1024 * 1024
    with gateway.client() as http:
        _openai_error(http.post("/v1/chat/completions", content=b" " * (limit + 1)), 413, "request_too_large")
        # a chunked body with no length, counted as it arrives
        chunks = iter([b"{" + b" " * limit, b" }"])
        _openai_error(http.post("/v1/chat/completions", content=chunks), 413, "request_too_large")
        # exactly at the limit is read (and refused for what it says, not its size)
        r = http.post("/v1/chat/completions", content=b" " * limit)
        assert r.status_code == 400


def test_busy_is_503_with_retry_after(gateway_factory):
    gw = gateway_factory(CORRAL_ENABLE_ECHO_BACKEND="1", CORRAL_MAX_QUEUE="1", CORRAL_HEARTBEAT_LIVENESS="600")
    one = {"model": ECHO, "messages": HI, "max_tokens": 1}
    with gw.client() as http:
        http.post("/v1/chat/completions", json=one)
        [row] = ps_rows(gw.home)
        # A stopped worker holds what it was given: its slots fill, then the queue.
        os.kill(row["pid"], signal.SIGSTOP)
        try:
            waiting = [threading.Thread(target=lambda: gw.client().post("/v1/chat/completions", json=one)) for _ in range(row.get("parallel") or 1)]
            waiting.append(threading.Thread(target=lambda: gw.client().post("/v1/chat/completions", json=one)))
            for t in waiting:
                t.start()
            wait_for(lambda: ps_rows(gw.home)[0]["queued"] == 1)
            r = http.post("/v1/chat/completions", json=one)
            _openai_error(r, 503, "busy")
            assert int(r.headers["Retry-After"]) >= 1
            r = http.post("/api/chat", json={**one, "stream": False})
            assert r.status_code == 503 and "Retry-After" in r.headers
        finally:
            os.kill(row["pid"], signal.SIGCONT)
        for t in waiting:
            t.join(timeout=120)


def test_not_enough_memory_is_507_with_need_and_have(gateway_factory):
    gw = gateway_factory(CORRAL_ENABLE_ECHO_BACKEND="1", CORRAL_MEMORY_BUDGET="1MiB")
    with gw.client() as http:
        message = _openai_error(http.post("/v1/chat/completions", json={"model": ECHO, "messages": HI}), 507, "insufficient_memory")
    assert "MiB" in message


def test_worker_crash_is_502_naming_the_signal(gateway):
    outcome = {}

    def ask():
        with gateway.client() as http:
            outcome["r"] = http.post("/v1/chat/completions", json={"model": ECHO, "messages": HI, "max_tokens": 1_000_000})

    def kill_busy_workers() -> bool:
        # A worker killed before its first token has its request run again
        # on a fresh one (the client cannot tell); the retry is killed too.
        for row in ps_rows(gateway.home):
            if row["state"] == "busy":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(row["pid"], signal.SIGKILL)
        return not asker.is_alive()

    asker = threading.Thread(target=ask)
    asker.start()
    wait_for(kill_busy_workers, timeout=120)
    message = _openai_error(outcome["r"], 502, "worker_crashed")
    assert "SIGKILL" in message


def test_crash_mid_stream_ends_the_stream_with_an_error_event(gateway):
    with gateway.client() as http:
        with http.stream("POST", "/v1/chat/completions", json={"model": ECHO, "messages": HI, "max_tokens": 1_000_000, "stream": True}) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")
            os.kill(next(row["pid"] for row in ps_rows(gateway.home)), signal.SIGKILL)
            rest = [line for line in lines if line.startswith("data: ")]
    assert rest[-1] == "data: [DONE]"
    assert '"worker_crashed"' in rest[-2]


def test_unknown_route_and_method_are_json_errors(gateway):
    with gateway.client() as http:
        _openai_error(http.get("/v1/nothing-here"), 404, "not_found")
        _openai_error(http.get("/v1/chat/completions"), 405, "method_not_allowed")
        r = http.get("/api/nothing")
        assert r.status_code == 404 and isinstance(r.json()["error"], str)

"""The gateway's failure paths, each driven the way it happens: a registry
that drops a pull mid-way (streamed, non-streamed, /models/create and an
auto-pull), JSON nested 100,000 deep, a client that hangs up mid-body, and a
flood of slow clients against a gateway with a small file limit. Each ends
in a clear status or error event and one log line, never a traceback, and
other requests keep being answered."""

from __future__ import annotations

import json
import resource
import socket
import threading

import httpx
import pytest
from gateway_fixture import ECHO, gateway, gateway_factory  # noqa: F401  (fixtures)
from registry import FaultyRegistry, faulty_registry, tiny_gguf

from conftest import wait_for

pytestmark = pytest.mark.integration

HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture
def faulty(tmp_path):
    """A registry whose blob transfers always drop half-way."""
    server, _ = faulty_registry(tiny_gguf(tmp_path, seed=43, n_embd=256))
    FaultyRegistry.drops = 10_000
    yield f"localhost:{server.server_port}"
    server.shutdown()


@pytest.fixture
def dropping_gateway(gateway_factory, faulty):  # noqa: F811
    return gateway_factory(CORRAL_ENABLE_ECHO_BACKEND="1", CORRAL_STALL_TIMEOUT="1s"), faulty


def _no_traceback(gateway) -> None:
    log = gateway.log()
    assert "Traceback" not in log and "unexpected error" not in log, log[-3000:]


def test_a_streamed_pull_that_fails_mid_way_ends_with_an_error_event(dropping_gateway):
    gateway, host = dropping_gateway
    with gateway.client() as http, http.stream("POST", "/api/pull", json={"model": f"{host}/faulty/tiny"}) as r:
        assert r.status_code == 200
        events = [json.loads(line) for line in r.iter_lines() if line]
    assert "pulling" in events[0]["status"], events  # the stream was under way
    assert set(events[-1]) == {"error"}
    assert host in events[-1]["error"] and "dropped the connection" in events[-1]["error"]
    _no_traceback(gateway)


@pytest.mark.parametrize("route, body", [
    ("/api/pull", {"model": "{host}/faulty/tiny", "stream": False}),
    ("/models/create", {"from": "{host}/faulty/tiny"}),
    ("/v1/chat/completions", {"model": "{host}/faulty/tiny", "messages": HI}),  # auto-pull
])
def test_a_pull_that_fails_is_502_naming_the_registry(dropping_gateway, route, body):
    gateway, host = dropping_gateway
    body = {k: v.format(host=host) if isinstance(v, str) else v for k, v in body.items()}
    with gateway.client() as http:
        r = http.post(route, json=body)
        assert r.status_code == 502, r.text
        assert host in r.text and "run the same command again" in r.text
        # and the gateway still serves
        assert http.post("/v1/chat/completions", json={"model": ECHO, "messages": HI}).status_code == 200
    _no_traceback(gateway)


def _nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


@pytest.mark.parametrize("route, body", [
    ("/v1/chat/completions", '{"model": "corral/echo", "messages": [{"role": "user", "content": "Hi"}], '
                             '"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": %s}}}'),
    ("/api/chat", '{"model": "corral/echo", "messages": [{"role": "user", "content": "Hi"}], "format": %s}'),
    ("/api/generate", '{"model": "corral/echo", "prompt": "Hi", "options": {"seed": 1, "x": %s}}'),
    ("/v1/embeddings", '{"model": "corral/echo", "input": ["Hi"], "x": %s}'),
])
def test_json_nested_100000_deep_is_400(gateway, route, body):  # noqa: F811
    with gateway.client() as http:
        r = http.post(route, content=(body % _nested(100_000)).encode(), headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text
        assert "nests" in r.json()["error"]["message" if route.startswith("/v1") else slice(None)]
        assert http.post("/v1/chat/completions", json={"model": ECHO, "messages": HI}).status_code == 200
    _no_traceback(gateway)


def _metrics_count(http: httpx.Client, route: str, status: int) -> float:
    total = 0.0
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("corral_http_requests_total{") and f'route="{route}"' in line and f'status="{status}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_client_hanging_up_mid_body_is_an_info_line(gateway):  # noqa: F811
    with socket.create_connection((gateway.host, gateway.port)) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 5000\r\n\r\n" + b'{"model": "corral/echo", "mess')
    wait_for(lambda: "hung up before sending the whole request" in gateway.log(), timeout=30)
    with gateway.client() as http:
        assert _metrics_count(http, "/v1/chat/completions", 500) == 0
        assert _metrics_count(http, "/v1/chat/completions", 499) == 1
    _no_traceback(gateway)


def _closed_by_server(s: socket.socket) -> bool:
    try:
        return s.recv(1024) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except BlockingIOError:
        return False


@pytest.fixture
def small_file_limit():
    """Processes started meanwhile (the supervisor and its gateway) get a
    256-descriptor limit, as a user's `ulimit -n 256` would give them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        yield 256
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_flood_of_slow_clients_does_not_lock_out_others(gateway_factory, small_file_limit):  # noqa: F811
    gateway = gateway_factory(CORRAL_ENABLE_ECHO_BACKEND="1", CORRAL_HTTP_READ_TIMEOUT="2s")
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    slow: list[socket.socket] = []
    answered, failed = [], []
    stop = threading.Event()

    def flood() -> None:  # 600 half-open connections: more than the gateway's file limit
        while not stop.is_set() and len(slow) < 600:
            try:
                s = socket.create_connection((gateway.host, gateway.port), timeout=5)
                s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: loc")  # and never the rest
                s.setblocking(False)
                slow.append(s)
            except OSError:
                pass

    flooder = threading.Thread(target=flood)
    flooder.start()
    try:
        with gateway.client() as http:
            wait_for(lambda: len(slow) >= 300, timeout=60)
            for _ in range(20):
                try:
                    r = http.post("/v1/chat/completions", json={"model": ECHO, "messages": HI, "max_tokens": 2})
                    (answered if r.status_code == 200 else failed).append(r.status_code)
                except httpx.HTTPError as exc:
                    failed.append(repr(exc))
        assert failed == [] and len(answered) == 20
        # and the slow ones are closed by the gateway, not held for ever
        stop.set()
        flooder.join()
        wait_for(lambda: all(_closed_by_server(s) for s in slow[:50]), timeout=30)
    finally:
        stop.set()
        flooder.join()
        for s in slow:
            s.close()
    assert "Too many open files" not in gateway.log()
    _no_traceback(gateway)

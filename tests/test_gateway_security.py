"""The gateway's security rules: Host check (DNS rebinding), Origin and
CORS, the API key beyond loopback, and its refusals at start."""

from __future__ import annotations

import socket
import subprocess
import sys

import httpx
import pytest
from gateway_fixture import ECHO, free_port, gateway, gateway_factory, launch_gateway_process  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration

HI = {"model": ECHO, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}


def test_listens_on_loopback_only_by_default(gateway):
    assert gateway.host == "127.0.0.1"
    with socket.socket() as s:
        s.settimeout(1)
        # another address of this machine (if it has one) must not answer
        try:
            other = socket.gethostbyname(socket.gethostname())
        except OSError:
            other = None
        if other and not other.startswith("127."):
            assert s.connect_ex((other, gateway.port)) != 0


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "127.0.0.1.nip.io", "attacker.localhost.evil"])
def test_a_foreign_host_header_is_refused(gateway, host):
    with gateway.client() as http:
        r = http.post("/v1/chat/completions", json=HI, headers={"Host": host})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert "Host" in r.json()["error"]["message"]


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "localhost:{port}", "127.0.0.1:{port}"])
def test_local_host_names_are_answered(gateway, host):
    with gateway.client() as http:
        r = http.post("/v1/chat/completions", json=HI, headers={"Host": host.format(port=gateway.port)})
    assert r.status_code == 200, r.text


def test_another_sites_origin_is_refused_and_cors_is_off(gateway):
    with gateway.client() as http:
        r = http.post("/v1/chat/completions", json=HI, headers={"Origin": "https://evil.example"})
        assert r.status_code == 403 and "CORRAL_HTTP_ORIGINS" in r.json()["error"]["message"]
        same = http.post("/v1/chat/completions", json=HI, headers={"Origin": gateway.url})
        assert same.status_code == 200
        assert "access-control-allow-origin" not in same.headers


def test_listed_origins_get_cors(gateway_factory):
    gw = gateway_factory(CORRAL_ENABLE_ECHO_BACKEND="1", CORRAL_HTTP_ORIGINS="https://app.example, http://localhost:3000")
    with gw.client() as http:
        pre = http.options("/v1/chat/completions", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type",
        })
        # 204 No Content, as llama-server answers a preflight
        assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == "https://app.example" and not pre.content
        assert "POST" in pre.headers["access-control-allow-methods"]
        refused = http.options("/v1/chat/completions", headers={"Origin": "https://other.example", "Access-Control-Request-Method": "POST"})
        assert refused.status_code >= 400 and "access-control-allow-origin" not in refused.headers
        r = http.post("/v1/chat/completions", json=HI, headers={"Origin": "http://localhost:3000"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert http.post("/v1/chat/completions", json=HI, headers={"Origin": "https://other.example"}).status_code == 403


def test_api_key_is_required_on_every_request_when_set(gateway_factory):
    gw = gateway_factory(CORRAL_ENABLE_ECHO_BACKEND="1", CORRAL_API_KEY="s3cret-key")
    with httpx.Client(base_url=gw.url, timeout=60) as http:
        for path in ("/v1/models", "/api/tags", "/engines/ps", "/metrics", "/"):
            r = http.get(path)
            assert r.status_code == 401, path
        missing = http.post("/v1/chat/completions", json=HI)
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = http.post("/v1/chat/completions", json=HI, headers={"Authorization": "Bearer s3cret-kez"})
        assert wrong.status_code == 401 and "wrong" in wrong.json()["error"]["message"]
        assert http.post("/api/chat", json=HI, headers={"Authorization": "Bearer nope"}).json()["error"].startswith("a wrong API key")
        right = http.post("/v1/chat/completions", json=HI, headers={"Authorization": "Bearer s3cret-key"})
        assert right.status_code == 200
        # The chat page's files hold no data, and a browser cannot fetch them
        # with a header: they load without the key (the page then asks for it).
        for path in ("/ui/", "/ui/api.js"):
            assert http.get(path).status_code == 200, path
        assert http.post("/ui/", json=HI).status_code == 401


def test_beyond_loopback_needs_a_key_then_works_with_it(gateway_factory, corral_home, monkeypatch):
    monkeypatch.delenv("CORRAL_API_KEY", raising=False)
    proc, log_path = launch_gateway_process(corral_home, f"0.0.0.0:{free_port()}")
    assert proc.wait(timeout=60) == 2
    log = log_path.read_text().strip().splitlines()
    assert len(log) == 1 and "CORRAL_API_KEY" in log[0] and "Traceback" not in log_path.read_text()
    gw = gateway_factory(host="0.0.0.0", headers={"Authorization": "Bearer k"}, CORRAL_ENABLE_ECHO_BACKEND="1", CORRAL_API_KEY="k")
    with httpx.Client(base_url=f"http://127.0.0.1:{gw.port}", headers=gw.headers, timeout=60) as http:
        assert http.post("/v1/chat/completions", json=HI).status_code == 200
    with httpx.Client(base_url=f"http://127.0.0.1:{gw.port}", timeout=60) as http:
        assert http.post("/v1/chat/completions", json=HI).status_code == 401


def test_port_in_use_is_one_line_and_its_own_exit_code(gateway, corral_home):
    proc, log_path = launch_gateway_process(corral_home / "second", f"127.0.0.1:{gateway.port}")
    assert proc.wait(timeout=60) == 98
    lines = log_path.read_text().strip().splitlines()
    assert len(lines) == 1 and "port in use" in lines[0]
    with gateway.client() as http:  # the running one is untouched
        assert http.get("/").text.strip() == "corral is running"


def test_bad_listen_address_is_a_usage_error(corral_home):
    out = subprocess.run([sys.executable, "-m", "corral.gateway", "--listen", "nowhere"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "HOST:PORT" in out.stderr and "Traceback" not in out.stderr

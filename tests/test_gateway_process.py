"""The supervisor keeps the HTTP gateway's process: starts it from
CORRAL_HTTP, says in `status` when its port is taken (everything else keeps
working), and starts it again when it dies."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket

import httpx
import pytest

from conftest import wait_for
from corral.client import Client

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def port_taken(monkeypatch):
    """CORRAL_HTTP on a port another program listens on; the echo backend on."""
    port = free_port()
    monkeypatch.setenv("CORRAL_HTTP", f"127.0.0.1:{port}")
    monkeypatch.setenv("CORRAL_ENABLE_ECHO_BACKEND", "1")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        yield port


def http_facts() -> dict:
    with Client() as client:
        return client.status()["http"]


def test_a_taken_port_is_reported_and_nothing_else_breaks(corral, monkeypatch):
    with port_taken(monkeypatch) as port:
        answer = corral("run", "corral/echo", "hi", "--max-tokens", "2")
        assert answer.code == 0 and answer.out.startswith("tok tok"), answer
        facts = wait_for(lambda: (f := http_facts())["state"] == "port in use" and f)
        assert facts["address"] == f"127.0.0.1:{port}" and "another program" in facts["error"]
        status = json.loads(corral("status", "--json").out)
        assert status["http"]["state"] == "port in use"


def test_off_means_no_gateway(corral, monkeypatch):
    monkeypatch.setenv("CORRAL_HTTP", "off")
    assert corral("run", "-d", "corral/echo", env={"CORRAL_ENABLE_ECHO_BACKEND": "1"}).code == 0
    assert http_facts() is None


def test_a_killed_gateway_is_started_again(monkeypatch):
    port = free_port()
    monkeypatch.setenv("CORRAL_HTTP", f"127.0.0.1:{port}")
    monkeypatch.setenv("CORRAL_ENABLE_ECHO_BACKEND", "1")
    with Client() as client:
        first = wait_for(lambda: (f := client.status()["http"])["state"] == "running" and f)
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/").status_code == 200 if _open(port) else False)
        os.kill(first["pid"], signal.SIGKILL)
        again = wait_for(lambda: (f := client.status()["http"])["pid"] not in (None, first["pid"]) and f)
        assert again["restarts"] == 1
        wait_for(lambda: _open(port))
        reply = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json={"model": "corral/echo", "prompt": "hi", "max_tokens": 2},
                           timeout=60)
        assert reply.status_code == 200 and reply.json()["choices"][0]["text"] == "tok tok "


def _open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_status_shows_the_address_and_a_taken_port(corral, monkeypatch):
    with port_taken(monkeypatch) as port:
        assert corral("run", "-d", "corral/echo").code == 0
        wait_for(lambda: http_facts()["state"] == "port in use")
        shown = corral("status")
        assert f"http://127.0.0.1:{port} (port in use): another program listens" in shown.out, shown

"""A client that hangs up cancels its generation; a gateway that dies loses
only its own requests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess

import httpx
import pytest
from gateway_fixture import ECHO, gateway, gateway_factory, port_open, ps_rows  # noqa: F401  (fixtures)

from conftest import CORRAL, wait_for

pytestmark = pytest.mark.integration

LONG = {"model": ECHO, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1_000_000}


def _state(home) -> str | None:
    rows = ps_rows(home)
    return rows[0]["state"] if rows else None


def test_hanging_up_mid_stream_cancels_the_generation(gateway):
    with gateway.client() as http:
        with http.stream("POST", "/v1/chat/completions", json={**LONG, "stream": True}) as r:
            # Kept in a variable: httpx closes the connection when a line
            # iterator is collected, which would hang up before the check.
            lines = r.iter_lines()
            next(lines)
            assert _state(gateway.home) == "busy"
    wait_for(lambda: _state(gateway.home) == "ready")
    served = ps_rows(gateway.home)[0]
    assert served["queued"] == 0
    assert "unexpected error" not in gateway.log()


def test_hanging_up_an_ollama_stream_cancels_it(gateway):
    with gateway.client() as http:
        with http.stream("POST", "/api/chat", json={**LONG, "options": {"num_predict": 1_000_000}}) as r:
            lines = r.iter_lines()
            next(lines)
    wait_for(lambda: _state(gateway.home) == "ready")


def test_hanging_up_while_waiting_for_a_whole_answer_cancels_it(gateway):
    body = json.dumps(LONG).encode()
    with socket.create_connection(("127.0.0.1", gateway.port)) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        wait_for(lambda: _state(gateway.home) == "busy")
    wait_for(lambda: _state(gateway.home) == "ready")
    assert "unexpected error" not in gateway.log()


def test_gateway_killed_mid_stream_is_restarted_and_nothing_else_notices(gateway):
    """SIGKILL the gateway: its HTTP stream breaks; a CLI answer running over
    the socket meanwhile completes; the supervisor starts a new gateway on
    the same port, which answers."""
    cli = subprocess.Popen([CORRAL, "run", ECHO, "hi", "--max-tokens", "200000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    broken = False
    with gateway.client() as http:
        try:
            with http.stream("POST", "/v1/chat/completions", json={**LONG, "stream": True}) as r:
                lines = r.iter_lines()
                next(lines)
                os.kill(gateway.pid(), signal.SIGKILL)
                for _ in lines:
                    pass
        except httpx.HTTPError:
            broken = True
    assert broken
    out, err = cli.communicate(timeout=300)
    assert cli.returncode == 0, err
    assert out.split() == ["tok"] * 200000
    wait_for(lambda: port_open("127.0.0.1", gateway.port), timeout=10)  # hang guard; the bench times the restart
    with gateway.client() as http:
        assert http.post("/v1/chat/completions", json={**LONG, "max_tokens": 1}).json()["choices"][0]["message"]["content"] == "tok "


def test_gateway_does_not_outlive_its_supervisor(gateway):
    import psutil

    gw = psutil.Process(gateway.pid())
    supervisor = psutil.Process(ps_supervisor_pid(gateway.home))
    supervisor.kill()
    gw.wait(timeout=60)  # hang guard: the kernel's parent-death signal ends it
    assert not port_open("127.0.0.1", gateway.port)


def ps_supervisor_pid(home) -> int:
    from corral.client.launch import supervisor_pid
    from corral.configs.settings import load_settings

    return supervisor_pid(load_settings({"CORRAL_HOME": str(home)}))

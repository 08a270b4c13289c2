"""A running gateway for the HTTP tests: a supervisor in the test's own
CORRAL_HOME and `python -m corral.gateway` on a free loopback port.

``start_gateway`` is the one place that launches it: it sets CORRAL_HTTP
and starts the supervisor; if that supervisor runs no gateway (its status
has no ``http`` facts), it starts the process itself.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest
from conftest import wait_for

from corral.client.launch import ensure_supervisor, supervisor_pid
from corral.configs.settings import load_settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def gateway_facts() -> dict | None:
    """What the running supervisor says about its gateway (None: it runs none)."""
    from corral.client import Client

    with Client(load_settings(), autostart=False) as client:
        return client.status().get("http")


@dataclass
class Gateway:
    host: str
    port: int
    home: Path
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    headers: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=120, **kwargs)

    def pid(self) -> int:
        """The gateway's process id, whoever started it."""
        if self.proc is not None:
            return self.proc.pid
        for conn in psutil.net_connections("tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == self.port and conn.pid:
                return conn.pid
        raise AssertionError(f"nothing listens on port {self.port}")

    def log(self) -> str:
        path = self.log_path or self.home / "logs" / "gateway.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def launch_gateway_process(home: Path, listen: str) -> tuple[subprocess.Popen, Path]:
    """``python -m corral.gateway --listen ADDR`` with its log in the home."""
    log_dir = home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "gateway.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "corral.gateway", "--listen", listen],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=dict(os.environ),
        )
    return proc, log_path


def start_gateway(home: Path, *, host: str = "127.0.0.1", headers: dict | None = None) -> Gateway:
    """Supervisor and gateway for ``home``, answering on a free port."""
    port = free_port()
    os.environ["CORRAL_HTTP"] = f"{host}:{port}"
    ensure_supervisor(load_settings())
    if isinstance(gateway_facts(), dict):  # the supervisor runs it
        gateway = Gateway(host, port, home, headers=headers or {})
    else:
        proc, log_path = launch_gateway_process(home, f"{host}:{port}")
        gateway = Gateway(host, port, home, proc, log_path, headers or {})
    probe = "127.0.0.1" if host in ("0.0.0.0", "::") else host

    def up() -> bool:
        if gateway.proc is not None and gateway.proc.poll() is not None:
            raise AssertionError(f"the gateway exited with code {gateway.proc.returncode}: {gateway.log()}")
        return port_open(probe, port)

    wait_for(up, timeout=60)
    return gateway


@pytest.fixture
def gateway_factory(corral_home, monkeypatch):
    """Start a gateway after setting environment variables: ``start(**env)``."""
    started: list[Gateway] = []

    def start(*, host: str = "127.0.0.1", headers: dict | None = None, **env: str) -> Gateway:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        gateway = start_gateway(corral_home, host=host, headers=headers)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()
    monkeypatch.delenv("CORRAL_HTTP", raising=False)


@pytest.fixture
def gateway(gateway_factory) -> Gateway:
    """A gateway whose supervisor serves the echo model `corral/echo`."""
    return gateway_factory(CORRAL_ENABLE_ECHO_BACKEND="1")


ECHO = "corral/echo"


def ps_rows(home: Path) -> list[dict]:
    from corral.client import Client

    with Client(load_settings({"CORRAL_HOME": str(home)}), autostart=False) as client:
        return client.ps()


def supervisor_running(home: Path) -> bool:
    return bool(supervisor_pid(load_settings({"CORRAL_HOME": str(home)})))

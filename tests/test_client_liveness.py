"""A client never waits for ever: when the supervisor stops answering
(SIGSTOP), every waiting request fails with exit code 6, through the
connection's heartbeats."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
from conftest import CORRAL, wait_for
from corral.client import Client

pytestmark = pytest.mark.integration


def test_a_stopped_supervisor_fails_waiting_and_new_requests(corral, monkeypatch):
    monkeypatch.setenv("CORRAL_ENABLE_ECHO_BACKEND", "1")
    assert corral("run", "-d", "corral/echo").code == 0
    with Client() as client:
        pid = client.status()["pid"]
    streaming = subprocess.Popen([CORRAL, "run", "corral/echo", "hi", "--max-tokens", "2000000000"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        with Client() as client:  # the answer is streaming
            wait_for(lambda: client.ps()[0]["running"] == 1, timeout=60)
        os.kill(pid, signal.SIGSTOP)
        # The heartbeats stop coming back; the 4 s heartbeat timeout ends
        # the connection (the hang guard here is only a guard).
        _, err = streaming.communicate(timeout=60)
        assert streaming.returncode == 6, err
        assert "lost the connection to the corral supervisor" in err
        late = corral("run", "corral/echo", "hi", timeout=60)  # sent to a supervisor that never answers
        assert late.code == 6, late
    finally:
        os.kill(pid, signal.SIGCONT)
        streaming.kill()
    with Client() as client:  # once resumed, it serves again
        assert client.generate("corral/echo", "hi", max_tokens=3).text() == "tok tok tok "

"""Every test gets its own CORRAL_HOME, and leaves no process behind.

Tests drive the installed `corral` command and real processes; the home is
a short path under /tmp because a Unix socket path must stay under 108 bytes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from corral.client.launch import supervisor_pid
from corral.client.running_supervisor import exited as gone  # tests wait on it
from corral.configs.settings import load_settings

CORRAL = shutil.which("corral")
# Guards against a hang only; no test asserts on wall-clock time with it.
HANG_GUARD_S = 180


@pytest.fixture(autouse=True)
def corral_home(monkeypatch):
    home = Path(tempfile.mkdtemp(prefix="corral-", dir="/tmp"))
    for var in list(os.environ):
        if var.startswith("CORRAL_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("CORRAL_HOME", str(home))
    # No HTTP gateway unless a test asks for one on a free port: tests run
    # side by side and never take Docker Model Runner's port 12434.
    monkeypatch.setenv("CORRAL_HTTP", "off")
    yield home
    stop_supervisor(home)
    shutil.rmtree(home, ignore_errors=True)


def stop_supervisor(home: Path) -> None:
    """SIGTERM the supervisor of ``home`` (it stops its workers), then make
    sure nothing it started is left."""
    settings = load_settings({"CORRAL_HOME": str(home)})
    pid = supervisor_pid(settings)
    if not pid or pid < 0:
        return
    try:
        proc = psutil.Process(pid)
        children = proc.children(recursive=True)
        proc.send_signal(signal.SIGTERM)
    except psutil.NoSuchProcess:
        return
    for p, guard in [(proc, 15.0)] + [(child, 5.0) for child in children]:
        try:
            wait_for(lambda: gone(p.pid), timeout=guard, interval=0.02)
        except AssertionError:
            p.kill()


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def corral():
    """Run the installed `corral` command; returns its exit code and output."""
    assert CORRAL, "the `corral` command is not on PATH: install the package first (pip install .)"

    def run(*args: str, input: str | None = None, env: dict | None = None, timeout: float = HANG_GUARD_S) -> Result:
        proc = subprocess.run(
            [CORRAL, *args],
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            timeout=timeout,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run


def assert_one_line_error(result: Result, code: int) -> None:
    """What a user sees on a failure: one line, the right code, no traceback."""
    assert result.code == code, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("Error: "), result.err
    assert "Traceback" not in result.err


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05):
    """Poll until ``predicate()`` is truthy (hang guard, not a time limit)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


SMOLLM2 = "ai/smollm2"


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory) -> dict[str, Path]:
    """The tiny model files, written once per test session."""
    from tiny_models import write_tiny_gpt2_ggml, write_tiny_llama_gguf

    folder = tmp_path_factory.mktemp("tiny-models")
    return {
        "gpt2": write_tiny_gpt2_ggml(folder / "tiny-gpt2.bin"),
        "llama": write_tiny_llama_gguf(folder / "tiny-llama.gguf"),
    }


@pytest.fixture
def tiny_catalog(corral_home, tiny_files) -> dict[str, str]:
    """A user catalog naming the tiny models, as a user would write it."""
    corral_home.mkdir(parents=True, exist_ok=True)
    (corral_home / "models.toml").write_text(
        f'[models."test/tiny-gpt2"]\npath = "{tiny_files["gpt2"]}"\nbackend = "ctransformers"\nmodel_type = "gpt2"\n\n'
        f'[models."test/tiny-llama"]\npath = "{tiny_files["llama"]}"\nbackend = "llama.cpp"\ncontext_length = 256\n'
    )
    return {"gpt2": "test/tiny-gpt2", "llama": "test/tiny-llama"}

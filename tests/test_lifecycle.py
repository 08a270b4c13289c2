"""Model lifecycle with real workers on the real SmolLM2 model: switching,
idle unload, memory budget, crash and hang isolation, no orphans."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import pytest

from conftest import SMOLLM2, assert_one_line_error, gone, wait_for
from corral.client import Client
from corral.client.launch import supervisor_pid
from corral.configs.catalog import resolve
from corral.configs.settings import load_settings
from corral.supervisor.errors import CrashLoop, ModelLoadFailed, WorkerCrashed

pytestmark = pytest.mark.e2e


def smollm2_path() -> str:
    return resolve(SMOLLM2, load_settings()).path


@pytest.fixture
def copy_of_smollm2(tmp_path) -> str:
    path = tmp_path / "smollm2-copy.gguf"
    shutil.copyfile(smollm2_path(), path)
    return str(path)


def test_switch_waits_for_the_running_answer(copy_of_smollm2):
    with Client() as first, Client() as second:
        first.load(SMOLLM2)
        (a,) = first.ps()
        answer_a = first.generate(SMOLLM2, "Once upon a time", max_tokens=120, temperature=0.8, seed=1)
        next(iter(answer_a))  # A is streaming
        answer_b = second.generate(copy_of_smollm2, "The sky is", max_tokens=8, temperature=0)
        text_a = answer_a.text()
        assert answer_a.usage["completion_tokens"] == 120  # never cut off
        assert answer_a.stopped == "length"
        assert answer_b.text()
        assert answer_b.load_ms > 0
        assert gone(a["pid"])
        assert [m["model"] for m in second.ps()] == [copy_of_smollm2]
        assert len(text_a) > 100


def test_idle_timeout(monkeypatch):
    monkeypatch.setenv("CORRAL_IDLE_TIMEOUT", "5s")
    with Client() as client:
        client.generate(SMOLLM2, "Hi", max_tokens=4).text()
        (model,) = client.ps()  # still loaded right after the answer ...
        assert model["expires_at"] - time.time() <= 5
        wait_for(lambda: gone(model["pid"]), timeout=30)  # ... and unloaded by itself
        wait_for(lambda: client.ps() == [], timeout=30)


def test_keep_alive_zero_unloads_after_the_answer():
    with Client() as client:
        client.generate(SMOLLM2, "Hi", max_tokens=4, keep_alive="5m").text()
        pid = client.ps()[0]["pid"]
        last = client.generate(SMOLLM2, "Hi", max_tokens=4, keep_alive=0)
        assert last.text() and last.load_ms == 0  # the loaded worker served it ...
        wait_for(lambda: gone(pid), timeout=30)  # ... and then unloaded at once


def test_keep_alive_forever_outlives_the_default(monkeypatch, corral):
    monkeypatch.setenv("CORRAL_IDLE_TIMEOUT", "1s")
    result = corral("run", SMOLLM2, "Hi", "--max-tokens", "4", "--keep-alive", "-1")
    assert result.code == 0, result
    (model,) = json.loads(corral("ps", "--json").out)
    assert model["expires_at"] is None
    assert "never" in corral("ps").out
    time.sleep(3)  # three times the default idle timeout
    assert json.loads(corral("ps", "--json").out)[0]["pid"] == model["pid"]


def test_memory_budget_refuses_with_the_estimate(monkeypatch, corral):
    monkeypatch.setenv("CORRAL_MEMORY_BUDGET", "50MiB")
    need = json.loads(corral("inspect", SMOLLM2, "--json").out)["estimate"]["total_bytes"]
    result = corral("run", SMOLLM2, "hi")
    assert_one_line_error(result, 4)
    assert f"needs about {need / 2**20:.0f} MiB; 50 MiB available (budget 50 MiB)" in result.err
    assert "--ignore-runtime-memory-check" in result.err
    forced = corral("run", SMOLLM2, "What is 2+2?", "--temperature", "0", "--ignore-runtime-memory-check")
    assert forced.code == 0, forced
    assert "4" in forced.out


def test_inspect_shows_the_estimate_and_its_parts(corral):
    facts = json.loads(corral("inspect", SMOLLM2, "--json").out)
    e = facts["estimate"]
    assert e["total_bytes"] == e["weights_bytes"] + e["kv_cache_bytes"] + e["compute_bytes"] + e["runtime_bytes"]
    assert facts["context_length"] == 2048 and facts["layers"] == 30
    # KV cache: 5 sequences (4 for anyone, 1 kept for another client) x 2048
    # positions x 30 layers x 3 KV heads x (64 + 64) x 2 bytes
    assert e["parallel"] == 5
    assert e["kv_cache_bytes"] == 5 * 2048 * 30 * 3 * 128 * 2
    text = corral("inspect", SMOLLM2).out
    for part in ("weights", "KV cache", "compute buffers", "runtime", "Memory estimate", "5 sequences of 2048 tokens"):
        assert part in text
    one = json.loads(corral("inspect", SMOLLM2, "--json", env={"CORRAL_PARALLEL": "1"}).out)["estimate"]
    assert one["parallel"] == 1 and one["kv_cache_bytes"] == 2048 * 30 * 3 * 128 * 2


def test_hung_worker_is_found_and_killed():
    with Client() as client:
        client.load(SMOLLM2)
        pid = client.ps()[0]["pid"]
        response = client.generate(SMOLLM2, "Once upon a time", max_tokens=2000)
        with pytest.raises(WorkerCrashed, match="no heartbeat"):
            for i, _ in enumerate(response):
                if i == 2:
                    os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: gone(pid), timeout=30)
        assert client.generate(SMOLLM2, "Hi", max_tokens=4).text()


def test_unload_of_a_frozen_worker_climbs_the_stop_ladder(monkeypatch):
    monkeypatch.setenv("CORRAL_STOP_TIMEOUT", "0.5s")
    monkeypatch.setenv("CORRAL_HEARTBEAT_LIVENESS", "100")  # the ladder, not the hang check, must end it
    with Client() as client:
        client.load(SMOLLM2)
        pid = client.ps()[0]["pid"]
        os.kill(pid, signal.SIGSTOP)  # ignores the shutdown message and SIGTERM alike
        client.unload(SMOLLM2)
        wait_for(lambda: gone(pid), timeout=5)
        wait_for(lambda: client.ps() == [], timeout=2)


def test_no_orphans_when_the_supervisor_is_killed(copy_of_smollm2, monkeypatch):
    monkeypatch.setenv("CORRAL_MAX_LOADED_MODELS", "2")
    with Client() as client:
        client.load(SMOLLM2)
        client.load(copy_of_smollm2)
        workers = [m["pid"] for m in client.ps()]
        sup = client.status()["pid"]
    assert len(workers) == 2
    os.kill(sup, signal.SIGKILL)
    wait_for(lambda: all(gone(pid) for pid in workers), timeout=30)  # the parent-death signal, not the heartbeat timeout
    # the kernel releases a dead process's flock a moment after its death
    wait_for(lambda: supervisor_pid(load_settings()) is None, timeout=5)


def test_crash_loop_backs_off(tmp_path):
    from tiny_models import write_tiny_llama_gguf

    # Well-formed, so it passes the supervisor's checks; llama.cpp refuses it.
    broken = write_tiny_llama_gguf(tmp_path / "unknown-arch.gguf", architecture="corral-unknown")
    with Client() as client:
        for _ in range(3):
            with pytest.raises(ModelLoadFailed, match="failed to load"):
                client.generate(str(broken), "hi").text()
        with pytest.raises(CrashLoop, match="failed 3 times") as caught:
            client.generate(str(broken), "hi").text()
        assert caught.value.exit_code == 5
        with pytest.raises(CrashLoop):
            client.load(str(broken))
        assert client.generate(SMOLLM2, "Hi", max_tokens=4).text()  # others still served
    log = next(load_settings().log_dir.glob("worker-*unknown-arch*"))
    assert log.read_text().count("--- worker for") == 3


def test_switching_under_queued_work_never_livelocks(corral, copy_of_smollm2):
    """The reproduction from the hardening issue: requests queued for A
    plus one for B made the supervisor start and stop A's worker for ever."""
    import subprocess

    from conftest import CORRAL

    assert corral("run", "-d", SMOLLM2).code == 0
    stories = [subprocess.Popen([CORRAL, "run", "--max-tokens", "100", SMOLLM2, f"Story about a {animal}"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for animal in ("cat", "dog")]
    with Client() as client:
        wait_for(lambda: any(m["running"] for m in client.ps()), timeout=60)
    other = corral("run", "--max-tokens", "10", copy_of_smollm2, "Hi", timeout=120)
    assert other.code == 0 and other.out.strip(), other
    for story in stories:
        out, err = story.communicate(timeout=120)
        assert story.returncode == 0 and out.strip(), err
    spawns = load_settings().supervisor_log.read_text().count("process spawned")
    # A, then B once A's stories are done: one switch, plus the first load
    # (a story that arrived after B would make it two switches, at most).
    assert spawns <= 3, spawns

"""`corral run` end to end, on the real SmolLM2 model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import psutil

import pytest

from conftest import CORRAL, SMOLLM2, assert_one_line_error, gone, wait_for

pytestmark = pytest.mark.e2e


def status(corral) -> dict:
    result = corral("status", "--json")
    assert result.code == 0, result
    return json.loads(result.out)


def ps(corral) -> list[dict]:
    result = corral("ps", "--json")
    assert result.code == 0, result
    return json.loads(result.out)


def test_run_answers_and_reuses_supervisor_and_worker(corral):
    first = corral("run", SMOLLM2, "What is 2+2?", "--temperature", "0", "--verbose")
    assert first.code == 0, first
    assert "4" in first.out
    assert "load:" in first.err  # this request loaded the model

    sup = status(corral)
    assert psutil.pid_exists(sup["pid"])
    loaded = ps(corral)
    assert [m["model"] for m in loaded] == [SMOLLM2]
    worker_pid = loaded[0]["pid"]

    second = corral("run", SMOLLM2, "What is 2+2?", "--temperature", "0", "--verbose")
    assert second.code == 0, second
    assert "4" in second.out
    assert "load:" not in second.err  # no new model load
    assert status(corral)["pid"] == sup["pid"]
    assert ps(corral)[0]["pid"] == worker_pid
    assert status(corral)["requests_total"] == 2


def test_piped_stdin_is_the_prompt(corral):
    result = corral("run", SMOLLM2, "--temperature", "0", "--max-tokens", "40", input="Say hello.\n")
    assert result.code == 0, result
    assert result.out.strip()
    assert "hello" in result.out.lower()


def test_same_seed_same_answer(corral):
    args = ("run", SMOLLM2, "Name a colour.", "--seed", "7", "--temperature", "0.9", "--max-tokens", "20")
    first, second = corral(*args), corral(*args)
    assert first.code == 0 and second.code == 0, (first, second)
    assert first.out.strip() and first.out == second.out


def test_detach_loads_then_ps_lists_everything(corral):
    result = corral("run", "-d", SMOLLM2)
    assert result.code == 0, result
    assert result.out == ""
    (model,) = ps(corral)
    assert model["model"] == SMOLLM2
    assert model["backend"] == "llama.cpp"
    assert model["state"] == "ready"
    assert psutil.Process(model["pid"]).is_running()
    assert model["rss_bytes"] > 50 * 2**20
    assert model["context_length"] == 2048
    # default idle timeout: 5 minutes from now
    assert 240 < model["expires_at"] - time.time() <= 300

    table = corral("ps")
    assert table.code == 0
    header, row = table.out.strip().splitlines()
    for column in ("MODEL", "BACKEND", "PID", "MEMORY", "CONTEXT", "UNTIL"):
        assert column in header
    assert SMOLLM2 in row and str(model["pid"]) in row and "MiB" in row and "in 5 minutes" in row


def test_unknown_model_exits_3_and_supervisor_keeps_serving(corral):
    corral("run", "-d", SMOLLM2)
    before = status(corral)["pid"]
    result = corral("run", "no/such-model", "hi")
    assert_one_line_error(result, 3)
    assert "not in the catalog" in result.err
    assert status(corral)["pid"] == before
    assert ps(corral)[0]["model"] == SMOLLM2


def test_corrupt_header_is_refused_before_anything_is_evicted(corral, tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + os.urandom(4096))
    corral("run", "-d", SMOLLM2)
    before = status(corral)["pid"]
    result = corral("run", str(bad), "hi")
    assert_one_line_error(result, 1)
    assert "not a valid model file" in result.err
    assert status(corral)["pid"] == before
    assert [m["model"] for m in ps(corral)] == [SMOLLM2]  # still loaded


def test_model_that_fails_in_its_worker(corral, tmp_path):
    from tiny_models import write_tiny_llama_gguf

    # Well-formed, so the supervisor's checks pass it; llama.cpp refuses it.
    broken = write_tiny_llama_gguf(tmp_path / "unknown-arch.gguf", architecture="corral-unknown")
    corral("run", "-d", SMOLLM2)
    before = status(corral)["pid"]
    result = corral("run", str(broken), "hi")
    assert_one_line_error(result, 1)
    assert "failed to load" in result.err
    assert status(corral)["pid"] == before
    assert str(broken) not in [m["model"] for m in ps(corral)]  # no half-loaded model is left
    good = corral("run", SMOLLM2, "What is 2+2?", "--temperature", "0")
    assert good.code == 0 and "4" in good.out


def test_not_a_model_file(corral, tmp_path):
    text = tmp_path / "notes.gguf"
    text.write_text("just some text\n")
    result = corral("run", str(text), "hi")
    assert_one_line_error(result, 1)
    assert "not a GGUF or GGML model file" in result.err


def test_missing_model_file(corral, tmp_path):
    result = corral("run", str(tmp_path / "missing.gguf"), "hi")
    assert_one_line_error(result, 3)
    assert "does not exist" in result.err


def test_supervisor_that_cannot_start_exits_6(corral, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = corral("run", SMOLLM2, "hi", env={"CORRAL_HOME": str(blocker / "home")})
    assert_one_line_error(result, 6)
    assert "CORRAL_HOME" in result.err


def test_status_without_supervisor_exits_6(corral):
    result = corral("status")
    assert_one_line_error(result, 6)
    assert "corral serve" in result.err


def test_stop_ends_supervisor_and_workers(corral):
    corral("run", "-d", SMOLLM2)
    sup, worker = status(corral)["pid"], ps(corral)[0]["pid"]
    result = corral("stop")
    assert result.code == 0, result
    assert gone(sup) and gone(worker)
    assert corral("stop").out.strip() == "No corral supervisor is running."


def test_unload(corral):
    corral("run", "-d", SMOLLM2)
    worker = ps(corral)[0]["pid"]
    result = corral("unload", SMOLLM2)
    assert result.code == 0, result
    assert ps(corral) == []
    wait_for(lambda: not psutil.pid_exists(worker))


def test_list_shows_catalog(corral):
    result = corral("list", "--json")
    assert result.code == 0
    (entry,) = [e for e in json.loads(result.out) if e["model"] == SMOLLM2]
    assert entry["available"] and entry["backend"] == "llama.cpp"
    assert entry["path"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")


def test_bad_option_is_usage_error(corral):
    result = corral("run", SMOLLM2, "hi", "--temperature", "hot")
    assert result.code == 2
    assert "Traceback" not in result.err


def test_worker_killed_mid_answer_exits_5(corral):
    corral("run", "-d", SMOLLM2)
    sup, worker = status(corral)["pid"], ps(corral)[0]["pid"]
    proc = subprocess.Popen(
        [CORRAL, "run", SMOLLM2, "Tell me a very long story.", "--max-tokens", "3000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdout.read(20)  # the answer is streaming
    os.kill(worker, signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 5
    assert err.count("\n") == 1 and "SIGKILL" in err and "Traceback" not in err
    assert status(corral)["pid"] == sup
    again = corral("run", SMOLLM2, "What is 2+2?", "--temperature", "0")
    assert again.code == 0 and "4" in again.out


def test_racing_clients_get_one_supervisor(corral):
    procs = [subprocess.Popen([CORRAL, "run", "-d", SMOLLM2], stderr=subprocess.PIPE, text=True) for _ in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    pids = {line.split("pid ")[1].rstrip(").\n") for p in procs for line in p.stderr.readlines()}
    assert len(pids) == 1  # one worker, hence one supervisor
    sup = status(corral)["pid"]
    supervisors = [p for p in psutil.process_iter(["cmdline", "environ"]) if "corral.supervisor" in " ".join(p.info["cmdline"] or [])
                   and (p.info["environ"] or {}).get("CORRAL_HOME") == os.environ["CORRAL_HOME"]]
    assert [p.pid for p in supervisors] == [sup]

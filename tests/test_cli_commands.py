"""The CLI's status commands and how an answer ends: status commands that
never start a supervisor, logs, inspect of a truncated file, the cut
marker, a closed pipe, cancelled answers, --debug on an attached
supervisor, --context-length."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess

import psutil
import pytest

from conftest import CORRAL, HANG_GUARD_S, assert_one_line_error, wait_for
from corral.client.launch import supervisor_pid
from corral.configs.settings import load_settings

pytestmark = pytest.mark.integration

ECHO = "corral/echo"
FOREVER = "2000000000"  # tokens: an echo answer that runs until stopped


@pytest.fixture
def echo(monkeypatch) -> str:
    monkeypatch.setenv("CORRAL_ENABLE_ECHO_BACKEND", "1")
    return ECHO


def ps(corral) -> list[dict]:
    result = corral("ps", "--json")
    assert result.code == 0, result
    return json.loads(result.out)


def streaming(*args: str) -> subprocess.Popen:
    """`corral run` with a long answer going to /dev/null."""
    return subprocess.Popen(
        [CORRAL, "run", *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def wait_busy(corral) -> None:
    wait_for(lambda: [m["state"] for m in ps(corral)] == ["busy"])


def ended(proc: subprocess.Popen) -> tuple[int, str]:
    err = proc.stderr.read()
    return proc.wait(timeout=HANG_GUARD_S), err


# -- status commands -------------------------------------------------------------


def test_status_commands_never_start_a_supervisor(corral, corral_home):
    for args in (("ps",), ("unload", "--all"), ("unload", "ai/smollm2"), ("stop",)):
        result = corral(*args)
        assert result.code == 0, result
        assert result.out == "No corral supervisor is running.\n"
    assert corral("ps", "--json").out.strip() == "[]"
    status = corral("status")
    assert_one_line_error(status, 6)
    assert "No corral supervisor is running" in status.err
    assert supervisor_pid(load_settings()) is None
    assert not (corral_home / "corral.sock").exists()


def test_logs_shows_the_last_n_lines(corral, echo):
    assert corral("run", "-d", echo).code == 0
    assert corral("logs", "-n", "0").out == ""
    two = corral("logs", "-n", "2")
    assert two.code == 0 and len(two.out.splitlines()) == 2
    assert two.out.splitlines() == corral("logs", "-n", "50").out.splitlines()[-2:]
    assert_one_line_error(corral("logs", "-n", "-3"), 2)


def test_logs_of_a_model_given_by_a_relative_path(tiny_files, tmp_path):
    shutil.copy(tiny_files["llama"], tmp_path / "tiny.gguf")
    run = subprocess.run([CORRAL, "run", "./tiny.gguf", "hi", "--max-tokens", "2"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    logs = subprocess.run([CORRAL, "logs", "./tiny.gguf"], cwd=tmp_path, capture_output=True, text=True)
    assert logs.returncode == 0, logs.stderr
    assert "model loaded" in logs.stdout


def test_inspect_says_a_file_is_truncated(corral, tiny_files, tmp_path):
    whole = corral("inspect", str(tiny_files["llama"]))
    assert whole.code == 0, whole
    assert "complete" in whole.out and "truncated" not in whole.out
    data = tiny_files["llama"].read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) * 3 // 4])
    result = corral("inspect", str(cut))
    assert_one_line_error(result, 1)
    expected = f"truncated: {len(data) * 3 // 4:,} of {len(data):,} bytes"
    assert expected in result.out and expected in result.err
    facts = json.loads(corral("inspect", str(cut), "--json").out)
    assert facts["truncated"] is True and facts["expected_bytes"] == len(data)


# -- how an answer ends ------------------------------------------------------------


def test_an_answer_cut_by_length_says_so_on_stderr(corral, echo):
    result = corral("run", echo, "hi", "--max-tokens", "3")
    assert result.code == 0, result
    assert result.out == "tok tok tok \n"
    assert result.err == "[cut at 3 tokens]\n"


def test_a_closed_stdout_pipe_exits_0_quietly(corral, echo):
    shell = subprocess.run(
        ["bash", "-c", f'"$0" run {echo} hi --max-tokens {FOREVER} | head -c 20; exit "${{PIPESTATUS[0]}}"', CORRAL],
        capture_output=True, text=True, timeout=HANG_GUARD_S,
    )
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout == "tok " * 5
    assert shell.stderr == ""
    # and the answer nobody reads any more was stopped
    wait_for(lambda: [m["state"] for m in ps(corral)] == ["ready"])


def test_ctrl_c_stops_a_one_shot_answer_with_130(corral, echo):
    proc = streaming(echo, "hi", "--max-tokens", FOREVER)
    wait_busy(corral)
    proc.send_signal(signal.SIGINT)
    code, err = ended(proc)
    assert code == 130
    assert err.strip().splitlines() == ["Error: the answer was stopped (Ctrl-C)"]
    wait_for(lambda: [m["state"] for m in ps(corral)] == ["ready"])


def test_unload_during_an_answer_ends_it_with_130(corral, echo):
    proc = streaming(echo, "hi", "--max-tokens", FOREVER)
    wait_busy(corral)
    assert corral("unload", echo).code == 0
    code, err = ended(proc)
    assert code == 130
    (line,) = err.strip().splitlines()
    assert line.startswith("Error: the answer was cancelled")


def test_stop_during_an_answer_ends_it_with_a_message(corral, echo):
    proc = streaming(echo, "hi", "--max-tokens", FOREVER)
    wait_busy(corral)
    assert corral("stop").code == 0
    code, err = ended(proc)
    # cancelled by the stopping supervisor (130), or its socket closed first (6)
    assert code in (130, 6), err
    (line,) = err.strip().splitlines()
    assert line.startswith("Error: ")


def test_supervisor_gone_during_an_answer_exits_6(corral, echo):
    proc = streaming(echo, "hi", "--max-tokens", FOREVER)
    wait_busy(corral)
    psutil.Process(supervisor_pid(load_settings())).kill()
    code, err = ended(proc)
    assert code == 6
    (line,) = err.strip().splitlines()
    assert line.startswith("Error: lost the connection to the corral supervisor")


# -- attached to a running supervisor -------------------------------------------


def test_debug_shows_the_supervisors_lines_for_its_own_request(corral, echo):
    assert corral("run", "-d", echo).code == 0  # a supervisor started without --debug
    result = corral("run", "--debug", echo, "hi", "--max-tokens", "2")
    assert result.code == 0, result
    theirs = [line for line in result.err.splitlines() if "proc=cli" not in line]
    # the supervisor's own words about this request, with its timings
    assert any("corral/echo" in line for line in theirs), result.err
    assert any(" ms" in line for line in theirs), result.err
    assert "proc=supervisor" not in corral("run", echo, "hi", "--max-tokens", "2").err


def test_context_length_reloads_only_when_it_changes(corral, echo):
    assert corral("run", echo, "hi", "--max-tokens", "1", "--context-length", "512").code == 0
    (first,) = ps(corral)
    assert first["context_length"] == 512
    assert corral("run", echo, "hi", "--max-tokens", "1", "--context-length", "512").code == 0
    assert [m["pid"] for m in ps(corral)] == [first["pid"]]
    assert corral("run", echo, "hi", "--max-tokens", "1", "--context-length", "1024").code == 0
    wait_for(lambda: [m["context_length"] for m in ps(corral)] == [1024])
    assert ps(corral)[0]["pid"] != first["pid"]


def test_batch_takes_the_sampling_flags(corral, echo, tmp_path):
    prompts = tmp_path / "in.jsonl"
    prompts.write_text("".join(json.dumps({"id": i, "prompt": f"p {i}"}) + "\n" for i in range(3)))
    out = tmp_path / "out.jsonl"
    result = corral("batch", echo, "-i", str(prompts), "-o", str(out), "--max-tokens", "2", "--top-k", "3",
                    "--min-p", "0.05", "--repeat-penalty", "1.1", "--stop", "zz")
    assert result.code == 0, result
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == [0, 1, 2]
    assert all(r["text"] == "tok tok " for r in rows)
    assert_one_line_error(corral("batch", echo, "-i", str(prompts), "-o", str(out), "--top-k", "-2"), 2)


def test_ps_and_status_report_a_running_supervisor(corral, echo):
    assert corral("run", "-d", echo).code == 0
    table = corral("ps")
    assert table.code == 0 and "corral/echo" in table.out
    status = corral("status")
    assert status.code == 0 and "Supervisor pid" in status.out
    assert os.path.exists(json.loads(corral("status", "--json").out)["socket"])

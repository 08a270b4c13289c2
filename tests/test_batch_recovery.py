"""`corral batch` loses nothing: a line is written only for an answer that
ran to its end, or for a prompt that is itself wrong; everything else
(cancelled, crashed twice, model not found, supervisor gone) is retried by
running the same command again."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import CORRAL, assert_one_line_error, wait_for
from corral.client import Client

pytestmark = pytest.mark.integration


def write_prompts(path: Path, n: int, **extra) -> list[str]:
    ids = [f"p{i}" for i in range(n)]
    path.write_text("".join(json.dumps({"id": i, "prompt": f"say {n}", **extra}) + "\n" for n, i in enumerate(ids)))
    return ids


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def requests_total() -> int:
    with Client() as client:
        return client.status()["requests_total"]


ECHO = {"CORRAL_ENABLE_ECHO_BACKEND": "1"}


def test_unload_during_a_batch_leaves_the_cancelled_ones_to_the_next_run(corral, tmp_path, monkeypatch):
    monkeypatch.setenv("CORRAL_ENABLE_ECHO_BACKEND", "1")
    ids = write_prompts(tmp_path / "in.jsonl", 12, max_tokens=100_000)
    out = tmp_path / "out.jsonl"
    args = ["batch", "corral/echo", "-i", str(tmp_path / "in.jsonl"), "-o", str(out), "--concurrency", "4"]
    batch = subprocess.Popen([CORRAL, *args], stderr=subprocess.PIPE, text=True)
    wait_for(lambda: out.exists() and out.stat().st_size > 0, timeout=120, interval=0.005)
    with Client() as client:
        assert client.unload(all=True) == ["corral/echo"]
    _, err = batch.communicate(timeout=300)
    written = lines(out)
    assert all(r["finish_reason"] in ("stop", "length") and "error" not in r for r in written)
    # the unload caught some mid-answer (4 were running): they are not written
    assert len(written) < len(ids)
    assert batch.returncode == 130, err
    assert "run the same command again" in err
    before = requests_total()
    rerun = corral(*args)
    assert rerun.code == 0, rerun
    assert sorted(r["id"] for r in lines(out)) == sorted(ids)  # every id exactly once
    assert requests_total() - before == len(ids) - len(written)  # only the missing ones were sent


def test_model_not_found_writes_nothing_and_a_fixed_rerun_answers_all(corral, tmp_path, tiny_files, corral_home):
    ids = write_prompts(tmp_path / "in.jsonl", 20, max_tokens=4)
    out = tmp_path / "out.jsonl"
    args = ["batch", "mine/tiny", "-i", str(tmp_path / "in.jsonl"), "-o", str(out)]
    first = corral(*args)
    assert first.code == 3, first
    assert "20 prompt(s) have no result yet" in first.err and "Traceback" not in first.err
    assert lines(out) == []
    (corral_home / "models.toml").write_text(f'[models."mine/tiny"]\npath = "{tiny_files["llama"]}"\ncontext_length = 256\n')
    second = corral(*args)
    assert second.code == 0, second
    assert sorted(r["id"] for r in lines(out)) == sorted(ids)


def test_a_prompt_that_is_itself_wrong_is_written_and_retried_on_request(corral, tmp_path, tiny_catalog):
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"id": "ok", "prompt": "hello", "max_tokens": 4}) + "\n"
                    + json.dumps({"id": "huge", "prompt": "hello " * 2000}) + "\n")
    out = tmp_path / "out.jsonl"
    args = ["batch", tiny_catalog["llama"], "-i", str(path), "-o", str(out)]
    first = corral(*args)
    assert first.code == 2, first  # a bad request: the line says why
    records = {r["id"]: r for r in lines(out)}
    assert records["huge"]["error"]["code"] == "bad_request" and "text" in records["ok"]
    before = requests_total()
    assert corral(*args).code == 0 and requests_total() == before  # nothing left to do
    retried = corral(*args, "--retry-errors")
    assert retried.code == 2 and requests_total() == before + 1  # only the error line ran again
    assert sorted(r["id"] for r in lines(out)) == ["huge", "ok"]  # still once each


def test_supervisor_gone_mid_batch(corral, tmp_path, monkeypatch):
    monkeypatch.setenv("CORRAL_ENABLE_ECHO_BACKEND", "1")
    write_prompts(tmp_path / "in.jsonl", 12, max_tokens=30000)
    out = tmp_path / "out.jsonl"
    batch = subprocess.Popen([CORRAL, "batch", "corral/echo", "-i", str(tmp_path / "in.jsonl"), "-o", str(out)],
                             stderr=subprocess.PIPE, text=True)
    wait_for(lambda: len(lines(out)) >= 1, timeout=120)
    with Client() as client:
        import os
        import signal

        os.kill(client.status()["pid"], signal.SIGKILL)
    _, err = batch.communicate(timeout=120)
    assert batch.returncode == 6, err
    assert "run the same command again" in err
    assert all("error" not in r for r in lines(out))


def test_output_in_a_missing_folder(corral, tmp_path):
    write_prompts(tmp_path / "in.jsonl", 1)
    result = corral("batch", "ai/smollm2", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "missing" / "out.jsonl"))
    assert_one_line_error(result, 2)
    assert "does not exist" in result.err

"""Scripted and batch prompting on the real SmolLM2 model."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CORRAL, SMOLLM2, wait_for
from corral.client import AsyncClient, Client

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent


def write_prompts(path: Path, n: int, **extra) -> list:
    ids = [f"p{i}" for i in range(n)]
    path.write_text("".join(json.dumps({"id": i, "prompt": f"Say the number {n}.", **extra}) + "\n" for n, i in enumerate(ids)))
    return ids


def output_ids(path: Path) -> list:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def requests_total() -> int:
    with Client() as client:
        return client.status()["requests_total"]


def test_fifty_prompts(corral, tmp_path):
    ids = write_prompts(tmp_path / "in.jsonl", 50, max_tokens=8)
    result = corral("batch", SMOLLM2, "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "--temperature", "0")
    assert result.code == 0, result
    assert sorted(output_ids(tmp_path / "out.jsonl")) == sorted(ids)
    for line in (tmp_path / "out.jsonl").read_text().splitlines():
        record = json.loads(line)
        assert record["text"] and record["usage"]["completion_tokens"] <= 8 and record["finish_reason"]
    assert "50 of 50 prompts answered (0 errors)" in result.err  # stderr is not a terminal: one summary line


def test_killed_cli_resumes_without_resending(tmp_path):
    ids = write_prompts(tmp_path / "in.jsonl", 40, max_tokens=24)
    out = tmp_path / "out.jsonl"
    args = [CORRAL, "batch", SMOLLM2, "-i", str(tmp_path / "in.jsonl"), "-o", str(out), "--concurrency", "2"]
    proc = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    wait_for(lambda: out.exists() and len(out.read_text().splitlines()) >= 10, timeout=120)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(output_ids(out))
    assert 10 <= done_before < 40
    sent_before = requests_total()
    rerun = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(output_ids(out)) == sorted(ids)  # every id exactly once
    # the re-run sent only the prompts without a result line
    assert requests_total() - sent_before == 40 - done_before


def test_worker_killed_mid_batch(tmp_path):
    ids = write_prompts(tmp_path / "in.jsonl", 20, max_tokens=32)
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen([CORRAL, "batch", SMOLLM2, "-i", str(tmp_path / "in.jsonl"), "-o", str(out)], stderr=subprocess.PIPE, text=True)
    wait_for(lambda: out.exists() and len(out.read_text().splitlines()) >= 5, timeout=120)
    with Client() as client:
        os.kill(client.ps()[0]["pid"], signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert sorted(output_ids(out)) == sorted(ids)
    assert all("text" in json.loads(line) for line in out.read_text().splitlines())  # the crashed prompt was retried


def test_interactive_request_is_not_starved_by_a_batch(corral, tmp_path):
    write_prompts(tmp_path / "in.jsonl", 200, max_tokens=32)
    out = tmp_path / "out.jsonl"
    batch = subprocess.Popen(
        [CORRAL, "batch", SMOLLM2, "-i", str(tmp_path / "in.jsonl"), "-o", str(out), "--concurrency", "64", "--temperature", "0.8"],
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: out.exists() and len(out.read_text().splitlines()) >= 3, timeout=120)
        with Client() as client:
            parallel = client.ps()[0]["parallel"]
            answered_before = len(out.read_text().splitlines())
            chat = client.chat(SMOLLM2, [{"role": "user", "content": "Hi"}], max_tokens=32, temperature=0)
            next(iter(chat))  # its first token
            answered_meanwhile = len(out.read_text().splitlines()) - answered_before
            assert chat.text().strip()
        # Served at once in the seat kept for other clients, not after the
        # batch's other 60-odd queued prompts (a first-come queue would).
        # Counted in batch answers written meanwhile, a wall-clock measure:
        # room for a slow first token on a loaded machine.
        assert answered_meanwhile <= 2 * parallel, (answered_meanwhile, parallel)
        assert len(out.read_text().splitlines()) < 200  # the batch was still running
    finally:
        batch.kill()
        batch.wait()


def test_async_client():
    async def main():
        async with AsyncClient() as client:
            first = await client.chat(SMOLLM2, [{"role": "user", "content": "What is 2+2?"}], temperature=0, max_tokens=30)
            second = await client.generate(SMOLLM2, "The capital of France is", temperature=0, max_tokens=6)
            texts = await asyncio.gather(first.text(), second.text())
            results = [r async for r in client.batch(SMOLLM2, ["One", "Two", {"id": "x", "prompt": "Three"}], max_tokens=4, temperature=0)]
            return texts, first, second, results, await client.ps()

    (answer, paris), first, second, results, ps = asyncio.run(main())
    assert "4" in answer and "Paris" in paris
    assert second.usage["completion_tokens"] == 6
    assert sorted(str(r.id) for r in results) == ["0", "1", "x"]
    assert all(r.text and r.error is None for r in results)
    assert ps[0]["model"] == SMOLLM2


def test_sync_batch_api_yields_as_finished():
    with Client() as client:
        results = list(client.batch(SMOLLM2, [f"Count to {i}:" for i in range(6)], concurrency=3, max_tokens=6))
    assert sorted(r.index for r in results) == list(range(6))
    assert all(r.finished and r.attempts == 1 for r in results)
    # sampled (no temperature given), so an answer may end early on its own:
    # a full one says "length", a shorter one "stop"
    for r in results:
        assert (r.usage["completion_tokens"], r.stopped) == (6, "length") or (
            r.usage["completion_tokens"] < 6 and r.stopped == "stop"
        ), r


@pytest.mark.parametrize("script", ["batch_prompts.py", "async_chat.py"])
def test_examples_run(script):
    out = subprocess.run([sys.executable, str(ROOT / "examples" / script)], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert "failed" not in out.stdout and "Error" not in out.stdout, out.stdout
    if script == "batch_prompts.py":
        # each result starts a line with its id (an answer may run on over several lines)
        answered = {line.split(" ", 1)[0] for line in lines} & {"capital", "math", "poem"}
        assert answered == {"capital", "math", "poem"}, out.stdout
        assert "Paris" in out.stdout and "4" in out.stdout
    else:
        # two answers (the first says 4), then the two batch results
        # results come as they finish: either may end first
        assert "4" in out.stdout and sorted(line.split(" ", 1)[0] for line in lines[-2:]) == ["0", "1"], out.stdout


def test_bad_lines_are_reported_with_numbers(corral, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 1, "prompt": "Hi"}\nnot json\n{"id": 2}\n{"id": 1, "prompt": "again"}\n[1]\n')
    refused = corral("batch", SMOLLM2, "-i", str(source), "-o", str(tmp_path / "out.jsonl"))
    assert refused.code == 2
    for number in (2, 3, 4, 5):
        assert f"in.jsonl:{number}:" in refused.err
    assert not (tmp_path / "out.jsonl").exists() or not (tmp_path / "out.jsonl").read_text()
    skipped = corral("batch", SMOLLM2, "-i", str(source), "-o", str(tmp_path / "out.jsonl"), "--skip-bad-lines", "--max-tokens", "4")
    assert skipped.code == 0, skipped
    assert output_ids(tmp_path / "out.jsonl") == [1]
    assert "4 bad input lines skipped" in skipped.err


def test_torn_last_line_is_cut_on_resume(corral, tmp_path):
    ids = write_prompts(tmp_path / "in.jsonl", 3, max_tokens=4)
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"id": "p0", "text": "x"}) + '\n{"id": "p1", "te')
    result = corral("batch", SMOLLM2, "-i", str(tmp_path / "in.jsonl"), "-o", str(out))
    assert result.code == 0, result
    assert sorted(output_ids(out)) == sorted(ids)


def test_replicas_share_a_models_queue(monkeypatch, tmp_path):
    monkeypatch.setenv("CORRAL_REPLICAS", "2")
    monkeypatch.setenv("CORRAL_PARALLEL", "1")  # one sequence per worker: the second worker is needed
    with Client() as client:
        results = list(client.batch(SMOLLM2, [f"Count to {i}:" for i in range(8)], concurrency=4, max_tokens=8))
        assert sorted(r.index for r in results) == list(range(8))
        loaded = {m["model"]: m for m in client.ps()}
        assert set(loaded) == {SMOLLM2, SMOLLM2 + "#2"}
        assert loaded[SMOLLM2 + "#2"]["replica_of"] == SMOLLM2
        assert loaded[SMOLLM2]["pid"] != loaded[SMOLLM2 + "#2"]["pid"]
        assert all(m["served"] > 0 for m in loaded.values())  # both workers answered
        assert sum(m["served"] for m in loaded.values()) == 8
        assert client.unload(SMOLLM2) == [SMOLLM2]
        wait_for(lambda: client.ps() == [], timeout=10)

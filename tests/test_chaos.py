"""Chaos: 300 requests (at least) from 6 clients across 2 tiny models while another
thread SIGKILLs a random worker every 2 s. Every request ends with an answer
or a worker-crash error, none waits past its deadline, no worker is left
behind, and the supervisor does not grow."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter

import psutil
import pytest

from conftest import gone
from corral.client import Client
from corral.configs.settings import load_settings
from corral.supervisor.errors import CorralError, WorkerCrashed

CLIENTS, PER_CLIENT = 6, 50
MIN_KILLS = 6
KILL_EVERY_S = 2.0
# How long one request may take before it counts as hung: far beyond a
# respawn of a tiny model, even on a loaded machine (a hang guard).
DEADLINE_S = 120.0


# Long enough that the 300 requests take many kill intervals (tiny models
# decode thousands of tokens a second, several sequences at once).
MAX_TOKENS = {"test/tiny-llama": 200, "test/tiny-gpt2": 100}


def one_request(client: Client, model: str, n: int) -> str:
    """'answer', an error code, or 'hung'."""
    response = client.generate(model, f"chaos {n}", max_tokens=MAX_TOKENS[model], temperature=0.5)
    deadline = time.monotonic() + DEADLINE_S
    while response.done is None:
        msg = client.conn.next_event(response.id, timeout=max(0.0, deadline - time.monotonic()))
        if msg is None:
            response.cancel()
            return "hung"
        try:
            response.feed(msg)
        except WorkerCrashed as exc:
            return exc.code
        except CorralError as exc:
            return f"unexpected {exc.code}: {exc.message}"
    client.conn.forget(response.id)
    return "answer" if response.stopped in ("stop", "length") else f"stopped {response.stopped}"


@pytest.mark.slow
def test_chaos(tiny_catalog, monkeypatch):
    monkeypatch.setenv("CORRAL_MAX_LOADED_MODELS", "2")
    # Killed every 2 s, a model would soon be held back for a minute as a
    # crash loop (that rule has its own test): here every kill must be met
    # by a respawn.
    monkeypatch.setenv("CORRAL_CRASH_LIMIT", "1000")
    # One sequence per worker: the requests queue up, so the run spans many
    # kill intervals (batched, the tiny models answer all 300 in seconds).
    monkeypatch.setenv("CORRAL_PARALLEL", "1")
    settings = load_settings()
    models = [tiny_catalog["llama"], tiny_catalog["gpt2"]]
    with Client(settings) as warm:
        for n in range(10):  # warm-up: both models loaded, the loop's caches filled
            for model in models:
                assert warm.generate(model, f"warm {n}", max_tokens=8).text() is not None
        supervisor = psutil.Process(warm.status()["pid"])
    rss_after_warmup = supervisor.memory_info().rss

    outcomes: Counter = Counter()
    seen_workers: set[int] = set()
    kills = 0
    stop = threading.Event()

    def client_thread(index: int) -> None:
        # At least PER_CLIENT requests each, and on until MIN_KILLS workers
        # have been killed: tiny models are fast, the kills come every 2 s.
        with Client(settings) as client:
            n = 0
            while n < PER_CLIENT or kills < MIN_KILLS:
                outcomes[one_request(client, models[(index + n) % 2], index * 1000 + n)] += 1
                n += 1

    def killer() -> None:
        nonlocal kills
        rng = random.Random(0)
        with Client(settings) as client:
            while not stop.wait(KILL_EVERY_S):
                pids = [m["pid"] for m in client.ps() if m["pid"]]
                seen_workers.update(pids)
                if pids:
                    try:
                        os.kill(rng.choice(pids), signal.SIGKILL)
                        kills += 1
                    except ProcessLookupError:
                        pass

    threads = [threading.Thread(target=client_thread, args=(i,)) for i in range(CLIENTS)]
    chaos = threading.Thread(target=killer)
    chaos.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    chaos.join()

    print(f"\nchaos: {sum(outcomes.values())} requests, {kills} workers killed, outcomes {dict(outcomes)}")
    assert sum(outcomes.values()) >= CLIENTS * PER_CLIENT
    assert set(outcomes) <= {"answer", "worker_crashed"}, outcomes
    assert outcomes["answer"] > 0 and kills >= MIN_KILLS, (outcomes, kills)
    with Client(settings) as client:
        live = {m["pid"] for m in client.ps() if m["pid"]}
        assert client.status()["pid"] == supervisor.pid
    orphans = [pid for pid in seen_workers - live if not gone(pid)]
    assert not orphans
    grown = supervisor.memory_info().rss - rss_after_warmup
    print(f"chaos: supervisor RSS {rss_after_warmup / 2**20:.1f} MiB after warm-up, {grown / 2**20:+.1f} MiB at the end")
    assert grown < 10 * 2**20

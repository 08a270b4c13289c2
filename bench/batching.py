"""Continuous batching in-process, against llama.cpp's own server.

The drivers take a backend (anything with start/step/active, such as
corral's llama.cpp backend loaded in this process) so that the same figures
can be taken through corral once the runtime drives the engine:

- ``batch_throughput``: ``n`` prompts, ``in_flight`` at a time, each new one
  joining as soon as one ends; total generated tokens per second;
- ``single_stream``: one prompt's decode rate, tokens after the first;
- ``seeded_ttft``: time to the first token of turn 3 of a chat, with a seed
  (only whole aligned prompt chunks reused) and without.

With ``CORRAL_BENCH_LLAMA_SERVER`` set to a ``llama-server`` binary (built
from the llama.cpp that llama-cpp-python vendors), the same prompts run
against it too, alternating with the engine, with the same model, context,
threads, slots, flash attention and no extra buffer types on AMX CPUs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import urllib.request
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from bench.harness import median, now, smollm2_path

CTX = 2048
THREADS = os.cpu_count() or 1
TOPICS = ["a lighthouse", "a dragon", "the moon", "a library", "a river", "a robot", "a forest", "a city", "the sea", "a clock"]


def story_prompts(backend: Any, n: int, tag: str) -> list[str]:
    return [
        backend.chat_prompt([{"role": "user", "content": f"Write a long, detailed story about {TOPICS[i % len(TOPICS)]} ({tag} {i})."}])[0]
        for i in range(n)
    ]


def _sampling(max_tokens: int, **kw: Any) -> Any:
    from corral.workers.backend import Sampling

    return Sampling(temperature=0, max_tokens=max_tokens, repeat_penalty=1.0, **kw)


def batch_throughput(backend: Any, prompts: list[str], max_tokens: int, in_flight: int) -> float:
    """Total generated tokens per second, ``in_flight`` sequences at a time."""
    from corral.workers.backend import Usage

    pending = list(enumerate(prompts))
    usages: dict[int, Usage] = {}
    t0 = now()
    while pending or backend.active():
        while pending and backend.active() < in_flight:
            rid, prompt = pending.pop(0)
            usages[rid] = Usage()
            backend.start(rid, prompt, _sampling(max_tokens), usages[rid])
        backend.step()
    return sum(u.completion_tokens for u in usages.values()) / (now() - t0)


def single_stream(backend: Any, prompt: str, max_tokens: int) -> tuple[float, float]:
    """(decode tokens/s after the first token, time to first token in ms)."""
    from corral.workers.backend import Usage

    t0 = now()
    stamps = [now() for _ in backend.stream(prompt, _sampling(max_tokens), Usage())]
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]), (stamps[0] - t0) * 1000


def seeded_ttft(backend: Any, seed: int | None, answer_tokens: int = 64) -> float:
    """TTFT (ms) of turn 3 of a chat whose turns 1 and 2 ran on this engine
    just before, with every turn seeded (or not)."""
    from corral.workers.backend import Sampling, Usage

    backend.engine.forget()
    messages = [{"role": "system", "content": "You are a helpful assistant who answers at length."}]
    ttft = 0.0
    for turn in ("Tell me about lighthouses.", "Why are they painted in stripes?", "Write a short poem about one."):
        messages.append({"role": "user", "content": turn})
        prompt, stop = backend.chat_prompt(messages)
        t0 = now()
        pieces = backend.stream(prompt, Sampling(temperature=0.8, seed=seed, max_tokens=answer_tokens, stop=stop), Usage())
        first = next(pieces)
        ttft = (now() - t0) * 1000
        messages.append({"role": "assistant", "content": first + "".join(pieces)})
    return ttft


# -- llama-server ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def llama_server(binary: str, parallel: int) -> Iterator[str]:
    """A llama-server on loopback with corral's engine settings; its URL."""
    from corral.workers.llama_cpp_backend import extra_buffers_allowed

    port = _free_port()
    args = [binary, "-m", smollm2_path(), "-c", str(CTX * parallel), "-np", str(parallel), "-t", str(THREADS),
            "-tb", str(THREADS), "-fa", "on", "--host", "127.0.0.1", "--port", str(port), "-kvu",
            "--kv-unified-per-slot", str(CTX)]
    if not extra_buffers_allowed():
        args.append("--no-repack")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"llama-server did not start ({' '.join(args)})") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def server_stream(url: str, prompt: str, max_tokens: int) -> list[float]:
    """Stream one completion; the time of every token."""
    body = json.dumps({"prompt": prompt, "n_predict": max_tokens, "temperature": 0, "stream": True,
                       "cache_prompt": True, "repeat_penalty": 1.0}).encode()
    request = urllib.request.Request(url + "/completion", body, {"Content-Type": "application/json"})
    stamps = []
    with urllib.request.urlopen(request, timeout=300) as response:
        for line in response:
            if line.startswith(b"data: "):
                event = json.loads(line[6:])
                if event.get("content"):
                    stamps.append(now())
                if event.get("stop"):
                    break
    return stamps


def server_batch(url: str, prompts: list[str], max_tokens: int, in_flight: int) -> float:
    pending = list(prompts)
    lock = threading.Lock()
    tokens = [0]

    def client() -> None:
        while True:
            with lock:
                if not pending:
                    return
                prompt = pending.pop(0)
            n = len(server_stream(url, prompt, max_tokens))
            with lock:
                tokens[0] += n

    t0 = now()
    threads = [threading.Thread(target=client) for _ in range(in_flight)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return tokens[0] / (now() - t0)


# -- the section -------------------------------------------------------------------


def load_engine(parallel: int) -> Any:
    from corral.workers.llama_cpp_backend import LlamaCppBackend

    backend = LlamaCppBackend({"name": "bench", "path": smollm2_path(), "context_length": CTX, "threads": THREADS,
                               "parallel": parallel})
    backend.load()
    return backend


def run(quick: bool) -> dict:
    n, tokens = (8, 32) if quick else (16, 64)
    reps = 1 if quick else 3
    binary = os.environ.get("CORRAL_BENCH_LLAMA_SERVER")
    figures: dict[str, float] = {}
    engine = load_engine(8)
    try:
        c1, c8, single, seeded, unseeded = [], [], [], [], []
        for rep in range(reps):
            prompts = story_prompts(engine, n, f"batch {rep}")
            c1.append(batch_throughput(engine, prompts, tokens, 1))
            c8.append(batch_throughput(engine, story_prompts(engine, n, f"batch8 {rep}"), tokens, 8))
            single.append(single_stream(engine, story_prompts(engine, 1, f"single {rep}")[0], 128)[0])
            seeded.append(seeded_ttft(engine, seed=7))
            unseeded.append(seeded_ttft(engine, seed=None))
        figures["engine_batch_tok_s_c1"] = median(c1)
        figures["engine_batch_tok_s_c8"] = median(c8)
        figures["engine_batch_scaling_c8"] = figures["engine_batch_tok_s_c8"] / figures["engine_batch_tok_s_c1"]
        figures["engine_decode_tok_s"] = median(single)
        figures["seeded_ttft_turn3_ms"] = median(seeded)
        figures["unseeded_ttft_turn3_ms"] = median(unseeded)
        figures["seeded_ttft_ratio"] = figures["seeded_ttft_turn3_ms"] / figures["unseeded_ttft_turn3_ms"]
        if binary:
            figures.update({f"engine_{k}": v for k, v in against_llama_server(
                binary, reps,
                prompt_for=lambda rep: story_prompts(engine, 1, f"vs {rep}")[0],
                prompts_for=lambda rep: story_prompts(engine, n, f"vs8 {rep}"),
                ours_single=lambda prompt: single_stream(engine, prompt + " ", 128)[0],
                ours_batch=lambda prompts: batch_throughput(engine, [p + " " for p in prompts], tokens, 8),
                tokens=tokens).items()})
    finally:
        engine.close()
    return figures


def against_llama_server(binary: str, reps: int, prompt_for: Callable[[int], str], prompts_for: Callable[[int], list[str]],
                         ours_single: Callable[[str], float], ours_batch: Callable[[list[str]], float], tokens: int,
                         settle_s: float = 0.0) -> dict:
    """Our side and llama-server (8 slots) in turn, the same prompts: one
    stream of 128 tokens, and a batch at 8 in flight. ``ours_*`` return
    tokens/s; the figures are medians over ``reps`` rounds."""
    sides: dict[str, list[float]] = {"ours_single": [], "theirs_single": [], "ours_c8": [], "theirs_c8": []}
    with llama_server(binary, 8) as url:
        server_stream(url, "Hello", 8)  # warm
        for rep in range(reps):
            prompt, prompts = prompt_for(rep), prompts_for(rep)
            for name, run in (("theirs_single", lambda: _rate(server_stream(url, prompt, 128))),
                              ("ours_single", lambda: ours_single(prompt)),
                              ("theirs_c8", lambda: server_batch(url, prompts, tokens, 8)),
                              ("ours_c8", lambda: ours_batch(prompts))):
                time.sleep(settle_s)
                sides[name].append(run())
    m = {name: median(values) for name, values in sides.items()}
    return {
        "decode_tok_s_llama_server": m["theirs_single"],
        "decode_ratio_vs_llama_server": m["ours_single"] / m["theirs_single"],
        "batch_tok_s_c8_llama_server": m["theirs_c8"],
        "batch_ratio_vs_llama_server_c8": m["ours_c8"] / m["theirs_c8"],
    }


def _rate(stamps: list[float]) -> float:
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


if __name__ == "__main__":
    import sys

    from bench.__main__ import table

    print(table(run("--quick" in sys.argv)))

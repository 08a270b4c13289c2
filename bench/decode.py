"""Decode throughput, warm time to first token, worker footprint and batch
throughput: corral against llama-cpp-python in this process, side by side,
alternating, with the same model file, context, threads, prompts, greedy
sampling and token counts.

Baselines:
- "high-level": llama-cpp-python's create_chat_completion with its default
  settings (what a Python user writes), n_threads as corral's worker;
- "low-level": corral's own llama.cpp backend driven in-process (the same
  decode loop without any process, socket or supervisor: the ceiling).
Each side gets the same fresh prompt once; each has its own KV cache, so
the shared prefix of the prompts helps every side alike.
"""

from __future__ import annotations

import os
import time
from typing import Any

from bench.harness import SMOLLM2, corral_home, median, now, smollm2_path
from corral.client import Client

CTX = 2048
SETTLE_S = 0.3
# Every side samples the same way: greedy, without a repeat penalty (what
# llama-cpp-python does by default; corral's own default is 1.1).
REPEAT = 1.0
THREADS = os.cpu_count() or 1


def _prompts(n: int, tag: str) -> list[list[dict]]:
    topics = ["a lighthouse", "a dragon", "the moon", "a library", "a river", "a robot", "a forest", "a city", "the sea", "a clock"]
    return [
        [{"role": "user", "content": f"Write a long, detailed story about {topics[i % len(topics)]} ({tag} {i})."}]
        for i in range(n)
    ]


def _rate(stamps: list[float]) -> float:
    """Tokens per second over the decode phase: after the first token."""
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 2 else float("nan")


def high_level_llama() -> Any:
    """llama-cpp-python's Llama as a user would make it, but without the
    extra buffer types on AMX CPUs, as corral's worker (they segfault on
    this machine's first multi-token batch: ggml-org/llama.cpp#20824)."""
    import llama_cpp
    import llama_cpp.llama
    from llama_cpp import Llama

    from corral.workers.llama_cpp_backend import extra_buffers_allowed

    default = llama_cpp.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = extra_buffers_allowed()
        return p

    llama_cpp.llama.llama_cpp.llama_model_default_params = params
    try:
        return Llama(model_path=smollm2_path(), n_ctx=CTX, n_threads=THREADS, n_threads_batch=THREADS, verbose=False)
    finally:
        llama_cpp.llama.llama_cpp.llama_model_default_params = default


class HighLevel:
    def __init__(self) -> None:
        self.llm = high_level_llama()

    def run(self, messages: list[dict], max_tokens: int) -> tuple[float, list[float]]:
        t0 = now()
        stamps = []
        for chunk in self.llm.create_chat_completion(messages, max_tokens=max_tokens, temperature=0, repeat_penalty=REPEAT,
                                                     stream=True):
            if chunk["choices"][0]["delta"].get("content"):
                stamps.append(now())
        return t0, stamps


class LowLevel:
    def __init__(self) -> None:
        from corral.workers.backend import Sampling
        from corral.workers.llama_cpp_backend import LlamaCppBackend

        from corral.configs.catalog import LLAMA_CPP, ModelSpec
        from corral.supervisor.memory import worker_sequences

        self.Sampling = Sampling
        # the worker's own engine: same context, threads and sequences
        seats = worker_sequences(ModelSpec(name="bench", path=smollm2_path(), backend=LLAMA_CPP))
        self.backend = LlamaCppBackend({"name": "bench", "path": smollm2_path(), "context_length": CTX, "threads": THREADS,
                                        "parallel": seats})
        self.backend.load()

    def run(self, messages: list[dict], max_tokens: int) -> tuple[float, list[float]]:
        from corral.workers.backend import Usage

        t0 = now()
        prompt, stop = self.backend.chat_prompt(messages)
        sampling = self.Sampling(max_tokens=max_tokens, temperature=0, repeat_penalty=REPEAT, stop=stop)
        stamps = [now() for _ in self.backend.stream(prompt, sampling, Usage())]
        return t0, stamps


def _corral_run(client: Client, messages: list[dict], max_tokens: int) -> tuple[float, list[float]]:
    t0 = now()
    stamps = [now() for _ in client.chat(SMOLLM2, messages, max_tokens=max_tokens, temperature=0, repeat_penalty=REPEAT)]
    return t0, stamps


def _rss(pid: int) -> int:
    import psutil

    return psutil.Process(pid).memory_info().rss


def run(quick: bool) -> dict:
    reps = 2 if quick else 7
    tokens = 128 if quick else 256
    figures: dict[str, float] = {}
    with corral_home() as settings:
        high, low = HighLevel(), LowLevel()
        with Client(settings) as client:
            client.load(SMOLLM2)
            for side in (lambda m, n: _corral_run(client, m, n), high.run, low.run):  # warm every side once
                side(_prompts(1, "warm")[0], 8)
            rates: dict[str, list[float]] = {"corral": [], "high": [], "low": []}
            ttft: dict[str, list[float]] = {"corral": [], "high": [], "low": []}
            counts: dict[str, list[int]] = {"corral": [], "high": [], "low": []}
            sides = {"corral": lambda m, n: _corral_run(client, m, n), "high": high.run, "low": low.run}
            for rep, messages in enumerate(_prompts(reps, "decode")):
                order = list(sides) if rep % 2 == 0 else list(reversed(sides))
                for name in order:
                    # llama.cpp's threads spin a while after a generation; let
                    # the previous side's go idle so that it slows no one.
                    time.sleep(SETTLE_S)
                    t0, stamps = sides[name](messages, tokens)
                    rates[name].append(_rate(stamps))
                    ttft[name].append((stamps[0] - t0) * 1000)
                    counts[name].append(len(stamps))
            figures["decode_tok_s_corral"] = median(rates["corral"])
            figures["decode_tok_s_inprocess_highlevel"] = median(rates["high"])
            figures["decode_tok_s_inprocess_lowlevel"] = median(rates["low"])
            figures["decode_ratio"] = figures["decode_tok_s_corral"] / figures["decode_tok_s_inprocess_highlevel"]
            figures["decode_ratio_vs_lowlevel"] = figures["decode_tok_s_corral"] / figures["decode_tok_s_inprocess_lowlevel"]
            figures["decode_tokens_median"] = median([float(c) for c in counts["corral"]])
            figures["ttft_ms_corral"] = median(ttft["corral"])
            figures["ttft_ms_inprocess_lowlevel"] = median(ttft["low"])
            figures["ttft_ms_inprocess_highlevel"] = median(ttft["high"])
            figures["ttft_overhead_ms"] = median([c - l for c, l in zip(ttft["corral"], ttft["low"])])
            # Footprint: the worker against this process's own in-process model.
            import psutil

            worker_pid = client.ps()[0]["pid"]
            figures["worker_rss_mb"] = _rss(worker_pid) / 2**20
            del high
            figures["inprocess_rss_mb"] = psutil.Process().memory_info().rss / 2**20
            figures["worker_rss_overhead_mb"] = figures["worker_rss_mb"] - _baseline_rss_mb()
            figures.update(_batch(client, 8 if quick else 32, 32 if quick else 64))
    # The engine's own batching, in-process (and against llama-server when
    # CORRAL_BENCH_LLAMA_SERVER names one).
    from bench import batching

    figures.update(batching.run(quick))
    return figures


def _baseline_rss_mb() -> float:
    """RSS of a fresh process holding the same engine in-process (same
    model, context and sequences) after the same kind of generation: what
    corral's worker is compared with."""
    import subprocess
    import sys

    code = (
        "import psutil; from bench.decode import LowLevel; low = LowLevel(); "
        "low.run([{'role': 'user', 'content': 'Hi'}], 16); "
        "print(psutil.Process().memory_info().rss)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 2**20


def _batch(client: Client, n: int, tokens: int) -> dict:
    """n prompts through Client.batch, against a loop over in-process
    llama-cpp-python (high-level, as a user would write it)."""
    llm = high_level_llama()
    prompts = _prompts(n, "batch")
    time.sleep(SETTLE_S)
    t0 = now()
    out = list(client.batch(SMOLLM2, [{"messages": p} for p in prompts], concurrency=4, max_tokens=tokens, temperature=0,
                            repeat_penalty=REPEAT))
    corral_s = now() - t0
    corral_tokens = sum(r.usage.get("completion_tokens", 0) for r in out)
    time.sleep(SETTLE_S)
    t0 = now()
    inproc_tokens = 0
    for p in prompts:
        result = llm.create_chat_completion([{"role": "user", "content": p[0]["content"] + " "}], max_tokens=tokens, temperature=0,
                                            repeat_penalty=REPEAT)
        inproc_tokens += result["usage"]["completion_tokens"]
    inproc_s = now() - t0
    return {
        "batch_tok_s_corral": corral_tokens / corral_s,
        "batch_tok_s_inprocess": inproc_tokens / inproc_s,
        "batch_ratio": (corral_tokens / corral_s) / (inproc_tokens / inproc_s),
    }

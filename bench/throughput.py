"""Throughput through corral itself (client -> supervisor -> worker), the
figures of the batching issue: one worker at 1 and 8 in flight, two models
decoding at once against one alone, and llama.cpp's own ``llama-server``
beside corral when ``CORRAL_BENCH_LLAMA_SERVER`` names its binary.
SmolLM2, greedy without a repeat penalty (as llama-server's side), 16
prompts x 64 tokens (quick: 8 x 32); sides alternate."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time

from bench.batching import against_llama_server
from bench.harness import SMOLLM2, corral_home, median, now, smollm2_path
from corral.client import Client

# Each side waits this long for the previous side's engine threads to stop
# spinning, so that no side slows the next.
SETTLE_S = 1.0


def _batch(client: Client, model: str, prompts: list[str], tokens: int, in_flight: int) -> float:
    """Total tokens/s for ``prompts`` with ``in_flight`` requests at once."""
    t0 = now()
    results = list(client.batch(model, prompts, concurrency=in_flight, max_tokens=tokens, temperature=0, repeat_penalty=1.0))
    elapsed = now() - t0
    assert all(r.error is None for r in results), [r.error for r in results if r.error]
    return sum(r.usage.get("completion_tokens", 0) for r in results) / elapsed


def _stream_rate(client: Client, model: str, prompt: str, tokens: int) -> tuple[int, float]:
    """(tokens, seconds) of one streamed answer, from its first token."""
    stamps = [now() for _ in client.generate(model, prompt, max_tokens=tokens, temperature=0, repeat_penalty=1.0)]
    return len(stamps), stamps[-1] - stamps[0]


def _single(client: Client, prompt: str) -> float:
    count, seconds = _stream_rate(client, SMOLLM2, prompt, 128)
    return (count - 1) / seconds


def _two_at_once(settings, models: list[str], prompt: str, tokens: int) -> float:
    """Aggregate tokens/s of one stream per model, all at the same time."""
    counts: list[tuple[int, float]] = []
    barrier = threading.Barrier(len(models))

    def one(model: str) -> None:
        with Client(settings) as c:
            barrier.wait()
            counts.append(_stream_rate(c, model, prompt, tokens))

    threads = [threading.Thread(target=one, args=(m,)) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(n - 1 for n, _ in counts) / max(s for _, s in counts)


def run(quick: bool) -> dict:
    n, tokens = (8, 32) if quick else (16, 64)
    reps = 1 if quick else 3
    figures: dict[str, float] = {}
    copy_dir = tempfile.mkdtemp(prefix="corral-bench-copy-")
    copy = os.path.join(copy_dir, "smollm2-copy.gguf")
    shutil.copyfile(smollm2_path(), copy)
    try:
        with corral_home(CORRAL_PARALLEL="8", CORRAL_MAX_LOADED_MODELS="2") as settings, Client(settings) as client:
            client.load(SMOLLM2)
            client.load(copy)
            prompts = [f"Here is a long story about {topic}. Once upon a time," for topic in
                       ("a lighthouse", "a dragon", "the moon", "a library", "a river", "a robot", "a forest", "a city")] * 2
            prompts = prompts[:n]
            _batch(client, SMOLLM2, prompts[:2], 8, 2)  # warm
            c1, c8, alone, together = [], [], [], []
            for _ in range(reps):
                time.sleep(SETTLE_S)
                c1.append(_batch(client, SMOLLM2, prompts, tokens, 1))
                time.sleep(SETTLE_S)
                c8.append(_batch(client, SMOLLM2, prompts, tokens, 8))
                time.sleep(SETTLE_S)
                alone.append(_single(client, prompts[0]))
                time.sleep(SETTLE_S)
                together.append(_two_at_once(settings, [SMOLLM2, copy], prompts[0], 128))
            figures["batch_tok_s_c1"] = median(c1)
            figures["batch_tok_s_c8"] = median(c8)
            figures["batch_scaling_c8"] = figures["batch_tok_s_c8"] / figures["batch_tok_s_c1"]
            figures["two_models_tok_s"] = median(together)
            figures["one_model_tok_s"] = median(alone)
            figures["two_models_ratio"] = figures["two_models_tok_s"] / figures["one_model_tok_s"]
            binary = os.environ.get("CORRAL_BENCH_LLAMA_SERVER")
            if binary:
                client.unload(copy)
                figures.update(against_llama_server(
                    binary, reps, prompt_for=lambda rep: prompts[1], prompts_for=lambda rep: prompts,
                    ours_single=lambda prompt: _single(client, prompt),
                    ours_batch=lambda ps: _batch(client, SMOLLM2, ps, tokens, 8), tokens=tokens, settle_s=SETTLE_S))
    finally:
        shutil.rmtree(copy_dir, ignore_errors=True)
    return figures


if __name__ == "__main__":
    import sys

    from bench.__main__ import table

    print(table(run("--quick" in sys.argv)))

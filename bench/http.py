"""The HTTP gateway: what HTTP costs over corral's own Python client, and
corral's gateway against llama-cpp-python's own server.

- ``http_rps_c8``: non-streamed one-token chat completions per second with
  8 in flight, echo backend (no model): the gateway's own cost.
- ``http_cancel_to_idle_ms``: a client hangs up a SmolLM2 stream; until
  ``ps`` shows the worker idle again.
- SmolLM2, the same prompts, greedy, sides alternating in one run:
  the Python client, SSE through the gateway, and ``llama_cpp.server`` on
  the same model file with the same context and threads. Decode rates are
  measured at the client from token arrival times.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Iterator

import httpx

from bench.decode import CTX, REPEAT, SETTLE_S, THREADS, _corral_run, _prompts, _rate
from bench.harness import SMOLLM2, corral_home, median, now, smollm2_path
from bench.http_load import load
from corral.client import Client
from corral.configs.catalog import ECHO_MODEL
from corral.configs.settings import Settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen | None, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server on port {port} exited with code {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:.0f} s")


@contextmanager
def gateway(settings: Settings) -> Iterator[str]:
    """A gateway for this home's supervisor: the supervisor's own when it runs
    one (CORRAL_HTTP), else one started here."""
    port = _free_port()
    os.environ["CORRAL_HTTP"] = f"127.0.0.1:{port}"  # read by the supervisor as it starts
    with Client(settings) as client:
        runs_gateway = isinstance(client.status().get("http"), dict)
    proc = None
    if not runs_gateway:
        log = open(settings.log_dir / "gateway.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "corral.gateway", "--listen", f"127.0.0.1:{port}"], stdout=log, stderr=log)
    try:
        _wait_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.environ.pop("CORRAL_HTTP", None)
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)


@contextmanager
def llama_cpp_server() -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server on the same model file,
    context and threads as corral's worker."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.llama_cpp_server", "--model", smollm2_path(), "--n_ctx", str(CTX),
         "--n_threads", str(THREADS), "--n_threads_batch", str(THREADS), "--host", "127.0.0.1", "--port", str(port),
         "--verbose", "False"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    try:
        _wait_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _sse_run(http: httpx.Client, url: str, model: str, messages: list[dict], max_tokens: int) -> tuple[float, list[float]]:
    """One streamed chat completion: start time and each token's arrival."""
    # sampled as the Python client side is (bench.decode.REPEAT): greedy, no repeat penalty
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0, "repeat_penalty": REPEAT,
            "stream": True}
    t0 = now()
    stamps = []
    with http.stream("POST", url + "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            if choices[0].get("delta", {}).get("content"):
                stamps.append(now())
    return t0, stamps


def _echo_figures(quick: bool) -> dict:
    seconds = 2.0 if quick else 5.0
    figures: dict[str, float] = {}
    with corral_home(CORRAL_ENABLE_ECHO_BACKEND="1") as settings, gateway(settings) as url:
        port = int(url.rsplit(":", 1)[1])
        one = json.dumps({"model": ECHO_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}).encode()
        load("127.0.0.1", port, "/v1/chat/completions", one, in_flight=8, seconds=0.5)  # warm
        runs = [load("127.0.0.1", port, "/v1/chat/completions", one, in_flight=8, seconds=seconds) for _ in range(1 if quick else 3)]
        best = max(runs, key=lambda r: r["rps"])
        figures["http_rps_c8"] = best["rps"]
        figures["http_p50_ms_c8"] = best["p50_ms"]
        figures["http_p99_ms_c8"] = best["p99_ms"]
    return figures


def _cancel_to_idle(client: Client, http: httpx.Client, url: str) -> float:
    """A client hangs up a SmolLM2 stream after a few tokens: ms until ps
    shows the worker idle. (The echo backend is no measure here: it makes
    tokens faster than any HTTP client reads them.)"""
    body = {"model": SMOLLM2, "messages": _prompts(1, "cancel")[0], "max_tokens": 1000, "stream": True}
    with http.stream("POST", url + "/v1/chat/completions", json=body) as r:
        lines = r.iter_lines()
        for _ in range(5):
            next(lines)
        t0 = now()
    while client.ps()[0]["state"] != "ready":
        time.sleep(0.002)
    return (now() - t0) * 1000


def _decode_figures(quick: bool) -> dict:
    reps = 3 if quick else 7
    tokens = 128 if quick else 256
    rates: dict[str, list[float]] = {"client": [], "http": [], "llama_server": []}
    ttft: dict[str, list[float]] = {"client": [], "http": [], "llama_server": []}
    with corral_home() as settings, gateway(settings) as url, llama_cpp_server() as server_url:
        with Client(settings) as client, httpx.Client(timeout=300) as http:
            client.load(SMOLLM2)
            sides = {
                "client": lambda m, n: _corral_run(client, m, n),
                "http": lambda m, n: _sse_run(http, url, SMOLLM2, m, n),
                "llama_server": lambda m, n: _sse_run(http, server_url, SMOLLM2, m, n),
            }
            for side in sides.values():  # warm every side once
                side(_prompts(1, "warm")[0], 8)
            # Each side its own prompts (of the same length): the client and
            # the gateway share one worker, whose prompt cache would give the
            # second of them the first one's prompt for free.
            prompts = {name: _prompts(reps, f"http {k}") for k, name in enumerate(sides)}
            for rep in range(reps):
                order = list(sides) if rep % 2 == 0 else list(reversed(sides))
                for name in order:
                    time.sleep(SETTLE_S)
                    t0, stamps = sides[name](prompts[name][rep], tokens)
                    rates[name].append(_rate(stamps))
                    ttft[name].append((stamps[0] - t0) * 1000)
            cancels = [_cancel_to_idle(client, http, url) for _ in range(3 if quick else 5)]
    figures = {
        "http_decode_tok_s": median(rates["http"]),
        "http_decode_tok_s_client": median(rates["client"]),
        "http_decode_tok_s_llama_cpp_server": median(rates["llama_server"]),
        "http_ttft_ms": median(ttft["http"]),
        "http_ttft_ms_client": median(ttft["client"]),
        "http_ttft_ms_llama_cpp_server": median(ttft["llama_server"]),
        "http_ttft_overhead_ms": median([h - c for h, c in zip(ttft["http"], ttft["client"])]),
        "http_cancel_to_idle_ms": median(cancels),
    }
    figures["http_decode_ratio"] = figures["http_decode_tok_s"] / figures["http_decode_tok_s_client"]
    figures["http_decode_ratio_vs_llama_cpp_server"] = figures["http_decode_tok_s"] / figures["http_decode_tok_s_llama_cpp_server"]
    return figures


def run(quick: bool) -> dict:
    return {**_echo_figures(quick), **_decode_figures(quick)}


if __name__ == "__main__":
    for k, v in run(quick=os.environ.get("QUICK") == "1").items():
        print(f"{k}: {v:.2f}")

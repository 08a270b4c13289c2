"""Routing: the echo backend (no model) under 1, 8 and 64 concurrent
requests, and one stream of 10,000 tokens. What is measured is corral
itself: sockets, framing, the supervisor's loop, the worker wrapper."""

from __future__ import annotations

import multiprocessing as mp
import os

from bench.harness import corral_home, now, percentile
from corral.client import Client
from corral.configs.catalog import ECHO_MODEL
from corral.supervisor import protocol


def _client_process(in_flight: int, seconds: float, out: mp.Queue) -> None:
    """One client connection keeping ``in_flight`` one-token requests
    outstanding for ``seconds``; reports latencies."""
    with Client() as client:
        conn = client.conn
        started: dict[int, float] = {}
        latencies: list[float] = []
        deadline = now() + seconds

        def send() -> None:
            rid = conn.send(protocol.GENERATE, model=ECHO_MODEL, prompt="hi", options={"max_tokens": 1})
            started[rid] = now()

        for _ in range(in_flight):
            send()
        while started:
            rid, msg = conn.next_any(started)
            if isinstance(msg, protocol.Token):
                continue
            latencies.append(now() - started.pop(rid))
            conn.forget(rid)
            if now() < deadline:
                send()
        out.put(latencies)


def routing(clients: int, seconds: float) -> dict:
    """Requests/s and latency with ``clients`` requests in flight, spread
    over up to 8 client processes."""
    procs = min(clients, 8)
    per_proc = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    out: mp.Queue = mp.Queue()
    ctx = mp.get_context("fork")
    workers = [ctx.Process(target=_client_process, args=(n, seconds, out)) for n in per_proc]
    t0 = now()
    for w in workers:
        w.start()
    latencies = [lat for _ in workers for lat in out.get()]
    elapsed = now() - t0
    for w in workers:
        w.join()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "requests": len(latencies),
    }


def stream(tokens: int) -> float:
    """Token messages per second for one stream of ``tokens`` tokens."""
    with Client() as client:
        t0 = now()
        response = client.generate(ECHO_MODEL, "hi", max_tokens=tokens)
        n = sum(1 for _ in response)
        elapsed = now() - t0
    assert n == tokens, n
    return n / elapsed


def run(quick: bool) -> dict:
    seconds = 1.5 if quick else 4.0
    with corral_home(CORRAL_ENABLE_ECHO_BACKEND="1") as settings:
        with Client(settings) as client:
            client.load(ECHO_MODEL)
            client.generate(ECHO_MODEL, "warm", max_tokens=100).text()
            supervisor_pid = client.status()["pid"]
        figures = {"supervisor_rss_mb": _proc_mb(supervisor_pid, "VmRSS")}
        for c in (1, 8, 64):
            r = routing(c, seconds)
            figures[f"routing_rps_c{c}"] = r["rps"]
            figures[f"routing_p50_ms_c{c}"] = r["p50_ms"]
            figures[f"routing_p99_ms_c{c}"] = r["p99_ms"]
        # the peak resident size, which the 64-client load set
        figures["supervisor_rss_mb_loaded"] = _proc_mb(supervisor_pid, "VmHWM")
        figures["stream_msgs_per_s"] = max(stream(10_000) for _ in range(1 if quick else 3))
    return figures


def _proc_mb(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


if __name__ == "__main__":
    for k, v in run(quick=os.environ.get("QUICK") == "1").items():
        print(f"{k}: {v:.1f}")

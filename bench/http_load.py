"""A lean HTTP/1.1 load generator: keep-alive connections, one request in
flight on each, spread over a few processes. Written on raw asyncio
streams because a full client library (httpx: ~1,500 requests/s per
process here) would measure itself rather than the server."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time


def _request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


async def _one_connection(host: str, port: int, request: bytes, deadline: float, latencies: list[float], statuses: dict[int, int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


def _process(host: str, port: int, request: bytes, conns: int, seconds: float, start_at: float, out: mp.Queue) -> None:
    import uvloop

    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def main() -> None:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        deadline = time.perf_counter() + seconds
        await asyncio.gather(*(_one_connection(host, port, request, deadline, latencies, statuses) for _ in range(conns)))

    uvloop.run(main())
    out.put((latencies, statuses))


def load(host: str, port: int, path: str, body: bytes, *, in_flight: int, seconds: float, processes: int = 2,
         headers: dict[str, str] | None = None) -> dict:
    """Requests/s, latency percentiles and status counts with ``in_flight``
    requests outstanding for ``seconds``."""
    request = _request(host, port, path, body, headers or {})
    procs = max(1, min(processes, in_flight))
    per = [in_flight // procs + (1 if i < in_flight % procs else 0) for i in range(procs)]
    ctx = mp.get_context("fork")
    out: mp.Queue = ctx.Queue()
    start_at = time.time() + 0.3  # every process starts together, after its imports
    workers = [ctx.Process(target=_process, args=(host, port, request, n, seconds, start_at, out)) for n in per]
    for w in workers:
        w.start()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    for _ in workers:
        lat, st = out.get()
        latencies += lat
        for k, v in st.items():
            statuses[k] = statuses.get(k, 0) + v
    for w in workers:
        w.join()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * (len(latencies) - 1)))] * 1000 if latencies else float("nan")

    return {"rps": len(latencies) / seconds, "p50_ms": pct(50), "p99_ms": pct(99), "statuses": statuses}

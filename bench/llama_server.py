"""llama-server's features through corral's gateway, on SmolLM2:

- ``n4_vs_4_requests``: the time of one chat completion with ``n: 4`` over
  that of the same request sent 4 times one after another (64 tokens each,
  seeded, so that every choice runs to the limit); goal < 1: the choices
  are decoded side by side in the worker's batch engine.
- ``n4_seconds`` / ``four_requests_seconds``: the two sides, with the same
  four seeds (so the same answers and ``n4_tokens`` tokens on each).
"""

from __future__ import annotations

import httpx

from bench.decode import REPEAT
from bench.harness import SMOLLM2, corral_home, median, now
from bench.http import gateway

BODY = {"model": SMOLLM2, "messages": [{"role": "user", "content": "Tell me a story about a lighthouse."}],
        "temperature": 0.8, "seed": 7, "max_tokens": 64}


def _timed(http: httpx.Client, bodies: list[dict]) -> tuple[float, int]:
    """(seconds for the requests one after another, tokens they wrote)."""
    start, tokens = now(), 0
    for body in bodies:
        answer = http.post("/v1/chat/completions", json=body)
        answer.raise_for_status()
        tokens += answer.json()["usage"]["completion_tokens"]
    return now() - start, tokens


def run(quick: bool = False) -> dict[str, float]:
    repeat = 2 if quick else REPEAT
    with corral_home() as settings, gateway(settings) as url, httpx.Client(base_url=url, timeout=600) as http:
        _timed(http, [{**BODY, "max_tokens": 1}])  # load the model
        together, apart = [], []
        # the same four seeds on both sides (n takes the seeds after the given one)
        for _ in range(repeat):  # sides alternate, so that drift hits both
            together.append(_timed(http, [{**BODY, "n": 4}]))
            apart.append(_timed(http, [{**BODY, "seed": BODY["seed"] + i} for i in range(4)]))
    assert together[0][1] == apart[0][1], (together, apart)  # like for like: the same tokens written
    figures = {"n4_seconds": median([t for t, _ in together]), "four_requests_seconds": median([t for t, _ in apart]),
               "n4_tokens": together[0][1]}
    figures["n4_vs_4_requests"] = figures["n4_seconds"] / figures["four_requests_seconds"]
    return figures

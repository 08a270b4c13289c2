"""What the agent APIs cost, on SmolLM2 through the gateway, sides
alternating in one run:

- ``tools_ttft_ms_{0,1,20}``: streamed chat completion, time to the first
  text a client sees, with no tools, 1 tool and 20 tools in the request
  (``tool_choice`` auto: the tools' description is prompt to evaluate, and
  the answer's ``{"response": "`` preamble is held back by the gateway);
  ``tools_ttft_ratio_20`` is 20 tools over none.
- ``logprobs_decode_ratio``: decode rate with ``logprobs`` (top 5) over
  without; goal ≥ 0.95.
"""

from __future__ import annotations

import json

import httpx

from bench.decode import REPEAT
from bench.harness import SMOLLM2, corral_home, median, now
from bench.http import gateway

PROMPT = [{"role": "user", "content": "Say hello to the team in one sentence."}]


def _tool(i: int) -> dict:
    return {"type": "function", "function": {
        "name": f"lookup_{i}", "description": f"Looks up record {i} in the team's database",
        "parameters": {"type": "object", "properties": {"key": {"type": "string"}, "limit": {"type": "integer"}}, "required": ["key"]},
    }}


def _stream(http: httpx.Client, body: dict) -> tuple[float, float, int]:
    """(seconds to the first text, decode tokens per second, tokens)."""
    start = now()
    first = last = None
    pieces = 0
    with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            if (choices[0].get("delta") or {}).get("content"):
                last = now()
                first = first or last
                pieces += 1
    first = first or now()
    rate = (pieces - 1) / (last - first) if last and pieces > 1 and last > first else float("nan")
    return first - start, rate, pieces


def run(quick: bool = False) -> dict[str, float]:
    repeat = 2 if quick else REPEAT
    figures: dict[str, float] = {}
    with corral_home() as settings, gateway(settings) as url, httpx.Client(base_url=url, timeout=600) as http:
        base = {"model": SMOLLM2, "messages": PROMPT, "temperature": 0, "max_tokens": 48}
        _stream(http, base)  # load the model
        sides = {0: [], 1: [], 20: []}
        for _ in range(repeat):
            for n in sides:
                tools = {"tools": [_tool(i) for i in range(n)]} if n else {}
                sides[n].append(_stream(http, {**base, **tools, "max_tokens": 24})[0])
        for n, ttfts in sides.items():
            figures[f"tools_ttft_ms_{n}"] = median(ttfts) * 1000
        figures["tools_ttft_ratio_20"] = figures["tools_ttft_ms_20"] / figures["tools_ttft_ms_0"]
        rates: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(repeat):
            for on in rates:
                extra = {"logprobs": True, "top_logprobs": 5} if on else {}
                rates[on].append(_stream(http, {**base, **extra, "max_tokens": 96})[1])
        figures["decode_tok_s_logprobs_off"] = median(rates[False])
        figures["decode_tok_s_logprobs_on"] = median(rates[True])
        figures["logprobs_decode_ratio"] = figures["decode_tok_s_logprobs_on"] / figures["decode_tok_s_logprobs_off"]
    return figures

"""Log probabilities in OpenAI's two shapes, from the client library's
entries (``token``, ``logprob``, ``bytes``, ``top_logprobs``). Pure."""

from __future__ import annotations

from typing import Any


def chat(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Chat completions: ``choices[].logprobs``."""
    return {"content": entries, "refusal": None}


def _first_of_each(alternatives: list[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for t in alternatives:
        out.setdefault(t["token"], t["logprob"])
    return out


def legacy(entries: list[dict[str, Any]], offset: int = 0) -> dict[str, Any]:
    """Plain completions: parallel lists, alternatives as {token: logprob}."""
    offsets = []
    for e in entries:
        offsets.append(offset)
        offset += len(e["token"])
    return {
        "tokens": [e["token"] for e in entries],
        "token_logprobs": [e["logprob"] for e in entries],
        # several byte tokens can show as the same text: the likeliest (first) stands
        "top_logprobs": [_first_of_each(e["top_logprobs"]) for e in entries],
        "text_offset": offsets,
    }

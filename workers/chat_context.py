"""Fitting a conversation into the context: the oldest turns go first,
never a system prompt and never the message being answered (Ollama drops
old turns the same way, instead of refusing the whole conversation)."""

from __future__ import annotations

import json
from typing import Any


def answer_room(context_length: int, max_tokens: int | None) -> int:
    """Tokens kept free for the answer: what was asked for (at most half the
    context), else a quarter of the context."""
    return min(max_tokens, context_length // 2) if max_tokens else context_length // 4


def oldest_turn(messages: list[dict[str, str]]) -> list[int]:
    """Indices of the oldest droppable turn: the first non-system message
    and the assistant answer right after it; never the last message."""
    last = len(messages) - 1
    for i, m in enumerate(messages[:last]):
        if m["role"] != "system":
            if i + 1 < last and messages[i + 1]["role"] == "assistant" and m["role"] == "user":
                return [i, i + 1]
            return [i]
    return []


def fit_conversation(backend: Any, messages: list[dict[str, Any]], context_length: int,
                     max_tokens: int | None, tools: list[dict[str, Any]] | None = None) -> tuple[list[dict[str, Any]], int | None]:
    """The messages that fit with room to answer, and how many were dropped
    (None when none were). When even the last message alone does not fit,
    it is left to the backend to refuse."""
    room = answer_room(context_length, max_tokens)
    kept, dropped = list(messages), 0
    while True:
        prompt, _ = backend.chat_prompt(kept, tools)
        if backend.count_tokens(prompt) + room <= context_length:
            break
        turn = oldest_turn(kept)
        if not turn:
            break
        for i in reversed(turn):
            del kept[i]
        dropped += len(turn)
    return kept, dropped or None


def template_message(m: Any) -> dict[str, Any]:
    """A wire message as chat templates take it (Hugging Face's form): a
    turn's tool calls as ``{"id", "type", "function": {"name", "arguments"}}``
    with the arguments an object, a tool turn with its call's id and name."""
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [{"id": c.get("id") or "", "type": "function",
                              "function": {"name": c.get("name", ""), "arguments": c.get("arguments", {})}}
                             for c in json.loads(m.tool_calls) if isinstance(c, dict)]
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    if m.name:
        out["name"] = m.name
    return out

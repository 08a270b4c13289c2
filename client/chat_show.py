"""What ``/show info`` and ``/show parameters`` print in the chat."""

from __future__ import annotations

from typing import Any

from corral.client import render
from corral.client.chat_session import ChatSession
from corral.configs.settings import format_size
from corral.supervisor.errors import CorralError


def info_rows(session: ChatSession, loaded: dict[str, Any] | None) -> list[list[Any]]:
    """The model as it runs now (``loaded``: its ``ps`` row) and as its file
    describes it."""
    from corral.client.inspect_report import inspect_model

    context = session.model_kwargs.get("context_length")
    rows: list[list[Any]] = [["Model", session.model]]
    try:
        facts = inspect_model(session.model, context, session.model_kwargs.get("model_type")).facts
    except (CorralError, OSError):  # the file is not readable here: show what runs
        facts = {}
    if facts:
        rows += [
            ["Architecture", facts["architecture"]],
            ["Size", facts["parameters"] or "-"],
            ["Quantization", facts["quantization"] or "-"],
        ]
    if loaded:
        rows += [
            ["Backend", loaded["backend"]],
            ["Context length", loaded["context_length"]],
            ["Memory", f"{format_size(loaded['rss_bytes'])} (estimate {format_size(loaded.get('estimate_bytes'))})"],
            ["Process", f"pid {loaded['pid']}, {loaded['state']}"],
        ]
    else:
        rows.append(["State", "not loaded: the next message loads it"])
    rows.append(["Parameters", parameters_line(session)])
    return rows


def parameters_line(session: ChatSession) -> str:
    rows = session.parameters()
    return ", ".join(f"{name} {value}" for name, value in rows) if rows else "the model's defaults"


def info(session: ChatSession, loaded: dict[str, Any] | None) -> str:
    return render.pairs(info_rows(session, loaded))


def parameters(session: ChatSession) -> str:
    rows = session.parameters()
    if not rows:
        return "No parameters set: the model's defaults apply. /set parameter NAME VALUE sets one."
    return render.pairs([[name, " ".join(map(str, value)) if isinstance(value, list) else value] for name, value in rows])

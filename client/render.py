"""How results look on a terminal: tables, sizes, times, stats lines."""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Sequence

import click

from corral.configs.settings import format_size

# `styled(text, **style)`: the text with click styles when colour is on,
# else as it is; echoed with color=True so click keeps what it added.
Styler = Callable[..., str]


def echo_dim(text: str, styled: Styler, err: bool = False) -> None:
    click.echo(styled(text, dim=True), err=err, color=True)


def echo_error(message: str, styled: Styler) -> None:
    """An error as the CLI shows every error: one line on stderr."""
    click.echo(styled("Error:", fg="red", bold=True) + " " + message, err=True, color=True)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    rows = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["   ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["   ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def pairs(rows: Iterable[Sequence[Any]]) -> str:
    """Name/value rows, aligned, with no header line."""
    return table(["", ""], rows).split("\n", 1)[1]


def until(timestamp: float | None, keep_alive: float | None = None) -> str:
    """When a model will unload, as a person reads it."""
    if timestamp is None:
        return "never" if keep_alive is None else "after this request"
    left = timestamp - time.time()
    if left < 1:
        return "now"
    if left < 90:
        return f"in {left:.0f} seconds"
    if left < 90 * 60:
        return f"in {left / 60:.0f} minutes"
    return f"in {left / 3600:.1f} hours"


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


def stats_line(done: dict[str, Any]) -> str:
    usage, timings = done.get("usage", {}), done.get("timings", {})
    parts = [
        f"prompt tokens: {usage.get('prompt_tokens', 0)}",
        f"completion tokens: {usage.get('completion_tokens', 0)}",
        f"tokens/s: {timings.get('tokens_per_s', 0):.1f}",
        f"time to first token: {timings.get('ttft_ms', 0):.0f} ms",
        f"total: {timings.get('total_ms', 0):.0f} ms",
    ]
    if done.get("load_ms"):
        parts.append(f"load: {done['load_ms']:.0f} ms")
    if done.get("stopped") not in (None, "stop"):
        parts.append(f"stopped: {done['stopped']}")
    return ", ".join(parts)


def ps_table(models: list[dict]) -> str:
    return table(
        ["MODEL", "BACKEND", "PID", "STATE", "MEMORY", "CONTEXT", "UNTIL"],
        [
            [
                m["model"],
                m["backend"],
                m["pid"],
                m["state"],
                format_size(m["rss_bytes"]),
                m["context_length"],
                until(m["expires_at"], m.get("keep_alive_s")) if m["state"] in ("ready",) else m["state"],
            ]
            for m in models
        ],
    )


def status_rows(facts: dict[str, Any]) -> list[list[Any]]:
    """What `corral status` shows, from the supervisor's facts."""
    budget = format_size(facts["memory_budget_bytes"]) + (" (available memory)" if facts["memory_budget_auto"] else "")
    idle = facts["idle_timeout_s"]
    return [
        ["Supervisor pid", facts["pid"]],
        ["Uptime", duration(facts["uptime_s"])],
        ["Socket", facts["socket"]],
        ["Loaded models", f"{facts['loaded_models']} (at most {facts['max_loaded_models']})"],
        ["Memory budget", budget],
        ["Idle timeout", "never" if idle is None else duration(idle)],
        ["Requests served", facts["requests_total"]],
        ["HTTP", http_line(facts.get("http"))],
    ]


def http_line(http: dict[str, Any] | None) -> str:
    """The gateway's address and state: `http://127.0.0.1:12434 (running)`."""
    if http is None:
        return "off (CORRAL_HTTP=off)"
    line = f"http://{http['address']} ({http['state']})"
    return line + f": {http['error']}" if http.get("error") else line

"""The interactive chat of ``corral run MODEL`` on a terminal."""

from __future__ import annotations

from typing import Any, Callable

import click

from corral.client.api import Client, Response
from corral.client.render import stats_line
from corral.supervisor.errors import BadRequest, Busy, GenerationFailed, WorkerCrashed

# Errors after which the conversation can simply go on.
RECOVERABLE = (BadRequest, Busy, GenerationFailed, WorkerCrashed)

HELP = """Available commands:
  /clear          Forget the conversation so far
  /bye            Leave (Ctrl-D does too)
  /?, /help       Show this help
  \"\"\"             Begin or end a multi-line message

Ctrl-C stops the answer being written; it does not leave the chat."""

PROMPT = "> "
CONTINUATION = "... "


def read_message(ask: Callable[[str], str] = input) -> str:
    """One user message; a line starting with \"\"\" opens a multi-line one
    that the next line ending with \"\"\" closes."""
    line = ask(PROMPT)
    if not line.lstrip().startswith('"""'):
        return line
    text = line.lstrip()[3:]
    if text.rstrip().endswith('"""'):
        return text.rstrip()[:-3]
    lines = [text] if text else []
    while True:
        line = ask(CONTINUATION)
        if line.rstrip().endswith('"""'):
            lines.append(line.rstrip()[:-3])
            return "\n".join(lines).strip("\n")
        lines.append(line)


def stream_answer(response: Response, styled: Callable[..., str]) -> str:
    """Print an answer as it comes. Ctrl-C cancels the generation and
    returns what was written so far."""
    try:
        for piece in response:
            click.echo(piece, nl=False)
    except KeyboardInterrupt:
        response.cancel()
        # The stream ends with the supervisor's "cancelled" done; read it so
        # the next turn starts on a clean connection.
        for _ in response:
            pass
        click.echo(styled("\n[stopped]", dim=True), nl=False)
    click.echo()
    return "".join(response.chunks)


def chat_loop(
    client: Client,
    model: str,
    *,
    system: str | None,
    sampling: dict[str, Any],
    verbose: bool,
    styled: Callable[..., str],
) -> None:
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    start = [{"role": "system", "content": system}] if system else []
    messages = list(start)
    click.echo(styled("Type /? for help, /bye to leave.", dim=True), err=True)
    while True:
        try:
            text = read_message()
        except EOFError:
            click.echo()
            return
        except KeyboardInterrupt:
            click.echo(styled("\nUse Ctrl-D or /bye to leave.", dim=True))
            continue
        command = text.strip()
        if not command:
            continue
        if command in ("/bye", "/exit", "/quit"):
            return
        if command in ("/?", "/help"):
            click.echo(HELP)
            continue
        if command == "/clear":
            messages = list(start)
            click.echo("Cleared the conversation.")
            continue
        if command.startswith("/") and " " not in command:
            click.echo(f"Unknown command {command!r}. Type /? for help.")
            continue
        messages.append({"role": "user", "content": text})
        try:
            response = client.chat(model, messages, **sampling)
        except KeyboardInterrupt:  # before the request was on its way
            messages.pop()
            click.echo(styled("\n[stopped]", dim=True))
            continue
        try:
            answer = stream_answer(response, styled)
        except RECOVERABLE as exc:
            # The chat goes on: the next message respawns a crashed worker.
            click.echo(styled(f"\nError: {exc.message}", fg="red"), err=True)
            messages.pop()
            continue
        messages.append({"role": "assistant", "content": answer})
        if verbose and response.done:
            click.echo(styled(stats_line(response.done), dim=True), err=True)

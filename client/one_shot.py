"""``corral run MODEL PROMPT``: one answer, streamed to stdout.

How it ends is part of the contract: a finished answer exits 0; one cut at
its token limit ends with a dim ``[cut at N tokens]`` on stderr (stdout
keeps only the answer); a cancelled one (Ctrl-C, ``corral unload``,
``corral stop``) says so on stderr and exits 130; a reader that closes the
pipe early (``| head``) ends the answer quietly with exit 0.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

import click

from corral.client.api import Client
from corral.client.render import echo_dim
from corral.client.streaming import CtrlCCancels, cut_marker, stream
from corral.supervisor.errors import Cancelled


def prompt_text(prompt: str, stdin: str | None) -> str:
    """A PROMPT and piped stdin together, as Docker Model Runner joins them."""
    if stdin is None or not stdin.strip():
        return prompt
    return f"{prompt}\n\n{stdin}" if prompt else stdin


def answer_once(
    client: Client,
    model: str,
    messages: list[dict[str, str]],
    kwargs: dict[str, Any],
    styled: Callable[..., str],
) -> dict[str, Any] | None:
    """Stream one answer to stdout; returns its done event (None when the
    reader closed the pipe)."""
    with CtrlCCancels(raise_after=1) as ctrl_c:
        response = ctrl_c.watch(client.chat(model, messages, **kwargs))
        try:
            text = stream(response, _write, ctrl_c)
        except BrokenPipeError:
            _stop_reading(response)
            return None
    if text and not text.endswith("\n"):
        click.echo()
    if ctrl_c.pressed:
        raise Cancelled("the answer was stopped (Ctrl-C)")
    if response.stopped == "cancelled":
        raise Cancelled("the answer was cancelled before it ended: its model was unloaded or corral was stopped")
    marker = cut_marker(response)
    if marker:
        echo_dim(marker, styled, err=True)
    return response.done


def _write(piece: str) -> None:
    sys.stdout.write(piece)
    sys.stdout.flush()


def _stop_reading(response: Any) -> None:
    """Nobody reads the answer any more: cancel it, wait for the end of the
    stream (so the cancel is sent before the socket closes), and point
    stdout at /dev/null so that the interpreter's last flush stays quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    response.cancel()
    for _ in response:
        pass

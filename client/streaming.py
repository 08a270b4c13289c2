"""Printing an answer as it streams, with Ctrl-C stopping the answer.

Ctrl-C must stop the answer being written, cleanly, however often it is
pressed: a KeyboardInterrupt raised at an arbitrary point could lose the
reply that ends the stream, or escape while the chat waits for it. So while
an answer streams, SIGINT does not raise: its handler sends the cancel
request itself (Python runs signal handlers between bytecodes, on the
thread that owns the socket, so this is a plain send), and the stream then
ends as usual with ``stopped == "cancelled"``.
"""

from __future__ import annotations

import signal
from typing import Any, Callable

from corral.client.api import Response


class CtrlCCancels:
    """Within ``with``: Ctrl-C cancels the watched response.

    ``raise_after``: after that many presses, the next one raises
    KeyboardInterrupt (a one-shot command lets a second Ctrl-C leave at
    once); None never raises (the chat)."""

    def __init__(self, raise_after: int | None = None):
        self.raise_after = raise_after
        self.presses = 0
        self.response: Response | None = None
        self._previous: Any = None

    def __enter__(self) -> "CtrlCCancels":
        self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc: Any) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def watch(self, response: Response) -> Response:
        """Cancel ``response`` on Ctrl-C (at once, if it was pressed before
        the request was on its way)."""
        self.response = response
        if self.presses:
            response.cancel()
        return response

    @property
    def pressed(self) -> bool:
        return self.presses > 0

    def _on_sigint(self, _signum: int, _frame: Any) -> None:
        self.presses += 1
        if self.raise_after is not None and self.presses > self.raise_after:
            raise KeyboardInterrupt
        if self.response is not None and self.presses == 1:
            self.response.cancel()


def stream(response: Response, write: Callable[[str], Any], ctrl_c: CtrlCCancels | None = None) -> str:
    """Write each piece as it comes; returns the text written. After
    Ctrl-C nothing more is written: what the supervisor sent before the
    cancel reached it is read and dropped."""
    written = []
    for piece in response:
        if ctrl_c is None or not ctrl_c.pressed:
            write(piece)
            written.append(piece)
    return "".join(written)


def cut_marker(response: Response) -> str | None:
    """``[cut at N tokens]`` for an answer that ended at its token limit."""
    if response.stopped != "length":
        return None
    n = response.usage.get("completion_tokens", 0)
    return f"[cut at {n} token{'' if n == 1 else 's'}]"

"""How a pull or push reports what it does, one layer at a time.

- :class:`Progress`: says nothing (``--quiet``), and the base of the others;
- :class:`TerminalProgress`: one bar per layer, with bytes, rate and ETA (tqdm);
- :class:`LineProgress`: one line per finished layer (not a terminal);
- :class:`EventProgress`: Ollama-style ``{"status", "digest", "completed",
  "total"}`` events to a callback, for the HTTP gateway's streamed pulls.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, TextIO

from corral.configs.settings import format_size


def short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


class Progress:
    def status(self, text: str) -> None:
        """A step that is not a layer: "pulling manifest", "verifying"…"""

    def layer_started(self, digest: str, total: int, done: int = 0) -> None:
        """A layer's transfer begins (``done`` bytes were already there)."""

    def advanced(self, digest: str, nbytes: int) -> None:
        """``nbytes`` more of the layer arrived."""

    def layer_done(self, digest: str, total: int, how: str) -> None:
        """The layer is complete: ``how`` is "downloaded", "present" or "uploaded"."""

    def close(self) -> None:
        pass


class LineProgress(Progress):
    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.started: dict[str, float] = {}
        self.moved: dict[str, int] = {}

    def status(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def layer_started(self, digest: str, total: int, done: int = 0) -> None:
        self.started[digest] = time.monotonic()
        self.moved[digest] = 0

    def advanced(self, digest: str, nbytes: int) -> None:
        self.moved[digest] = self.moved.get(digest, 0) + nbytes

    def layer_done(self, digest: str, total: int, how: str) -> None:
        seconds = time.monotonic() - self.started.pop(digest, time.monotonic())
        moved = self.moved.pop(digest, 0)
        detail = f" ({format_size(moved)} in {seconds:.1f} s)" if moved else ""
        print(f"{short(digest)}: {how}, {format_size(total)}{detail}", file=self.stream, flush=True)


class TerminalProgress(Progress):
    def __init__(self, stream: TextIO | None = None, verb: str = "Pulling"):
        self.stream = stream or sys.stderr
        self.verb = verb
        self.bars: dict[str, Any] = {}

    def status(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def layer_started(self, digest: str, total: int, done: int = 0) -> None:
        from tqdm import tqdm

        self.bars[digest] = tqdm(
            total=total, initial=done, unit="B", unit_scale=True, unit_divisor=1024,
            desc=short(digest), file=self.stream, leave=True, dynamic_ncols=True, mininterval=0.1,
        )

    def advanced(self, digest: str, nbytes: int) -> None:
        bar = self.bars.get(digest)
        if bar is not None:
            bar.update(nbytes)

    def layer_done(self, digest: str, total: int, how: str) -> None:
        bar = self.bars.pop(digest, None)
        if bar is None:
            print(f"{short(digest)}: {how}, {format_size(total)}", file=self.stream, flush=True)
            return
        bar.set_postfix_str(how, refresh=False)
        bar.close()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


class EventProgress(Progress):
    """Events as Ollama's ``/api/pull`` streams them."""

    def __init__(self, emit: Callable[[dict[str, Any]], None]):
        self.emit = emit
        self.totals: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.last: dict[str, float] = {}

    def status(self, text: str) -> None:
        self.emit({"status": text})

    def layer_started(self, digest: str, total: int, done: int = 0) -> None:
        self.totals[digest], self.done[digest] = total, done
        self.emit({"status": f"pulling {short(digest)}", "digest": digest, "total": total, "completed": done})

    def advanced(self, digest: str, nbytes: int) -> None:
        self.done[digest] = self.done.get(digest, 0) + nbytes
        now = time.monotonic()
        if now - self.last.get(digest, 0.0) >= 0.1:  # ten events a second are plenty
            self.last[digest] = now
            self.emit({"status": f"pulling {short(digest)}", "digest": digest,
                       "total": self.totals.get(digest, 0), "completed": self.done[digest]})

    def layer_done(self, digest: str, total: int, how: str) -> None:
        self.emit({"status": f"pulling {short(digest)}", "digest": digest, "total": total, "completed": total})


def for_terminal(quiet: bool, stream: TextIO | None = None, verb: str = "Pulling") -> Progress:
    """Bars on a terminal, lines otherwise, nothing with ``--quiet``."""
    stream = stream or sys.stderr
    if quiet:
        return Progress()
    return TerminalProgress(stream, verb) if stream.isatty() else LineProgress(stream)

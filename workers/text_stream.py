"""Turning a stream of token bytes into text pieces: UTF-8 characters are
never split, and text that may be the start of a stop string is held back
until it is clear whether it is one."""

from __future__ import annotations

import codecs
from typing import Callable, Iterator

from corral.workers.backend import Usage


class TextStream:
    def __init__(self, stop: list[str] | tuple[str, ...] = ()):
        self.stop = [s for s in stop if s]
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""
        self.stopped = False  # a stop string was found; nothing more comes
        self.matched: str | None = None  # which one

    def push(self, data: bytes) -> str:
        """Add a token's bytes; return the text that is safe to show now."""
        if self.stopped:
            return ""
        text = self._held + self._decoder.decode(data)
        for s in self.stop:
            at = text.find(s)
            if at != -1:
                self.stopped = True
                self.matched = s
                self._held = ""
                return text[:at]
        keep = self._longest_stop_prefix_suffix(text)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """What is left at the end of generation."""
        if self.stopped:
            return ""
        text, self._held = self._held + self._decoder.decode(b"", final=True), ""
        return text

    def _longest_stop_prefix_suffix(self, text: str) -> int:
        longest = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text)), longest, -1):
                if text.endswith(s[:n]):
                    longest = n
                    break
        return longest


class Generation:
    """One sequence's token-by-token bookkeeping, shared by every backend:
    count each token, stop at the end-of-text token, a stop string or
    ``limit`` tokens, and give back the text that is safe to show."""

    def __init__(self, *, is_end: Callable[[int], bool], token_bytes: Callable[[int], bytes], stop: list[str], limit: int, usage: Usage):
        self.is_end, self.token_bytes, self.limit, self.usage = is_end, token_bytes, limit, usage
        self.text = TextStream(stop)
        usage.finish_reason = "length"

    def feed(self, token: int) -> tuple[str, bool]:
        """The text this token adds, and whether the sequence has ended."""
        usage = self.usage
        if self.is_end(token):
            usage.finish_reason = "stop"
            return self.text.flush(), True
        usage.completion_tokens += 1
        piece = self.text.push(self.token_bytes(token))
        if self.text.stopped:
            usage.finish_reason = "stop"
            usage.stop_sequence = self.text.matched
            return piece, True
        if usage.completion_tokens >= self.limit:
            usage.finish_reason = "length"
            return piece + self.text.flush(), True
        return piece, False

    def end(self) -> str:
        """The engine ended the text itself: what is left to show."""
        self.usage.finish_reason = "stop"
        return self.text.flush()


def decode_tokens(
    tokens: Iterator[int],
    *,
    is_end: Callable[[int], bool],
    token_bytes: Callable[[int], bytes],
    stop: list[str],
    limit: int,
    usage: Usage,
) -> Iterator[str]:
    """The generation loop of a backend that yields tokens one by one."""
    generation = Generation(is_end=is_end, token_bytes=token_bytes, stop=stop, limit=limit, usage=usage)
    for token in tokens:
        piece, done = generation.feed(token)
        if piece:
            yield piece
        if done:
            return
    tail = generation.end()
    if tail:
        yield tail


def token_limit(max_tokens: int | None, prompt_tokens: int, context_length: int) -> int:
    """How many tokens may be generated: what was asked, within the context."""
    room = context_length - prompt_tokens
    if room <= 0:
        raise ValueError(f"the prompt has {prompt_tokens} tokens but the context holds only {context_length}; shorten it")
    return min(max_tokens or room, room)

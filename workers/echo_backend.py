"""The echo backend: streams fixed tokens without any model, as fast as the
worker can send them. It measures corral's own overhead (routing, framing,
streaming) in benchmarks and tests, and is available only when
``CORRAL_ENABLE_ECHO_BACKEND=1`` is set for the supervisor."""

from __future__ import annotations

from typing import Any, Iterator

from corral.workers.backend import Backend, Sampling, Usage
from corral.workers.text_stream import TextStream

# Tokens per request when max_tokens is not given.
DEFAULT_TOKENS = 16
# A prompt (or last chat message) starting with this is said back verbatim.
ECHO_PREFIX = "echo:"


class EchoBackend(Backend):
    name = "echo"
    # Like a batching engine, it serves several requests at once (stepping
    # their streams in turn), so routing is measured with work in flight.
    parallel = 8

    def load(self) -> dict[str, Any]:
        return {"context_length": self.spec["context_length"], "threads": 0, "architecture": "echo"}

    def chat_prompt(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> tuple[str, list[str]]:
        return messages[-1]["content"], []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def stream(self, prompt: str, sampling: Sampling, usage: Usage) -> Iterator[str]:
        usage.prompt_tokens = self.count_tokens(prompt)
        if prompt.startswith(ECHO_PREFIX):
            # Say back exactly what follows the prefix, a word at a time: what
            # a model might say, for tests of how answers are shown.
            words = prompt[len(ECHO_PREFIX):].split(" ")
            pieces = [w + " " for w in words[:-1]] + [words[-1]]
            usage.finish_reason = "stop"
            text = TextStream(sampling.stop)  # stop strings end it as they end a model's answer
            for i, piece in enumerate(pieces[: sampling.max_tokens or None]):
                usage.completion_tokens = i + 1
                shown = text.push(piece.encode())
                if text.stopped:
                    usage.stop_sequence = text.matched
                    if shown:
                        yield shown
                    return
                if shown:
                    yield shown
            rest = text.flush()
            if rest:
                yield rest
            if sampling.max_tokens and len(pieces) > sampling.max_tokens:
                usage.finish_reason = "length"
            return
        n = sampling.max_tokens or DEFAULT_TOKENS
        usage.finish_reason = "length"
        for i in range(n):
            usage.completion_tokens = i + 1
            yield "tok "

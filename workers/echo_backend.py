"""The echo backend: streams fixed tokens without any model, as fast as the
worker can send them. It measures corral's own overhead (routing, framing,
streaming) in benchmarks and tests, and is available only when
``CORRAL_ENABLE_ECHO_BACKEND=1`` is set for the supervisor."""

from __future__ import annotations

from typing import Any, Iterator

from corral.workers.backend import Backend, Sampling, Usage

# Tokens per request when max_tokens is not given.
DEFAULT_TOKENS = 16


class EchoBackend(Backend):
    name = "echo"
    # Like a batching engine, it serves several requests at once (stepping
    # their streams in turn), so routing is measured with work in flight.
    parallel = 8

    def load(self) -> dict[str, Any]:
        return {"context_length": self.spec["context_length"], "threads": 0, "architecture": "echo"}

    def chat_prompt(self, messages: list[dict[str, str]]) -> tuple[str, list[str]]:
        return messages[-1]["content"], []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def stream(self, prompt: str, sampling: Sampling, usage: Usage) -> Iterator[str]:
        usage.prompt_tokens = self.count_tokens(prompt)
        n = sampling.max_tokens or DEFAULT_TOKENS
        usage.finish_reason = "length"
        for i in range(n):
            usage.completion_tokens = i + 1
            yield "tok "

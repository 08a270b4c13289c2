"""The contract every backend implements, and nothing more.

A backend is an in-process engine: it loads one model and turns a prompt
into a stream of text pieces. It knows nothing about sockets, heartbeats,
signals or cancellation; :mod:`corral.workers.runtime` wraps any backend in
those, once. A test or a benchmark can drive a backend directly, in-process.
Adding a backend means one new module here and one entry in ``BACKENDS``.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator


@dataclass
class Sampling:
    """Per-request options; changing them never reloads a model."""

    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    seed: int | None = None
    max_tokens: int | None = None
    repeat_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)

    @classmethod
    def from_options(cls, options: dict[str, Any], extra_stop: tuple[str, ...] | list[str] = ()) -> "Sampling":
        known = {k: v for k, v in options.items() if k in cls.__dataclass_fields__}
        sampling = cls(**known)
        sampling.stop = list(dict.fromkeys([*sampling.stop, *extra_stop]))
        return sampling


@dataclass
class Usage:
    """Filled in by :meth:`Backend.stream` while it runs."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    # "stop" (end of text or a stop string), "length" (max_tokens or the
    # context is full), or "cancelled" (set by the runtime)
    finish_reason: str = "stop"


class Backend(ABC):
    #: the catalog's `backend` value
    name: ClassVar[str]

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec

    @abstractmethod
    def load(self) -> dict[str, Any]:
        """Load the model; return facts for ``ps`` (e.g. ``context_length``).
        Raise any exception to fail the load; its message reaches the user."""

    @abstractmethod
    def chat_prompt(self, messages: list[dict[str, str]]) -> tuple[str, list[str]]:
        """The prompt text for a conversation, with the stop strings its
        template implies."""

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        ...

    @abstractmethod
    def stream(self, prompt: str, sampling: Sampling, usage: Usage) -> Iterator[str]:
        """Yield text pieces as they are decoded, filling in ``usage``. Closing
        the generator early must stop the work."""

    def close(self) -> None:
        """Free the model; called once, before the worker exits."""


BACKENDS = {
    "llama.cpp": "corral.workers.llama_cpp_backend:LlamaCppBackend",
    "ctransformers": "corral.workers.ctransformers_backend:CTransformersBackend",
    # no model: for benchmarks and tests, enabled explicitly (see echo_backend)
    "echo": "corral.workers.echo_backend:EchoBackend",
}


def backend_class(name: str) -> type[Backend]:
    """Import a backend only when a worker needs it: a broken engine then
    fails only its own workers."""
    try:
        module, _, attr = BACKENDS[name].partition(":")
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}") from None
    return getattr(importlib.import_module(module), attr)

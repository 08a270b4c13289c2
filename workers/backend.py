"""The contract every backend implements, and nothing more.

A backend is an in-process engine: it loads one model and turns prompts
into text, a step at a time. It knows nothing about sockets, heartbeats,
signals or cancellation requests; :mod:`corral.workers.runtime` wraps any
backend in those, once. A test or a benchmark can drive a backend directly,
in-process.

Two ways to implement it:
- the small one: :meth:`Backend.stream`, a generator of text pieces for one
  prompt; the base class runs up to ``parallel`` such generators side by
  side (ctransformers and echo do this, one sequence at a time);
- the batched one: :meth:`start`, :meth:`step` and :meth:`cancel` over many
  sequences decoded together (llama.cpp: continuous batching).

Adding a backend means one new module here and one entry in ``BACKENDS``.
"""

from __future__ import annotations

import dataclasses
import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Mapping

# What an unset sampling field means when a backend has nothing better:
# llama.cpp's own defaults, with a repeat penalty of 1.1 over the last 64
# tokens, as Ollama does (small models loop without one).
SAMPLING_DEFAULTS: dict[str, Any] = {
    "temperature": 0.8,
    "top_k": 40,
    "top_p": 0.95,
    "min_p": 0.05,
    "repeat_penalty": 1.1,
    "repeat_last_n": 64,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
}


@dataclass
class Sampling:
    """Per-request options; changing them never reloads a model. None means
    "the model's default": each backend fills those in (:meth:`filled`)."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    max_tokens: int | None = None
    repeat_penalty: float | None = None
    repeat_last_n: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    grammar: str | None = None  # GBNF
    json_schema: str | None = None  # a JSON schema, as JSON text
    stop: list[str] = field(default_factory=list)
    logprobs: int | None = None  # alternatives per token; None: no log probabilities

    @classmethod
    def from_options(cls, options: Any, extra_stop: tuple[str, ...] | list[str] = ()) -> "Sampling":
        """From a protocol ``Options`` struct (or a plain mapping)."""
        if not isinstance(options, Mapping):
            options = {f: getattr(options, f) for f in options.__struct_fields__}
        known = {k: v for k, v in options.items() if k in cls.__dataclass_fields__ and v is not None}
        sampling = cls(**known)
        sampling.stop = list(dict.fromkeys([*sampling.stop, *extra_stop]))
        return sampling

    def filled(self, defaults: Mapping[str, Any]) -> "Sampling":
        """A copy with every unset field that ``defaults`` names filled in."""
        return dataclasses.replace(self, **{k: v for k, v in defaults.items() if getattr(self, k, 0) is None})


@dataclass
class Usage:
    """Filled in while a sequence runs."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    # "stop" (end of text or a stop string), "length" (max_tokens or the
    # context is full), or "cancelled" (set by the runtime)
    finish_reason: str = "stop"
    stop_sequence: str | None = None  # the stop string that ended it, if one did
    # (token bytes, logprob, [(bytes, logprob)...]) not yet sent with a text
    # event; None when the request asked for no log probabilities
    logprobs: list | None = None
    # An exception that ended this sequence alone (the others go on)
    error: BaseException | None = None


class Backend(ABC):
    #: the catalog's `backend` value
    name: ClassVar[str]
    #: sequences decoded together; the runtime never starts more at once
    parallel: int = 1
    #: what it can do beyond generating text (the supervisor checks the catalog's copy)
    embeddings: ClassVar[bool] = False
    grammar: ClassVar[bool] = False

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        self._streams: dict[int, tuple[Iterator[str], Usage]] = {}

    @abstractmethod
    def load(self) -> dict[str, Any]:
        """Load the model; return facts for ``ps`` (``context_length`` at
        least). Raise any exception to fail the load; its message reaches
        the user."""

    @abstractmethod
    def chat_prompt(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> tuple[str, list[str]]:
        """The prompt text for a conversation, with the stop strings its
        template implies; ``tools`` for a template that renders them."""

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        ...

    # -- token ids (TOKENIZER_BACKENDS only; the supervisor refuses the rest) --

    def tokenize(self, text: str, special: bool = False) -> list[int]:
        """Token ids of ``text``; ``special``: with the BOS token."""
        raise ValueError(f"the {self.name} backend gives no token ids")

    def detokenize(self, tokens: list[int]) -> str:
        raise ValueError(f"the {self.name} backend takes no token ids")

    def token_bytes(self, token: int) -> bytes:
        raise ValueError(f"the {self.name} backend gives no token ids")

    def stream(self, prompt: str, sampling: Sampling, usage: Usage) -> Iterator[str]:
        """Yield text pieces for one prompt as they are decoded, filling in
        ``usage``. Closing the generator early must stop the work. Raise
        ValueError with a one-line message for a prompt that cannot fit."""
        raise NotImplementedError(f"the {self.name} backend implements neither stream() nor start()/step()")

    # -- many sequences, a step at a time ---------------------------------
    # The defaults run stream() generators side by side; a batching engine
    # overrides all four.

    def start(self, rid: int, prompt: str, sampling: Sampling, usage: Usage, tokens: list[int] | None = None) -> None:
        """Admit a sequence; it makes progress from the next :meth:`step`.
        ``tokens``: the prompt as token ids (TOKENIZER_BACKENDS). Raise
        ValueError with a one-line message for a prompt that cannot fit."""
        if tokens:
            raise ValueError(f"the {self.name} backend takes prompts as text, not token ids")
        self._streams[rid] = (self.stream(prompt, sampling.filled(SAMPLING_DEFAULTS), usage), usage)

    def step(self) -> list[tuple[int, str, bool]]:
        """Advance every sequence by at most one token. Returns ``(rid, text,
        finished)`` for each that produced text or ended; a finished one has
        its Usage complete (or ``usage.error`` set) and its resources freed."""
        events = []
        for rid, (pieces, usage) in list(self._streams.items()):
            try:
                events.append((rid, next(pieces), False))
            except StopIteration:
                del self._streams[rid]
                events.append((rid, "", True))
            except Exception as exc:  # this sequence's failure, not the others'
                del self._streams[rid]
                usage.error = exc
                events.append((rid, "", True))
        return events

    def cancel(self, rid: int) -> None:
        """End a sequence at once and free what it holds."""
        entry = self._streams.pop(rid, None)
        if entry is not None:
            entry[0].close()

    def active(self) -> int:
        """Sequences started and not yet finished."""
        return len(self._streams)

    def set_threads(self, threads: int) -> None:
        """Run on ``threads`` engine threads from the next step on (the
        supervisor shares the cores among busy workers); a backend that
        cannot change them ignores it."""

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """Normalised embeddings of ``texts`` and the tokens they took."""
        raise ValueError(f"the {self.name} backend has no embeddings")

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

"""The Python client library.

    from corral.client import Client

    with Client() as client:
        for piece in client.generate("ai/smollm2", "Hi", temperature=0):
            print(piece, end="", flush=True)
        answer = client.chat("ai/smollm2", [{"role": "user", "content": "2+2?"}])
        print(answer.text(), answer.usage)

A response is lazy: iterate it to stream, or call ``.text()`` to drain it;
its stats are there once it has ended.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

from corral.client.connection import Connection
from corral.client.launch import ensure_supervisor, supervisor_pid
from corral.client.requests import (
    BatchResult,
    BatchRun,
    ResponseState,
    call_result,
    chat_payload,
    generate_payload,
    model_fields,
    model_ref,
    stream_request,
    tokenizer_answer,
)
from corral.configs.settings import Settings, load_settings
from corral.supervisor import protocol
from corral.supervisor.errors import CorralError, SupervisorUnreachable


class Response(ResponseState):
    """One streamed answer. Iterate for text pieces; ``text()`` drains."""

    def __init__(self, conn: Connection, rid: int, model: str, on_log: Callable[[str], None] | None = None):
        super().__init__(rid, model, on_log)
        self._conn = conn

    def __iter__(self) -> Iterator[str]:
        yield from list(self.chunks)
        while self.done is None:
            msg = self._conn.next_event(self.id)
            if not isinstance(msg, (protocol.Token, protocol.Log, protocol.Embedding)):
                self._conn.forget(self.id)
            piece = self.feed(msg)
            if piece is not None:
                yield piece

    def text(self) -> str:
        for _ in self:
            pass
        return self.text_so_far()

    def cancel(self) -> None:
        """Stop the generation; the stream then ends with ``stopped == "cancelled"``."""
        if self.done is None:
            self._conn.send_cancel(self.id)


class Client:
    def __init__(self, settings: Settings | None = None, *, autostart: bool = True, preload: dict | None = None):
        """``preload``: model fields (as for :meth:`load`) of a model that a
        supervisor started now should begin loading at once."""
        self.settings = settings or load_settings()
        if autostart:
            ensure_supervisor(self.settings, preload=model_fields(**preload) if preload else None)
        elif supervisor_pid(self.settings) is None:
            raise SupervisorUnreachable(
                f"no corral supervisor is running for {self.settings.home}; start one with `corral serve`"
            )
        self.conn = Connection(self.settings)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    # -- model requests --------------------------------------------------

    def generate(self, model: str, prompt: str, *, tokens: list[int] | None = None, **kwargs: Any) -> Response:
        """Stream an answer to a raw prompt. Keyword arguments: sampling
        options (temperature, top_p, top_k, min_p, seed, max_tokens, stop,
        repeat_penalty, repeat_last_n, presence_penalty, frequency_penalty,
        grammar, json_schema), load-time settings (keep_alive,
        ignore_memory_check, model_type, context_length), ``debug`` (the
        supervisor's log lines about it, in ``response.logs``) and
        ``on_log`` (a function called with each of those lines). ``tokens``:
        the prompt as the model's token ids (llama.cpp models; ``prompt``
        is then "")."""
        return self._stream(protocol.GENERATE, model, generate_payload(prompt, tokens), kwargs)

    def chat(self, model: str, messages: list[dict[str, str]], *, truncate: bool = False,
             tools: list[dict[str, Any]] | None = None, assistant_prefix: str | None = None, **kwargs: Any) -> Response:
        """Stream the next turn of a conversation, with the model's own chat
        template. ``truncate``: drop the oldest turns that do not fit the
        context (``response.dropped_messages`` says how many). ``tools``:
        tool definitions (OpenAI's form) for a template that renders them
        (the answer is in the model's own call syntax). ``assistant_prefix``:
        text the answer is made to start with. Other keyword arguments as
        for :meth:`generate`."""
        return self._stream(protocol.CHAT, model, chat_payload(messages, truncate, tools, assistant_prefix), kwargs)

    def tokenize(self, model: str, text: str, *, special: bool = False, pieces: bool = False, **kwargs: Any) -> dict[str, Any]:
        """The model's token ids for ``text`` (llama.cpp models): ``{"tokens":
        [...]}``, with each token's bytes under ``"pieces"`` when asked.
        ``special``: with the BOS token."""
        return self._tokenizer(model, {"text": text, "special": special, "pieces": pieces}, kwargs)

    def detokenize(self, model: str, tokens: list[int], **kwargs: Any) -> str:
        """The text of token ids (llama.cpp models)."""
        return self._tokenizer(model, {"tokens": list(tokens)}, kwargs)["text"]

    def render_chat(self, model: str, messages: list[dict[str, Any]], **kwargs: Any) -> str:
        """The prompt the model's chat template makes of ``messages``."""
        return self._tokenizer(model, {"messages": list(messages)}, kwargs)["text"]

    def _tokenizer(self, model: str, fields: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
        response = Response(self.conn, self.conn.send(protocol.TOKENIZE, **fields, **model_fields(model, **kwargs)), model)
        response.text()
        return tokenizer_answer(response.done)

    def embed(self, model: str, inputs: list[str], **kwargs: Any) -> dict[str, Any]:
        """Embeddings of ``inputs`` (llama.cpp models): ``{"embeddings":
        [[float, ...], ...], "usage": {"prompt_tokens": n}}``."""
        rid = self.conn.send(protocol.EMBED, input=list(inputs), **model_fields(model, **kwargs))
        response = Response(self.conn, rid, model)
        response.text()
        return response.embeddings()

    def load(self, model: str, *, on_log: Callable[[str], None] | None = None, **kwargs: Any) -> dict:
        """Load a model and return once it is ready (``keep_alive``,
        ``ignore_memory_check``, ``model_type``, ``context_length``,
        ``debug``, ``on_log`` as for generate)."""
        return self._call(protocol.LOAD, on_log=on_log, **model_fields(model, **kwargs))

    def _stream(self, op: str, model: str, payload: dict[str, Any], kwargs: dict[str, Any]) -> Response:
        on_log = kwargs.pop("on_log", None)
        fields = stream_request(model, payload, kwargs)
        return Response(self.conn, self.conn.send(op, **fields), fields["model"], on_log)

    def batch(
        self,
        model: str,
        prompts: Iterable[str | dict[str, Any]],
        *,
        concurrency: int = 4,
        **kwargs: Any,
    ) -> Iterator[BatchResult]:
        """Run many prompts; yield each result as it finishes (not in order).

        A prompt is a string or a map with ``prompt`` or ``messages``, an
        optional ``id`` and per-prompt sampling options. Up to
        ``concurrency`` requests wait at the supervisor at once, so the
        worker never idles between prompts. A prompt whose worker crashed is
        tried once more; then its result carries the error and the batch
        goes on.
        """
        run = BatchRun(prompts, concurrency)
        try:
            while not run.finished:
                for item in run.to_start():
                    try:
                        response = self._stream(item.op, model, item.payload, {**kwargs, **item.options})
                    except CorralError as exc:
                        yield run.failed_to_start(item, exc)
                        continue
                    run.started(item, response)
                if not run.running:
                    continue
                rid, msg = self.conn.next_any(run.running)
                result = run.on_event(rid, msg)
                if rid not in run.running:
                    self.conn.forget(rid)
                if result is not None:
                    yield result
        finally:
            for rid, (_, response) in run.running.items():  # the caller stopped early
                self.conn.send_cancel(rid)
                self.conn.forget(rid)

    # -- management ------------------------------------------------------

    def unload(self, model: str | None = None, *, all: bool = False) -> list[str]:
        fields: dict[str, Any] = {"all": True} if all else {"model": model_ref(model or "")}
        return self._call(protocol.UNLOAD, **fields).get("unloaded") or []

    def ps(self) -> list[dict]:
        return self._call(protocol.PS)["result"]

    def status(self) -> dict:
        return self._call(protocol.STATUS)["result"]

    def shutdown(self) -> None:
        """Stop every worker, then the supervisor; returns when it is done."""
        self._call(protocol.SHUTDOWN)

    def _call(self, op: str, on_log: Callable[[str], None] | None = None, **fields: Any) -> dict:
        rid = self.conn.send(op, **fields)
        try:
            while isinstance(msg := self.conn.next_event(rid), protocol.Log):
                if on_log is not None:
                    on_log(msg.line)
        finally:
            self.conn.forget(rid)
        return call_result(msg)

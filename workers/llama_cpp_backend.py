"""The llama.cpp backend (llama-cpp-python's bindings) for GGUF files.

The model and its context are built here directly (not through
``llama_cpp.Llama``) so that one context can hold ``parallel`` sequences;
:mod:`corral.workers.llama_batch` decodes them together, and
:mod:`corral.workers.llama_sampling` gives each its sampler chain.
"""

from __future__ import annotations

import ctypes
import itertools
import os
from typing import Any, Iterator

from corral.workers.backend import Backend, Sampling, Usage

# Sequences decoded together unless the catalog or CORRAL_PARALLEL says
# otherwise: measured in bench/batching.py (see the README's Performance).
DEFAULT_PARALLEL = 4
# Prompt tokens evaluated per step: a long prompt delays the other
# sequences' next token by one chunk at most.
DEFAULT_CHUNK = 128


class LlamaCppBackend(Backend):
    name = "llama.cpp"
    embeddings = True
    grammar = True

    def load(self) -> dict[str, Any]:
        spec = self.spec
        threads = int(spec.get("threads") or os.cpu_count() or 1)
        self.parallel = max(1, int(spec.get("parallel") or DEFAULT_PARALLEL))
        chunk = max(16, int(spec.get("chunk") or DEFAULT_CHUNK))
        apply_poll(spec.get("poll"))
        # Imported here so that a broken llama.cpp install fails this
        # backend's workers, never the supervisor or another backend.
        import llama_cpp as L
        from llama_cpp._internals import LlamaModel
        from llama_cpp._logger import set_verbose

        from corral.workers.llama_batch import Engine
        from corral.workers.llama_sampling import model_sampling_defaults

        set_verbose(False)  # llama.cpp's chatter would only fill the worker log
        self._L = L
        model_params = L.llama_model_default_params()
        model_params.use_extra_bufts = extra_buffers_allowed()
        self.model = LlamaModel(path_model=spec["path"], params=model_params, verbose=False)
        self.vocab = self.model.vocab
        self.n_vocab = self.model.n_vocab()
        self.n_ctx_seq = int(spec["context_length"])
        self.threads = threads
        self.ctx = self._context(self.n_ctx_seq * self.parallel, self.parallel, batch=chunk + self.parallel, embeddings=False)
        self.metadata = self.model.metadata()
        self.sampling_defaults = model_sampling_defaults(self.metadata)
        self._bos = self.model.token_bos()
        self._bos_text = self.model.token_get_text(self._bos) if self._bos != -1 else "\0"
        self.pieces: dict[int, bytes] = {}
        self._piece_buf = ctypes.create_string_buffer(256)
        self.engine = Engine(self.ctx, self.vocab, parallel=self.parallel, n_ctx_seq=self.n_ctx_seq, chunk=chunk,
                             token_bytes=self._piece)
        self._embed_ctx = None
        self._stream_ids = itertools.count(-1, -1)  # stream() runs under ids no runtime uses
        self.formatter = self._formatter()
        return {
            "context_length": self.n_ctx_seq,
            "threads": threads,
            "parallel": self.parallel,
            "architecture": self.metadata.get("general.architecture"),
            "chat_template": ("catalog" if spec.get("chat_template") else "gguf") if self.formatter else None,
        }

    def _context(self, n_ctx: int, n_seq: int, *, batch: int, embeddings: bool) -> Any:
        L = self._L
        params = L.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_seq_max = n_seq
        params.n_batch = params.n_ubatch = batch
        params.n_threads = params.n_threads_batch = self.threads
        # One cache for all sequences: any mix of sequences goes in one
        # micro-batch (a split cache needs consecutive sequence ids for that).
        params.kv_unified = self.spec.get("kv_unified", True)
        # Flash attention skips the cells of other sequences (masked) and
        # keeps the attention buffers small.
        params.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_ENABLED
        params.no_perf = True
        params.embeddings = embeddings
        if embeddings:
            params.pooling_type = L.LLAMA_POOLING_TYPE_NONE  # pooled in embed()
        ctx = L.llama_init_from_model(self.model.model, params)
        if not ctx:
            params.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_AUTO
            ctx = L.llama_init_from_model(self.model.model, params)
        if not ctx:
            raise RuntimeError(f"llama.cpp could not create a context of {n_ctx} tokens")
        return ctx

    def _formatter(self) -> Any:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self.spec.get("chat_template") or self.metadata.get("tokenizer.chat_template")
        if not template:
            return None
        eos = self.model.token_eos()
        return Jinja2ChatFormatter(
            template=template,
            eos_token=self.model.token_get_text(eos) if eos != -1 else "",
            bos_token=self._bos_text if self._bos != -1 else "",
            add_generation_prompt=True,
        )

    def chat_prompt(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> tuple[str, list[str]]:
        if self.formatter is None:
            # A GGUF without a template: a plain transcript still works.
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
            return text, ["\nuser:"]
        response = self.formatter(messages=messages, tools=tools)
        return response.prompt, [s for s in response.stop if s]

    def prompt_tokens(self, text: str) -> list[int]:
        # A template writes its own BOS and special tokens as text.
        return self.model.tokenize(text.encode(), not text.startswith(self._bos_text), True)

    def tokenize(self, text: str, special: bool = False) -> list[int]:
        return self.model.tokenize(text.encode(), special, True)

    def detokenize(self, tokens: list[int]) -> str:
        return b"".join(self._piece(self._known(t)) for t in tokens).decode("utf-8", "replace")

    def token_bytes(self, token: int) -> bytes:
        return self._piece(self._known(token))

    def _known(self, token: int) -> int:
        if not 0 <= token < self.n_vocab:
            raise ValueError(f"token id {token} is not in the vocabulary (0 to {self.n_vocab - 1})")
        return token

    def count_tokens(self, text: str) -> int:
        return len(self.model.tokenize(text.encode(), False, True))

    def _piece(self, token: int) -> bytes:
        piece = self.pieces.get(token)
        if piece is None:
            n = self._L.llama_token_to_piece(self.vocab, token, self._piece_buf, len(self._piece_buf), 0, False)
            piece = self.pieces[token] = bytes(self._piece_buf[:n])
        return piece

    # -- the step contract ---------------------------------------------------

    def start(self, rid: int, prompt: str, sampling: Sampling, usage: Usage, tokens: list[int] | None = None) -> None:
        from corral.workers.llama_sampling import build_sampler, resolve_sampling

        tokens = [self._known(t) for t in tokens] if tokens else self.prompt_tokens(prompt)
        if not tokens:
            raise ValueError("the prompt is empty; send some text")
        settings = resolve_sampling(sampling, self.sampling_defaults)
        sampler = build_sampler(settings, self.vocab, self.n_vocab)
        if getattr(sampling, "logprobs", None) is not None:
            usage.logprobs = []
        self.engine.admit(rid, tokens, sampler, stop=list(getattr(sampling, "stop", None) or []),
                          max_tokens=getattr(sampling, "max_tokens", None), seeded=settings["seed"] is not None,
                          usage=usage, top_logprobs=getattr(sampling, "logprobs", None))

    def step(self) -> list[tuple[int, str, bool]]:
        return self.engine.step()

    def cancel(self, rid: int) -> None:
        self.engine.cancel(rid)

    def active(self) -> int:
        return self.engine.active()

    def stream(self, prompt: str, sampling: Sampling, usage: Usage) -> Iterator[str]:
        """One sequence on its own, as a generator (for a runtime that serves
        one request at a time); closing it cancels the sequence."""
        rid = next(self._stream_ids)
        self.start(rid, prompt, sampling, usage)
        done = False
        try:
            while not done:
                for r, text, finished in self.step():
                    if r == rid:
                        done = finished
                        if text:
                            yield text
        finally:
            if not done:
                self.cancel(rid)

    def set_threads(self, threads: int) -> None:
        """Run the engine on ``threads`` threads from the next step on: the
        supervisor's CPU budget, when other workers get busy or idle. Call
        between steps, from the thread that steps."""
        self.threads = max(1, int(threads))
        for ctx in (self.ctx, self._embed_ctx):
            if ctx:
                self._L.llama_set_n_threads(ctx, self.threads, self.threads)

    # -- embeddings --------------------------------------------------------------

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """Mean-pooled, L2-normalised embeddings from the same model, in a
        second context made on first use, so generation keeps its cells.
        Texts go in prompt-sized chunks and the per-token embeddings are
        pooled here: llama.cpp pools within one micro-batch only, and a
        micro-batch of a whole context would need a 400 MiB compute buffer
        (SmolLM2, 2048 tokens) against 26 MiB for a chunk."""
        import numpy as np

        L = self._L
        if self._embed_ctx is None:
            self._embed_ctx = self._context(self.n_ctx_seq, 1, batch=self.engine.chunk, embeddings=True)
        ctx, chunk = self._embed_ctx, self.engine.chunk
        memory = L.llama_get_memory(ctx)
        n_embd = self.model.n_embd()
        batch = L.llama_batch_init(chunk, 0, 1)
        vectors, total = [], 0
        try:
            for text in texts:
                if not text:
                    raise ValueError("an input to embed is empty; send some text")
                tokens = self.model.tokenize(text.encode(), True, False)
                if len(tokens) > self.n_ctx_seq:
                    raise ValueError(f"an input has {len(tokens)} tokens but the context holds only {self.n_ctx_seq}; shorten it")
                total += len(tokens)
                L.llama_memory_clear(memory, True)
                pooled = np.zeros(n_embd, dtype=np.float64)
                for start in range(0, len(tokens), chunk):
                    piece = tokens[start : start + chunk]
                    batch.n_tokens = len(piece)
                    for i, t in enumerate(piece):
                        batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = t, start + i, 1, 1
                        batch.seq_id[i][0] = 0
                    if L.llama_decode(ctx, batch) != 0:
                        raise RuntimeError("llama_decode failed while embedding")
                    rows = np.ctypeslib.as_array(L.llama_get_embeddings(ctx), shape=(len(piece) * n_embd,))
                    pooled += rows.reshape(len(piece), n_embd).sum(axis=0)
                pooled /= np.linalg.norm(pooled) or 1.0
                vectors.append(pooled.tolist())
        finally:
            L.llama_batch_free(batch)
        return vectors, total

    def close(self) -> None:
        L = self._L
        self.engine.close()
        for ctx in (self._embed_ctx, self.ctx):
            if ctx:
                L.llama_free(ctx)
        self._embed_ctx = self.ctx = None
        self.model.close()


def apply_poll(poll: Any) -> None:
    """``poll = 0`` (spec): engine threads sleep instead of spinning while
    they wait, for workers that share cores. llama-cpp-python's ggml runs
    its threads with OpenMP, whose spin is set by environment variables
    read when libgomp loads, so this must run before llama_cpp is imported
    in the process (it does, in a worker)."""
    if poll is None or int(poll) > 0:
        return
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    os.environ["GOMP_SPINCOUNT"] = "0"


def cpu_has_amx() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " amx_int8" in line for line in f)
    except OSError:
        return False


def extra_buffers_allowed() -> bool:
    """llama.cpp's AMX matrix multiply segfaults on the first multi-token
    batch on some Sapphire Rapids machines, this development machine among
    them (ggml-org/llama.cpp#20824, still open). A natively built
    llama-cpp-python uses AMX wherever the CPU has it, through the "extra
    buffer types" (AMX, weight repacking), so those are turned off there
    (llama-server's --no-repack). CORRAL_LLAMA_EXTRA_BUFFERS=1 turns them
    back on."""
    return not cpu_has_amx() or os.environ.get("CORRAL_LLAMA_EXTRA_BUFFERS") == "1"

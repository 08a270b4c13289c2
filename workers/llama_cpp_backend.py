"""The llama.cpp backend (llama-cpp-python) for GGUF files."""

from __future__ import annotations

import contextlib
import os
import random
from typing import Any, Iterator

from corral.workers.backend import Backend, Sampling, Usage
from corral.workers.text_stream import decode_tokens, token_limit


class LlamaCppBackend(Backend):
    name = "llama.cpp"

    def load(self) -> dict[str, Any]:
        # Imported here so that a broken llama.cpp install fails this
        # backend's workers, never the supervisor or another backend.
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        threads = self.spec.get("threads") or os.cpu_count() or 1
        with _without_extra_buffers_on_amx():
            self.llm = Llama(
                model_path=self.spec["path"],
                n_ctx=self.spec["context_length"],
                n_threads=threads,
                n_threads_batch=threads,
                # llama.cpp's own chatter would only fill the worker log.
                verbose=False,
            )
        template = self.spec.get("chat_template") or self.llm.metadata.get("tokenizer.chat_template")
        self.formatter = None
        if template:
            model = self.llm._model
            eos, bos = self.llm.token_eos(), self.llm.token_bos()
            self.formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=model.token_get_text(eos) if eos != -1 else "",
                bos_token=model.token_get_text(bos) if bos != -1 else "",
                add_generation_prompt=True,
            )
        import ctypes

        import llama_cpp
        from llama_cpp._internals import LlamaBatch

        self._llama_cpp = llama_cpp
        self.n_ctx = self.llm.n_ctx()
        self.n_batch = self.llm.n_batch
        self.batch = LlamaBatch(n_tokens=self.n_batch, embd=0, n_seq_max=1)
        self.vocab = self.llm._model.vocab
        self.cached: list[int] = []  # tokens whose K and V are in the cache, in order
        self.pieces: dict[int, bytes] = {}
        self.piece_buf = ctypes.create_string_buffer(256)
        return {
            "context_length": self.llm.n_ctx(),
            "threads": threads,
            "architecture": self.llm.metadata.get("general.architecture"),
            "chat_template": "gguf" if template and not self.spec.get("chat_template") else ("catalog" if template else None),
        }

    def chat_prompt(self, messages: list[dict[str, str]]) -> tuple[str, list[str]]:
        if self.formatter is None:
            # A GGUF without a template: a plain transcript still works.
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
            return text, ["\nuser:"]
        response = self.formatter(messages=messages)
        return response.prompt, [s for s in response.stop if s]

    def tokenize(self, text: str) -> list[int]:
        # A template writes its own BOS and special tokens as text.
        return self.llm.tokenize(text.encode(), add_bos=not text.startswith(self._bos_text()), special=True)

    def _bos_text(self) -> str:
        bos = self.llm.token_bos()
        return self.llm._model.token_get_text(bos) if bos != -1 else "\0"

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode(), add_bos=False, special=True))

    def stream(self, prompt: str, sampling: Sampling, usage: Usage) -> Iterator[str]:
        tokens = self.tokenize(prompt)
        usage.prompt_tokens = len(tokens)
        limit = token_limit(sampling.max_tokens, len(tokens), self.n_ctx)
        if sampling.seed is not None:
            # A reused prefix evaluates the rest in another batch shape, which
            # shifts the logits a little; a seed promises the same answer
            # every time, so the whole prompt is evaluated afresh.
            self._forget_cache()
        self._prefill(tokens)
        sampler = self._sampler(sampling)
        try:
            yield from decode_tokens(
                self._decode(sampler),
                is_end=self._is_end,
                token_bytes=self._piece,
                stop=sampling.stop,
                limit=limit,
                usage=usage,
            )
        finally:
            sampler.close()

    # -- the low-level loop ------------------------------------------------
    # llama-cpp-python's high-level API spends Python time per token (logits
    # copied to numpy, bookkeeping); this loop does only what decoding needs:
    # sample in a llama.cpp sampler chain, decode one token, repeat.

    def _forget_cache(self) -> None:
        self.llm._ctx.kv_cache_clear()
        self.cached = []

    def _prefill(self, tokens: list[int]) -> None:
        """Evaluate the prompt, reusing the KV cache for the prefix it shares
        with what was evaluated before (the previous turns of a chat)."""
        keep = 0
        for a, b in zip(self.cached, tokens):
            if a != b:
                break
            keep += 1
        keep = min(keep, len(tokens) - 1)  # the last token is evaluated again for its logits
        if keep < len(self.cached):
            if not self.llm._ctx.kv_cache_seq_rm(0, keep, -1):
                self._forget_cache()
                keep = 0
            self.cached = self.cached[:keep]
        for start in range(keep, len(tokens), self.n_batch):
            chunk = tokens[start : start + self.n_batch]
            self.batch.set_batch(chunk, n_past=len(self.cached), logits_all=False)
            self.llm._ctx.decode(self.batch)
            self.cached.extend(chunk)

    def _sampler(self, sampling: Sampling):
        from llama_cpp._internals import LlamaSampler

        sampler = LlamaSampler()
        if sampling.repeat_penalty != 1.0:
            sampler.add_penalties(self.llm.n_vocab(), self.llm._token_eos, self.llm._token_nl, 64,
                                  sampling.repeat_penalty, 0.0, 0.0, False, False)
        if sampling.temperature <= 0:
            sampler.add_greedy()
        else:
            sampler.add_top_k(sampling.top_k)
            sampler.add_top_p(sampling.top_p, 1)
            sampler.add_min_p(0.05, 1)
            sampler.add_temp(sampling.temperature)
            sampler.add_dist(sampling.seed if sampling.seed is not None else random.getrandbits(32))
        return sampler

    def _decode(self, sampler) -> Iterator[int]:
        ctx, batch = self.llm._ctx, self.batch
        while True:
            token = sampler.sample(ctx, -1)  # also accepts it into the chain
            yield token
            batch.set_batch([token], n_past=len(self.cached), logits_all=False)
            ctx.decode(batch)
            self.cached.append(token)

    def _is_end(self, token: int) -> bool:
        return bool(self._llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def _piece(self, token: int) -> bytes:
        piece = self.pieces.get(token)
        if piece is None:
            n = self._llama_cpp.llama_token_to_piece(self.vocab, token, self.piece_buf, len(self.piece_buf), 0, False)
            piece = self.pieces[token] = bytes(self.piece_buf[:n])
        return piece

    def close(self) -> None:
        self.batch.close()
        self.llm.close()


def cpu_has_amx() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " amx_int8" in line for line in f)
    except OSError:
        return False


@contextlib.contextmanager
def _without_extra_buffers_on_amx():
    """llama.cpp's AMX matrix multiply segfaults on the first multi-token
    batch on some Sapphire Rapids machines, this development machine among
    them (ggml-org/llama.cpp#20824, still open). A natively built
    llama-cpp-python uses AMX wherever the CPU has it, through the "extra
    buffer types" (AMX, weight repacking), so those are turned off there.
    CORRAL_LLAMA_EXTRA_BUFFERS=1 turns them back on."""
    import llama_cpp
    import llama_cpp.llama

    if not cpu_has_amx() or os.environ.get("CORRAL_LLAMA_EXTRA_BUFFERS") == "1":
        yield
        return
    default = llama_cpp.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p

    llama_cpp.llama.llama_cpp.llama_model_default_params = params
    try:
        yield
    finally:
        llama_cpp.llama.llama_cpp.llama_model_default_params = default

"""The llama.cpp backend (llama-cpp-python) for GGUF files."""

from __future__ import annotations

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
        import llama_cpp

        tokens = self.tokenize(prompt)
        usage.prompt_tokens = len(tokens)
        limit = token_limit(sampling.max_tokens, len(tokens), self.llm.n_ctx())
        if sampling.seed is not None:
            # A reused prompt prefix re-evaluates fewer tokens in another batch
            # shape, which shifts the logits a little; a seed promises the same
            # answer every time, so evaluate the whole prompt afresh.
            self.llm.reset()
        self.llm.set_seed(sampling.seed if sampling.seed is not None else random.getrandbits(32))
        generated = self.llm.generate(
            tokens,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            temp=sampling.temperature,
            repeat_penalty=sampling.repeat_penalty,
        )
        vocab = self.llm._model.vocab
        yield from decode_tokens(
            generated,
            is_end=lambda token: llama_cpp.llama_vocab_is_eog(vocab, token),
            token_bytes=lambda token: self.llm.detokenize([token]),
            stop=sampling.stop,
            limit=limit,
            usage=usage,
        )

    def close(self) -> None:
        self.llm.close()

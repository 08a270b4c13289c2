"""The ctransformers backend for GGML-era files (gpt2, gptj, gpt_neox, mpt,
starcoder, falcon, ...). ctransformers 0.2.27 is no longer maintained and
pinned; it is imported only inside its own workers."""

from __future__ import annotations

from typing import Any, Iterator

from corral.workers.backend import Backend, Sampling, Usage
from corral.workers.text_stream import decode_tokens, token_limit

# GGML files carry no chat template: a plain transcript in the ChatML style
# unless the catalog entry names one.
DEFAULT_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "<|im_start|>assistant\n"
)
DEFAULT_CHAT_STOP = ["<|im_end|>", "<|im_start|>"]


def _cpu_build() -> str:
    """Which of ctransformers' prebuilt libraries this CPU runs."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return "basic"
    return "avx2" if "avx2" in flags else "avx" if "avx" in flags else "basic"


class CTransformersBackend(Backend):
    name = "ctransformers"

    def load(self) -> dict[str, Any]:
        from ctransformers import AutoModelForCausalLM

        if not self.spec.get("model_type"):
            raise ValueError("a GGML model needs its model type (e.g. gpt2); set model_type in the catalog or pass --model-type")
        # One thread unless the catalog says otherwise: the old ggml inside
        # ctransformers spins its worker threads, and on this 2-core machine
        # two threads decoded a tiny gpt2 at 4 tok/s against 4,500 with one.
        self.threads = self.spec.get("threads") or 1
        self.llm = AutoModelForCausalLM.from_pretrained(
            self.spec["path"],
            model_type=self.spec["model_type"],
            context_length=self.spec["context_length"],
            threads=self.threads,
            local_files_only=True,
            # Naming the build skips py-cpuinfo's probe, which takes ~1 s.
            lib=_cpu_build(),
        )
        import jinja2.sandbox

        template = self.spec.get("chat_template") or DEFAULT_CHAT_TEMPLATE
        self.template = jinja2.sandbox.ImmutableSandboxedEnvironment().from_string(template)
        self.template_stop = [] if self.spec.get("chat_template") else DEFAULT_CHAT_STOP
        return {
            "context_length": self.llm.context_length,
            "threads": self.threads,
            "architecture": self.spec["model_type"],
            "chat_template": "catalog" if self.spec.get("chat_template") else "default",
        }

    def chat_prompt(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> tuple[str, list[str]]:
        return self.template.render(messages=messages, tools=tools, add_generation_prompt=True), list(self.template_stop)

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text))

    def stream(self, prompt: str, sampling: Sampling, usage: Usage) -> Iterator[str]:
        tokens = self.llm.tokenize(prompt)
        usage.prompt_tokens = len(tokens)
        # ctransformers' generate() never stops by itself at a full context.
        limit = token_limit(sampling.max_tokens, len(tokens), self.llm.context_length)
        greedy = sampling.temperature <= 0
        generated = self.llm.generate(
            tokens,
            top_k=1 if greedy else sampling.top_k,
            top_p=sampling.top_p,
            temperature=1.0 if greedy else sampling.temperature,
            repetition_penalty=sampling.repeat_penalty,
            seed=-1 if sampling.seed is None else sampling.seed,
            threads=self.threads,
        )
        yield from decode_tokens(
            generated,
            # generate() ends by itself at the end-of-text token
            is_end=lambda token: False,
            token_bytes=lambda token: self.llm.detokenize([token], decode=False),
            stop=sampling.stop,
            limit=limit,
            usage=usage,
        )

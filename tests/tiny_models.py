"""Tiny random-weight model files, written by the test suite itself.

- GGML in ggml's classic gpt-2 layout (what ctransformers' gpt2 reads):
  magic, six int32 hyper-parameters, the vocabulary as length-prefixed
  strings, then each tensor as (n_dims, name length, type, dims, name, data).
- GGUF llama (what llama.cpp reads), written with the `gguf` package, with a
  byte-fallback SentencePiece-style vocabulary and a chat template.

A few hundred KB each; they load in milliseconds. The words they produce are
random, which is all the fast tests need.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

GGML_MAGIC = 0x67676D6C
F32 = 0

# Printable ASCII, then a few words so that tokenizing English finds something.
_WORDS = ["hello", "world", "the", "and", "tiny", "model", " ", "\n"]
VOCAB = [chr(c) for c in range(32, 127)] + _WORDS + ["<|endoftext|>"]


def _tensor(f, name: str, array: np.ndarray) -> None:
    # ggml lists dims fastest-varying first: the reverse of numpy's shape.
    dims = list(reversed(array.shape))
    encoded = name.encode()
    f.write(struct.pack("<iii", len(dims), len(encoded), F32))
    f.write(struct.pack(f"<{len(dims)}i", *dims))
    f.write(encoded)
    f.write(np.ascontiguousarray(array, dtype=np.float32).tobytes())


def write_tiny_gpt2_ggml(path: Path, *, n_ctx: int = 128, n_embd: int = 32, n_head: int = 2, n_layer: int = 2, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    n_vocab = len(VOCAB)

    def w(*shape: int) -> np.ndarray:
        return rng.normal(0, 0.2, shape).astype(np.float32)

    with open(path, "wb") as f:
        f.write(struct.pack("<I", GGML_MAGIC))
        f.write(struct.pack("<6i", n_vocab, n_ctx, n_embd, n_head, n_layer, F32))
        f.write(struct.pack("<i", n_vocab))
        for word in VOCAB:
            raw = word.encode()
            f.write(struct.pack("<I", len(raw)) + raw)
        _tensor(f, "model/ln_f/g", np.ones(n_embd))
        _tensor(f, "model/ln_f/b", np.zeros(n_embd))
        _tensor(f, "model/wte", w(n_vocab, n_embd))
        _tensor(f, "model/wpe", w(n_ctx, n_embd))
        for i in range(n_layer):
            p = f"model/h{i}"
            _tensor(f, f"{p}/ln_1/g", np.ones(n_embd))
            _tensor(f, f"{p}/ln_1/b", np.zeros(n_embd))
            _tensor(f, f"{p}/ln_2/g", np.ones(n_embd))
            _tensor(f, f"{p}/ln_2/b", np.zeros(n_embd))
            _tensor(f, f"{p}/attn/c_attn/w", w(3 * n_embd, n_embd))
            _tensor(f, f"{p}/attn/c_attn/b", np.zeros(3 * n_embd))
            _tensor(f, f"{p}/attn/c_proj/w", w(n_embd, n_embd))
            _tensor(f, f"{p}/attn/c_proj/b", np.zeros(n_embd))
            _tensor(f, f"{p}/mlp/c_fc/w", w(4 * n_embd, n_embd))
            _tensor(f, f"{p}/mlp/c_fc/b", np.zeros(4 * n_embd))
            _tensor(f, f"{p}/mlp/c_proj/w", w(n_embd, 4 * n_embd))
            _tensor(f, f"{p}/mlp/c_proj/b", np.zeros(n_embd))
    return path


# A chat template that renders tools and tool turns the way Qwen 2.5's and
# Hermes 3's do (tools in <tools>, calls in <tool_call>, results in
# <tool_response>), cut down to what a test needs.
HERMES_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n<tools>\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}</tools>\n"
    "Call a function with <tool_call>{\"name\": ..., \"arguments\": ...}</tool_call>.<|im_end|>\n{% endif %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'assistant' and m.tool_calls %}<|im_start|>assistant\n{{ m.content }}"
    "{% for c in m.tool_calls %}<tool_call>\n{\"name\": \"{{ c.function.name }}\", \"arguments\": {{ c.function.arguments | tojson }}}\n</tool_call>{% endfor %}<|im_end|>\n"
    "{%- elif m.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m.content }}\n</tool_response><|im_end|>\n"
    "{%- else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}"
    "{%- endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def write_tiny_llama_gguf(path: Path, *, n_ctx: int = 256, n_embd: int = 64, n_head: int = 4, n_layer: int = 2, seed: int = 0,
                          architecture: str = "llama", chat_template: str | None = None) -> Path:
    """``architecture``: another name makes a well-formed file that llama.cpp refuses to load."""
    import gguf

    rng = np.random.default_rng(seed)
    n_ff = 2 * n_embd
    # SentencePiece conventions: <unk>, <s>, </s>, 256 byte tokens, then pieces.
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [gguf.TokenType.BYTE] * 256
    pieces = ["▁" + w for w in ("hello", "world", "the", "and", "tiny", "model", "a", "is")] + [chr(c) for c in range(97, 123)]
    tokens += pieces
    types += [gguf.TokenType.NORMAL] * len(pieces)
    n_vocab = len(tokens)

    def w(*shape: int) -> np.ndarray:
        return rng.normal(0, 0.2, shape).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("tiny-llama")
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * 3 + [-1000.0] * 256 + [-float(i) for i in range(len(pieces))])
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_chat_template(chat_template or CHAT_TEMPLATE)
    writer.add_tensor("token_embd.weight", w(n_vocab, n_embd))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    writer.add_tensor("output.weight", w(n_vocab, n_embd))
    for i in range(n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"blk.{i}.{name}.weight", w(n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", w(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", w(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", w(n_embd, n_ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path

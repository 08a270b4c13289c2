"""Headers of GGML-era files (unversioned ggml, ggmf, ggjt), as ctransformers
reads them. A GGML file does not record its architecture, so the layout of
its hyper-parameters depends on the model type named in the catalog; the
weights are nearly the whole file (hyper-parameters and vocabulary are small).
"""

from __future__ import annotations

import struct

from corral.supervisor.model_files import ModelHeader

_MAGICS = {0x67676D6C: "ggml", 0x67676D66: "ggmf", 0x67676A74: "ggjt"}

# Hyper-parameters (int32 each) in file order, by model type: the GPT-2 family
# of ggml's examples, which ctransformers follows.
_LAYOUTS = {
    "gpt2": ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer", "ftype"),
    "starcoder": ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer", "ftype"),
    "gpt_bigcode": ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer", "ftype"),
    "gptj": ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer", "n_rot", "ftype"),
    "gpt_neox": ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer", "n_rot", "par_res", "ftype"),
    "dolly-v2": ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer", "n_rot", "par_res", "ftype"),
    "mpt": ("n_embd", "n_ctx", "n_head", "n_layer", "n_vocab"),
    "falcon": ("n_vocab", "n_embd", "n_head", "n_head_kv", "n_layer", "ftype"),
    "llama": ("n_vocab", "n_embd", "n_mult", "n_head", "n_layer", "n_rot", "ftype"),
}


def read_ggml(path: str, size: int, model_type: str | None = None) -> ModelHeader:
    with open(path, "rb") as f:
        head = f.read(64)
    (magic,) = struct.unpack_from("<I", head, 0)
    if magic not in _MAGICS:
        raise ValueError("not a GGUF or GGML file")
    # ggmf and ggjt put a version after the magic.
    offset = 4 if _MAGICS[magic] == "ggml" else 8
    layout = _LAYOUTS.get(model_type or "gpt2", _LAYOUTS["gpt2"])
    values = struct.unpack_from(f"<{len(layout)}i", head, offset)
    hp = dict(zip(layout, values))
    n_head = max(1, hp.get("n_head", 1))
    n_embd = hp.get("n_embd", 0)
    if min(values) < 0 or n_embd <= 0 or hp.get("n_layer", 0) <= 0:
        raise ValueError(f"implausible hyper-parameters {hp} for model type {model_type or 'gpt2'}")
    return ModelHeader(
        format=_MAGICS[magic],
        architecture=model_type or "unknown",
        file_bytes=size,
        weights_bytes=size,
        tensors=0,
        n_layer=hp["n_layer"],
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=hp.get("n_head_kv", n_head),
        head_dim_k=n_embd // n_head,
        head_dim_v=n_embd // n_head,
        n_vocab=hp.get("n_vocab", 0),
        context_length_trained=hp.get("n_ctx"),
        metadata=hp,
    )

"""GGUF headers built byte by byte, to say things no honest file says
(counts of 2^60, alignment 0, strings of 2^40 bytes)."""

from __future__ import annotations

import struct
from pathlib import Path

U32, STRING, U64 = 4, 8, 10


def _string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def gguf_header(kv: list[tuple[str, int, object]], *, n_tensors: int | None = None, n_kv: int | None = None,
                tensors: list[tuple[str, tuple[int, ...], int, int]] = ()) -> bytes:
    """A GGUF v3 header: ``kv`` as (key, type, value), ``tensors`` as (name,
    dims, ggml type, offset). The counts may be overridden to lie."""
    out = b"GGUF" + struct.pack("<I", 3)
    out += struct.pack("<QQ", len(tensors) if n_tensors is None else n_tensors, len(kv) if n_kv is None else n_kv)
    for key, vtype, value in kv:
        out += _string(key) + struct.pack("<I", vtype)
        out += _string(value) if vtype == STRING else struct.pack("<I" if vtype == U32 else "<Q", value)
    for name, dims, ggml_type, offset in tensors:
        out += _string(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
        out += struct.pack("<IQ", ggml_type, offset)
    return out


def llama_kv(**extra: tuple[int, object]) -> list[tuple[str, int, object]]:
    kv = [("general.architecture", STRING, "llama"), ("llama.block_count", U32, 2), ("llama.embedding_length", U32, 64),
          ("llama.attention.head_count", U32, 4)]
    return kv + [(k.replace("__", "."), t, v) for k, (t, v) in extra.items()]


def write(path: Path, data: bytes, pad_to: int = 4096) -> Path:
    path.write_bytes(data + b"\0" * max(0, pad_to - len(data)))
    return path

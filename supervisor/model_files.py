"""Reading a model file's header: hyper-parameters and tensor table, without
loading the weights (the supervisor does this before every spawn).

GGUF: magic, version, tensor count, metadata key/values, tensor infos, then
the aligned tensor data. The weights' size is the size of that data section;
the hyper-parameters come from the ``<arch>.*`` metadata keys.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from corral.supervisor.errors import ModelLoadFailed


@dataclass(frozen=True)
class ModelHeader:
    format: str  # "gguf" or "ggml"
    architecture: str
    file_bytes: int
    weights_bytes: int
    tensors: int
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int
    n_vocab: int
    context_length_trained: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)


class _Reader:
    def __init__(self, buf: mmap.mmap | bytes):
        self.buf = buf
        self.pos = 0

    def take(self, fmt: str) -> Any:
        value = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return value[0] if len(value) == 1 else value

    def string(self) -> str:
        n = self.take("Q")
        if n > 1 << 24:
            raise ValueError(f"string of {n} bytes")
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        return bytes(raw).decode("utf-8", errors="replace")


_U64 = struct.Struct("<Q")

# GGUF value types -> struct format (8: string, 9: array are special)
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def _value(r: _Reader, vtype: int) -> Any:
    if vtype in _SCALARS:
        return r.take(_SCALARS[vtype])
    if vtype == 8:
        return r.string()
    if vtype == 9:
        item_type, count = r.take("I"), r.take("Q")
        if item_type in _SCALARS:  # skip a numeric array in one step
            r.pos += struct.calcsize("<" + _SCALARS[item_type]) * count
        elif item_type == 8:  # skip strings (the vocabulary, the merges) in a tight loop
            buf, pos, length = r.buf, r.pos, _U64.unpack_from
            for _ in range(count):
                pos += 8 + length(buf, pos)[0]
            r.pos = pos
        else:
            for _ in range(count):
                _value(r, item_type)
        return count  # an array matters here only by its length (the vocabulary)
    raise ValueError(f"unknown GGUF value type {vtype}")


def _read_gguf(path: str, size: int) -> ModelHeader:
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        r = _Reader(buf)
        magic, version = r.take("4sI")
        if magic != b"GGUF" or version not in (2, 3):
            raise ValueError(f"unsupported GGUF version {version}")
        n_tensors, n_kv = r.take("Q"), r.take("Q")
        meta: dict[str, Any] = {}
        for _ in range(n_kv):
            key = r.string()
            meta[key] = _value(r, r.take("I"))
        offsets = []
        for _ in range(n_tensors):
            r.string()
            n_dims = r.take("I")
            r.pos += 8 * n_dims
            r.take("I")  # ggml type
            offsets.append(r.take("Q"))
        align = int(meta.get("general.alignment", 32))
        data_start = (r.pos + align - 1) // align * align
    if data_start > size:
        raise ValueError("tensor table runs past the end of the file")
    arch = str(meta.get("general.architecture", "unknown"))

    def hp(name: str, default: Any = None) -> Any:
        return meta.get(f"{arch}.{name}", default)

    n_embd = int(hp("embedding_length", 0))
    n_head = int(hp("attention.head_count", 1)) or 1
    n_head_kv = int(hp("attention.head_count_kv", n_head)) or n_head
    head_dim = n_embd // n_head if n_head else 0
    return ModelHeader(
        format="gguf",
        architecture=arch,
        file_bytes=size,
        weights_bytes=size - data_start,
        tensors=n_tensors,
        n_layer=int(hp("block_count", 0)),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim_k=int(hp("attention.key_length", head_dim)),
        head_dim_v=int(hp("attention.value_length", head_dim)),
        n_vocab=int(hp("vocab_size", 0) or meta.get("tokenizer.ggml.tokens", 0) or 0),
        context_length_trained=hp("context_length"),
        metadata={k: v for k, v in meta.items() if isinstance(v, (int, float, str)) and len(str(v)) < 200},
    )


@lru_cache(maxsize=64)
def _cached(path: str, size: int, mtime_ns: int, model_type: str | None) -> ModelHeader:
    with open(path, "rb") as f:
        magic = f.read(4)
    try:
        if magic == b"GGUF":
            return _read_gguf(path, size)
        from corral.supervisor.ggml_files import read_ggml

        return read_ggml(path, size, model_type)
    except (ValueError, struct.error, OSError, UnicodeDecodeError) as exc:
        raise ModelLoadFailed(f"{path} is not a valid model file ({exc}); check or re-download it") from None


def read_header(path: str, model_type: str | None = None) -> ModelHeader:
    """The header of a GGUF or GGML file; cached while the file is unchanged."""
    st = os.stat(path)
    return _cached(path, st.st_size, st.st_mtime_ns, model_type)

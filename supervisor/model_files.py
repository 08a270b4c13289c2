"""Reading a model file's header: hyper-parameters and tensor table, without
loading the weights (the supervisor does this before every spawn).

GGUF: magic, version, tensor count, metadata key/values, tensor infos, then
the aligned tensor data. The weights' size is the size of that data section;
the hyper-parameters come from the ``<arch>.*`` metadata keys.

The file is untrusted input: every count and length it claims is checked
against the bytes that are actually there before anything is read or
allocated, so a header claiming 2^60 tensors or a 2^40-byte string fails at
once with :class:`ModelLoadFailed`, the only exception this module raises.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from corral.supervisor.errors import ModelLoadFailed


class HeaderIncomplete(ModelLoadFailed):
    """A prefix of a file ended inside its header: read more of it."""


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
    # The file size its tensor table implies (None: a type this reader does
    # not know the size of); more than file_bytes means a truncated file.
    expected_bytes: int | None = None
    chat_template: str | None = field(default=None, compare=False)  # tokenizer.chat_template (long: not in metadata)

    @property
    def truncated(self) -> bool:
        return self.expected_bytes is not None and self.expected_bytes > self.file_bytes


class _Short(Exception):
    """The buffer ended before what the header claims."""


class _Reader:
    def __init__(self, buf: mmap.mmap | bytes):
        self.buf = buf
        self.end = len(buf)
        self.pos = 0

    def need(self, n: int) -> None:
        if n < 0 or self.pos + n > self.end:
            raise _Short()

    def take(self, fmt: str) -> Any:
        size = struct.calcsize("<" + fmt)
        self.need(size)
        value = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += size
        return value[0] if len(value) == 1 else value

    def count(self, item_bytes: int) -> int:
        """A claimed number of items, each at least ``item_bytes`` long:
        refused unless that many could fit in what is left."""
        n = self.take("Q")
        self.need(n * item_bytes)
        return n

    def string(self) -> str:
        n = self.count(1)
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        return bytes(raw).decode("utf-8", errors="replace")


# GGUF value types -> struct format (8: string, 9: array are special)
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_U64 = struct.Struct("<Q")
GGML_MAX_DIMS = 4
MAX_ALIGNMENT = 1 << 20

# ggml type -> (bytes per block, values per block), for tensor sizes.
_TYPE_SIZES = {
    0: (4, 1), 1: (2, 1), 2: (18, 32), 3: (20, 32), 6: (22, 32), 7: (24, 32), 8: (34, 32), 9: (36, 32),
    10: (84, 256), 11: (110, 256), 12: (144, 256), 13: (176, 256), 14: (210, 256), 15: (292, 256),
    16: (66, 256), 17: (74, 256), 18: (98, 256), 19: (50, 256), 20: (18, 32), 21: (110, 256), 22: (82, 256),
    23: (136, 256), 24: (1, 1), 25: (2, 1), 26: (4, 1), 27: (8, 1), 28: (8, 1), 29: (56, 256), 30: (2, 1),
    34: (54, 256), 35: (66, 256), 39: (17, 32),
}


def _value(r: _Reader, vtype: int) -> Any:
    if vtype in _SCALARS:
        return r.take(_SCALARS[vtype])
    if vtype == 8:
        return r.string()
    if vtype == 9:
        item_type = r.take("I")
        if item_type in _SCALARS:  # skip a numeric array in one step
            count = r.count(struct.calcsize("<" + _SCALARS[item_type]))
            r.pos += struct.calcsize("<" + _SCALARS[item_type]) * count
        elif item_type == 8:  # skip strings (the vocabulary, the merges) in a tight loop
            count = r.count(8)
            buf, pos, end, length = r.buf, r.pos, r.end, _U64.unpack_from
            for _ in range(count):
                if pos + 8 > end:
                    raise _Short()
                pos += 8 + length(buf, pos)[0]
            if pos > end:
                raise _Short()
            r.pos = pos
        elif item_type == 9:
            raise ValueError("nested arrays are not valid GGUF metadata")
        else:
            count = r.count(1)
            for _ in range(count):
                _value(r, item_type)
        return count  # an array matters here only by its length (the vocabulary)
    raise ValueError(f"unknown GGUF value type {vtype}")


def _tensor_bytes(ggml_type: int, dims: tuple[int, ...]) -> int | None:
    sizes = _TYPE_SIZES.get(ggml_type)
    if sizes is None:
        return None
    n = 1
    for d in dims:
        n *= d
    block_bytes, block_values = sizes
    return -(-n // block_values) * block_bytes


def _parse_gguf(buf: mmap.mmap | bytes, size: int) -> ModelHeader:
    r = _Reader(buf)
    magic, version = r.take("4sI")
    if magic != b"GGUF" or version not in (2, 3):
        raise ValueError(f"unsupported GGUF version {version}")
    n_tensors = r.count(24)  # name length, dims count, type, offset: 24 bytes at least
    n_kv = r.count(13)  # key length, a 1-byte key, value type, a 1-byte value
    meta: dict[str, Any] = {}
    for _ in range(n_kv):
        key = r.string()
        meta[key] = _value(r, r.take("I"))
    extents: list[int | None] = []
    for _ in range(n_tensors):
        r.string()
        n_dims = r.take("I")
        if n_dims > GGML_MAX_DIMS:
            raise ValueError(f"a tensor with {n_dims} dimensions (at most {GGML_MAX_DIMS})")
        dims = r.take(f"{n_dims}Q") if n_dims else ()
        dims = (dims,) if isinstance(dims, int) else tuple(dims)
        ggml_type, offset = r.take("I"), r.take("Q")
        nbytes = _tensor_bytes(ggml_type, dims)
        extents.append(None if nbytes is None else offset + nbytes)
    align = meta.get("general.alignment", 32)
    if not isinstance(align, int) or isinstance(align, bool) or not 0 < align <= MAX_ALIGNMENT or align & (align - 1):
        raise ValueError(f"general.alignment must be a power of two up to {MAX_ALIGNMENT}, not {align!r}")
    data_start = (r.pos + align - 1) // align * align
    if data_start > size:
        raise ValueError("the tensor table runs past the end of the file")
    arch = str(meta.get("general.architecture", "unknown"))

    def hp(name: str, default: int = 0) -> int:
        value = meta.get(f"{arch}.{name}", default)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default

    n_embd = hp("embedding_length")
    n_head = hp("attention.head_count", 1) or 1
    n_head_kv = hp("attention.head_count_kv", n_head) or n_head
    head_dim = n_embd // n_head
    known = [e for e in extents if e is not None]
    return ModelHeader(
        format="gguf",
        architecture=arch,
        file_bytes=size,
        weights_bytes=size - data_start,
        tensors=n_tensors,
        n_layer=hp("block_count"),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim_k=hp("attention.key_length", head_dim),
        head_dim_v=hp("attention.value_length", head_dim),
        n_vocab=hp("vocab_size") or (meta.get("tokenizer.ggml.tokens") if isinstance(meta.get("tokenizer.ggml.tokens"), int) else 0),
        context_length_trained=hp("context_length") or None,
        metadata={k: v for k, v in meta.items() if isinstance(v, (int, float, str)) and len(str(v)) < 200},
        expected_bytes=data_start + max(known) if known and len(known) == len(extents) else None,
        chat_template=meta["tokenizer.chat_template"] if isinstance(meta.get("tokenizer.chat_template"), str) else None,
    )


def read_header_bytes(data: bytes, file_size: int) -> ModelHeader:
    """The header of a GGUF file from its first bytes (e.g. a ranged
    download), ``file_size`` being the whole file's size. Raises
    :class:`HeaderIncomplete` when ``data`` ends inside the header."""
    try:
        return _parse_gguf(data, file_size)
    except _Short:
        if len(data) < file_size:
            raise HeaderIncomplete(f"the first {len(data)} bytes hold only part of the header") from None
        raise ModelLoadFailed("the header runs past the end of the file; check or re-download it") from None
    except (ValueError, struct.error, UnicodeDecodeError) as exc:
        raise ModelLoadFailed(f"not a valid GGUF file ({exc}); check or re-download it") from None


@lru_cache(maxsize=64)
def _cached(path: str, size: int, mtime_ns: int, model_type: str | None) -> ModelHeader:
    try:
        with open(path, "rb") as f:
            if f.read(4) == b"GGUF":
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                    return _parse_gguf(buf, size)
        from corral.supervisor.ggml_files import read_ggml

        return read_ggml(path, size, model_type)
    except _Short:
        raise ModelLoadFailed(f"{path} is not a valid model file (its header runs past its end); check or re-download it") from None
    except OSError as exc:
        raise ModelLoadFailed(f"cannot read {path} ({exc.strerror or exc}); check that it exists and is readable") from None
    except (ValueError, struct.error, UnicodeDecodeError) as exc:
        raise ModelLoadFailed(f"{path} is not a valid model file ({exc}); check or re-download it") from None


def read_header(path: str, model_type: str | None = None) -> ModelHeader:
    """The header of a GGUF or GGML file; cached while the file is unchanged."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ModelLoadFailed(f"cannot read {path} ({exc.strerror}); check that it exists and is readable") from None
    return _cached(path, st.st_size, st.st_mtime_ns, model_type)

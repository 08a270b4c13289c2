"""What a model config says of a GGUF file: architecture, parameter count,
quantization, size and the scalar metadata, as Docker Model Runner records it.

The tensor table (needed for the parameter count) is read with the ``gguf``
package, llama.cpp's own reader, rather than a second hand-written parser.
"""

from __future__ import annotations

import os
from typing import Any

from corral.configs.settings import format_size
from corral.supervisor.errors import ModelLoadFailed

# general.file_type -> the quantization name llama.cpp gives it
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE",
}
_MAX_VALUE = 1024


def format_parameters(count: int) -> str:
    """``361.82 M``, as Docker Model Runner prints a parameter count."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.2f} {unit}"
    return str(count)


def _scalar(field: Any) -> Any:
    import gguf

    if len(field.types) != 1 or field.types[0] == gguf.GGUFValueType.ARRAY:
        return None
    value = field.contents()
    return value if isinstance(value, (str, int, float, bool)) else None


def gguf_facts(paths: list[str]) -> dict[str, Any]:
    """The config facts of a GGUF model made of ``paths`` (its shards, in order)."""
    import gguf

    try:
        readers = [gguf.GGUFReader(p) for p in paths]
    except (ValueError, OSError, IndexError) as exc:
        raise ModelLoadFailed(f"{paths[0]} is not a valid GGUF file ({exc})") from None
    meta = {}
    for key, field in readers[0].fields.items():
        value = _scalar(field)
        if value is not None and not key.startswith("GGUF.") and len(str(value)) <= _MAX_VALUE:
            meta[key] = value
    params = sum(int(t.n_elements) for r in readers for t in r.tensors)
    file_type = meta.get("general.file_type")
    return {
        "architecture": str(meta.get("general.architecture", "")),
        "parameters": format_parameters(params),
        "quantization": FILE_TYPES.get(file_type, "") if isinstance(file_type, int) else "",
        "size": format_size(sum(os.path.getsize(p) for p in paths)),
        "gguf": {k: str(v) for k, v in meta.items()},
    }

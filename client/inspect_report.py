"""What ``corral inspect MODEL`` reports: the model's file, backend, header
facts and memory estimate, and whether the file holds all its weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from corral.configs.settings import format_size, load_settings

# llama.cpp's file types (llama.h, enum llama_ftype): the quantization a
# GGUF file records in general.file_type.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
    16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S",
    22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M",
    28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
}


def quantization(metadata: dict[str, Any]) -> str | None:
    file_type = metadata.get("general.file_type")
    return FILE_TYPES.get(file_type, f"type {file_type}") if isinstance(file_type, int) else None


@dataclass
class Report:
    facts: dict[str, Any]

    @property
    def truncated(self) -> str | None:
        """``truncated: N of M bytes`` when the file is shorter than its
        tensor table says, else None."""
        have, want = self.facts["file_bytes"], self.facts.get("expected_bytes")
        if want is not None and have < want:
            return f"truncated: {have:,} of {want:,} bytes"
        return None

    def rows(self) -> list[list[str]]:
        f, e = self.facts, self.facts["estimate"]
        backend = f["backend"] + (f" ({f['model_type']})" if f["model_type"] else "")
        trained = f" (trained: {f['context_length_trained']})" if f["context_length_trained"] else ""
        shape = (
            f"{f['format']}, {f['architecture']}, {f['layers']} layers, {f['heads']} heads "
            f"({f['kv_heads']} KV), vocabulary {f['vocab_size']}"
        )
        rows = [
            ["Model", f["model"]],
            ["File", f"{f['path']} ({format_size(f['file_bytes'])})"],
            ["Status", self.truncated or "complete"],
            ["Backend", backend],
            ["Format", shape],
        ]
        if f.get("parameters"):
            rows.append(["Parameters", f["parameters"]])
        if f.get("quantization"):
            rows.append(["Quantization", f["quantization"]])
        rows.append(["Context length", f"{f['context_length']}{trained}"])
        if e is not None:  # no estimate for a file that does not hold its weights
            rows += [
                ["Memory estimate", format_size(e["total_bytes"])],
                ["  weights", format_size(e["weights_bytes"])],
                ["  KV cache", format_size(e["kv_cache_bytes"])
                 + (f" ({e['parallel']} sequences of {f['context_length']} tokens)" if e["parallel"] > 1 else "")],
                ["  compute buffers", format_size(e["compute_bytes"])],
                ["  runtime", format_size(e["runtime_bytes"])],
            ]
        return rows


def inspect_model(model: str, context_length: int | None = None, model_type: str | None = None) -> Report:
    """Read MODEL's header and estimate its memory, without loading it."""
    from corral.client.requests import model_ref
    from corral.configs.catalog import resolve
    from corral.supervisor.memory import estimate_memory, worker_sequences
    from corral.supervisor.model_files import read_header

    settings = load_settings()
    spec = resolve(model_ref(model), settings, model_type=model_type)
    header = read_header(spec.path, spec.model_type)
    sequences = worker_sequences(spec, settings.parallel)  # what the supervisor will load it with
    estimate = None if header.truncated else estimate_memory(spec, context_length, parallel=sequences)
    return Report(
        {
            "model": spec.name,
            "path": spec.path,
            "backend": spec.backend,
            "model_type": spec.model_type,
            "format": header.format,
            "architecture": header.architecture,
            "file_bytes": header.file_bytes,
            # what the tensor table claims the file holds (None: not known)
            "expected_bytes": header.expected_bytes,
            "parameters": header.metadata.get("general.size_label"),
            "quantization": quantization(header.metadata),
            "context_length": estimate.context_length if estimate else context_length or spec.context_length,
            "context_length_trained": header.context_length_trained,
            "layers": header.n_layer,
            "embedding_length": header.n_embd,
            "heads": header.n_head,
            "kv_heads": header.n_head_kv,
            "vocab_size": header.n_vocab,
            "estimate": estimate.as_dict() if estimate else None,
        }
    )

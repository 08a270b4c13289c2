"""The models the gateway can name: catalog entries (and store models, once
the store offers a listing), with the facts each API's model list shows.

A model file's header is read for its architecture, size label and
quantization; only files that the catalog names are read, never a path
from a request.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from corral.configs import catalog
from corral.configs.settings import Settings
from corral.supervisor.errors import CorralError, ModelNotFound
from corral.supervisor.model_files import read_header

# GGUF general.file_type -> quantization name (llama.cpp's llama_ftype).
_FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
}


@dataclass(frozen=True)
class ModelInfo:
    name: str
    backend: str
    created: int  # Unix time: the file's modification time
    size: int
    context_length: int
    format: str = "gguf"
    architecture: str = ""
    parameters: str = ""
    quantization: str = ""
    description: str = ""
    metadata: dict = field(default_factory=dict, compare=False)

    @property
    def digest(self) -> str:
        """A stable id for clients that want one: not a file digest (hashing
        a GiB file per listing is too slow), but unique per name and file."""
        return hashlib.sha256(f"{self.name}\0{self.size}\0{self.created}".encode()).hexdigest()

    @property
    def tagged_name(self) -> str:
        """The name with its tag, ``:latest`` when it has none (as Docker
        Model Runner and Ollama list models)."""
        return self.name if ":" in self.name.rsplit("/", 1)[-1] else f"{self.name}:latest"

    @property
    def family(self) -> str:
        return self.architecture or self.backend


def _info(spec: catalog.ModelSpec) -> ModelInfo:
    if spec.backend == catalog.ECHO:
        return ModelInfo(spec.name, spec.backend, 0, 0, spec.context_length, format="none", architecture="echo", description="corral's echo backend")
    stat = os.stat(spec.path)
    try:
        header = read_header(spec.path, spec.model_type)
    except CorralError:
        header = None
    meta = header.metadata if header else {}
    return ModelInfo(
        name=spec.name,
        backend=spec.backend,
        created=int(stat.st_mtime),
        size=stat.st_size,
        context_length=spec.context_length,
        format=header.format if header else "unknown",
        architecture=header.architecture if header else (spec.model_type or ""),
        parameters=str(meta.get("general.size_label", "")),
        quantization=_FILE_TYPES.get(meta.get("general.file_type"), ""),
        description=spec.description,
        metadata={k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool)) and not k.startswith("tokenizer.")},
    )


def list_models(settings: Settings) -> list[ModelInfo]:
    """Every model a request can name and run, in name order."""
    specs = [s for s in catalog.list_specs(settings) if isinstance(s, catalog.ModelSpec)]
    if settings.enable_echo_backend:
        specs.append(catalog.resolve(catalog.ECHO_MODEL, settings))
    return sorted((_info(s) for s in specs), key=lambda m: m.name)


def find_model(settings: Settings, name: str) -> ModelInfo:
    """One model by name (``:latest`` implied), or ModelNotFound."""
    wanted = catalog.canonical_name(name)
    for info in list_models(settings):
        if info.name == wanted:
            return info
    raise ModelNotFound(f"model {name!r} not found; GET /v1/models lists the models you can run")

"""The models the gateway can name: catalog entries and store models (the
rows `corral list` shows, from ``corral.store.listing``), with the facts each
API's model list shows. Only files that the catalog or the store name are
ever read, never a path from a request.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from corral.configs import catalog
from corral.configs.settings import Settings
from corral.store.listing import model_rows
from corral.gateway.tool_formats import Format, detect
from corral.supervisor.errors import CorralError, ModelNotFound
from corral.supervisor.model_files import read_header

_FORMATS = {catalog.LLAMA_CPP: "gguf", catalog.CTRANSFORMERS: "ggml", catalog.ECHO: "none"}


@dataclass(frozen=True)
class ModelInfo:
    name: str
    backend: str
    created: int  # Unix time
    size: int
    context_length: int
    architecture: str = ""
    parameters: str = ""
    quantization: str = ""
    description: str = ""
    store_id: str | None = None  # the manifest digest of a store model
    path: str = ""  # the model file: never shown over HTTP
    estimate_bytes: int | None = None  # memory a worker of it is expected to take

    @property
    def format(self) -> str:
        return _FORMATS.get(self.backend, "unknown")

    @property
    def digest(self) -> str:
        """The store's manifest digest; for a catalog model a stable stand-in
        (hashing a GiB file per listing would be too slow)."""
        if self.store_id:
            return self.store_id.removeprefix("sha256:")
        return hashlib.sha256(f"{self.name}\0{self.size}\0{self.created}".encode()).hexdigest()

    @property
    def tagged_name(self) -> str:
        """The name with its tag, ``:latest`` when it has none (as Docker
        Model Runner and Ollama list models)."""
        return self.name if ":" in self.name.rsplit("/", 1)[-1] else f"{self.name}:latest"

    @property
    def family(self) -> str:
        return self.architecture or self.backend


def _info(row: dict) -> ModelInfo:
    return ModelInfo(
        name=row["model"],
        backend=row.get("backend") or "",
        created=int(row.get("created") or 0),
        size=int(row.get("size_bytes") or 0),
        context_length=int(row.get("context_length") or catalog.DEFAULT_CONTEXT_LENGTH),
        architecture=row.get("architecture") or "",
        parameters=row.get("parameters") or "",
        quantization=row.get("quantization") or "",
        description=row.get("description") or "",
        store_id=row.get("id"),
        path=row.get("path") or "",
        estimate_bytes=row.get("estimate_bytes"),
    )


def list_models(settings: Settings) -> list[ModelInfo]:
    """Every model a request can name and run, in name order."""
    infos = {row["model"]: _info(row) for row in model_rows(settings) if row.get("available")}
    if settings.enable_echo_backend:
        echo = catalog.ECHO_MODEL
        infos[echo] = ModelInfo(echo, catalog.ECHO, 0, 0, catalog.DEFAULT_CONTEXT_LENGTH, "echo", description="corral's echo backend")
    return sorted(infos.values(), key=lambda m: m.name)


def find_model(settings: Settings, name: str) -> ModelInfo:
    """One model by name (``:latest`` implied), or ModelNotFound."""
    wanted = catalog.canonical_name(name)
    for info in list_models(settings):
        if catalog.canonical_name(info.name) == wanted:
            return info
    raise ModelNotFound(f"model {name!r} not found; GET /v1/models lists the models you can run")


def header_facts(info: ModelInfo) -> dict:
    """The model file's metadata (architecture, sizes, licence, ...), for
    Ollama's /api/show; tokenizer tables left out."""
    if not info.path:
        return {}
    try:
        meta = read_header(info.path).metadata
    except CorralError:
        return {}
    return {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool)) and not k.startswith("tokenizer.")}


def tool_format(settings: Settings, name: str) -> Format | None:
    """The tool call syntax of a model's chat template (the catalog's or the
    store's own template first, else the GGUF's), or None: a template that
    renders no tools, a model of another backend, or one not found (its
    request fails with the right error when it runs)."""
    try:
        spec = catalog.resolve(name, settings, names_only=True)
        if spec.backend != catalog.LLAMA_CPP:
            return None
        return detect(spec.chat_template or read_header(spec.path).chat_template)
    except CorralError:
        return None

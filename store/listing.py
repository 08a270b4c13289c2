"""What ``corral list`` (and the gateway's model lists) show: catalog models
and store models, each with Docker Model Runner's columns."""

from __future__ import annotations

import os
from typing import Any

from corral.configs.catalog import ModelSpec, list_specs
from corral.configs.settings import Settings
from corral.store.gguf_facts import FILE_TYPES
from corral.store.models import list_models, spec_for
from corral.supervisor.errors import CorralError


def _catalog_row(spec: ModelSpec) -> dict[str, Any]:
    from corral.supervisor.model_files import read_header

    row: dict[str, Any] = {
        "model": spec.name, "available": True, "backend": spec.backend, "path": spec.path,
        "size_bytes": os.path.getsize(spec.path), "context_length": spec.context_length,
        "description": spec.description, "source": spec.source, "id": None, "tags": [spec.name],
        "created": os.path.getmtime(spec.path), "parameters": "", "quantization": "", "architecture": "",
    }
    try:
        header = read_header(spec.path, spec.model_type)
    except CorralError:
        return row
    file_type = header.metadata.get("general.file_type")
    row.update(
        architecture=header.architecture,
        parameters=str(header.metadata.get("general.size_label", "")),
        quantization=FILE_TYPES.get(file_type, "") if isinstance(file_type, int) else "",
    )
    return row


def _estimate(spec: ModelSpec | None, settings: Settings) -> int | None:
    """The memory a worker of this model is expected to take, at its default
    context (the header is read once and cached while the file is unchanged)."""
    from corral.supervisor.memory import estimate_memory, worker_sequences

    try:
        return estimate_memory(spec, parallel=worker_sequences(spec, settings.parallel)).total_bytes if spec else None
    except CorralError:
        return None


def model_rows(settings: Settings) -> list[dict[str, Any]]:
    """Catalog models first (as before), then the store's, one row each."""
    rows = []
    for item in list_specs(settings):
        if isinstance(item, tuple):
            rows.append({"model": item[0], "available": False, "problem": item[1], "source": "catalog"})
        else:
            rows.append({**_catalog_row(item), "estimate_bytes": _estimate(item, settings)})
    for model in list_models(settings):
        c = model.config
        # one row per name, as docker model list shows a model with two tags twice
        rows.extend({
            "model": name, "available": True, "backend": "llama.cpp", "path": str(model.bundle.model_file),
            "size_bytes": model.size, "context_length": model.context_length, "description": "",
            "source": "store", "id": model.id, "tags": list(model.as_dict()["tags"]), "created": c.created,
            "parameters": c.parameters, "quantization": c.quantization, "architecture": c.architecture,
            "context_size": c.context_size, "estimate_bytes": _estimate(spec_for(settings, name), settings),
        } for name in model.as_dict()["tags"] or [model.name])
    return rows

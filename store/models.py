"""The models in the store: look one up by name or ID, list them, and give the
supervisor a :class:`ModelSpec` for one (``configs.catalog.resolve`` asks)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from corral.configs.catalog import DEFAULT_CONTEXT_LENGTH, ModelSpec, sniff_backend
from corral.configs.settings import Settings
from corral.store import artifact
from corral.store.bundle import Bundle, ensure_bundle
from corral.store.layout import IndexEntry, Store
from corral.store.reference import is_model_id, parse_reference
from corral.supervisor.errors import ModelNotFound, UsageError


def display_name(name: str) -> str:
    """A store name as corral shows it (``:latest`` implied)."""
    return name[: -len(":latest")] if name.endswith(":latest") else name


@dataclass(frozen=True)
class StoreModel:
    id: str  # the manifest digest
    tags: tuple[str, ...]  # store names, e.g. "localhost:5000/test/tiny:latest"
    config: artifact.ModelConfig
    manifest: artifact.Manifest
    bundle: Bundle

    @property
    def short_id(self) -> str:
        return self.id[7:19]

    @property
    def name(self) -> str:
        return display_name(self.tags[0]) if self.tags else self.short_id

    @property
    def size(self) -> int:
        return self.manifest.size

    @property
    def context_length(self) -> int:
        return self.config.context_size or DEFAULT_CONTEXT_LENGTH

    def as_dict(self) -> dict:
        c = self.config
        return {
            "id": self.id,
            "tags": [display_name(t) for t in self.tags],
            "path": str(self.bundle.model_file),
            "size_bytes": self.size,
            "context_size": c.context_size,
            "parameters": c.parameters,
            "quantization": c.quantization,
            "architecture": c.architecture,
            "format": c.format,
            "created": c.created,
            "layers": [{"media_type": d.media_type, "digest": d.digest, "size": d.size} for d in self.manifest.layers],
        }


def _load(store: Store, entry: IndexEntry) -> StoreModel:
    manifest = artifact.parse_manifest(store.read_manifest(entry.id))
    config = artifact.parse_config(store.read_blob(manifest.config.digest, artifact.MAX_CONFIG_BYTES),
                                   manifest.config.media_type)
    return StoreModel(entry.id, tuple(entry.tags), config, manifest, ensure_bundle(store, entry.id, manifest))


def store_key(model: str) -> str | None:
    """The index key ``model`` stands for: a normalised name or a full ID."""
    if is_model_id(model):
        return model if model.startswith("sha256:") or len(model) == 12 else f"sha256:{model}"
    try:
        return parse_reference(model).name
    except UsageError:
        return None


def find_model(settings: Settings, model: str) -> StoreModel | None:
    """The stored model named (or identified by) ``model``, if there is one."""
    store = Store(settings.models)
    try:
        mtime = store.index_path.stat().st_mtime_ns
    except OSError:
        return None
    return _find_cached(store.root, model, mtime)


@functools.lru_cache(maxsize=64)
def _find_cached(root: Path, model: str, _index_mtime: int) -> StoreModel | None:
    # Cached per index version: the supervisor resolves a name on every request.
    store = Store(root)
    key = store_key(model)
    if key is None:
        return None
    for entry in store.read_index():
        if key in entry.tags or entry.id == key or (len(key) == 12 and entry.id[7:19] == key):
            try:
                return _load(store, entry)
            except (OSError, ValueError, artifact.RegistryError):
                return None  # a damaged entry: `corral pull` it again
    return None


def get_model(settings: Settings, model: str) -> StoreModel:
    found = find_model(settings, model)
    if found is None:
        raise ModelNotFound(f"model {model} is not in the store; `corral list` shows the models you have")
    return found


def list_models(settings: Settings) -> list[StoreModel]:
    store = Store(settings.models)
    out = []
    for entry in store.read_index():
        try:
            out.append(_load(store, entry))
        except (OSError, ValueError, artifact.RegistryError):
            continue
    return sorted(out, key=lambda m: m.name)


def spec_for(settings: Settings, model: str) -> ModelSpec | None:
    """What a worker needs to run the stored model ``model``, or ``None``."""
    found = find_model(settings, model)
    if found is None:
        return None
    path = found.bundle.model_file
    template = None
    if found.bundle.chat_template is not None:
        template = found.bundle.chat_template.read_bytes()[: artifact.MAX_TEMPLATE_BYTES].decode("utf-8", "replace")
    key = store_key(model)
    name = display_name(key) if key in found.tags else found.name
    return ModelSpec(
        name=name,
        path=str(path),
        backend=sniff_backend(path) or "llama.cpp",
        context_length=found.context_length,
        chat_template=template,
        source="store",
    )

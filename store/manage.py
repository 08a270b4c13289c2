"""``corral tag``, ``rm`` and ``df``: names and disk space in the store."""

from __future__ import annotations

import contextlib
import re
import shutil
from dataclasses import dataclass
from typing import Callable

from corral.configs.settings import Settings
from corral.store.layout import Store, add_tag, find_in
from corral.store.models import StoreModel, store_key, display_name, get_model
from corral.store.reference import parse_reference
from corral.supervisor.errors import ModelInUse, ModelNotFound, UsageError


def tag(settings: Settings, source: str, target: str) -> str:
    """Give the stored model ``source`` the name ``target``; returns it."""
    model = get_model(settings, source)
    ref = parse_reference(target)
    if ref.digest:
        raise UsageError(f"a tag names a model by name and tag, not by digest: {target}")
    with Store(settings.models).locked_index() as entries:
        add_tag(entries, ref.name, model.id, [d.digest for d in model.manifest.blobs])
    return ref.display


def _base(name: str) -> str:
    """A loaded model's name without its replica suffix (``x#2`` is x)."""
    return re.sub(r"#\d+$", "", name)


@dataclass(frozen=True)
class Removed:
    untagged: tuple[str, ...]
    deleted: str | None  # the model id, when no name was left on it


def remove(settings: Settings, model: str, *, force: bool, loaded: Callable[[], list[str]],
           unload: Callable[[str], None]) -> Removed:
    """Remove the name ``model`` (or, given an id, the whole model).

    A model whose worker is loaded is refused unless ``force``, which unloads
    it first; a model with several names, named by its id, also needs ``force``.
    """
    found: StoreModel = get_model(settings, model)
    key = store_key(model)
    by_name = key in found.tags
    names = [key] if by_name else list(found.tags)
    deleting = set(names) >= set(found.tags)  # no name left: the files go
    affected = found.tags if deleting else names
    busy = sorted({_base(n) for n in loaded()} & {display_name(n) for n in affected})
    if busy and not force:
        raise ModelInUse(f"{', '.join(busy)} is loaded; unload it first (corral unload {busy[0]}) or pass --force")
    if not by_name and len(found.tags) > 1 and not force:
        raise UsageError(f"{model} has {len(found.tags)} names ({', '.join(display_name(t) for t in found.tags)}); "
                         "remove them one by one, or pass --force")
    for name in busy:
        unload(name)
    store = Store(settings.models)
    with store.locked_index() as entries:
        entry = find_in(entries, found.id)
        if entry is None:
            raise ModelNotFound(f"{model} was removed meanwhile")
        for name in names:
            if name in entry.tags:
                entry.tags.remove(name)
        deleted = not entry.tags
        if deleted:
            entries.remove(entry)
            still_used = {d for e in entries for d in (e.id, *e.files)}
            _delete(store, found, still_used)
    return Removed(tuple(display_name(n) for n in names), found.id if deleted else None)


def _delete(store: Store, model: StoreModel, still_used: set[str]) -> None:
    """The model's manifest, bundle and the blobs no other model uses."""
    shutil.rmtree(store.bundle_dir(model.id), ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        store.manifest_path(model.id).unlink()
    for blob in model.manifest.blobs:
        if blob.digest not in still_used:
            with contextlib.suppress(FileNotFoundError):
                store.blob_path(blob.digest).unlink()


def _folder_bytes(folder) -> int:
    return sum(p.stat().st_size for p in folder.glob("*") if p.is_file()) if folder.is_dir() else 0


def disk_usage(settings: Settings) -> dict:
    """Bytes the store holds: verified blobs, and downloads not finished."""
    store = Store(settings.models)
    return {
        "store": str(store.root),
        "models": len(store.read_index()),
        "models_bytes": _folder_bytes(store.root / "blobs" / "sha256"),
        "incomplete_bytes": _folder_bytes(store.root / "incoming"),
    }

"""What a worker loads: ``bundles/sha256/<model id>/model/`` holds hard links
to the model's blobs under the names llama.cpp expects (``model.gguf``, or
``model-00001-of-00003.gguf``… for a sharded model, which llama.cpp finds
by name), plus ``template.jinja`` and the ``config.json``.

Names come from the layer's kind and position, never from a registry's
annotations, so nothing a registry sends becomes a path.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from corral.store import artifact
from corral.store.artifact import Manifest
from corral.store.layout import Store


@dataclass(frozen=True)
class Bundle:
    weights: tuple[Path, ...]  # the GGUF file, or its shards in order
    chat_template: Path | None
    license: Path | None
    config: Path

    @property
    def model_file(self) -> Path:
        """The file a worker opens (the first shard of a sharded model)."""
        return self.weights[0]


def _names(manifest: Manifest) -> dict[str, str]:
    """Blob digest -> file name in the bundle."""
    weights = manifest.weights
    names = {}
    if len(weights) == 1:
        names[weights[0].digest] = "model.gguf"
    else:
        for i, layer in enumerate(weights, 1):
            names[layer.digest] = f"model-{i:05d}-of-{len(weights):05d}.gguf"
    for media_type, name in ((artifact.CHAT_TEMPLATE, "template.jinja"), (artifact.LICENSE, "LICENSE"),
                             (artifact.MMPROJ, "model.mmproj")):
        layer = manifest.first(media_type)
        if layer is not None and layer.digest not in names:
            names[layer.digest] = name
    names.setdefault(manifest.config.digest, "config.json")
    return names


def _link(blob: Path, target: Path) -> None:
    if target.exists() and os.path.samefile(blob, target):
        return
    tmp = target.with_name(f".{target.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(blob, tmp)
    except OSError:  # a file system without hard links
        shutil.copyfile(blob, tmp)
    os.replace(tmp, target)


def ensure_bundle(store: Store, model_id: str, manifest: Manifest) -> Bundle:
    """The model's bundle, built (or repaired) from its blobs."""
    folder = store.bundle_dir(model_id) / "model"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    names = _names(manifest)
    for digest, name in names.items():
        _link(store.blob_path(digest), folder / name)

    def path_of(layer: artifact.Descriptor | None) -> Path | None:
        return folder / names[layer.digest] if layer is not None else None

    return Bundle(
        weights=tuple(folder / names[layer.digest] for layer in manifest.weights),
        chat_template=path_of(manifest.first(artifact.CHAT_TEMPLATE)),
        license=path_of(manifest.first(artifact.LICENSE)),
        config=folder / names[manifest.config.digest],
    )

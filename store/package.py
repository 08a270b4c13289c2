"""``corral package --gguf FILE REF``: a GGUF file (and its shards, licence and
chat template) into the store as a model in Docker Model Runner's layout, so
that ``docker model`` can pull and run what corral pushes, and corral what
``docker model package`` pushes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from corral.configs.settings import Settings
from corral.store import artifact
from corral.store.blobs import import_file
from corral.store.net_errors import check_room, disk_errors
from corral.store.gguf_facts import gguf_facts
from corral.store.layout import Store
from corral.store.pull import build_and_register
from corral.store.reference import parse_reference
from corral.supervisor.errors import ModelNotFound, UsageError

_SHARD = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")
MAX_CONTEXT = 16 * 1024 * 1024


@dataclass(frozen=True)
class Packaged:
    name: str
    display: str
    id: str
    size: int


def discover_shards(path: Path) -> list[Path]:
    """All shards of a sharded GGUF (``x-00001-of-00003.gguf``…), or just ``path``."""
    match = _SHARD.match(path.name)
    if not match:
        return [path]
    count = int(match["count"])
    shards = [path.with_name(f"{match['stem']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    missing = [s.name for s in shards if not s.is_file()]
    if missing:
        raise ModelNotFound(f"{path.name} is one of {count} shards, but {', '.join(missing[:3])} is missing beside it")
    return shards


def _check_file(path: Path, what: str) -> Path:
    path = path.expanduser()
    if not path.is_file():
        raise ModelNotFound(f"{what} {path} does not exist")
    return path


def package(gguf: Path, reference: str, settings: Settings, *, license_file: Path | None = None,
            chat_template: Path | None = None, context_size: int | None = None) -> Packaged:
    ref = parse_reference(reference)
    if ref.is_huggingface or ref.digest:
        raise UsageError(f"package to a name with a tag, e.g. registry:5000/team/model:v1, not {reference}")
    if context_size is not None and not 16 <= context_size <= MAX_CONTEXT:
        raise UsageError(f"--context-size must be between 16 and {MAX_CONTEXT}")
    gguf = _check_file(gguf, "GGUF file")
    with open(gguf, "rb") as f:
        if f.read(4) != b"GGUF":
            raise UsageError(f"{gguf} is not a GGUF file; corral packages GGUF models")
    shards = discover_shards(gguf)
    files: list[tuple[Path, str]] = [(s, artifact.GGUF) for s in shards]
    if license_file is not None:
        files.append((_check_file(license_file, "licence file"), artifact.LICENSE))
    if chat_template is not None:
        files.append((_check_file(chat_template, "chat template"), artifact.CHAT_TEMPLATE))

    store = Store(settings.models).ensure()
    facts = gguf_facts([str(s) for s in shards])
    need = sum(path.stat().st_size for path, _ in files)
    check_room(store.root, need, ref.display, "package again")
    layers = []
    with disk_errors(store.root, lambda: need, "package again"):
        for path, media_type in files:
            digest, size = import_file(store, str(path))
            layers.append(artifact.layer_descriptor(media_type, digest, size, path.name))
    digest, manifest = build_and_register(store, ref.name, layers, facts, context_size)
    return Packaged(ref.name, ref.display, digest, manifest.size)

"""The model store on disk, content-addressed, in Docker Model Runner's layout:

    $CORRAL_MODELS/
      layout.json                       {"version": "1.0.0"}
      models.json                       the index: {"models": [{"id", "tags", "files"}]}
      blobs/sha256/<hex>                every blob, named by its verified digest
      manifests/sha256/<hex>            manifests, named by their digest (the model's id)
      bundles/sha256/<hex>/model/…      what a worker loads: hard links to the blobs
      incoming/<hex>.partial, .lock     downloads in progress (resumable)

A blob appears under ``blobs/`` only after its bytes were verified; a name
appears in the index only after every blob of its manifest is there. Every
path below is built from a digest that :func:`check_digest` accepted.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from corral.store.reference import check_digest

LAYOUT = {"version": "1.0.0"}
MAX_INDEX_BYTES = 16 * 1024 * 1024


def _hex(digest: str) -> str:
    return check_digest(digest).split(":", 1)[1]


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``path`` so that a reader sees the old or the new file, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@dataclass
class IndexEntry:
    id: str  # the manifest digest
    tags: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # blob digests: config and layers

    def as_dict(self) -> dict:
        return {"id": self.id, "tags": list(self.tags), "files": list(self.files)}


class Store:
    def __init__(self, root: Path):
        self.root = Path(root)

    # -- paths -------------------------------------------------------------

    @property
    def index_path(self) -> Path:
        return self.root / "models.json"

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / _hex(digest)

    def manifest_path(self, digest: str) -> Path:
        return self.root / "manifests" / "sha256" / _hex(digest)

    def bundle_dir(self, digest: str) -> Path:
        return self.root / "bundles" / "sha256" / _hex(digest)

    def partial_path(self, digest: str) -> Path:
        return self.root / "incoming" / f"{_hex(digest)}.partial"

    def blob_lock_path(self, digest: str) -> Path:
        return self.root / "incoming" / f"{_hex(digest)}.lock"

    def ensure(self) -> "Store":
        """Create the folders (mode 0700, like CORRAL_HOME) and layout.json."""
        for sub in ("blobs/sha256", "manifests/sha256", "bundles/sha256", "incoming"):
            (self.root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        layout = self.root / "layout.json"
        if not layout.exists():
            write_atomically(layout, json.dumps(LAYOUT).encode())
        return self

    # -- blobs and manifests ------------------------------------------------

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def read_blob(self, digest: str, limit: int) -> bytes:
        path = self.blob_path(digest)
        if path.stat().st_size > limit:
            raise ValueError(f"blob {digest} is larger than {limit} bytes")
        return path.read_bytes()

    def has_manifest(self, digest: str) -> bool:
        return self.manifest_path(digest).is_file()

    def read_manifest(self, digest: str) -> bytes:
        return self.manifest_path(digest).read_bytes()

    def write_manifest(self, digest: str, data: bytes) -> None:
        write_atomically(self.manifest_path(digest), data)

    # -- the index ------------------------------------------------------------

    @contextlib.contextmanager
    def locked_index(self) -> Iterator[list[IndexEntry]]:
        """The index, to change under an exclusive lock: what the block leaves
        in the list is written back (atomically) when it ends."""
        self.ensure()
        with open(self.root / "models.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = self.read_index()
            before = [e.as_dict() for e in entries]
            yield entries
            after = [e.as_dict() for e in entries if e.tags or e.files]
            if after != before:
                write_atomically(self.index_path, json.dumps({"models": after}, indent=2).encode())

    def read_index(self) -> list[IndexEntry]:
        try:
            with open(self.index_path, "rb") as f:
                raw = f.read(MAX_INDEX_BYTES + 1)
        except FileNotFoundError:
            return []
        if len(raw) > MAX_INDEX_BYTES:
            raise ValueError(f"{self.index_path} is larger than {MAX_INDEX_BYTES} bytes")
        entries = []
        for item in json.loads(raw).get("models") or []:
            try:
                entries.append(
                    IndexEntry(
                        id=check_digest(item["id"]),
                        tags=[str(t) for t in item.get("tags") or []],
                        files=[check_digest(f) for f in item.get("files") or []],
                    )
                )
            except (KeyError, ValueError, TypeError):
                continue  # an entry we cannot trust is not a model
        return entries

    def find(self, name_or_id: str) -> IndexEntry | None:
        return find_in(self.read_index(), name_or_id)


def find_in(entries: list[IndexEntry], name_or_id: str) -> IndexEntry | None:
    """The entry tagged ``name_or_id`` (a normalised name), or whose id it is."""
    for entry in entries:
        if name_or_id in entry.tags or entry.id == name_or_id:
            return entry
    return None


def add_tag(entries: list[IndexEntry], name: str, digest: str, files: list[str]) -> None:
    """Point ``name`` at the model ``digest`` (moving it off any other model)."""
    for entry in entries:
        if name in entry.tags and entry.id != digest:
            entry.tags.remove(name)
    entry = find_in(entries, digest)
    if entry is None:
        entry = IndexEntry(digest, [], list(files))
        entries.append(entry)
    if name not in entry.tags:
        entry.tags.append(name)

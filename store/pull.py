"""``corral pull``: a model from an OCI registry (or Hugging Face) into the store.

manifest → checks (a model? digests valid?) → config → memory check on the
first weights layer's header → every blob, verified → manifest and bundle →
the name. A model whose manifest is already in the store costs one request.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

from corral.configs.settings import Settings
from corral.store import artifact
from corral.store.blobs import check_download_room, fetch_blob, read_prefix, store_bytes
from corral.store.bundle import ensure_bundle
from corral.store.layout import Store, add_tag
from corral.store.memory_check import check_fits, probe_header
from corral.store.progress import Progress
from corral.store.reference import Reference, parse_reference
from corral.store.registry import RegistryClient
from corral.supervisor.errors import ModelLoadFailed, RegistryError
from corral.supervisor.logs import get_logger

log = get_logger()


@dataclass(frozen=True)
class PullResult:
    name: str  # the store's name: "localhost:5000/test/tiny:latest"
    display: str  # as corral shows it: "localhost:5000/test/tiny"
    id: str  # the manifest digest
    size: int  # bytes of all its blobs
    downloaded: int  # bytes of the blobs this pull downloaded (0: all were present)


def register(store: Store, name: str, digest: str, raw_manifest: bytes, manifest: artifact.Manifest) -> None:
    """Make a model whose blobs are all verified visible under ``name``."""
    store.write_manifest(digest, raw_manifest)
    ensure_bundle(store, digest, manifest)
    with store.locked_index() as entries:
        add_tag(entries, name, digest, [d.digest for d in manifest.blobs])


def build_and_register(store: Store, name: str, layers: list[artifact.Descriptor], facts: dict,
                       context_size: int | None = None) -> tuple[str, artifact.Manifest]:
    """A model made here from verified blobs (``package``, a Hugging Face pull):
    its config and manifest are written, and it is named ``name``."""
    config = artifact.build_config(facts, [layer.digest for layer in layers], context_size=context_size)
    config_desc = artifact.Descriptor(artifact.CONFIG_V01, store_bytes(store, config), len(config))
    raw = artifact.build_manifest(config_desc, layers)
    manifest = artifact.parse_manifest(raw)
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()  # the manifest's digest is the model's id
    register(store, name, digest, raw, manifest)
    return digest, manifest


def is_complete(store: Store, digest: str, manifest: artifact.Manifest) -> bool:
    return store.has_manifest(digest) and all(store.has_blob(d.digest) for d in manifest.blobs)


def _check_memory(store: Store, client: RegistryClient, manifest: artifact.Manifest, ref: Reference,
                  settings: Settings, progress: Progress) -> None:
    config = artifact.parse_config(store.read_blob(manifest.config.digest, artifact.MAX_CONFIG_BYTES),
                                   manifest.config.media_type)
    first = manifest.weights[0]
    progress.status("reading the model header")
    try:
        probe = probe_header(lambda n: read_prefix(store, client, first, progress, n), first.size, config.context_size)
    except ModelLoadFailed as exc:
        # Not a header we can read: the worker will say so at load time.
        log.warning("memory check skipped", model=ref.name, reason=exc.message)
        return
    check_fits(ref.display, probe, settings)


def pull_oci(ref: Reference, settings: Settings, progress: Progress, ignore_memory_check: bool = False,
             on_found: Callable[[], None] | None = None) -> PullResult:
    store = Store(settings.models).ensure()
    with RegistryClient(ref, stall_timeout=settings.stall_timeout) as client:
        raw, content_type, digest = client.get_manifest()
        manifest = artifact.parse_manifest(raw, content_type)
        artifact.check_model_manifest(manifest, ref.display)
        if on_found:
            on_found()
        progress.status(f"pulling {ref.display} ({digest[7:19]})")
        name = ref.name
        if is_complete(store, digest, manifest):
            register(store, name, digest, raw, manifest)
            for blob in manifest.blobs:
                progress.layer_done(blob.digest, blob.size, "present")
            return PullResult(name, ref.display, digest, manifest.size, 0)
        check_download_room(store, manifest.blobs, ref.display)
        downloaded = 0
        if fetch_blob(store, client, manifest.config, Progress()):
            downloaded += manifest.config.size
        if not ignore_memory_check and not store.has_blob(manifest.weights[0].digest):
            _check_memory(store, client, manifest, ref, settings, progress)
        for layer in manifest.layers:
            if fetch_blob(store, client, layer, progress):
                downloaded += layer.size
        register(store, name, digest, raw, manifest)
    log.info("pulled", model=name, id=digest, downloaded=downloaded)
    return PullResult(name, ref.display, digest, manifest.size, downloaded)


def pull(reference: str, settings: Settings, *, progress: Progress | None = None,
         ignore_memory_check: bool = False, on_found: Callable[[], None] | None = None) -> PullResult:
    """Pull ``reference`` (any form ``parse_reference`` takes) into the store.

    ``on_found`` is called once the registry has shown the model exists,
    before anything is downloaded (and before ``progress`` hears a word)."""
    ref = parse_reference(reference)
    progress = progress or Progress()
    try:
        if ref.is_huggingface:
            from corral.store.huggingface import pull_huggingface

            return pull_huggingface(ref, settings, progress, ignore_memory_check, on_found)
        if ref.digest is None and ref.tag is None:
            raise RegistryError(f"{reference} names no tag or digest")
        return pull_oci(ref, settings, progress, ignore_memory_check, on_found)
    finally:
        progress.close()

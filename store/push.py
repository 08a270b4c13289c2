"""``corral push REF``: a stored model's blobs and manifest to its registry.
Blobs the registry already has are not sent again."""

from __future__ import annotations

from typing import Iterator

from corral.configs.settings import Settings
from corral.store import artifact
from corral.store.layout import Store
from corral.store.models import get_model
from corral.store.progress import Progress
from corral.store.reference import parse_reference
from corral.store.net_errors import NetworkError
from corral.store.registry import RegistryClient
from corral.supervisor.errors import UsageError

CHUNK = 1024 * 1024


def _chunks(path: str, digest: str, progress: Progress) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            progress.advanced(digest, len(block))
            yield block


def push(reference: str, settings: Settings, *, progress: Progress | None = None) -> str:
    """Push the stored model ``reference`` to the registry it names; returns
    the manifest digest."""
    progress = progress or Progress()
    ref = parse_reference(reference)
    if ref.is_huggingface:
        raise UsageError("corral pushes to OCI registries; Hugging Face repositories are pushed with their own tools")
    if ref.digest:
        raise UsageError(f"push a tag, not a digest: corral tag {reference} {ref.repo_name}:TAG")
    model = get_model(settings, reference)
    store = Store(settings.models)
    raw = store.read_manifest(model.id)
    try:
        with RegistryClient(ref, push=True, stall_timeout=settings.stall_timeout) as client:
            for blob in model.manifest.blobs:
                if client.has_blob(blob.digest):
                    progress.layer_done(blob.digest, blob.size, "present")
                    continue
                progress.layer_started(blob.digest, blob.size)
                client.upload_blob(blob.digest, blob.size, _chunks(str(store.blob_path(blob.digest)), blob.digest, progress))
                progress.layer_done(blob.digest, blob.size, "uploaded")
            client.put_manifest(ref.tag or "latest", raw, model.manifest.media_type or artifact.MANIFEST_OCI)
    except NetworkError as exc:
        # An upload is one PUT: it cannot resume, but blobs the registry
        # already holds are not sent again.
        raise NetworkError(f"{exc.message}; push again (blobs already uploaded are skipped)") from None
    finally:
        progress.close()
    return model.id

"""``corral pull hf.co/ORG/REPO[:QUANT]``: a GGUF model from Hugging Face.

``huggingface_hub`` speaks to the Hub: it lists the repository (with each LFS
file's sha256), builds the file URLs and the headers, and honours
``HF_ENDPOINT`` and ``HF_TOKEN``. The bytes go through the store's own blob
download, so a Hub file is verified against its sha256, resumed with Range
and shared between concurrent pulls exactly as a registry blob is. The
files become a model in Docker Model Runner's layout, named
``huggingface.co/org/repo:QUANT``.

With no quantization given, Q4_K_M is taken, else the first GGUF file, as
Docker Model Runner does.
"""

from __future__ import annotations

import contextlib
import logging
import re
from typing import Callable, Iterator
from urllib.parse import urlsplit

import httpx

from corral.configs.settings import Settings
from corral.store import artifact
from corral.store.blobs import check_download_room, fetch_blob, read_prefix
from corral.store.gguf_facts import gguf_facts
from corral.store.layout import Store
from corral.store.memory_check import check_fits, probe_header
from corral.store.models import find_model
from corral.store.net_errors import check_reachable, network_error
from corral.store.progress import Progress
from corral.store.pull import PullResult, build_and_register
from corral.store.reference import DEFAULT_TAG, Reference
from corral.supervisor.errors import ModelLoadFailed, ModelNotFound, RegistryError
from corral.supervisor.logs import get_logger

log = get_logger()

DEFAULT_QUANT = "Q4_K_M"
_SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)


class HubFiles:
    """Blob source for one Hub repository: a digest is one of its LFS files."""

    name = "huggingface.co"

    def __init__(self, repo: str, urls: dict[str, str], stall_timeout: float = 20.0):
        from huggingface_hub.utils import build_hf_headers

        self.repo = repo
        self.urls = urls  # digest -> resolve URL
        self.stall_timeout = stall_timeout
        self.http = httpx.Client(timeout=httpx.Timeout(stall_timeout, connect=min(stall_timeout, 10.0)),
                                 headers=build_hf_headers(), follow_redirects=True)

    def close(self) -> None:
        self.http.close()

    @contextlib.contextmanager
    def open_blob(self, digest: str, start: int = 0, end: int | None = None) -> Iterator[httpx.Response]:
        headers = {"Range": f"bytes={start}-{'' if end is None else end}"} if start or end is not None else {}
        try:
            with self.http.stream("GET", self.urls[digest], headers=headers) as response:
                if response.status_code not in (200, 206, 416):
                    raise RegistryError(f"Hugging Face answered {response.status_code} for a file of {self.repo}")
                yield response
        except httpx.HTTPError as exc:
            raise network_error(exc, "Hugging Face", self.stall_timeout) from None


def choose_files(paths: list[str], quant: str) -> list[str]:
    """The GGUF file (or shards) for ``quant``: ``latest`` means Q4_K_M, else
    the first GGUF of the repository."""
    ggufs = sorted(p for p in paths if p.lower().endswith(".gguf") and "mmproj" not in p.lower())
    if not ggufs:
        raise ModelNotFound("the repository has no GGUF file")
    wanted = DEFAULT_QUANT if quant == DEFAULT_TAG else quant
    matches = [p for p in ggufs if wanted.lower() in p.rsplit("/", 1)[-1].lower()]
    if not matches:
        if quant != DEFAULT_TAG:
            raise ModelNotFound(f"no GGUF file for {quant} (the repository has {', '.join(ggufs[:6])})")
        matches = ggufs[:1]
    first = matches[0]
    if _SHARD.search(first):
        stem = _SHARD.sub("", first)
        return sorted(p for p in ggufs if _SHARD.search(p) and _SHARD.sub("", p) == stem)
    return [first]


@contextlib.contextmanager
def _quiet_hub() -> Iterator[None]:
    """The hub's own retry warnings off: the one line corral prints is the answer."""
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_log.setLevel(level)


def _list_repo(ref: Reference) -> tuple[list, str]:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
    from huggingface_hub.hf_api import RepoFile

    api = HfApi()  # its endpoint and token come from HF_ENDPOINT and HF_TOKEN
    host = f"Hugging Face ({urlsplit(api.endpoint).netloc or api.endpoint})"
    # huggingface_hub retries a host it cannot reach five times (half a
    # minute), warning each time: find that first, in one line.
    check_reachable(api.endpoint, host)
    try:
        with _quiet_hub():
            files = [e for e in api.list_repo_tree(ref.hf_repo, recursive=True) if isinstance(e, RepoFile)]
    except RepositoryNotFoundError:
        raise ModelNotFound(f"{ref.hf_repo} was not found on Hugging Face (or needs HF_TOKEN)") from None
    except HfHubHTTPError as exc:
        status = getattr(exc.response, "status_code", None) if getattr(exc, "response", None) is not None else None
        if status is None:
            raise network_error(exc, host) from None
        hint = "; set HF_TOKEN to a token that may read it" if status in (401, 403) else ""
        raise RegistryError(f"{host} answered {status} listing {ref.hf_repo}{hint}") from None
    except Exception as exc:  # noqa: BLE001 -- httpx2's errors (the hub's client) and OSError: one line
        log.info("listing a Hugging Face repository failed", repo=ref.hf_repo, error=repr(exc))
        raise network_error(exc, host) from None
    return files, api.endpoint


def pull_huggingface(ref: Reference, settings: Settings, progress: Progress, ignore_memory_check: bool = False,
                     on_found: Callable[[], None] | None = None) -> PullResult:
    from huggingface_hub import hf_hub_url

    files, endpoint = _list_repo(ref)
    by_path = {f.path: f for f in files}
    try:
        chosen = [by_path[p] for p in choose_files(list(by_path), ref.tag or DEFAULT_TAG)]
    except ModelNotFound as exc:
        raise ModelNotFound(f"{ref.hf_repo}: {exc.message}") from None
    layers = []
    for f in chosen:
        if f.lfs is None:
            raise RegistryError(f"{ref.hf_repo}/{f.path} is not stored with LFS, so it has no sha256 to verify")
        try:
            layers.append(artifact.layer_descriptor(artifact.GGUF, f"sha256:{f.lfs.sha256}", int(f.lfs.size),
                                                    f.path.rsplit("/", 1)[-1]))
        except (ValueError, TypeError):
            raise RegistryError(f"Hugging Face sent an invalid sha256 for {f.path}") from None
    if on_found:
        on_found()
    store = Store(settings.models).ensure()
    existing = find_model(settings, ref.name)
    if existing and [d.digest for d in existing.manifest.weights] == [d.digest for d in layers]:
        for layer in layers:
            progress.layer_done(layer.digest, layer.size, "present")
        return PullResult(ref.name, ref.display, existing.id, existing.size, 0)
    check_download_room(store, layers, ref.display)
    progress.status(f"pulling {ref.display} ({', '.join(f.path for f in chosen)})")
    source = HubFiles(ref.hf_repo, {d.digest: hf_hub_url(ref.hf_repo, f.path, endpoint=endpoint)
                                    for d, f in zip(layers, chosen)}, settings.stall_timeout)
    downloaded = 0
    try:
        if not ignore_memory_check and not store.has_blob(layers[0].digest):
            try:
                probe = probe_header(lambda n: read_prefix(store, source, layers[0], progress, n), layers[0].size, None)
            except ModelLoadFailed:
                probe = None  # not a header we can read: the worker will say so
            if probe is not None:
                check_fits(ref.display, probe, settings)
        for layer in layers:
            if fetch_blob(store, source, layer, progress):
                downloaded += layer.size
    finally:
        source.close()
    facts = gguf_facts([str(store.blob_path(d.digest)) for d in layers])
    digest, manifest = build_and_register(store, ref.name, layers, facts)
    return PullResult(ref.name, ref.display, digest, manifest.size, downloaded)

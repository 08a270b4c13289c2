"""Verified, resumable, shared blob downloads.

A blob is written to ``incoming/<hex>.partial``, hashed as it arrives, and
renamed into ``blobs/`` only when its sha256 matches its name. An interrupted
download (Ctrl-C, kill -9, a dropped connection) leaves the partial file; the
next one hashes what is there and asks for the rest with a Range request. A
lock file per digest (``flock``, so a killed holder releases it) makes two
pulls of one blob, in two processes, download it once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import time
from typing import ContextManager, Iterable, Iterator, Protocol

import httpx

from corral.store.artifact import Descriptor
from corral.store.layout import Store
from corral.store.net_errors import NetworkError, check_room, disk_errors
from corral.store.progress import Progress
from corral.supervisor.errors import BlobCorrupt
from corral.supervisor.logs import get_logger

log = get_logger()

CHUNK = 1024 * 1024
# Tries of one blob transfer that breaks off or stalls, each resumed where
# the last one stopped; then the pull gives up with one line (the partial
# file stays, so pulling again resumes it).
TRIES = 4


class BlobSource(Protocol):
    """Where blobs come from: a registry repository, or a Hugging Face repo."""

    name: str  # for messages: "localhost:5000", "huggingface.co"

    def open_blob(self, digest: str, start: int = 0, end: int | None = None) -> ContextManager[httpx.Response]: ...


@contextlib.contextmanager
def blob_lock(store: Store, digest: str, progress: Progress) -> Iterator[None]:
    """Held while one process writes the blob; others wait, then find it done."""
    store.ensure()
    with open(store.blob_lock_path(digest), "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress.status(f"waiting for another pull of {digest[7:19]}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _hash_file(path: str, hasher: "hashlib._Hash") -> int:
    """Feed what a partial file holds to ``hasher``; return its length."""
    n = 0
    with open(path, "rb") as f:
        while block := f.read(CHUNK * 4):
            hasher.update(block)
            n += len(block)
    return n


def _extend(store: Store, source: BlobSource, desc: Descriptor, progress: Progress, upto: int) -> "hashlib._Hash":
    """Grow the partial file to ``upto`` bytes (resuming); return the hash of
    its content. The caller holds the blob's lock."""
    partial = store.partial_path(desc.digest)
    hasher = hashlib.sha256()
    have = _hash_file(str(partial), hasher) if partial.exists() else 0
    if have > desc.size:  # longer than the blob can be: not worth keeping
        os.unlink(partial)
        hasher, have = hashlib.sha256(), 0
    if have >= upto:
        return hasher
    progress.layer_started(desc.digest, desc.size, have)
    end = None if upto >= desc.size else upto - 1
    with source.open_blob(desc.digest, have, end) as response, open(partial, "ab") as out:
        if response.status_code == 200 and have:
            log.info("registry ignored the range; downloading from the start", digest=desc.digest, had=have)
            out.truncate(0)
            hasher, have = hashlib.sha256(), 0
        try:
            if response.status_code != 416:
                # the raw stream unless the server encoded it: iter_bytes would
                # copy every chunk once more to re-cut it (a third of the speed)
                encoded = response.headers.get("content-encoding", "identity") != "identity"
                for chunk in response.iter_bytes(CHUNK) if encoded else response.iter_raw():
                    if have + len(chunk) > desc.size:
                        raise BlobCorrupt(f"{source.name} sent more than the {desc.size} bytes of blob "
                                          f"{desc.digest[:19]}; nothing was stored")
                    # Written and hashed here, not in a thread: on 2 cores
                    # shared with the registry the hand-off cost more than the
                    # overlap gave (a 98 MB pull: 236 ms inline, 269 threaded,
                    # medians of 6).
                    out.write(chunk)
                    hasher.update(chunk)
                    have += len(chunk)
                    progress.advanced(desc.digest, len(chunk))
                    if end is not None and have >= upto:
                        break
        except BlobCorrupt:
            out.close()
            os.unlink(partial)
            raise
        out.flush()
        os.fsync(out.fileno())
    if have < upto:
        raise NetworkError(f"{source.name} ended the transfer of blob {desc.digest[:19]} at {have} of "
                           f"{desc.size} bytes", transient=True)
    return hasher


def _partial_size(store: Store, digest: str) -> int:
    try:
        return store.partial_path(digest).stat().st_size
    except OSError:
        return 0


def _extend_retrying(store: Store, source: BlobSource, desc: Descriptor, progress: Progress,
                     upto: int) -> "hashlib._Hash":
    """``_extend``, resumed after a dropped or stalled transfer up to TRIES
    times; a full disk is one line saying how much to free."""
    for attempt in range(1, TRIES + 1):
        try:
            with disk_errors(store.root, lambda: desc.size - _partial_size(store, desc.digest), "pull again to resume"):
                return _extend(store, source, desc, progress, upto)
        except NetworkError as exc:
            if not exc.transient:
                raise
            if attempt == TRIES:
                raise NetworkError(f"{exc.message}; gave up after {TRIES} tries: "
                                   "run the same command again to resume") from None
            log.info("transfer broke off; resuming", blob=desc.digest, source=source.name, reason=exc.message,
                     attempt=attempt)
            time.sleep(0.25 * 2 ** (attempt - 1))  # 0.25, 0.5, 1 s: a blip, not a backoff for hours
    raise AssertionError("unreachable")


def missing_bytes(store: Store, blobs: Iterable[Descriptor]) -> int:
    """What downloading ``blobs`` still has to write: partial files count."""
    return sum(max(0, d.size - _partial_size(store, d.digest)) for d in blobs if not store.has_blob(d.digest))


def check_download_room(store: Store, blobs: Iterable[Descriptor], what: str) -> None:
    """Refuse a pull before its first byte when its blobs cannot fit."""
    check_room(store.root, missing_bytes(store, blobs), what, "pull again")


def drop_partials(store: Store) -> tuple[int, int]:
    """Delete the unfinished downloads no pull is writing now; returns how
    many and their bytes. A partial whose lock is held is being written."""
    count = size = 0
    # Only downloads (named by their digest); a package's copies are removed
    # by the package itself.
    for partial in sorted((store.root / "incoming").glob("?" * 64 + ".partial")):
        # The lock file stays: a pull waiting on it holds that very file.
        with open(partial.with_suffix(".lock"), "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a pull is writing it
            try:
                n = partial.stat().st_size
                partial.unlink()
            except FileNotFoundError:
                continue
            count, size = count + 1, size + n
    return count, size


def read_prefix(store: Store, source: BlobSource, desc: Descriptor, progress: Progress, nbytes: int) -> bytes:
    """The first ``nbytes`` of a blob, fetched with a Range request into its
    partial file, so the download that may follow starts after them."""
    nbytes = min(nbytes, desc.size)
    if store.has_blob(desc.digest):
        with open(store.blob_path(desc.digest), "rb") as f:
            return f.read(nbytes)
    with blob_lock(store, desc.digest, progress):
        if not store.has_blob(desc.digest):
            # silent: the layer's bar starts with these bytes already counted
            _extend_retrying(store, source, desc, Progress(), nbytes)
            path = store.partial_path(desc.digest)
        else:
            path = store.blob_path(desc.digest)
        with open(path, "rb") as f:
            return f.read(nbytes)


def fetch_blob(store: Store, source: BlobSource, desc: Descriptor, progress: Progress) -> bool:
    """Make the blob present and verified; ``True`` if this call downloaded it."""
    if store.has_blob(desc.digest):
        progress.layer_done(desc.digest, desc.size, "present")
        return False
    with blob_lock(store, desc.digest, progress):
        if store.has_blob(desc.digest):  # another pull finished it while we waited
            progress.layer_done(desc.digest, desc.size, "present")
            return False
        hasher = _extend_retrying(store, source, desc, progress, desc.size)
        partial = store.partial_path(desc.digest)
        actual = "sha256:" + hasher.hexdigest()
        if actual != desc.digest:
            os.unlink(partial)
            raise BlobCorrupt(
                f"{source.name} sent blob {desc.digest[:19]} whose bytes hash to {actual[:19]}: "
                "the registry's copy is corrupt; nothing was stored"
            )
        commit_blob(store, str(partial), desc.digest)
    progress.layer_done(desc.digest, desc.size, "downloaded")
    return True


def commit_blob(store: Store, verified_file: str, digest: str) -> None:
    """Move a file whose sha256 was checked to be ``digest`` into ``blobs/``."""
    os.chmod(verified_file, 0o644)
    os.replace(verified_file, store.blob_path(digest))
    with contextlib.suppress(OSError):
        # Waiters re-check has_blob once they hold the lock, so the file can go.
        os.unlink(store.blob_lock_path(digest))


def import_file(store: Store, source: str) -> tuple[str, int]:
    """Copy a local file into the store as a blob; returns (digest, size).
    The copy is hashed as it is written, so what is stored is what was hashed."""
    store.ensure()
    fd, tmp = tempfile.mkstemp(dir=store.root / "incoming", prefix="import-", suffix=".partial")
    hasher, size = hashlib.sha256(), 0
    try:
        with open(source, "rb") as src, os.fdopen(fd, "wb") as out:
            while block := src.read(CHUNK * 4):
                hasher.update(block)
                out.write(block)
                size += len(block)
            out.flush()
            os.fsync(out.fileno())
        digest = "sha256:" + hasher.hexdigest()
        if store.has_blob(digest):
            os.unlink(tmp)
        else:
            commit_blob(store, tmp, digest)
        return digest, size
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def store_bytes(store: Store, data: bytes) -> str:
    """Small content (a config) as a blob; returns its digest."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if not store.has_blob(digest):
        store.ensure()
        fd, tmp = tempfile.mkstemp(dir=store.root / "incoming", prefix="bytes-", suffix=".partial")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        commit_blob(store, tmp, digest)
    return digest

"""Network and disk failures as one line each: the host, the cause (DNS,
refused, TLS, timeout, a dropped or stalled transfer, a full disk) and what
to do. Every store command (pull, push, package, a Hugging Face pull) raises
these instead of letting an exception of an HTTP library or of ``os`` reach
the user as a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import ssl
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit

from corral.configs.settings import format_size
from corral.supervisor.errors import CorralError, DiskFull, RegistryError

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class NetworkError(RegistryError):
    """A transfer failed on the way; ``transient`` when trying again from
    where it stopped may work (a dropped or stalled connection)."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__


def network_error(exc: BaseException, host: str, timeout: float | None = None) -> NetworkError:
    """What went wrong talking to ``host``, from an httpx (or httpx2, or
    socket) exception, by the cause a user can act on."""
    chain = _chain(exc)
    names = {type(e).__name__ for e in chain}
    text = " ".join(str(e) for e in chain)
    reach = f"cannot reach {host}"
    if any(isinstance(e, socket.gaierror) for e in chain) or "name resolution" in text \
            or "Name or service not known" in text or "nodename nor servname" in text:
        return NetworkError(f"{reach}: its name does not resolve (DNS); check the name and this machine's network")
    if any(isinstance(e, ssl.SSLError) for e in chain) or "CERTIFICATE_VERIFY_FAILED" in text or "SSL" in text:
        return NetworkError(f"{reach}: the TLS handshake failed ({_first_line(exc)}); check the host's certificate, "
                            "or the clock of this machine")
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "Connection refused" in text:
        return NetworkError(f"{reach}: it refused the connection; check the host and port, and that it is running")
    wait = f"{timeout:g} s" if timeout else "too long"
    if "ConnectTimeout" in names or "PoolTimeout" in names:
        return NetworkError(f"{reach}: it did not answer a connection within {wait}; check this machine's network",
                            transient=True)
    if names & {"ReadTimeout", "WriteTimeout", "TimeoutException"} or any(isinstance(e, TimeoutError) for e in chain):
        return NetworkError(f"{host} stopped sending for {wait} (a stalled transfer)", transient=True)
    if names & {"RemoteProtocolError", "ReadError", "WriteError", "IncompleteRead"} \
            or any(isinstance(e, (ConnectionResetError, BrokenPipeError)) for e in chain):
        return NetworkError(f"{host} dropped the connection mid-transfer", transient=True)
    return NetworkError(f"{reach}: {_first_line(exc)}", transient="NetworkError" in names)


def check_reachable(url: str, name: str, timeout: float = 10.0) -> None:
    """Resolve the host of ``url``, connect, and for https shake hands: DNS,
    refused connections and TLS failures are found in a moment, before a
    library retries them for half a minute. Skipped behind a proxy, which
    is what is reached then."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")):
        return
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            if parts.scheme == "https":
                ssl.create_default_context().wrap_socket(sock, server_hostname=host).close()
    except OSError as exc:
        raise network_error(exc, name, timeout) from None


def free_bytes(path: Path) -> int:
    """Bytes free for this user on the disk holding ``path`` (or its nearest
    existing parent)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    fs = os.statvfs(path)
    return fs.f_bavail * fs.f_frsize


# Room for what a model needs besides its blobs: manifest, config, index.
MARGIN_BYTES = 1024 * 1024
_WHAT_TO_DO = "`corral rm --partials` drops unfinished downloads, `corral df` shows them"


def check_room(where: Path, need: int, what: str, again: str) -> None:
    """Refuse before writing when ``need`` bytes cannot fit; ``again`` says
    what to run once there is room."""
    free = free_bytes(where)
    if need + MARGIN_BYTES > free:
        raise DiskFull(f"{what} needs {format_size(need)} on the disk holding {where}, which has "
                       f"{format_size(free)} free: free {format_size(need + MARGIN_BYTES - free)}, then {again} "
                       f"({_WHAT_TO_DO})")


@contextlib.contextmanager
def disk_errors(where: Path, still_needed: Callable[[], int], again: str) -> Iterator[None]:
    """A full disk (or any failed write) under ``where`` as one line; ``again``
    says how the work resumes."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            need = still_needed() + MARGIN_BYTES
            raise DiskFull(f"the disk holding {where} is full: free {format_size(need)}, then {again} "
                           f"({_WHAT_TO_DO})") from None
        raise CorralError(f"cannot write {exc.filename or where}: {exc.strerror or exc}") from None

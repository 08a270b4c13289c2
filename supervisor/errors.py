"""Every error a user can hit: a named exception with a stable wire code,
a one-line message that says what to do, and the CLI's exit code.

The supervisor raises these where a problem is known and sends them as
``error`` frames; the client turns the frame back into the same exception;
the CLI renders it in one place.
"""

from __future__ import annotations


class CorralError(Exception):
    """Base of every user-facing error."""

    code = "internal_error"
    exit_code = 1

    def __init__(self, message: str):
        # Messages are shown on one line; a newline from a library must not
        # break that promise.
        super().__init__(" ".join(str(message).split()))

    @property
    def message(self) -> str:
        return str(self)


class InternalError(CorralError):
    """An unexpected exception while handling one request: that request
    ends, the supervisor goes on (the traceback is in its log)."""

    code = "internal_error"
    exit_code = 1


class BadRequest(CorralError):
    code = "bad_request"
    exit_code = 2
    #: the id of the request it answers, when the frame was readable enough
    request_id: int | str | None = None


class UsageError(CorralError):
    code = "bad_usage"
    exit_code = 2


class ModelNotFound(CorralError):
    code = "model_not_found"
    exit_code = 3


class ModelLoadFailed(CorralError):
    code = "model_load_failed"
    exit_code = 1


class InsufficientMemory(CorralError):
    code = "insufficient_memory"
    exit_code = 4


class GenerationFailed(CorralError):
    code = "generation_failed"
    exit_code = 1


class WorkerCrashed(CorralError):
    code = "worker_crashed"
    exit_code = 5


class CrashLoop(WorkerCrashed):
    """A model whose worker keeps failing is not restarted for a while."""

    code = "crash_loop"


class SupervisorUnreachable(CorralError):
    code = "supervisor_unreachable"
    exit_code = 6


class Busy(CorralError):
    code = "busy"
    exit_code = 1


class Cancelled(CorralError):
    code = "cancelled"
    exit_code = 130


class ShuttingDown(CorralError):
    code = "shutting_down"
    exit_code = 6


class RegistryError(CorralError):
    """A registry (OCI or Hugging Face) refused or failed a pull or push."""

    code = "registry_error"
    exit_code = 1


class DiskFull(CorralError):
    """A disk has no room for what a command must write."""

    code = "disk_full"
    exit_code = 1


class BlobCorrupt(CorralError):
    """Downloaded bytes do not match the digest that names them."""

    code = "blob_corrupt"
    exit_code = 1


class ModelInUse(CorralError):
    """A loaded model cannot be removed without --force."""

    code = "model_in_use"
    exit_code = 1


_BY_CODE = {
    cls.code: cls
    for cls in (
        InternalError,
        BadRequest,
        UsageError,
        ModelNotFound,
        ModelLoadFailed,
        GenerationFailed,
        InsufficientMemory,
        WorkerCrashed,
        CrashLoop,
        SupervisorUnreachable,
        Busy,
        Cancelled,
        ShuttingDown,
        RegistryError,
        BlobCorrupt,
        DiskFull,
        ModelInUse,
    )
}


def error_for_code(code: str, message: str) -> CorralError:
    """The exception that an ``error`` frame with this code stands for."""
    return _BY_CODE.get(code, CorralError)(message)

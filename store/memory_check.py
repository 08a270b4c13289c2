"""The memory check at pull: read the GGUF header from the first bytes of the
first weights layer, estimate the runtime memory at the model's default
context with the supervisor's estimator, and refuse a model that cannot fit
this machine before its weights are downloaded."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Callable

import psutil

from corral.configs.catalog import DEFAULT_CONTEXT_LENGTH, LLAMA_CPP, ModelSpec
from corral.configs.settings import Settings, format_size
from corral.supervisor.errors import InsufficientMemory, ModelLoadFailed
from corral.supervisor.memory import Estimate, estimate_memory
from corral.supervisor.model_files import HeaderIncomplete, ModelHeader, read_header_bytes

FIRST_PROBE_BYTES = 4 * 1024 * 1024
MAX_PROBE_BYTES = 128 * 1024 * 1024


@dataclass(frozen=True)
class Probe:
    header: ModelHeader
    estimate: Estimate


def probe_prefix(prefix: bytes, file_size: int, context_length: int) -> Probe:
    """The header and estimate of a GGUF file from its first bytes; raises
    :class:`HeaderIncomplete` when they end inside the header.

    ``estimate_memory`` reads its header from a path, so the estimate runs on
    a sparse file of the full size holding the prefix (no disk used for the
    rest); an estimator taking a header would make the file unnecessary.
    """
    header = read_header_bytes(prefix, file_size)
    with tempfile.NamedTemporaryFile(prefix="corral-header-", suffix=".gguf") as f:
        f.write(prefix)
        f.truncate(file_size)
        f.flush()
        spec = ModelSpec(name="probe", path=f.name, backend=LLAMA_CPP, context_length=context_length)
        estimate = estimate_memory(spec)
    return Probe(header, estimate)


def probe_header(read: Callable[[int], bytes], file_size: int, context_length: int | None) -> Probe:
    """Read more of the file until its header fits (a big vocabulary makes a
    header of several MB)."""
    n = FIRST_PROBE_BYTES
    while True:
        prefix = read(min(n, file_size))
        if prefix[:4] != b"GGUF":
            raise ModelLoadFailed("the model's first weights layer is not a GGUF file")
        try:
            return probe_prefix(prefix, file_size, context_length or DEFAULT_CONTEXT_LENGTH)
        except HeaderIncomplete:
            if len(prefix) >= file_size or n >= MAX_PROBE_BYTES:
                raise
        n *= 4


def machine_memory(settings: Settings) -> tuple[int, str]:
    """What a model must fit in: the budget the user set, else the machine's
    total memory (what it could have with everything else closed)."""
    if settings.memory_budget is not None:
        return settings.memory_budget, "the memory budget (CORRAL_MEMORY_BUDGET)"
    return psutil.virtual_memory().total, "this machine's memory"


def check_fits(name: str, probe: Probe, settings: Settings) -> None:
    have, what = machine_memory(settings)
    need = probe.estimate.total_bytes
    if need > have:
        raise InsufficientMemory(
            f"{name} needs about {format_size(need)} at context {probe.estimate.context_length}, "
            f"more than {what}, {format_size(have)}; pass --ignore-runtime-memory-check to pull it anyway"
        )

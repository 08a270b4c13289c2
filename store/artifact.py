"""Model artifacts as Docker Model Runner lays them out in a registry: an OCI
image manifest whose config is the model's description and whose layers are
the files (GGUF weights, licence, chat template). CNCF model-spec weight
layers are read too. Pure functions: bytes in, checked values out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from corral.store.reference import check_digest
from corral.supervisor.errors import RegistryError

MANIFEST_OCI = "application/vnd.oci.image.manifest.v1+json"
MANIFEST_DOCKER = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_TYPES = (MANIFEST_OCI, MANIFEST_DOCKER)
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")

CONFIG_V01 = "application/vnd.docker.ai.model.config.v0.1+json"
CONFIG_V02 = "application/vnd.docker.ai.model.config.v0.2+json"
CONFIG_CNCF = "application/vnd.cncf.model.config.v1+json"
CONFIG_TYPES = (CONFIG_V01, CONFIG_V02, CONFIG_CNCF)

GGUF = "application/vnd.docker.ai.gguf.v3"
LICENSE = "application/vnd.docker.ai.license"
CHAT_TEMPLATE = "application/vnd.docker.ai.chat.template.jinja"
MMPROJ = "application/vnd.docker.ai.mmproj"
CNCF_WEIGHT_RAW = "application/vnd.cncf.model.weight.v1.raw"
CNCF_WEIGHT_GGUF = "application/vnd.cncf.model.weight.v1.gguf"
WEIGHT_TYPES = (GGUF, CNCF_WEIGHT_RAW, CNCF_WEIGHT_GGUF)

ANNOTATION_FILEPATH = "org.cncf.model.filepath"
ANNOTATION_FILE_METADATA = "org.cncf.model.file.metadata+json"
ANNOTATION_UNTESTED = "org.cncf.model.file.mediatype.untested"
ANNOTATION_TITLE = "org.opencontainers.image.title"

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_CONFIG_BYTES = 4 * 1024 * 1024
MAX_TEMPLATE_BYTES = 1024 * 1024
MAX_LAYERS = 512
MAX_LAYER_BYTES = 4 * 1024**4  # 4 TiB: a bound, not a model size anyone has


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict, compare=False)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = self.annotations
        return out


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]

    @property
    def weights(self) -> list[Descriptor]:
        return [layer for layer in self.layers if layer.media_type in WEIGHT_TYPES]

    def first(self, media_type: str) -> Descriptor | None:
        return next((layer for layer in self.layers if layer.media_type == media_type), None)

    @property
    def blobs(self) -> list[Descriptor]:
        return [self.config, *self.layers]

    @property
    def size(self) -> int:
        return sum(d.size for d in self.blobs)


def _descriptor(raw: Any, what: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise RegistryError(f"the manifest's {what} is not an object")
    try:
        digest = check_digest(raw.get("digest"))
    except ValueError as exc:
        raise RegistryError(f"the manifest's {what} is refused: {exc}") from None
    size, media_type = raw.get("size"), raw.get("mediaType")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_LAYER_BYTES:
        raise RegistryError(f"the manifest's {what} has an invalid size {str(size)[:40]!r}")
    if not isinstance(media_type, str) or len(media_type) > 255:
        raise RegistryError(f"the manifest's {what} has no valid media type")
    annotations = raw.get("annotations") or {}
    if not isinstance(annotations, dict):
        annotations = {}
    annotations = {str(k)[:256]: str(v)[:4096] for k, v in list(annotations.items())[:64]}
    return Descriptor(media_type, digest, size, annotations)


def parse_manifest(raw: bytes, content_type: str | None = None) -> Manifest:
    """The manifest in ``raw``, every digest in it checked."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise RegistryError(f"the manifest is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise RegistryError("the registry sent a manifest that is not JSON") from None
    if not isinstance(data, dict):
        raise RegistryError("the registry sent a manifest that is not a JSON object")
    media_type = data.get("mediaType") or (content_type or "").split(";")[0].strip() or MANIFEST_OCI
    if media_type in INDEX_TYPES or "manifests" in data:
        raise RegistryError("the reference names an image index, not a model: name the model's own manifest")
    if media_type not in MANIFEST_TYPES or data.get("schemaVersion") != 2:
        raise RegistryError(f"unsupported manifest type {str(media_type)[:80]!r}")
    layers = data.get("layers")
    if not isinstance(layers, list) or len(layers) > MAX_LAYERS:
        raise RegistryError("the manifest's layers are missing or too many")
    config = _descriptor(data.get("config"), "config")
    return Manifest(media_type, config, tuple(_descriptor(layer, f"layer {i + 1}") for i, layer in enumerate(layers)))


def check_model_manifest(manifest: Manifest, name: str) -> None:
    """Refuse, before any download, what corral cannot run."""
    if manifest.config.media_type not in CONFIG_TYPES:
        raise RegistryError(
            f"{name} is not a model artifact (its config is {manifest.config.media_type!r}); "
            "corral pulls models packaged as Docker Model Runner or CNCF model-spec artifacts"
        )
    if manifest.config.size > MAX_CONFIG_BYTES:
        raise RegistryError(f"{name}: the model config is larger than {MAX_CONFIG_BYTES} bytes")
    if not manifest.weights:
        kinds = ", ".join(sorted({layer.media_type for layer in manifest.layers})) or "no layers"
        raise RegistryError(f"{name} has no GGUF weights ({kinds}); corral runs GGUF models")


@dataclass(frozen=True)
class ModelConfig:
    """What ``list`` shows of a model, from its config blob."""

    format: str = ""
    parameters: str = ""
    quantization: str = ""
    architecture: str = ""
    size: str = ""
    context_size: int | None = None
    created: float | None = None  # Unix time
    gguf: dict[str, str] = field(default_factory=dict, compare=False)


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def parse_config(raw: bytes, media_type: str) -> ModelConfig:
    """The model config (Docker's or CNCF's layout) as one shape."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise RegistryError("the model config is not JSON") from None
    if not isinstance(data, dict):
        raise RegistryError("the model config is not a JSON object")
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    descriptor = data.get("descriptor") if isinstance(data.get("descriptor"), dict) else {}

    def text(key: str) -> str:
        value = config.get(key)
        return str(value)[:200] if isinstance(value, (str, int, float)) else ""

    if media_type == CONFIG_CNCF:
        return ModelConfig(
            format=text("format"),
            parameters=text("paramSize"),
            quantization=text("quantization") or text("precision"),
            architecture=text("architecture"),
            created=_timestamp(descriptor.get("createdAt")),
        )
    context = config.get("context_size")
    gguf = config.get("gguf") if isinstance(config.get("gguf"), dict) else {}
    return ModelConfig(
        format=text("format"),
        parameters=text("parameters"),
        quantization=text("quantization"),
        architecture=text("architecture"),
        size=text("size"),
        context_size=context if isinstance(context, int) and not isinstance(context, bool) and context > 0 else None,
        created=_timestamp(descriptor.get("created")),
        gguf={str(k)[:200]: str(v)[:1024] for k, v in list(gguf.items())[:512]},
    )


def layer_descriptor(media_type: str, digest: str, size: int, filename: str) -> Descriptor:
    """A layer as Docker Model Runner annotates it (file path and metadata)."""
    metadata = {"name": filename, "mode": 0o644, "uid": 0, "gid": 0, "size": size,
                "mtime": "1970-01-01T00:00:00Z", "typeflag": 0}
    return Descriptor(
        media_type,
        digest,
        size,
        {
            ANNOTATION_FILEPATH: filename,
            ANNOTATION_FILE_METADATA: json.dumps(metadata, separators=(",", ":")),
            ANNOTATION_UNTESTED: "false",
        },
    )


def build_config(facts: dict[str, Any], diff_ids: list[str], *, context_size: int | None, created: datetime | None = None) -> bytes:
    """A ``application/vnd.docker.ai.model.config.v0.1+json`` config blob."""
    created = created or datetime.now(timezone.utc)
    config: dict[str, Any] = {"format": "gguf", **{k: v for k, v in facts.items() if v}}
    if context_size:
        config["context_size"] = context_size
    doc = {
        "config": config,
        "descriptor": {"created": created.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")},
        "rootfs": {"type": "rootfs", "diff_ids": diff_ids},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def build_manifest(config: Descriptor, layers: list[Descriptor]) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_OCI,
        "config": config.as_dict(),
        "layers": [layer.as_dict() for layer in layers],
    }
    return json.dumps(doc, separators=(",", ":")).encode()

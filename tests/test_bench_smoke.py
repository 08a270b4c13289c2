"""The benchmark harness keeps working: the quick routing benchmark runs
end to end on the echo backend (no figure is asserted: speed is measured by
`python -m bench`, never by a unit test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


def test_quick_routing_benchmark(tmp_path):
    out = tmp_path / "figures.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "routing", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    figures = json.loads(out.read_text())
    for name in ("routing_rps_c1", "routing_rps_c8", "routing_rps_c64", "routing_p99_ms_c8", "stream_msgs_per_s",
                 "supervisor_rss_mb", "supervisor_rss_mb_loaded"):
        assert figures[name] > 0, name
    assert "| routing_rps_c8 |" in run.stdout


def test_echo_backend_is_off_unless_enabled(corral):
    # the supervisor's settings count: each run below starts its own
    enabled = corral("run", "corral/echo", "hi", "--max-tokens", "3", env={"CORRAL_ENABLE_ECHO_BACKEND": "1"})
    assert enabled.code == 0, enabled
    assert enabled.out.strip() == "tok tok tok"
    assert corral("stop").code == 0
    result = corral("run", "corral/echo", "hi")
    assert result.code == 3  # not in the catalog

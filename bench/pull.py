"""Model pulls against the same kind of local registry the tests use
(Debian's docker-registry on loopback), with SmolLM2's GGUF as the blob.

- pull_mb_per_s: ``corral.store.pull`` into an empty store (manifest,
  config, the header read for the memory check, the weights hashed as they
  arrive, fsync, rename, bundle), in-process so Python's start-up is not
  counted; beside ``curl -o`` of the same blob, timed by curl itself
  (``time_total``), and their ratio. pull_transfer_*: the weights layer's
  own download (from its stream's start to verified and renamed), which is
  what a multi-GB model's pull time is made of.
- pull_present_ms: pulling the model again once it is in the store, and the
  blob bytes those pulls made the registry send (the goal is none).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.harness import median, now, smollm2_path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def _settings(models: str):
    from corral.configs.settings import load_settings

    return load_settings({**os.environ, "CORRAL_HOME": models, "CORRAL_MODELS": models})


class _LayerClock:
    """Times the weights layer's own download (start of its stream to verified)."""

    def __init__(self, digest: str):
        from corral.store.progress import Progress

        self.digest, self.started, self.seconds = digest, 0.0, 0.0
        self.progress = type("Clock", (Progress,), {
            "layer_started": lambda _, d, total, done=0: self._start(d),
            "layer_done": lambda _, d, total, how: self._stop(d),
        })()

    def _start(self, digest: str) -> None:
        if digest == self.digest:
            self.started = now()

    def _stop(self, digest: str) -> None:
        if digest == self.digest and self.started:
            self.seconds = now() - self.started


def run(quick: bool) -> dict[str, float]:
    from registry import start_registry  # the tests' launcher: one way to run the registry

    from corral.store.package import package
    from corral.store.pull import pull
    from corral.store.push import push

    reps = 2 if quick else 4
    registry = start_registry()
    work = Path(tempfile.mkdtemp(prefix="corral-bench-pull-", dir="/tmp"))
    try:
        ref = f"{registry.host}/bench/smollm2:latest"
        source = _settings(str(work / "source"))
        made = package(Path(smollm2_path()), ref, source)
        push(ref, source)
        from corral.store.models import get_model

        blob = get_model(source, ref).manifest.weights[0]
        size_mb = blob.size / 1e6

        curl_s, corral_s, transfer_s = [], [], []
        for i in range(reps):
            out = work / f"curl-{i}"
            timed = subprocess.run(
                ["curl", "-sf", "-o", str(out), "-w", "%{time_total}", f"{registry.url}/v2/bench/smollm2/blobs/{blob.digest}"],
                capture_output=True, text=True, check=True,
            )
            curl_s.append(float(timed.stdout))
            out.unlink()
            settings = _settings(str(work / f"pull-{i}"))
            clock = _LayerClock(blob.digest)
            t0 = now()
            pull(ref, settings, progress=clock.progress)
            corral_s.append(now() - t0)
            transfer_s.append(clock.seconds)
        sent_before = registry.blob_bytes_sent(blob.digest)
        present_ms = []
        for _ in range(reps * 3):
            t0 = now()
            result = pull(ref, settings)
            present_ms.append((now() - t0) * 1000)
            assert result.downloaded == 0
        present_bytes = registry.blob_bytes_sent(blob.digest) - sent_before
        assert made.id
    finally:
        registry.stop()
        shutil.rmtree(registry.folder, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    pull_rate, curl_rate = size_mb / median(corral_s), size_mb / median(curl_s)
    return {
        "pull_blob_mb": size_mb,
        "pull_mb_per_s": pull_rate,
        "pull_curl_mb_per_s": curl_rate,
        "pull_vs_curl": pull_rate / curl_rate,
        # the weights layer alone: its stream, hashed, written, fsynced, renamed
        "pull_transfer_mb_per_s": size_mb / median(transfer_s),
        "pull_transfer_vs_curl": size_mb / median(transfer_s) / curl_rate,
        "pull_present_ms": median(present_ms),
        "pull_present_blob_bytes": float(present_bytes),
    }

"""Cold start and model switch, against loading the model in-process.

- Cold start: `corral run ai/smollm2 "Hi"` with no supervisor running, to
  its first byte on stdout, against a fresh Python process that loads the
  model with llama-cpp-python and prints its first token.
- Switch: from requesting model B while model A is loaded to B's first
  token, against B's own cold load to first token (nothing loaded, the
  supervisor already running).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from bench.harness import SMOLLM2, corral_home, median, now, smollm2_path
from corral.client import Client

# llama-cpp-python as a user would write it, but without the extra buffer
# types on AMX CPUs, which crash there (bench.decode.high_level_llama): a
# crashed baseline printed nothing, which read as a fast first byte.
_INPROCESS = """
import sys
from bench.decode import high_level_llama
llm = high_level_llama()
for chunk in llm.create_chat_completion([{"role": "user", "content": "Hi"}], max_tokens=8, temperature=0, stream=True):
    text = chunk["choices"][0]["delta"].get("content")
    if text:
        sys.stdout.write(text)
        sys.stdout.flush()
        break
"""


def _first_byte(args: list[str], env: dict | None = None) -> float:
    """Seconds from starting a command to the first byte on its stdout."""
    t0 = now()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    first = proc.stdout.read(1)
    elapsed = now() - t0
    if not first:
        raise RuntimeError(f"{args[0]} printed nothing (it exited with {proc.wait()})")
    proc.stdout.close()
    proc.wait()
    return elapsed


def corral_command() -> str:
    """The installed `corral` script of this interpreter's environment."""
    found = shutil.which("corral", path=os.path.dirname(sys.executable)) or shutil.which("corral")
    if not found:
        raise SystemExit("bench: the `corral` command is not installed; pip install . first")
    return found


def cold_start(reps: int) -> dict:
    corral = corral_command()
    code = _INPROCESS
    ours, theirs = [], []
    for rep in range(reps):
        for side in ("corral", "inprocess") if rep % 2 == 0 else ("inprocess", "corral"):
            if side == "inprocess":
                theirs.append(_first_byte([sys.executable, "-c", code]))
                continue
            with corral_home() as settings:
                env = {**os.environ, "CORRAL_HOME": str(settings.home)}
                ours.append(_first_byte([corral, "run", SMOLLM2, "Hi", "--max-tokens", "8", "--temperature", "0"], env))
    return {
        "cold_start_ms_corral": median(ours) * 1000,
        "cold_start_ms_inprocess": median(theirs) * 1000,
        "cold_start_overhead_ms": (median(ours) - median(theirs)) * 1000,
    }


def _first_token(client: Client, model: str) -> float:
    t0 = now()
    response = client.chat(model, [{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0)
    next(iter(response))
    elapsed = now() - t0
    response.text()
    return elapsed


def switch(reps: int) -> dict:
    folder = tempfile.mkdtemp(prefix="corral-bench-")
    model_a = os.path.join(folder, "model-a.gguf")
    model_b = os.path.join(folder, "model-b.gguf")
    shutil.copyfile(smollm2_path(), model_a)
    shutil.copyfile(smollm2_path(), model_b)
    switches, colds = [], []
    try:
        with corral_home() as settings, Client(settings) as client:
            for rep in range(reps):
                for side in ("switch", "cold") if rep % 2 == 0 else ("cold", "switch"):
                    client.unload(all=True)
                    _wait_unloaded(client)
                    if side == "switch":
                        client.load(model_a)
                        switches.append(_first_token(client, model_b))
                    else:
                        colds.append(_first_token(client, model_b))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "switch_ms": median(switches) * 1000,
        "cold_load_ms": median(colds) * 1000,
        "switch_overhead_ms": (median(switches) - median(colds)) * 1000,
    }


def _wait_unloaded(client: Client) -> None:
    while client.ps():
        pass


def run(quick: bool) -> dict:
    return {**cold_start(3 if quick else 7), **switch(3 if quick else 7)}

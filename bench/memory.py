"""Memory estimate vs measured: `python -m bench.memory`.

For each model, context length and number of sequences (``--parallel``),
loads the model through corral (a real worker), reads the worker's RSS
after load, evaluates at once, in every one of the worker's sequences, a
prompt that fills 90% of the context, and reads the worker's peak RSS
(VmHWM). Prints a Markdown table of estimate vs measured peak.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

from corral.client import Client
from corral.configs.catalog import resolve
from corral.configs.settings import load_settings
from corral.supervisor.errors import BadRequest
from corral.supervisor.memory import MiB, estimate_memory


def proc_status(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def measure(client: Client, name: str) -> dict:
    info = client.load(name)
    pid = info["pid"]
    after_load = proc_status(pid, "VmRSS")
    row = next(m for m in client.ps() if m["model"] == name)
    n_ctx, seats = row["context_length"], row["parallel"]
    # Fill ~90% of the context: ~2 tokens per "hello world " in a real
    # vocabulary, more in a tiny one, so shrink until the prompt fits.
    words = int(n_ctx * 0.45)
    while True:
        try:
            client.generate(name, "hello world " * words, max_tokens=1, temperature=0).text()
            break
        except BadRequest:
            words = int(words * 0.8)
    # Every sequence at once, each from its own client (one seat is kept
    # for a client with nothing running).
    others = [Client(client.settings) for _ in range(seats)]
    try:
        responses = [c.generate(name, f"{i} " + "hello world " * words, max_tokens=8, temperature=0)
                     for i, c in enumerate(others)]
        prompt_tokens = [r.usage["prompt_tokens"] for r in responses if r.text() is not None]
    finally:
        for c in others:
            c.close()
    peak = proc_status(pid, "VmHWM")
    estimate = estimate_memory(resolve(name, client.settings), parallel=seats).total_bytes
    client.unload(name)
    return {
        "model": name,
        "context_length": n_ctx,
        "sequences": seats,
        "prompt_tokens": max(prompt_tokens),
        "estimate_bytes": estimate,
        "rss_after_load_bytes": after_load,
        "peak_rss_bytes": peak,
        "error": estimate / peak - 1,
    }


def run(models: list[str], contexts: list[int], model_type: str | None = None, parallel: int | None = None) -> list[dict]:
    home = tempfile.mkdtemp(prefix="corral-bench-", dir="/tmp")
    os.environ["CORRAL_HOME"] = home
    if parallel is not None:
        os.environ["CORRAL_PARALLEL"] = str(parallel)
    settings = load_settings()
    lines = []
    for model in models:
        spec = resolve(os.path.abspath(model) if os.path.isfile(model) else model, settings, model_type=model_type)
        for n_ctx in contexts:
            lines.append(
                f'[models."bench/{model.replace("/", "-")}-ctx{n_ctx}"]\n'
                f'path = "{spec.path}"\nbackend = "{spec.backend}"\ncontext_length = {n_ctx}\n'
                + (f'model_type = "{spec.model_type}"\n' if spec.model_type else "")
            )
    os.makedirs(home, exist_ok=True)
    settings.user_catalog.write_text("\n".join(lines))
    rows = []
    with Client(settings) as client:
        try:
            for model in models:
                for n_ctx in contexts:
                    rows.append(measure(client, f"bench/{model.replace('/', '-')}-ctx{n_ctx}"))
        finally:
            client.shutdown()
    return rows


def table(rows: list[dict]) -> str:
    out = [
        "| model | context | sequences | prompt tokens each | estimate | RSS after load | peak RSS | estimate vs peak |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['model']} | {r['context_length']} | {r['sequences']} | {r['prompt_tokens']} | {r['estimate_bytes'] / MiB:.0f} MiB "
            f"| {r['rss_after_load_bytes'] / MiB:.0f} MiB | {r['peak_rss_bytes'] / MiB:.0f} MiB | {r['error']:+.1%} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="catalog name or path (default ai/smollm2)")
    parser.add_argument("--context", type=int, action="append", help="context lengths (default 512 2048 8192)")
    parser.add_argument("--model-type", help="the architecture of GGML files given as paths")
    parser.add_argument("--parallel", type=int, action="append",
                        help="CORRAL_PARALLEL values to measure (default 1 4 8; a worker has one seat more)")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = parser.parse_args()
    rows = []
    for parallel in args.parallel or [1, 4, 8]:
        rows += run(args.model or ["ai/smollm2"], args.context or [512, 2048], args.model_type, parallel)
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()

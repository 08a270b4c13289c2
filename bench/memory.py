"""Memory estimate vs measured: `python -m bench.memory`.

For each model and context length, loads the model through corral (a real
worker), reads the worker's RSS after load, evaluates a prompt that fills
90% of the context, and reads the worker's peak RSS (VmHWM). Prints a
Markdown table of estimate vs measured peak.
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
    n_ctx = next(m for m in client.ps() if m["model"] == name)["context_length"]
    # Fill ~90% of the context: ~2 tokens per "hello world " in a real
    # vocabulary, more in a tiny one, so shrink until the prompt fits.
    words = int(n_ctx * 0.45)
    while True:
        response = client.generate(name, "hello world " * words, max_tokens=8, temperature=0)
        try:
            response.text()
            break
        except BadRequest:
            words = int(words * 0.8)
    peak = proc_status(pid, "VmHWM")
    estimate = estimate_memory(resolve(name, client.settings)).total_bytes
    client.unload(name)
    return {
        "model": name,
        "context_length": n_ctx,
        "prompt_tokens": response.usage["prompt_tokens"],
        "estimate_bytes": estimate,
        "rss_after_load_bytes": after_load,
        "peak_rss_bytes": peak,
        "error": estimate / peak - 1,
    }


def run(models: list[str], contexts: list[int], model_type: str | None = None) -> list[dict]:
    home = tempfile.mkdtemp(prefix="corral-bench-", dir="/tmp")
    os.environ["CORRAL_HOME"] = home
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
        "| model | context | prompt tokens | estimate | RSS after load | peak RSS | estimate vs peak |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['model']} | {r['context_length']} | {r['prompt_tokens']} | {r['estimate_bytes'] / MiB:.0f} MiB "
            f"| {r['rss_after_load_bytes'] / MiB:.0f} MiB | {r['peak_rss_bytes'] / MiB:.0f} MiB | {r['error']:+.1%} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="catalog name or path (default ai/smollm2)")
    parser.add_argument("--context", type=int, action="append", help="context lengths (default 512 2048 8192)")
    parser.add_argument("--model-type", help="the architecture of GGML files given as paths")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = parser.parse_args()
    rows = run(args.model or ["ai/smollm2"], args.context or [512, 2048, 8192], args.model_type)
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()

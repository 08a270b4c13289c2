"""corral's benchmarks: `python -m bench [--quick] [--json FILE] [--only NAME]`.

Every comparison runs corral and its in-process baseline alternately in the
same run and reports medians and ratios; the Markdown table goes to stdout,
and --json writes every figure as one flat JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import psutil

# name -> module; each has run(quick) -> dict of figures
SECTIONS = {
    "routing": "bench.routing",
    "decode": "bench.decode",
    "throughput": "bench.throughput",
    "startup": "bench.startup",
    "pull": "bench.pull",
    "http": "bench.http",
    "agent": "bench.agent",
    "llama_server": "bench.llama_server",
}

# figure -> (goal, "min" or "max")
GOALS = {
    "decode_ratio": (1.10, "min"),
    "decode_ratio_vs_lowlevel": (0.97, "min"),
    "ttft_overhead_ms": (3.0, "max"),
    "cold_start_overhead_ms": (500.0, "max"),
    "switch_overhead_ms": (300.0, "max"),
    "routing_rps_c8": (5000.0, "min"),
    "stream_msgs_per_s": (50000.0, "min"),
    "supervisor_rss_mb": (60.0, "max"),
    "pull_vs_curl": (0.8, "min"),
    "pull_present_ms": (100.0, "max"),
    "pull_present_blob_bytes": (0.0, "max"),
    "http_decode_ratio": (0.98, "min"),
    "http_ttft_overhead_ms": (2.0, "max"),
    "http_rps_c8": (2000.0, "min"),
    "http_decode_ratio_vs_llama_cpp_server": (1.05, "min"),
    "http_cancel_to_idle_ms": (500.0, "max"),
    "batch_scaling_c8": (1.7, "min"),
    "two_models_ratio": (0.9, "min"),
    "decode_ratio_vs_llama_server": (1.0, "min"),
    "batch_ratio_vs_llama_server_c8": (1.0, "min"),
    "seeded_ttft_ratio": (1.1, "max"),
    "logprobs_decode_ratio": (0.95, "min"),
    "n4_vs_4_requests": (1.0, "max"),
}


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}"


def table(figures: dict[str, float]) -> str:
    lines = ["| figure | value | goal | met |", "|---|---:|---:|:---:|"]
    for name, value in figures.items():
        goal = GOALS.get(name)
        met = ""
        if goal:
            met = "yes" if (value >= goal[0] if goal[1] == "min" else value <= goal[0]) else "**no**"
        lines.append(f"| {name} | {value:,.2f} | {('≥ ' if goal and goal[1] == 'min' else '≤ ' if goal else '') + (f'{goal[0]:,g}' if goal else '')} | {met} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and tokens (under 3 minutes)")
    parser.add_argument("--json", metavar="FILE", help="write every figure as one flat JSON object")
    parser.add_argument("--only", choices=list(SECTIONS), action="append", help="run only these sections")
    args = parser.parse_args()
    import importlib

    figures: dict[str, float] = {}
    started = time.monotonic()
    for name in args.only or SECTIONS:
        figures.update(importlib.import_module(SECTIONS[name]).run(args.quick))
    figures["bench_seconds"] = time.monotonic() - started
    print(f"corral benchmarks ({'quick' if args.quick else 'full'}) on {machine()}\n")
    print(table(figures))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()

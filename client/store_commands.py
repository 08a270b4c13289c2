"""The model-management commands: ``pull``, ``push``, ``package``, ``rm``,
``tag``, ``df`` and ``list``. They parse and print; ``corral.store`` does
the work."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from corral.client import render
from corral.configs.settings import format_size, load_settings
from corral.supervisor.errors import UsageError

quiet_option = click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors (no progress).")
memory_option = click.option(
    "--ignore-runtime-memory-check", is_flag=True,
    help="Pull even if the model's estimated runtime memory exceeds this machine's.",
)


def _json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def ago(timestamp: float | None) -> str:
    """"3 months ago", as docker prints a creation time."""
    if not timestamp:
        return "-"
    seconds = max(0.0, time.time() - timestamp)
    for unit, size in (("year", 365 * 86400), ("month", 30 * 86400), ("week", 7 * 86400), ("day", 86400),
                       ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "Less than a minute ago"


@click.command()
@click.argument("reference")
@memory_option
@quiet_option
def pull(reference: str, ignore_runtime_memory_check: bool, quiet: bool) -> None:
    """Pull a model from a registry or Hugging Face into the store.

    REFERENCE: ai/smollm2, registry:5000/team/model:tag, …@sha256:…, or
    hf.co/ORG/REPO[:QUANT].
    """
    from corral.store.progress import for_terminal
    from corral.store.pull import pull as pull_model

    result = pull_model(reference, load_settings(), progress=for_terminal(quiet),
                        ignore_memory_check=ignore_runtime_memory_check)
    if not quiet:
        how = f"downloaded {format_size(result.downloaded)}" if result.downloaded else "already up to date"
        click.echo(f"Pulled {result.display} ({result.id[7:19]}, {format_size(result.size)}, {how}).")


@click.command()
@click.argument("reference")
@quiet_option
def push(reference: str, quiet: bool) -> None:
    """Push a stored model to the registry its name says."""
    from corral.store.progress import for_terminal
    from corral.store.push import push as push_model

    digest = push_model(reference, load_settings(), progress=for_terminal(quiet, verb="Pushing"))
    if not quiet:
        click.echo(f"Pushed {reference} ({digest[7:19]}).")


@click.command()
@click.option("--gguf", "gguf", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The GGUF file (the first shard of a sharded model).")
@click.option("-l", "--license", "license_file", type=click.Path(dir_okay=False, path_type=Path), help="A licence file.")
@click.option("--context-size", type=click.IntRange(min=16), help="The context length the model runs with by default.")
@click.option("--chat-template", type=click.Path(dir_okay=False, path_type=Path),
              help="A Jinja chat template, used instead of the GGUF file's own.")
@click.option("--push", "and_push", is_flag=True, help="Push the model to its registry afterwards.")
@quiet_option
@click.argument("reference")
def package(gguf: Path, license_file: Path | None, context_size: int | None, chat_template: Path | None,
            and_push: bool, quiet: bool, reference: str) -> None:
    """Package a GGUF file as a model named REFERENCE (Docker Model Runner's layout)."""
    from corral.store.package import package as package_model

    settings = load_settings()
    made = package_model(gguf, reference, settings, license_file=license_file, chat_template=chat_template,
                         context_size=context_size)
    if not quiet:
        click.echo(f"Packaged {made.display} ({made.id[7:19]}, {format_size(made.size)}).")
    if and_push:
        from corral.store.progress import for_terminal
        from corral.store.push import push as push_model

        push_model(reference, settings, progress=for_terminal(quiet, verb="Pushing"))
        if not quiet:
            click.echo(f"Pushed {made.display}.")


def _loaded_models() -> list[str]:
    from corral.client.api import Client
    from corral.client.launch import supervisor_pid

    settings = load_settings()
    if supervisor_pid(settings) is None:
        return []
    with Client(settings, autostart=False) as client:
        return [m["model"] for m in client.ps()]


def _unload(name: str) -> None:
    from corral.client.api import Client

    with Client(load_settings(), autostart=False) as client:
        client.unload(name)


@click.command()
@click.argument("models", nargs=-1)
@click.option("-f", "--force", is_flag=True, help="Unload a loaded model first; remove a model with several names.")
@click.option("--partials", is_flag=True, help="Remove unfinished downloads (see `corral df`) that no pull is writing.")
def rm(models: tuple[str, ...], force: bool, partials: bool) -> None:
    """Remove models from the store."""
    from corral.store.manage import remove

    settings = load_settings()
    if not models and not partials:
        raise UsageError("name the models to remove, or pass --partials to remove unfinished downloads")
    if partials:
        from corral.store.blobs import drop_partials
        from corral.store.layout import Store

        count, size = drop_partials(Store(settings.models))
        click.echo(f"Removed {count} unfinished download{'' if count == 1 else 's'} ({format_size(size)}).")
    for model in models:
        removed = remove(settings, model, force=force, loaded=_loaded_models, unload=_unload)
        for name in removed.untagged:
            click.echo(f"Untagged: {name}")
        if removed.deleted:
            click.echo(f"Deleted: {removed.deleted}")


@click.command()
@click.argument("source")
@click.argument("target")
def tag(source: str, target: str) -> None:
    """Give the stored model SOURCE a new name TARGET."""
    from corral.store.manage import tag as tag_model

    click.echo(f"Tagged {source} as {tag_model(load_settings(), source, target)}.")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def df(as_json: bool) -> None:
    """Show the disk space the model store uses."""
    from corral.store.manage import disk_usage

    usage = disk_usage(load_settings())
    if as_json:
        _json(usage)
        return
    click.echo(render.table(["TYPE", "SIZE"], [
        [f"Models ({usage['models']})", format_size(usage["models_bytes"])],
        ["Incomplete downloads", format_size(usage["incomplete_bytes"])],
    ]))
    click.echo(f"Store: {usage['store']}")


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("-q", "--quiet", is_flag=True, help="Only show the IDs of the store's models.")
def list_models(as_json: bool, quiet: bool) -> None:
    """List the models you can run: the catalog's and the store's."""
    from corral.store.listing import model_rows

    rows = model_rows(load_settings())
    if as_json:
        _json(rows)
        return
    if quiet:
        for row in rows:
            if row.get("id"):
                click.echo(row["id"][7:19])
        return
    table = []
    for r in rows:
        if not r["available"]:
            continue
        context = r.get("context_size") if r["source"] == "store" else r["context_length"]
        table.append([r["model"], r["parameters"] or "-", r["quantization"] or "-", r["architecture"] or "-",
                      (r["id"] or "-")[7:19] or "-", ago(r["created"]), context or "-", format_size(r["size_bytes"])])
    click.echo(render.table(
        ["MODEL NAME", "PARAMETERS", "QUANTIZATION", "ARCHITECTURE", "MODEL ID", "CREATED", "CONTEXT", "SIZE"], table))
    for r in rows:
        if not r["available"]:
            click.echo(f"{r['model']}: unavailable: {r['problem']}")


COMMANDS = (pull, push, package, rm, tag, df)

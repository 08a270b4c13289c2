"""The ``corral`` command line, built on the client library.

Errors are rendered in one place, :func:`main`: one line on stderr and the
exit code of the error (see ``corral.supervisor.errors``), never a traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import click

from corral.client.api import Client
from corral.client.launch import supervisor_pid
from corral.client import render
from corral.configs.settings import format_size, load_settings
from corral.supervisor.errors import CorralError, UsageError
from corral.store.autopull import ensure_pulled
from corral.supervisor.logs import configure_logging, silence


class Context:
    """Per-invocation state shared by the commands."""

    def __init__(self) -> None:
        self.color: bool | None = None
        self.debug = False

    def styled(self, text: str, **style: Any) -> str:
        return click.style(text, **style) if self.color else text

    def client(self, autostart: bool = True, preload: dict | None = None) -> Client:
        return Client(load_settings(), autostart=autostart, preload=preload)


pass_ctx = click.make_pass_decorator(Context, ensure=True)


def _set_debug(ctx: click.Context, _param: Any, value: bool) -> bool:
    if value:
        ctx.ensure_object(Context).debug = True
        configure_logging(logging.DEBUG, sys.stderr, process="cli")
    return value


def _set_color(ctx: click.Context, _param: Any, value: str) -> str:
    obj = ctx.ensure_object(Context)
    obj.color = {"yes": True, "no": False}.get(value, sys.stdout.isatty() and "NO_COLOR" not in os.environ)
    return value


debug_option = click.option(
    "--debug", is_flag=True, expose_value=False, is_eager=True, callback=_set_debug, help="Show debug logs on stderr."
)
color_option = click.option(
    "--color",
    type=click.Choice(["auto", "yes", "no"]),
    default="auto",
    expose_value=False,
    callback=_set_color,
    help="Colour the output: auto (when stdout is a terminal), yes or no.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def sampling_options(f: Callable) -> Callable:
    options = [
        click.option("--temperature", type=float, help="Sampling temperature; 0 picks the likeliest token."),
        click.option("--top-p", type=float, help="Nucleus sampling: keep tokens up to this probability mass."),
        click.option("--seed", type=int, help="Random seed, for repeatable answers."),
        click.option("--max-tokens", type=click.IntRange(min=1), help="Stop after this many tokens."),
        click.option("--system", help="A system prompt for the conversation."),
        click.option("--keep-alive", help="Keep the model loaded this long after the answer (5m, 0, -1 = forever)."),
        click.option("--ignore-runtime-memory-check", is_flag=True, help="Load the model even if it may not fit."),
        click.option("--model-type", help="The architecture of a GGML file given as a path (gpt2, gptj, mpt, ...)."),
        click.option("--verbose", is_flag=True, help="Print token counts and speed after each answer."),
    ]
    return functools.reduce(lambda acc, opt: opt(acc), reversed(options), f)


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@debug_option
def cli() -> None:
    """Run local language models, one crash-isolated process per model."""


# -- run and chat ------------------------------------------------------------


@cli.command()
@click.argument("model")
@click.argument("prompt", nargs=-1)
@click.option("-d", "--detach", is_flag=True, help="Load the model in the background and exit once it is ready.")
@sampling_options
@color_option
@debug_option
@pass_ctx
def run(ctx: Context, model: str, prompt: tuple[str, ...], detach: bool, **opts: Any) -> None:
    """Answer PROMPT with MODEL, or chat with it when no prompt is given.

    Without PROMPT, a prompt piped on stdin is answered; on a terminal an
    interactive chat starts. MODEL is a catalog name (see `corral list`) or
    a path to a model file.
    """
    text = " ".join(prompt)
    ensure_pulled(model, opts)
    if detach:
        if text:
            raise UsageError("--detach loads the model only; leave out the prompt")
        with ctx.client() as client:
            info = client.load(
                model,
                keep_alive=opts["keep_alive"],
                ignore_memory_check=opts["ignore_runtime_memory_check"],
                model_type=opts["model_type"],
            )
        click.echo(f"{info.get('model', model)} is ready (pid {info.get('pid')}).", err=True)
        return
    if not text and not sys.stdin.isatty():
        text = sys.stdin.read()
        if not text.strip():
            raise UsageError("the prompt on stdin is empty; pass a prompt or pipe some text")
    if text:
        _answer_once(ctx, model, text, opts)
    else:
        _chat(ctx, model, opts)


@cli.command()
@click.argument("model")
@sampling_options
@color_option
@debug_option
@pass_ctx
def chat(ctx: Context, model: str, **opts: Any) -> None:
    """Chat with MODEL interactively (`/bye` leaves)."""
    if not sys.stdin.isatty():
        raise UsageError("`corral chat` needs a terminal; use `corral run MODEL PROMPT` in scripts")
    ensure_pulled(model, opts)
    _chat(ctx, model, opts)


def _split_options(opts: dict[str, Any]) -> tuple[dict[str, Any], str | None, bool]:
    sampling = {
        k: opts[k] for k in ("temperature", "top_p", "seed", "max_tokens") if opts.get(k) is not None
    }
    sampling["keep_alive"] = opts.get("keep_alive")
    sampling["ignore_memory_check"] = opts.get("ignore_runtime_memory_check", False)
    sampling["model_type"] = opts.get("model_type")
    return sampling, opts.get("system"), opts.get("verbose", False)


def _preload(model: str, sampling: dict[str, Any]) -> dict[str, Any]:
    """What a supervisor started by this command should load right away."""
    return {"model": model, **{k: sampling[k] for k in ("keep_alive", "ignore_memory_check", "model_type")}}


def _answer_once(ctx: Context, model: str, text: str, opts: dict[str, Any]) -> None:
    sampling, system, verbose = _split_options(opts)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    with ctx.client(preload=_preload(model, sampling)) as client:
        response = client.chat(model, messages, **sampling)
        try:
            for piece in response:
                click.echo(piece, nl=False)
        except KeyboardInterrupt:
            response.cancel()
            click.echo()
            raise
        if response.chunks and not response.chunks[-1].endswith("\n"):
            click.echo()
    if verbose:
        click.echo(ctx.styled(render.stats_line(response.done), dim=True), err=True)


def _chat(ctx: Context, model: str, opts: dict[str, Any]) -> None:
    from corral.client.chat_repl import chat_loop

    sampling, system, verbose = _split_options(opts)
    with ctx.client(preload=_preload(model, sampling)) as client:
        client.load(
            model,
            keep_alive=sampling["keep_alive"],
            ignore_memory_check=sampling["ignore_memory_check"],
            model_type=sampling["model_type"],
        )
        chat_loop(client, model, system=system, sampling=sampling, verbose=verbose, styled=ctx.styled)


@cli.command()
@click.argument("model")
@click.option("-i", "--input", "input_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help='JSON lines: {"id": ..., "prompt": ...} or {"id": ..., "messages": [...]}, with optional sampling options.')
@click.option("-o", "--output", "output_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="JSON lines of results; ids already there are skipped, so a re-run resumes.")
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(min=1),
              help="Requests waiting at the supervisor at once.")
@click.option("--skip-bad-lines", is_flag=True, help="Skip input lines that are not valid (default: refuse the batch).")
@sampling_options
@debug_option
@pass_ctx
def batch(ctx: Context, model: str, input_path: Path, output_path: Path, concurrency: int, skip_bad_lines: bool, **opts: Any) -> None:
    """Answer every prompt of a JSON-lines file with MODEL."""
    from corral.client.batch_command import run_batch

    sampling, system, _ = _split_options(opts)
    with ctx.client() as client:
        code = run_batch(
            client, model, input_path, output_path,
            concurrency=concurrency, skip_bad_lines=skip_bad_lines, system=system, request_kwargs=sampling,
        )
    click.get_current_context().exit(code)


# -- models --------------------------------------------------------------------


@cli.command()
@json_option
@debug_option
@pass_ctx
def ps(ctx: Context, as_json: bool) -> None:
    """List the loaded models."""
    with ctx.client() as client:
        models = client.ps()
    if as_json:
        _print_json(models)
    elif models:
        click.echo(render.ps_table(models))
    else:
        click.echo("No model is loaded.")


@cli.command()
@click.argument("model")
@click.option("--context-length", type=click.IntRange(min=16), help="Estimate for this context length instead.")
@click.option("--model-type", help="The architecture of a GGML file given as a path (gpt2, gptj, mpt, ...).")
@json_option
@debug_option
def inspect(model: str, context_length: int | None, model_type: str | None, as_json: bool) -> None:
    """Show MODEL's file, backend and memory estimate (and what it is made of)."""
    from corral.client.requests import model_ref
    from corral.configs.catalog import resolve
    from corral.supervisor.memory import estimate_memory
    from corral.supervisor.model_files import read_header

    spec = resolve(model_ref(model), load_settings(), model_type=model_type)
    header = read_header(spec.path, spec.model_type)
    estimate = estimate_memory(spec, context_length)
    facts = {
        "model": spec.name,
        "path": spec.path,
        "backend": spec.backend,
        "model_type": spec.model_type,
        "format": header.format,
        "architecture": header.architecture,
        "file_bytes": header.file_bytes,
        "context_length": estimate.context_length,
        "context_length_trained": header.context_length_trained,
        "layers": header.n_layer,
        "embedding_length": header.n_embd,
        "heads": header.n_head,
        "kv_heads": header.n_head_kv,
        "vocab_size": header.n_vocab,
        "estimate": estimate.as_dict(),
    }
    if as_json:
        _print_json(facts)
        return
    e = estimate
    rows = [
        ["Model", spec.name],
        ["File", f"{spec.path} ({format_size(header.file_bytes)})"],
        ["Backend", spec.backend + (f" ({spec.model_type})" if spec.model_type else "")],
        ["Format", f"{header.format}, {header.architecture}, {header.n_layer} layers, {header.n_head} heads ({header.n_head_kv} KV), vocabulary {header.n_vocab}"],
        ["Context length", f"{e.context_length}" + (f" (trained: {header.context_length_trained})" if header.context_length_trained else "")],
        ["Memory estimate", format_size(e.total_bytes)],
        ["  weights", format_size(e.weights_bytes)],
        ["  KV cache", format_size(e.kv_cache_bytes)],
        ["  compute buffers", format_size(e.compute_bytes)],
        ["  runtime", format_size(e.runtime_bytes)],
    ]
    click.echo(render.table(["", ""], rows).split("\n", 1)[1])


@cli.command()
@click.argument("model", required=False)
@click.option("--all", "all_", is_flag=True, help="Unload every model.")
@debug_option
@pass_ctx
def unload(ctx: Context, model: str | None, all_: bool) -> None:
    """Unload MODEL (or every model with --all) now."""
    if not model and not all_:
        raise UsageError("name a model to unload, or pass --all")
    if supervisor_pid(load_settings()) is None:
        click.echo("No model is loaded (the supervisor is not running).")
        return
    with ctx.client(autostart=False) as client:
        names = client.unload(model, all=all_)
    click.echo(f"Unloaded {', '.join(names)}." if names else "No such model is loaded.")


# -- the supervisor ------------------------------------------------------------


@cli.command()
@json_option
@debug_option
@pass_ctx
def status(ctx: Context, as_json: bool) -> None:
    """Show whether the supervisor runs, and its facts."""
    with ctx.client(autostart=False) as client:
        facts = client.status()
    if as_json:
        _print_json(facts)
        return
    budget = format_size(facts["memory_budget_bytes"]) + (" (available memory)" if facts["memory_budget_auto"] else "")
    idle = facts["idle_timeout_s"]
    click.echo(
        render.table(
            ["", ""],
            [
                ["Supervisor pid", facts["pid"]],
                ["Uptime", render.duration(facts["uptime_s"])],
                ["Socket", facts["socket"]],
                ["Loaded models", f"{facts['loaded_models']} (at most {facts['max_loaded_models']})"],
                ["Memory budget", budget],
                ["Idle timeout", "never" if idle is None else render.duration(idle)],
                ["Requests served", facts["requests_total"]],
            ],
        ).split("\n", 1)[1]
    )


@cli.command()
@debug_option
@pass_ctx
def serve(ctx: Context) -> None:
    """Run the supervisor in the foreground (Ctrl-C stops it)."""
    from corral.supervisor.__main__ import serve as run_supervisor

    level = "debug" if ctx.debug else "info"
    configure_logging(level, sys.stderr, process="supervisor")
    run_supervisor(load_settings(), level)


@cli.command()
@debug_option
@pass_ctx
def stop(ctx: Context) -> None:
    """Stop every model and the supervisor."""
    settings = load_settings()
    pid = supervisor_pid(settings)
    if pid is None:
        click.echo("The corral supervisor is not running.")
        return
    with ctx.client(autostart=False) as client:
        client.shutdown()
    # The reply comes just before the process ends; wait until it has (a
    # zombie has ended: it only waits for its parent to collect it).
    import psutil

    deadline = time.monotonic() + 10
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        if time.monotonic() > deadline:
            raise CorralError(f"the corral supervisor (pid {pid}) is still running 10 s after it was told to stop")
        time.sleep(0.01)
    click.echo(f"Stopped the corral supervisor (pid {pid}).")


@cli.command()
@click.argument("model", required=False)
@click.option("-n", "--lines", default=50, show_default=True, help="How many of the last lines to show.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines as they are written.")
@debug_option
def logs(model: str | None, lines: int, follow: bool) -> None:
    """Show the supervisor's log, or MODEL's worker log."""
    from corral.supervisor.worker_process import worker_log_path

    settings = load_settings()
    path = worker_log_path(settings, model) if model else settings.supervisor_log
    if not path.exists():
        raise UsageError(f"no log at {path} yet" + ("" if model else "; the supervisor has not run"))
    with open(path, errors="replace") as f:
        for line in f.readlines()[-lines:]:
            click.echo(line, nl=False)
        while follow:
            line = f.readline()
            if line:
                click.echo(line, nl=False)
            else:
                time.sleep(0.2)


# The model store's commands (pull, push, package, rm, tag, df, list).
from corral.client import store_commands  # noqa: E402

for _command in (*store_commands.COMMANDS, store_commands.list_models):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> int:
    silence()
    try:
        code = cli.main(args=argv, prog_name="corral", standalone_mode=False)
    except CorralError as exc:
        click.echo(f"Error: {exc.message}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except KeyboardInterrupt:
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except BrokenPipeError:
        # stdout closed early (e.g. `| head`): not an error worth a traceback
        sys.stderr.close()
        return 0
    # click returns the code of ctx.exit(code), and the command's value otherwise
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``corral`` command line, built on the client library.

Errors are rendered in one place, :func:`main`: one line on stderr and the
exit code of the error (see ``corral.supervisor.errors``), never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from corral.client import render
from corral.client.cli_options import (
    Context,
    checked_text,
    color_option,
    context_option,
    debug_option,
    json_option,
    model_kwargs,
    pass_ctx,
    read_stdin,
    sampling_kwargs,
    sampling_options,
)
from corral.configs.settings import load_settings
from corral.supervisor.errors import CorralError, SupervisorUnreachable, UsageError
from corral.store.autopull import ensure_pulled
from corral.supervisor.logs import configure_logging, silence


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
@context_option
@color_option
@debug_option
@pass_ctx
def run(ctx: Context, model: str, prompt: tuple[str, ...], detach: bool, **opts: Any) -> None:
    """Answer PROMPT with MODEL, or chat with it when no prompt is given.

    Text piped on stdin is answered too (after PROMPT and a blank line); on
    a terminal with no PROMPT an interactive chat starts. MODEL is a catalog
    name (see `corral list`) or a path to a model file.
    """
    model = checked_text(model, "MODEL")
    ensure_pulled(model, opts)
    text = checked_text(" ".join(prompt), "the prompt")
    if detach:
        if text:
            raise UsageError("--detach loads the model only; leave out the prompt")
        with ctx.client() as client:
            info = client.load(model, **model_kwargs(opts), **ctx.request_extra())
        click.echo(f"{info.get('model', model)} is ready (pid {info.get('pid')}).", err=True)
        return
    if not sys.stdin.isatty():
        from corral.client.one_shot import prompt_text

        text = prompt_text(text, read_stdin())
        if not text.strip():
            raise UsageError("the prompt on stdin is empty; pass a prompt or pipe some text")
    if text:
        _answer_once(ctx, model, text, opts)
    else:
        _chat(ctx, model, opts)


@cli.command()
@click.argument("model")
@sampling_options
@context_option
@color_option
@debug_option
@pass_ctx
def chat(ctx: Context, model: str, **opts: Any) -> None:
    """Chat with MODEL interactively (/? lists the commands, /bye leaves)."""
    if not sys.stdin.isatty():
        raise UsageError("`corral chat` needs a terminal; use `corral run MODEL PROMPT` in scripts")
    model = checked_text(model, "MODEL")
    ensure_pulled(model, opts)
    _chat(ctx, model, opts)


def _preload(model: str, opts: dict[str, Any]) -> dict[str, Any]:
    """What a supervisor started by this command should load right away."""
    return {"model": model, **model_kwargs(opts)}


def _answer_once(ctx: Context, model: str, text: str, opts: dict[str, Any]) -> None:
    from corral.client.one_shot import answer_once

    system = opts.get("system")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    kwargs = {**sampling_kwargs(opts), **model_kwargs(opts), **ctx.request_extra()}
    with ctx.client(preload=_preload(model, opts)) as client:
        done = answer_once(client, model, messages, kwargs, ctx.styled)
    if done and opts.get("verbose"):
        render.echo_dim(render.stats_line(done), ctx.styled, err=True)


def _chat(ctx: Context, model: str, opts: dict[str, Any]) -> None:
    from corral.client.chat_repl import Chat
    from corral.client.chat_session import ChatSession

    session = ChatSession(
        model, opts.get("system"), sampling_kwargs(opts), model_kwargs(opts), verbose=bool(opts.get("verbose"))
    )
    with ctx.client(preload=_preload(model, opts)) as client:
        chat_ = Chat(client, session, settings=client.settings, styled=ctx.styled, extra=ctx.request_extra())
        chat_.load_first()
        chat_.run()


@cli.command()
@click.argument("model")
@click.option("-i", "--input", "input_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help='JSON lines: {"id": ..., "prompt": ...} or {"id": ..., "messages": [...]}, with optional sampling options.')
@click.option("-o", "--output", "output_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="JSON lines of results; ids already there are skipped, so a re-run resumes.")
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(min=1),
              help="Requests waiting at the supervisor at once.")
@click.option("--skip-bad-lines", is_flag=True, help="Skip input lines that are not valid (default: refuse the batch).")
@click.option("--retry-errors", is_flag=True, help="Run again the prompts whose lines in the output are errors.")
@sampling_options
@debug_option
@pass_ctx
def batch(ctx: Context, model: str, input_path: Path, output_path: Path, concurrency: int, skip_bad_lines: bool,
          retry_errors: bool, **opts: Any) -> None:
    """Answer every prompt of a JSON-lines file with MODEL."""
    from corral.client.batch_command import run_batch

    with ctx.client() as client:
        code = run_batch(
            client, checked_text(model, "MODEL"), input_path, output_path,
            concurrency=concurrency, skip_bad_lines=skip_bad_lines, system=opts.get("system"),
            request_kwargs={**sampling_kwargs(opts), **model_kwargs(opts)}, retry_errors=retry_errors,
        )
    click.get_current_context().exit(code)


# -- models --------------------------------------------------------------------


@cli.command()
@json_option
@debug_option
def ps(as_json: bool) -> None:
    """List the loaded models (never starts a supervisor)."""
    from corral.client.running_supervisor import NOT_RUNNING, running_client

    client = running_client(load_settings())
    if client is None:
        click.echo("[]" if as_json else NOT_RUNNING)
        return
    with client:
        models = client.ps()
    if as_json:
        _print_json(models)
    elif models:
        click.echo(render.ps_table(models))
    else:
        click.echo("No model is loaded.")


@cli.command()
@click.argument("model")
@context_option
@click.option("--model-type", help="The architecture of a GGML file given as a path (gpt2, gptj, mpt, ...).")
@json_option
@debug_option
def inspect(model: str, context_length: int | None, model_type: str | None, as_json: bool) -> None:
    """Show MODEL's file, backend and memory estimate (and what it is made of).

    Exits 1 when the file is shorter than its tensor table says."""
    from corral.client.inspect_report import inspect_model

    report = inspect_model(checked_text(model, "MODEL"), context_length, model_type and checked_text(model_type, "--model-type"))
    if as_json:
        _print_json({**report.facts, "truncated": report.truncated is not None})
    else:
        click.echo(render.pairs(report.rows()))
    if report.truncated:
        raise CorralError(f"{report.facts['path']} is {report.truncated}; download the model again")


@cli.command()
@click.argument("model", required=False)
@click.option("--all", "all_", is_flag=True, help="Unload every model.")
@debug_option
def unload(model: str | None, all_: bool) -> None:
    """Unload MODEL (or every model with --all) now (never starts a supervisor)."""
    from corral.client.running_supervisor import NOT_RUNNING, running_client

    if not model and not all_:
        raise UsageError("name a model to unload, or pass --all")
    client = running_client(load_settings())
    if client is None:
        click.echo(NOT_RUNNING)
        return
    with client:
        names = client.unload(model and checked_text(model, "MODEL"), all=all_)
    click.echo(f"Unloaded {', '.join(names)}." if names else "No such model is loaded.")


# -- the supervisor ------------------------------------------------------------


@cli.command()
@json_option
@debug_option
def status(as_json: bool) -> None:
    """Show the supervisor's facts; exit 6 if none runs (never starts one)."""
    from corral.client.running_supervisor import running_client

    client = running_client(load_settings())
    if client is None:
        raise SupervisorUnreachable("No corral supervisor is running; `corral serve` or any `corral run` starts one")
    with client:
        facts = client.status()
    if as_json:
        _print_json(facts)
    else:
        click.echo(render.pairs(render.status_rows(facts)))


@cli.command()
@debug_option
@pass_ctx
def serve(ctx: Context) -> None:
    """Run the supervisor in the foreground (Ctrl-C stops it)."""
    from corral.supervisor.__main__ import serve as run_supervisor

    import dataclasses

    settings = load_settings()
    if ctx.debug:
        settings = dataclasses.replace(settings, log_level="debug")
    configure_logging(settings.log_level, sys.stderr, process="supervisor")
    run_supervisor(settings)


@cli.command()
@debug_option
def stop() -> None:
    """Stop every model and the supervisor (never starts one)."""
    from corral.client.running_supervisor import NOT_RUNNING, stop_supervisor

    pid = stop_supervisor(load_settings())
    click.echo(NOT_RUNNING if pid is None else f"Stopped the corral supervisor (pid {pid}).")


@cli.command()
@click.argument("model", required=False)
@click.option("-n", "--lines", default=50, show_default=True, type=click.IntRange(min=0),
              help="How many of the last lines to show.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines as they are written.")
@debug_option
def logs(model: str | None, lines: int, follow: bool) -> None:
    """Show the supervisor's log, or MODEL's worker log."""
    from corral.client.log_files import log_path, print_tail

    path = log_path(load_settings(), model and checked_text(model, "MODEL"))
    print_tail(path, lines, follow, lambda line: click.echo(line, nl=False))


# The model store's commands (pull, push, package, rm, tag, df, list).
from corral.client import store_commands  # noqa: E402

for _command in (*store_commands.COMMANDS, store_commands.list_models):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> int:
    silence()
    ctx = Context()
    try:
        code = cli.main(args=argv, prog_name="corral", standalone_mode=False, obj=ctx)
    except CorralError as exc:
        return _fail(ctx, exc.message, exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        return _fail(ctx, "cancelled (Ctrl-C)", 130)
    except click.ClickException as exc:
        # click's usage errors, as one line like every other error
        hint = f" (see '{exc.ctx.command_path} --help')" if getattr(exc, "ctx", None) else ""
        return _fail(ctx, " ".join(exc.format_message().split()) + hint, exc.exit_code)
    except BrokenPipeError:
        # stdout closed early (e.g. `| head`): not an error worth a word
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    # click returns the code of ctx.exit(code), and the command's value otherwise
    return code if isinstance(code, int) else 0


def _fail(ctx: Context, message: str, code: int) -> int:
    render.echo_error(message, ctx.styled)
    return code


if __name__ == "__main__":
    sys.exit(main())

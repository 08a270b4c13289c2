"""The interactive chat of ``corral run MODEL`` and ``corral chat MODEL`` on
a terminal: read a line, run a command or send a message, print the answer
as it streams. The chat survives everything but losing the supervisor:
Ctrl-C, bad commands, a crashed worker, a model that will not load."""

from __future__ import annotations

from typing import Any, Callable

import click

from corral.client import chat_show
from corral.client.api import Client, Response
from corral.client.chat_commands import HELP, Command, parse, split_words
from corral.client.chat_files import history_path, load_chat, save_chat
from corral.client.chat_session import ChatSession
from corral.client.cli_options import checked_text
from corral.client.line_reader import LineReader
from corral.client.render import echo_dim, echo_error, stats_line
from corral.client.streaming import CtrlCCancels, cut_marker, stream
from corral.configs.settings import Settings
from corral.supervisor.errors import CorralError, ShuttingDown, SupervisorUnreachable, UsageError

# Errors that end the chat: there is no supervisor left to talk to.
FATAL = (SupervisorUnreachable, ShuttingDown)
CTRL_C_HINT = "Use Ctrl-D or /bye to leave."


class Chat:
    def __init__(
        self,
        client: Client,
        session: ChatSession,
        *,
        settings: Settings,
        styled: Callable[..., str],
        extra: dict[str, Any] | None = None,
    ):
        self.client = client
        self.session = session
        self.settings = settings
        self.styled = styled
        # more keywords for every request: the --debug log stream
        self.extra = extra or {}

    # -- output ------------------------------------------------------------

    def say(self, text: str) -> None:
        click.echo(text)

    def dim(self, text: str, err: bool = False) -> None:
        echo_dim(text, self.styled, err)

    def error(self, exc: CorralError) -> None:
        echo_error(exc.message, self.styled)

    # -- the loop ----------------------------------------------------------

    def load_first(self) -> None:
        """Load the model before the first prompt: a model that cannot load
        fails the command at once, and the first answer starts at once."""
        self._load(self.session.model, self.session.model_kwargs)

    def run(self) -> None:
        reader = LineReader(history_path(self.settings))
        self.dim("Type /? for help, /bye to leave.", err=True)
        while True:
            try:
                text = reader.read_message()
            except EOFError:
                click.echo()
                return
            except KeyboardInterrupt:
                self.dim(CTRL_C_HINT)
                continue
            parsed = parse(text)
            if isinstance(parsed, str):
                if parsed.strip():
                    self.send(parsed)
                continue
            if parsed.name == "bye":
                return
            try:
                self.command(parsed)
            except FATAL:
                raise
            except CorralError as exc:
                self.error(exc)
            except KeyboardInterrupt:  # a load that takes long: back to the prompt
                self.dim("[stopped]")

    def command(self, cmd: Command) -> None:
        if cmd.name == "unknown":
            raise UsageError(f"Unknown command '{cmd.word}'. Type /? for help")
        handler = {
            "help": lambda _args: self.say(HELP),
            "clear": self.clear,
            "set": self.set,
            "show": self.show,
            "load": self.load_model,
            "save": self.save,
            "load-chat": self.load_chat,
        }[cmd.name]
        handler(cmd.args)

    # -- commands ----------------------------------------------------------

    def clear(self, _args: str) -> None:
        self.session.clear()
        self.say("Cleared the conversation." + (" The system prompt stays." if self.session.system else ""))

    def set(self, args: str) -> None:
        what, rest = split_words(args, 2)
        if what == "system":
            self.session.set_system(rest)
            self.say("Set the system prompt." if self.session.system else "Cleared the system prompt.")
        elif what == "parameter":
            name, value = split_words(rest, 2)
            if not name:
                raise UsageError("use /set parameter NAME VALUE, e.g. /set parameter temperature 0.7")
            if name == "num_ctx":
                self.set_context_length(value.strip())
                return
            number = self.session.set_parameter(name, value.strip())
            if isinstance(number, list):
                self.say(f"Set parameter stop to {' '.join(number)}." if number else "Cleared the stop strings.")
            else:
                self.say(f"Set parameter {name} to {number}.")
        elif what in ("verbose", "quiet"):
            self.session.verbose = what == "verbose"
            self.say("Stats after each answer: " + ("on." if self.session.verbose else "off."))
        else:
            raise UsageError(f"unknown /set {what!r}: use /set system, /set parameter, /set verbose or /set quiet")

    def set_context_length(self, value: str) -> None:
        """``/set parameter num_ctx N``: reload the model with that context;
        if it cannot load, the chat keeps the context it had."""
        before = dict(self.session.model_kwargs)
        number = self.session.set_parameter("num_ctx", value)
        self.dim(f"Reloading {self.session.model} with a {number}-token context...")
        try:
            self._load(self.session.model, self.session.model_kwargs)
        except BaseException:
            self.session.model_kwargs = before
            raise
        self.say(f"{self.session.model} now runs with a {number}-token context.")

    def show(self, args: str) -> None:
        what = args.strip()
        if not what:
            raise UsageError("use /show info, /show parameters or /show system")
        if what == "info":
            self.say(chat_show.info(self.session, self._loaded_row()))
        elif what == "parameters":
            self.say(chat_show.parameters(self.session))
        elif what == "system":
            self.say(self.session.system or "No system prompt is set.")
        else:
            raise UsageError(f"unknown /show {what!r}: use /show info, /show parameters or /show system")

    def load_model(self, args: str) -> None:
        model = checked_text(args.strip(), "the model name")
        if not model:
            raise UsageError("use /load MODEL, e.g. /load ai/smollm2")
        kwargs = dict(self.session.model_kwargs)
        if model != self.session.model:
            kwargs.pop("model_type", None)  # it described the other file
        self.dim(f"Loading {model}...")
        self._load(model, kwargs)
        self.session.model, self.session.model_kwargs = model, kwargs
        self.say(f"Switched to {model}; the conversation goes on.")

    def save(self, args: str) -> None:
        if not args.strip():
            raise UsageError("use /save NAME, e.g. /save garden-notes")
        path = save_chat(self.settings, args.strip(), self.session.as_record())
        self.say(f"Saved the chat as {args.strip()} ({path}).")

    def load_chat(self, args: str) -> None:
        if not args.strip():
            raise UsageError("use /load-chat NAME; /save NAME saves one")
        record = load_chat(self.settings, args.strip())
        self.session.restore(record)
        saved_with = record.get("model")
        note = f" (saved with {saved_with})" if isinstance(saved_with, str) and saved_with != self.session.model else ""
        self.say(f"Loaded chat {args.strip()}: {len(self.session.messages)} messages{note}.")

    def _load(self, model: str, model_kwargs: dict[str, Any]) -> None:
        self.client.load(model, **model_kwargs, **self.extra)

    def _loaded_row(self) -> dict[str, Any] | None:
        from corral.client.requests import model_ref
        from corral.configs.catalog import canonical_name

        name = canonical_name(model_ref(self.session.model))
        rows = [m for m in self.client.ps() if m["model"] == name or m["model"].startswith(name + "#")]
        return rows[0] if rows else None

    # -- messages ----------------------------------------------------------

    def send(self, text: str) -> None:
        text = checked_text(text, "the message")
        written: list[str] = []

        def write(piece: str) -> None:
            click.echo(piece, nl=False)
            written.append(piece)

        with CtrlCCancels() as ctrl_c:
            try:
                response = ctrl_c.watch(self._request(text))
                stream(response, write, ctrl_c)
            except FATAL:
                raise
            except CorralError as exc:  # the chat goes on: a crashed worker restarts
                if written:
                    click.echo()
                self.error(exc)
                return
        self._finish(text, response, "".join(written), ctrl_c.pressed)

    def _request(self, text: str) -> Response:
        # truncate: the worker drops the oldest turns that no longer fit the
        # context (never the system prompt or this message) and says how many.
        return self.client.chat(
            self.session.model,
            self.session.request(text),
            truncate=True,
            **self.session.options,
            **self.session.model_kwargs,
            **self.extra,
        )

    def _finish(self, text: str, response: Response, answer: str, pressed: bool) -> None:
        if answer and not answer.endswith("\n"):
            click.echo()
        if response.dropped_messages:
            self.session.drop_oldest(response.dropped_messages)
            self.dim(f"(older turns dropped to fit the {self._context_name()} context)")
        if pressed:
            self.dim("[stopped]")
        elif response.stopped == "cancelled":
            self.error(CorralError("the answer was cancelled: its model was unloaded or corral is stopping"))
        elif cut_marker(response):
            self.dim(cut_marker(response))
        if answer:
            self.session.add_turn(text, answer)
        if self.session.verbose and response.done:
            self.dim(stats_line(response.done), err=True)

    def _context_name(self) -> str:
        context = self.session.model_kwargs.get("context_length")
        if context is None:
            row = self._loaded_row()
            context = row["context_length"] if row else None
        return f"{context}-token" if context else "model's"

"""The chat's slash commands, with Ollama's names where it has them: what a
line of input means (pure), and the help text that lists them."""

from __future__ import annotations

from dataclasses import dataclass

HELP = """Available commands:
  /set system TEXT          Set the system prompt (empty: no system prompt)
  /set parameter NAME VALUE Set a parameter: temperature, top_p, top_k, min_p, seed,
                            num_predict, repeat_penalty, stop, or num_ctx (reloads the model)
  /set verbose, /set quiet  Show or hide token counts and speed after each answer
  /show info                The model: backend, size, quantization, context, memory
  /show parameters          The parameters set in this chat
  /show system              The system prompt
  /load MODEL               Switch to MODEL, keeping the conversation
  /save NAME                Save the conversation (in $CORRAL_HOME/chats)
  /load-chat NAME           Continue a saved conversation
  /clear                    Forget the conversation (the system prompt stays)
  /bye, /exit               Leave (Ctrl-D does too)
  /?, /help                 Show this help
  \"\"\"                       Begin a multi-line message; \"\"\" or Ctrl-D ends it
  //TEXT                    Send a message that starts with /

Ctrl-C stops the answer being written; it never leaves the chat."""

COMMANDS = {
    "/bye": "bye",
    "/exit": "bye",
    "/?": "help",
    "/help": "help",
    "/clear": "clear",
    "/set": "set",
    "/show": "show",
    "/load": "load",
    "/save": "save",
    "/load-chat": "load-chat",
}


@dataclass(frozen=True)
class Command:
    name: str  # a value of COMMANDS, or "unknown"
    word: str  # as typed, e.g. "/set"
    args: str = ""  # the rest of the line, stripped


def parse(text: str) -> Command | str:
    """A line of input: a :class:`Command`, or the text of a message.

    Any ``/word…`` is a command, known or not; ``//text`` sends ``/text``."""
    stripped = text.strip()
    if stripped.startswith("//"):
        return stripped[1:]
    if not stripped.startswith("/"):
        return text
    word, _, args = stripped.partition(" ")
    if "\n" in word:  # a pasted block whose first line is a bare command
        word, _, rest = word.partition("\n")
        args = rest + (" " + args if args else "")
    return Command(COMMANDS.get(word.lower(), "unknown"), word, args.strip())


def split_words(args: str, n: int) -> list[str]:
    """The first ``n - 1`` words of ``args``, then the rest as one string."""
    parts = args.split(None, n - 1)
    return parts + [""] * (n - len(parts))

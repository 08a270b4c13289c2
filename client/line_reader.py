"""Reading the chat's input: a line editor with history, bracketed paste and
\"\"\" blocks.

prompt_toolkit, not readline: a paste of several lines arrives as one
message (it handles the terminal's bracketed-paste mode; readline's input()
returns at the first newline, so each pasted line became a turn), history
lives in a file of our choosing with our permissions, and it behaves the
same wherever Python runs, with no dependence on how the interpreter's
readline was built.
"""

from __future__ import annotations

import os
from pathlib import Path

PROMPT = "> "
CONTINUATION = "... "
PLACEHOLDER = "Send a message (/? for help)"
BLOCK = '"""'


class LineReader:
    def __init__(self, history: Path | None):
        # No cursor-position queries: we draw no menu below the prompt, and a
        # terminal that never answers them (a pipe-backed pty, some remote
        # shells) would get a warning printed into the chat.
        os.environ.setdefault("PROMPT_TOOLKIT_NO_CPR", "1")
        from prompt_toolkit import PromptSession
        from prompt_toolkit.formatted_text import FormattedText
        from prompt_toolkit.history import FileHistory, InMemoryHistory

        self.session = PromptSession(
            history=FileHistory(str(history)) if history else InMemoryHistory(),
            reserve_space_for_menu=0,  # no completion menu
            enable_suspend=True,
        )
        self.placeholder = FormattedText([("fg:ansibrightblack", PLACEHOLDER)])

    def read_message(self) -> str:
        """One message. A line starting with \"\"\" opens a block that a line
        ending with \"\"\" (or Ctrl-D) closes.

        Raises EOFError (Ctrl-D at an empty prompt) and KeyboardInterrupt
        (Ctrl-C; inside a block it drops the block)."""
        line = self.session.prompt(PROMPT, placeholder=self.placeholder)
        if not line.lstrip().startswith(BLOCK):
            return line
        text = line.lstrip()[len(BLOCK) :]
        if text.rstrip().endswith(BLOCK):
            return text.rstrip()[: -len(BLOCK)]
        lines = [text] if text else []
        while True:
            try:
                line = self.session.prompt(CONTINUATION, placeholder=None)
            except EOFError:  # Ctrl-D ends the block, and keeps it
                break
            if line.rstrip().endswith(BLOCK):
                lines.append(line.rstrip()[: -len(BLOCK)])
                break
            lines.append(line)
        return "\n".join(lines).strip("\n")

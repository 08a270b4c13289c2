"""``corral batch MODEL -i IN -o OUT``: many prompts, resumable, nothing lost.

Each result is appended to OUT as one JSON line with a single write(2) on an
O_APPEND descriptor, so a killed run leaves whole lines only (a torn last
line, should one ever appear, is cut off on the next run). Re-running the
same command skips the ids already in OUT, so an interrupted batch finishes
with every id exactly once.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import click

from corral.client.api import Client
from corral.supervisor import protocol
from corral.supervisor.errors import BadRequest, CorralError, UsageError


@dataclass
class BadLine:
    number: int
    reason: str


def _key(value: Any) -> str:
    """Ids compare as JSON values: 1 and "1" are different ids."""
    return json.dumps(value, sort_keys=True)


def read_prompts(path: Path, system: str | None) -> tuple[list[dict], list[BadLine]]:
    """The input's prompts as batch items, and the lines that are not valid."""
    items, bad, seen = [], [], set()
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append(BadLine(number, f"not JSON ({exc.msg})"))
            continue
        if not isinstance(record, dict):
            bad.append(BadLine(number, "not a JSON object"))
            continue
        if "id" not in record or not isinstance(record["id"], (str, int)) or isinstance(record["id"], bool):
            bad.append(BadLine(number, "needs an 'id' (a string or a number)"))
            continue
        if _key(record["id"]) in seen:
            bad.append(BadLine(number, f"duplicate id {record['id']!r}"))
            continue
        if isinstance(record.get("prompt"), str):
            # Like `corral run`, a prompt is the user's turn of a chat.
            record["messages"] = [{"role": "user", "content": record.pop("prompt")}]
        if not isinstance(record.get("messages"), list):
            bad.append(BadLine(number, "needs a string 'prompt' or a list of 'messages'"))
            continue
        if system and not any(m.get("role") == "system" for m in record["messages"] if isinstance(m, dict)):
            record["messages"] = [{"role": "system", "content": system}, *record["messages"]]
        options = {k: v for k, v in record.items() if k in protocol.SAMPLING_FIELDS}
        options.update(record.get("options") or {})
        try:
            protocol.check_messages(record["messages"])
            protocol.check_options(options)
        except BadRequest as exc:
            bad.append(BadLine(number, exc.message))
            continue
        seen.add(_key(record["id"]))
        items.append({"id": record["id"], "messages": record["messages"], "options": options})
    return items, bad


def done_ids(path: Path) -> set[str]:
    """Ids already answered in OUT; cuts off a torn last line if there is one."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    ids, good_end = set(), 0
    for line in data.splitlines(keepends=True):
        try:
            record = json.loads(line)
            if not line.endswith(b"\n"):
                raise ValueError("unterminated")
        except ValueError:
            break  # a torn line can only be the last one
        ids.add(_key(record.get("id")))
        good_end += len(line)
    if good_end < len(data):
        os.truncate(path, good_end)
    return ids


class Progress:
    """A progress line on a terminal; one summary line otherwise."""

    def __init__(self, total: int, stream: TextIO):
        self.total, self.stream = total, stream
        self.tty = stream.isatty()
        self.done = self.errors = self.tokens = 0
        self.started = time.monotonic()

    def update(self, tokens: int, error: bool) -> None:
        self.done += 1
        self.errors += error
        self.tokens += tokens
        if self.tty:
            self.stream.write("\r" + self.line() + "\033[K")
            self.stream.flush()

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        rate = self.tokens / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) * elapsed / self.done if self.done else 0.0
        width = 24
        filled = int(width * self.done / self.total) if self.total else width
        return (
            f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}  "
            f"{rate:.1f} tokens/s  ETA {int(eta) // 60}:{int(eta) % 60:02d}"
            + (f"  errors: {self.errors}" if self.errors else "")
        )

    def finish(self, skipped: int, resumed: int) -> None:
        if self.tty:
            self.stream.write("\n")
        elapsed = time.monotonic() - self.started
        self.stream.write(
            f"{self.done} of {self.total} prompts answered ({self.errors} errors) in {elapsed:.1f} s, "
            f"{self.tokens} tokens, {self.tokens / elapsed if elapsed else 0:.1f} tokens/s"
            + (f"; {resumed} already in the output" if resumed else "")
            + (f"; {skipped} bad input lines skipped" if skipped else "")
            + "\n"
        )


def run_batch(
    client: Client,
    model: str,
    input_path: Path,
    output_path: Path,
    *,
    concurrency: int,
    skip_bad_lines: bool,
    system: str | None,
    request_kwargs: dict[str, Any],
) -> int:
    items, bad = read_prompts(input_path, system)
    for line in bad:
        click.echo(f"{input_path}:{line.number}: {line.reason}" + (" (skipped)" if skip_bad_lines else ""), err=True)
    if bad and not skip_bad_lines:
        raise UsageError(f"{len(bad)} bad input line(s) in {input_path}; fix them or pass --skip-bad-lines")
    finished = done_ids(output_path)
    todo = [item for item in items if _key(item["id"]) not in finished]
    progress = Progress(len(todo), sys.stderr)
    fd = os.open(output_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        try:
            for result in client.batch(model, todo, concurrency=concurrency, **request_kwargs):
                # One write(2) per line: a kill leaves whole lines only.
                os.write(fd, (json.dumps(result.as_record(), ensure_ascii=False) + "\n").encode())
                progress.update(result.usage.get("completion_tokens", 0), result.error is not None)
        except KeyboardInterrupt:
            progress.finish(len(bad), len(items) - len(todo))
            click.echo(f"Interrupted; run the same command again to finish the other {len(todo) - progress.done}.", err=True)
            return 130
        except CorralError as exc:
            raise type(exc)(f"{exc.message} ({progress.done} of {len(todo)} answered; run the same command again to finish)") from None
    finally:
        os.close(fd)
    progress.finish(len(bad), len(items) - len(todo))
    if progress.errors:
        click.echo(f"Error: {progress.errors} prompt(s) failed; their lines in {output_path} carry the error", err=True)
        return 1
    return 0

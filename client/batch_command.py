"""``corral batch MODEL -i IN -o OUT``: many prompts, resumable, nothing lost.

Each result is appended to OUT as one JSON line with a single write(2) on an
O_APPEND descriptor, so a killed run leaves whole lines only (a torn last
line, should one ever appear, is cut off on the next run). Re-running the
same command skips the ids already in OUT, so an interrupted batch finishes
with every id exactly once.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import click

from corral.client.api import Client
from corral.supervisor import protocol
from corral.supervisor.errors import BadRequest, Cancelled, CorralError, UsageError


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
        raw_lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    lines = []
    for number, raw in enumerate(raw_lines, 1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            # One bad line, not a traceback: the others may still run.
            bad.append(BadLine(number, f"not UTF-8 text (byte {exc.start + 1} is {raw[exc.start]:#04x})"))
            lines.append("")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append(BadLine(number, f"not JSON ({exc.msg})"))
            continue
        except RecursionError:
            bad.append(BadLine(number, "nested too deeply to read"))
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


def _is_result(record: Any) -> bool:
    """A line `corral batch` wrote: an object with an id and a text or an error."""
    return isinstance(record, dict) and "id" in record and ("text" in record or "error" in record)


def read_output(path: Path) -> tuple[set[str], set[str]]:
    """Ids already in OUT: those with a result and those with an error line.

    Only a torn last line (an unterminated prefix of a result, as a killed
    run may leave) is cut off. Any other line that is not a result means OUT
    is not ours: the batch is refused and OUT left untouched."""
    if not path.exists():
        return set(), set()
    if not path.is_file():  # a FIFO would block the read below for ever
        raise UsageError(f"-o {path} is not a regular file; results are appended to a file and resumed from it")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    answered, failed, good_end = set(), set(), 0
    lines = data.splitlines(keepends=True)
    for number, line in enumerate(lines, 1):
        torn = not line.endswith(b"\n") and number == len(lines)
        try:
            record = json.loads(line) if line.strip() else None
        except (ValueError, RecursionError):
            record = False
        if line.strip() and not _is_result(record):
            if torn and line.startswith(b'{"id"'):
                break  # a torn last line: cut below
            raise UsageError(
                f"{path}:{number} is not a result line of corral batch, so {path} is not a batch output; "
                "it was left untouched: pass another -o file"
            )
        if record:
            (failed if "error" in record else answered).add(_key(record.get("id")))
        good_end += len(line)
    if good_end < len(data):
        os.truncate(path, good_end)
    elif data and not data.endswith(b"\n"):
        with open(path, "ab") as f:  # a whole last line without its newline: the next append needs one
            f.write(b"\n")
    return answered, failed


def drop_error_lines(path: Path) -> None:
    """Rewrite OUT without its error lines (--retry-errors), atomically: a
    full disk leaves OUT as it was."""
    kept = [line for line in path.read_bytes().splitlines(keepends=True)
            if not line.strip() or "error" not in json.loads(line)]
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(b"".join(kept))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, os.stat(path).st_mode & 0o777)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise UsageError(f"cannot rewrite {path} without its error lines: {exc.strerror}; it was left as it was") from None


def check_paths(input_path: Path, output_path: Path) -> None:
    """Refuse -o naming the input (results appended to the prompts)."""
    same = input_path.resolve() == output_path.resolve()
    with contextlib.suppress(OSError):
        same = same or os.path.samefile(input_path, output_path)
    if same:
        raise UsageError(f"-o {output_path} is the input file; write the results to another file")


# Room for a few results at least; less, and the first answer would be lost.
MIN_FREE_BYTES = 64 * 1024


def open_output(path: Path) -> int:
    """OUT for appending, checked before any prompt is answered: a regular
    file (a resumable one) on a disk with room."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"-o {path} is not a regular file; results are appended to a file and resumed from it")
        fs = os.fstatvfs(fd)
        if fs.f_bavail * fs.f_frsize < MIN_FREE_BYTES:
            raise UsageError(f"the disk holding {path} is full; free some space, then run the batch")
    except BaseException:
        os.close(fd)
        raise
    return fd


class OutputFailed(CorralError):
    """A result line could not be written (a full disk): the batch stops."""

    code = "output_failed"
    exit_code = 1


def append_line(fd: int, record: dict, output_path: Path) -> None:
    """One result as one write(2): a kill leaves whole lines only. A short or
    failed write (a full disk) is cut back off, so no torn line is left in
    the middle of OUT, and stops the batch."""
    data = (json.dumps(record, ensure_ascii=False) + "\n").encode()
    start = os.fstat(fd).st_size
    try:
        written = os.write(fd, data)
    except OSError as exc:
        written, reason = -1, exc.strerror
    else:
        reason = "No space left on device"
    if written != len(data):
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)
        raise OutputFailed(f"cannot write {output_path} ({reason}); free some space")


# Errors that retrying cannot fix: the prompt itself is wrong. Everything
# else (cancelled, crashed twice, busy, model not found, the supervisor
# gone) is left out of OUT, so that running the command again retries it.
PERMANENT = {"bad_request"}
# Errors that every other prompt of the batch would meet too: the batch
# stops at the first, instead of failing each prompt in turn.
WHOLE_BATCH = {"model_not_found", "insufficient_memory", "model_load_failed", "crash_loop", "shutting_down"}


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
    retry_errors: bool = False,
) -> int:
    items, bad = read_prompts(input_path, system)
    for line in bad:
        click.echo(f"{input_path}:{line.number}: {line.reason}" + (" (skipped)" if skip_bad_lines else ""), err=True)
    if bad and not skip_bad_lines:
        raise UsageError(f"{len(bad)} bad input line(s) in {input_path}; fix them or pass --skip-bad-lines")
    check_paths(input_path, output_path)
    if not output_path.parent.is_dir():
        raise UsageError(f"cannot write {output_path}: the folder {output_path.parent} does not exist")
    answered, failed = read_output(output_path)
    if retry_errors and failed:
        drop_error_lines(output_path)
        failed = set()
    finished = answered | failed
    todo = [item for item in items if _key(item["id"]) not in finished]
    progress = Progress(len(todo), sys.stderr)
    left_out: dict[str, CorralError] = {}  # code -> the first such error
    fd = open_output(output_path)
    try:
        for result in client.batch(model, todo, concurrency=concurrency, **request_kwargs):
            if result.finished or (result.error is not None and result.error.code in PERMANENT):
                append_line(fd, result.as_record(), output_path)
                progress.update(result.usage.get("completion_tokens", 0), result.error is not None)
                continue
            error = result.error or Cancelled(f"the answer to {result.id!r} was cancelled")
            left_out.setdefault(error.code, error)
            if error.code in WHOLE_BATCH:
                break
    except KeyboardInterrupt:
        left_out.setdefault("cancelled", Cancelled("interrupted"))
    except CorralError as exc:  # the supervisor went away, or the like
        left_out.setdefault(exc.code, exc)
    finally:
        os.close(fd)
    progress.finish(len(bad), len(finished & {_key(i["id"]) for i in items}))
    remaining = len(todo) - progress.done
    if remaining:
        first = next(iter(left_out.values()))
        click.echo(f"Error: {first.message}; {remaining} prompt(s) have no result yet: run the same command again "
                   "to retry them", err=True)
        return first.exit_code
    if progress.errors:
        click.echo(f"Error: {progress.errors} prompt(s) were refused as bad requests; their lines in {output_path} "
                   "say why (--retry-errors runs them again)", err=True)
        return 2
    return 0

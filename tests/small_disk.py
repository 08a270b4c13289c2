"""A small, real filesystem for disk-full tests: a tmpfs of a few hundred
KiB mounted for one test (the suite runs as root) and always unmounted, and
a way to fill it to the last byte."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def small_disk(folder: Path, size: str = "512k") -> Iterator[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        # lazy: a process that still holds a file there must not leave the mount behind
        subprocess.run(["umount", "-l", str(folder)], check=True)


def fill(folder: Path, leave: int = 0) -> Path:
    """Write a filler file until the disk holding ``folder`` has at most
    ``leave`` bytes free; returns it (delete it to free the space again)."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            fs = os.statvfs(folder)
            free = fs.f_bavail * fs.f_frsize
            if free <= leave:
                break
            try:
                os.write(fd, b"\0" * max(1, min(free - leave, 64 * 1024)))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
    finally:
        os.close(fd)
    return filler

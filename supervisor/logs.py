"""Structured logging for every corral process (structlog).

The supervisor and the workers log to their files in ``$CORRAL_HOME/logs``;
the CLI logs to stderr only with ``--debug``.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog


def configure_logging(level: int | str = logging.INFO, stream: TextIO | None = None, *, process: str = "") -> None:
    if isinstance(level, str):
        level = logging.getLevelName(level.upper())
    processors: list = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if process:
        processors.append(lambda _logger, _name, event: {"proc": process, **event})
    processors.append(structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


def silence() -> None:
    """Drop every log line below CRITICAL: the CLI's default, so only results
    and one-line errors reach a person's terminal."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))


get_logger = structlog.get_logger

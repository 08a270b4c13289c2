"""Structured logging for every corral process (structlog).

The supervisor and the workers log to their files in ``$CORRAL_HOME/logs``;
the CLI logs to stderr only with ``--debug``. structlog is imported only
when a line is actually written: a silenced CLI never pays the ~50 ms its
import costs at every start.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

_CRITICAL = logging.CRITICAL
_silenced = False  # every level below CRITICAL is dropped without importing structlog


def configure_logging(level: int | str = logging.INFO, stream: TextIO | None = None, *, process: str = "") -> None:
    global _silenced
    import structlog

    if isinstance(level, str):
        level = logging.getLevelName(level.upper())
    processors: list = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if process:
        processors.append(lambda _logger, _name, event: {"proc": process, **event})
    # Plain tracebacks: one readable block in a log file, not a framed dump of locals.
    processors.append(structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    _silenced = False


def silence() -> None:
    """Drop every log line below CRITICAL: the CLI's default, so only results
    and one-line errors reach a person's terminal."""
    global _silenced
    _silenced = True
    if "structlog" in sys.modules:
        import structlog

        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(_CRITICAL))


def silence_unless_configured() -> None:
    """A library stays quiet unless its host program configured logging."""
    structlog = sys.modules.get("structlog")
    if structlog is None or not structlog.is_configured():
        silence()


def _drop(*args: Any, **kwargs: Any) -> None:
    return None


class _Logger:
    def __getattr__(self, method: str) -> Any:
        if _silenced and method in ("debug", "info", "warning", "warn", "error", "exception", "msg"):
            return _drop
        import structlog

        return getattr(structlog.get_logger(), method)


def get_logger() -> Any:
    return _Logger()

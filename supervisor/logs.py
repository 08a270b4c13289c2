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
# Calls below this level are dropped before structlog is reached: a lookup
# through structlog's lazy proxy cost the supervisor ~5% of its time at 8
# requests in flight, for debug lines nobody had asked for.
_min_level = 0
_METHOD_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "msg": logging.INFO, "warning": logging.WARNING,
                  "warn": logging.WARNING, "error": logging.ERROR, "exception": logging.ERROR}


def configure_logging(level: int | str = logging.INFO, stream: TextIO | None = None, *, process: str = "") -> None:
    global _min_level
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
    _min_level = level


def silence() -> None:
    """Drop every log line below CRITICAL: the CLI's default, so only results
    and one-line errors reach a person's terminal."""
    global _min_level
    _min_level = _CRITICAL
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
        if _METHOD_LEVELS.get(method, _CRITICAL) < _min_level:
            return _drop
        import structlog

        return getattr(structlog.get_logger(), method)


def get_logger() -> Any:
    return _Logger()

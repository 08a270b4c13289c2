"""corral's client library: ``from corral.client import Client``."""

import structlog

from corral.client.api import Client, Response

# A library stays quiet unless its host program configured logging.
if not structlog.is_configured():
    from corral.supervisor.logs import silence

    silence()

__all__ = ["Client", "Response"]

"""corral's client library: ``from corral.client import Client``."""

import structlog

from corral.client.api import Client, Response
from corral.client.async_api import AsyncClient, AsyncResponse
from corral.client.requests import BatchResult

# A library stays quiet unless its host program configured logging.
if not structlog.is_configured():
    from corral.supervisor.logs import silence

    silence()

__all__ = ["AsyncClient", "AsyncResponse", "BatchResult", "Client", "Response"]

"""corral's client library: ``from corral.client import Client``."""

from corral.client.api import Client, Response
from corral.client.requests import BatchResult
from corral.supervisor.logs import silence_unless_configured

silence_unless_configured()


def __getattr__(name: str):
    # The asyncio client is imported when asked for: asyncio costs every
    # `corral` command ~20 ms at start.
    if name in ("AsyncClient", "AsyncResponse"):
        from corral.client import async_api

        return getattr(async_api, name)
    raise AttributeError(name)


__all__ = ["AsyncClient", "AsyncResponse", "BatchResult", "Client", "Response"]

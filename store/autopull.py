"""``corral run MODEL`` pulls a model that is neither in the catalog nor in
the store, as ``docker model run`` does."""

from __future__ import annotations

import os
import sys
from typing import Any, Mapping

from corral.configs.catalog import ECHO_MODEL, canonical_name, catalog_entries
from corral.configs.settings import Settings, load_settings
from corral.store.models import find_model
from corral.store.progress import for_terminal
from corral.store.reference import looks_like_reference
from corral.supervisor.errors import ModelNotFound, RegistryError


def needs_pull(model: str, settings: Settings) -> bool:
    """Whether ``model`` names nothing here yet but could name a registry model."""
    if os.path.exists(model) or canonical_name(model) == ECHO_MODEL:
        return False
    if canonical_name(model) in catalog_entries(settings):
        return False
    return looks_like_reference(model) and find_model(settings, model) is None


def ensure_pulled(model: str, opts: Mapping[str, Any] | None = None, settings: Settings | None = None) -> None:
    """Pull ``model`` first when it needs it, saying so on stderr."""
    settings = settings or load_settings()
    if not needs_pull(model, settings):
        return
    # Imported only now: httpx and the registry client cost every
    # `corral run` ~130 ms at start, for models that are already here.
    from corral.store.pull import pull

    opts = opts or {}
    found = []

    def announce() -> None:
        found.append(True)
        print(f"Unable to find model '{model}' locally. Pulling…", file=sys.stderr, flush=True)

    try:
        pull(model, settings, progress=for_terminal(bool(opts.get("quiet"))),
             ignore_memory_check=bool(opts.get("ignore_runtime_memory_check")), on_found=announce)
    except (ModelNotFound, RegistryError) as exc:
        if found:  # the model exists; its download failed
            raise
        # Nothing by that name anywhere: the same error as an unknown name.
        raise ModelNotFound(
            f"model {model} is not in the catalog or the store, and pulling it failed: {exc.message}; "
            "`corral list` shows the models you can run"
        ) from None

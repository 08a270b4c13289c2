"""Stored Responses API responses, kept in ``CORRAL_HOME/responses.db``
so that ``previous_response_id`` and ``GET /v1/responses/{id}`` outlive a
gateway restart, as OpenAI's do. SQLite (WAL): a put is one transaction,
and the store keeps the newest :data:`STORED` responses, dropping the
oldest as new ones come. Bodies and conversations are JSON text; ids are
only ever bound as parameters."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from corral.gateway.errors import HTTPError

STORED = 1000  # responses kept for previous_response_id and GET

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    body TEXT NOT NULL,
    conversation TEXT NOT NULL
)"""


class Store:
    """The newest stored responses: body and the conversation that led to it."""

    def __init__(self, path: Path, keep: int = STORED):
        self.path, self.keep = path, keep
        self._db: sqlite3.Connection | None = None

    @property
    def db(self) -> sqlite3.Connection:
        """Opened on first use: a gateway that serves no Responses request
        makes no file."""
        if self._db is None:
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))  # private like the rest of the home
            # one connection, used from the event loop's thread only; each call
            # is a few index lookups (well under a millisecond): not offloaded
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
            self._db = db
        return self._db

    def put(self, body: dict, conversation: list[dict[str, Any]]) -> None:
        db = self.db
        with db:  # commits both statements, or neither
            db.execute("BEGIN")
            db.execute("INSERT OR REPLACE INTO responses (id, body, conversation) VALUES (?, ?, ?)",
                            (body["id"], json.dumps(body), json.dumps(conversation)))
            db.execute("DELETE FROM responses WHERE seq <= (SELECT MAX(seq) FROM responses) - ?", (self.keep,))

    def get(self, response_id: str, field: str = "id") -> tuple[dict, list[dict[str, Any]]]:
        row = self.db.execute("SELECT body, conversation FROM responses WHERE id = ?", (response_id,)).fetchone()
        if row is None:
            raise HTTPError("not_found", f"{field}: no response {response_id[:80]!r}; corral keeps the newest {self.keep} stored responses")
        return json.loads(row[0]), json.loads(row[1])

    def delete(self, response_id: str) -> None:
        self.get(response_id)
        with self.db:
            self.db.execute("DELETE FROM responses WHERE id = ?", (response_id,))

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

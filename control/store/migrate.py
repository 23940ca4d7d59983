"""Versioned SQL migrations: `migrations/NNNN_name.sql`, applied in order, each exactly once.

The database records what it has in `schema_migrations`; a database newer than this program is
refused rather than guessed at. Applying holds a lock (SQLite's write lock, a PostgreSQL advisory
lock), so collectors starting together against one database migrate it once.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

from control.store.backend import Backend, Pool, StoreError, driver_errors, transaction

_NAME: Final = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_ADVISORY_LOCK_KEY: Final = 0x636F726F6E61  # "corona": which advisory lock is ours
_CREATE_TABLE: Final = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    """The migrations shipped with this program, by version."""
    found = []
    for entry in resources.files("control.store.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    return found


def latest_version() -> int:
    return available()[-1].version


def statements(migration: Migration, backend: Backend) -> list[str]:
    """The migration's statements with the backend's words (comments dropped)."""
    lines = [line.split("--", 1)[0] for line in migration.sql.splitlines()]
    text = "\n".join(lines).format(**backend.words())
    return [s.strip() for s in text.split(";") if s.strip()]


def current_version(pool: Pool) -> int:
    """The newest migration the database has (0 for an empty one)."""
    with pool.connection() as conn:
        conn.execute(_CREATE_TABLE)
        row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
    return int(row[0] or 0)


def migrate(pool: Pool) -> list[Migration]:
    """Apply what the database lacks; the migrations applied (none when up to date)."""
    backend = pool.backend
    shipped = available()
    applied: list[Migration] = []
    try:
        with pool.connection() as conn:
            conn.execute(_CREATE_TABLE)
            with transaction(backend, conn):
                _lock(backend, conn)
                have = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0]
                have = int(have or 0)
                if have > shipped[-1].version:
                    raise StoreError(
                        f"{backend.display}: the database is at schema {have}, newer than this"
                        f" corona-control (schema {shipped[-1].version}): upgrade corona-control"
                    )
                for migration in shipped:
                    if migration.version <= have:
                        continue
                    for statement in statements(migration, backend):
                        conn.execute(statement)
                    conn.execute(
                        backend.sql(
                            "INSERT INTO schema_migrations (version, name, applied_at)"
                            " VALUES (?, ?, ?)"
                        ),
                        (migration.version, migration.name, time.time()),
                    )
                    applied.append(migration)
    except driver_errors(backend) as err:
        raise StoreError(f"{backend.display}: migration failed: {err}") from err
    return applied


def _lock(backend: Backend, conn: Any) -> None:
    if backend.kind == "postgresql":
        # Held to the end of the transaction; the second collector waits, then finds it done.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK_KEY,))

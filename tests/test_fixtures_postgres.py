"""tests/fixtures/postgres.py: a real server from Debian's binaries, password-only, one empty
database per call, each its own."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from tests.fixtures.postgres import POSTGRES_ROOT, PostgresServer


def public_tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    return sorted(str(row[0]) for row in rows)


class TestPostgresServer:
    def test_runs_debians_binaries(self, postgres_server: PostgresServer) -> None:
        """The server is Debian's (/usr/lib/postgresql/N/bin), not whatever PATH finds first."""
        assert postgres_server.bin_dir.parent.parent == POSTGRES_ROOT
        with psycopg.connect(postgres_server.admin_url()) as conn:
            row = conn.execute("SHOW server_version_num").fetchone()
        assert row is not None
        assert int(row[0]) // 10000 == int(postgres_server.bin_dir.parent.name)

    def test_speed_settings_are_in_force(self, postgres_server: PostgresServer) -> None:
        """The config the fixture appends is the one the server runs with."""
        with psycopg.connect(postgres_server.admin_url()) as conn:
            settings = {
                name: conn.execute(f"SHOW {name}").fetchone()
                for name in ("fsync", "synchronous_commit", "listen_addresses", "port")
            }
        assert settings == {
            "fsync": ("off",),
            "synchronous_commit": ("off",),
            "listen_addresses": ("127.0.0.1",),
            "port": (str(postgres_server.port),),
        }


class TestPostgresUrl:
    def test_round_trips_a_row(self, postgres_url: str) -> None:
        """The URL, password included, logs in over TCP; a committed row reads back on a new
        connection."""
        assert postgres_url.startswith("postgresql://corona:")
        with psycopg.connect(postgres_url) as conn:
            conn.execute("CREATE TABLE verdicts (node text, seq bigint, score real)")
            conn.execute("INSERT INTO verdicts VALUES (%s, %s, %s)", ("tower-7", 42, 0.5))
        with psycopg.connect(postgres_url) as conn:
            rows = conn.execute("SELECT node, seq, score FROM verdicts").fetchall()
        assert rows == [("tower-7", 42, 0.5)]

    def test_owner_is_not_a_superuser(self, postgres_url: str) -> None:
        """The test's role owns its database but has no superuser rights to lean on."""
        with psycopg.connect(postgres_url) as conn:
            row = conn.execute(
                "SELECT rolsuper, pg_get_userbyid(datdba) = current_user"
                " FROM pg_roles, pg_database"
                " WHERE rolname = current_user AND datname = current_database()"
            ).fetchone()
        assert row == (False, True)

    def test_each_url_is_a_different_empty_database(
        self, postgres_url_factory: Callable[[], str]
    ) -> None:
        """Two URLs name two databases, both empty; a table made in one is absent from the other."""
        first, second = postgres_url_factory(), postgres_url_factory()
        assert first != second
        assert public_tables(first) == public_tables(second) == []
        with psycopg.connect(first) as conn:
            conn.execute("CREATE TABLE only_here (x int)")
        assert public_tables(first) == ["only_here"]
        assert public_tables(second) == []

    def test_wrong_password_is_refused(
        self, postgres_server: PostgresServer, postgres_url: str
    ) -> None:
        """Password auth is enforced on TCP: the right URL logs in, one with a wrong password
        does not."""
        dbname = postgres_url.rsplit("/", 1)[1]
        with psycopg.connect(postgres_url):
            pass
        wrong = postgres_server.url(dbname, password="not-the-password")
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(wrong)

    def test_socket_needs_a_password_too(self, postgres_server: PostgresServer) -> None:
        """The unix socket is no trust back door: without a password it is refused."""
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(
                host=str(postgres_server.socket_dir),
                port=postgres_server.port,
                user=postgres_server.superuser,
                dbname="postgres",
                password="",
            )

    def test_databases_are_dropped_after_the_test(
        self, postgres_server: PostgresServer, postgres_url_factory: Callable[[], str]
    ) -> None:
        """Only the databases of the running test exist: earlier tests' were dropped."""
        url = postgres_url_factory()
        with psycopg.connect(postgres_server.admin_url()) as conn:
            names = [
                str(row[0])
                for row in conn.execute(
                    "SELECT datname FROM pg_database WHERE datname LIKE 'test\\_%'"
                ).fetchall()
            ]
        assert names == [url.rsplit("/", 1)[1]]

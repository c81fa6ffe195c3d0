"""Fixtures for the ticket store: one private PostgreSQL cluster per session, a database per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import INITDB, POSTGRES, PostgreSQL


@pytest.fixture(scope="session")
def postgresql() -> Iterator[PostgreSQL]:
    """A PostgreSQL cluster started by the test setup (initdb + postgres on a free port)."""
    if not (POSTGRES and INITDB):
        pytest.skip("postgres is not installed (apt-get install postgresql); CI installs it")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install -e '.[dev]')")
    with PostgreSQL() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def ticket_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty ticket database: SQLite (WAL) in tmp_path, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tickets.sqlite'}"
    server: PostgreSQL = request.getfixturevalue("postgresql")
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:50].lower()
    return server.create_database(name)

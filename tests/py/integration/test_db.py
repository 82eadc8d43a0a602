"""Connections: what every session of the orchestrator starts with, and
errors that never show a secret of the connection string."""

from __future__ import annotations

from orchestrator import db

# The three shapes in which libpq quotes a connection string it cannot parse.
BROKEN = [
    ("postgresql://user:pa%zzS3cret@localhost/db", "S3cret", "percent-encoded"),
    ("host=localhost user=u password=foo S3cretPW", "S3cretPW", 'missing "="'),
    ("postgresql://user:S3cretPW@[::1/db", "S3cretPW", "IPv6 host address"),
]


def test_every_session_resolves_names_in_pg_catalog_only(dsn) -> None:
    with db.connect(dsn) as conn:
        assert conn.execute("SHOW search_path").fetchone()[0] == "pg_catalog,pg_temp"
    with db.connect(f"{dsn} options='-c statement_timeout=4321'") as conn:
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == "4321ms"
        assert conn.execute("SHOW search_path").fetchone()[0] == "pg_catalog,pg_temp"

"""Every PL/pgSQL function of schema consistency passes plpgsql_check."""

from __future__ import annotations

from conftest import HARNESS

LINT = (HARNESS / "lint_plpgsql.sql").read_text()


def lint(conn) -> list[tuple[str, str, str]]:
    return conn.execute(LINT).fetchall()


def test_every_plpgsql_function_passes_plpgsql_check(conn) -> None:
    results = lint(conn)
    assert len({fn for fn, _, _ in results}) >= 5, "too few PL/pgSQL functions found to lint"
    problems = [f"{fn}: {msg}" for fn, level, msg in results if level == "error"]
    assert not problems, "plpgsql_check errors:\n" + "\n".join(problems)


def test_lint_reports_a_broken_function(conn) -> None:
    conn.execute("""
        CREATE FUNCTION consistency._broken() RETURNS int LANGUAGE plpgsql AS $$
        BEGIN RETURN (SELECT no_such_column FROM consistency.settings LIMIT 1); END $$""")
    errors = [r for r in lint(conn) if r[1] == "error"]
    assert any("_broken" in fn and "no_such_column" in msg for fn, _, msg in errors)

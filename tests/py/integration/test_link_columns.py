"""G1-G3 with an application's own link columns (profile:
calls.appointment_links), on a small application of the test's own."""

from __future__ import annotations

from pathlib import Path

import psycopg

from orchestrator import migrate

APP = """
CREATE TABLE calls (id bigserial PRIMARY KEY, external_call_id text UNIQUE, appointment_id bigint);
CREATE TABLE appointments (
    id bigserial PRIMARY KEY,
    call_id bigint REFERENCES calls (id) ON DELETE SET NULL,
    status text NOT NULL DEFAULT 'scheduled',
    deleted_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now());
ALTER TABLE calls ADD FOREIGN KEY (appointment_id) REFERENCES appointments (id) ON DELETE SET NULL;
"""


def test_the_last_counted_appointment_goes_while_a_link_column_names_another(
        empty_db: str, tmp_path: Path) -> None:
    """The call stays linked through its link column, in every field: the
    sync's write agrees with G1/G2, so the counter guard lets it through."""
    profile = tmp_path / "links.toml"
    profile.write_text('[calls]\nappointment_links = ["appointment_id"]\n')
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute(APP)
    migrate.migrate(empty_db, env={}, profile=profile)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute("INSERT INTO calls (id, external_call_id) VALUES (1, 'c-1')")
        conn.execute("INSERT INTO appointments (id, call_id) VALUES (10, 1), (11, NULL)")
        conn.execute("UPDATE calls SET appointment_id = 11 WHERE id = 1")
        conn.execute("DELETE FROM consistency.alerts")
        for change, count in [("DELETE FROM appointments WHERE id = 10", 0),
                              ("INSERT INTO appointments (id, call_id) VALUES (12, 1)", 1),
                              ("UPDATE appointments SET deleted_at = now() WHERE id = 12", 0)]:
            conn.execute(change)
            assert conn.execute(
                "SELECT active_appointment_count, active_appointment_refs, appointment_made,"
                " appointment_link_status FROM calls").fetchall() == [(count, 1, True, "linked")]
            assert conn.execute("SELECT * FROM consistency.violations()").fetchall() == []
        assert conn.execute("SELECT alert_type FROM consistency.alerts").fetchall() == []

from orchestrator.bench.dataset import load_dataset


def test_dataset_is_consistent_and_sized(conn) -> None:
    load_dataset(conn, calls=1000)
    calls, linked = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE appointment_link_status = 'linked') FROM calls"
    ).fetchone()
    assert calls == 1000 and linked == 600
    assert conn.execute("SELECT count(*) FROM appointments").fetchone()[0] == 1000
    # G1: linked exactly when the call has an active appointment
    wrong = conn.execute("""
        SELECT count(*) FROM calls c
         WHERE (c.appointment_link_status = 'linked') <> EXISTS (
               SELECT 1 FROM appointments a WHERE a.call_id = c.id
                  AND a.deleted_at IS NULL AND a.status <> 'cancelled')
            OR c.appointment_made <> (c.appointment_link_status = 'linked')""").fetchone()[0]
    assert wrong == 0


def test_dataset_counters_match_the_appointments(conn) -> None:
    for calls, appointments in ((1000, None), (997, 700), (1003, 1500)):
        conn.execute("TRUNCATE calls, appointments")
        load_dataset(conn, calls=calls, appointments=appointments)
        assert conn.execute("SELECT count(*) FROM consistency.violations()").fetchone()[0] == 0

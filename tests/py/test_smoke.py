def test_template_is_migrated(conn):
    assert conn.execute("SELECT count(*) FROM consistency.settings").fetchone()[0] == 11

-- The switch that lets resync_calls() write the guarded counter.
--
-- A row in an owner-only table, not a custom setting, which any session can
-- set: resync_calls() (SECURITY DEFINER) inserts its transaction id before
-- its UPDATE and deletes it after, and the guard looks it up only when the
-- counter changes outside the sync.
CREATE TABLE consistency._resync_txn (
    xact xid8 PRIMARY KEY
);
REVOKE ALL ON consistency._resync_txn FROM PUBLIC;

COMMENT ON TABLE consistency._resync_txn IS
    'Transactions in which resync_calls() is rewriting calls.active_appointment_count; owner only.';

-- Alerts of the call rules for rows being inserted wait here (BEFORE INSERT)
-- until the AFTER INSERT trigger sees the row really inserted: an INSERT ...
-- ON CONFLICT may drop it after the BEFORE trigger ran. Owner only.
CREATE TABLE consistency._call_alerts_pending (
    xact             xid8 NOT NULL,
    call_id          bigint NOT NULL,
    external_call_id text,
    alert_type       text NOT NULL,
    description      text NOT NULL,
    metadata         jsonb NOT NULL,
    PRIMARY KEY (xact, call_id, alert_type)
);
REVOKE ALL ON consistency._call_alerts_pending FROM PUBLIC;

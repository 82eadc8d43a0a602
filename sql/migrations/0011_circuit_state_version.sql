-- The version of each circuit's state, read by the breaker clients'
-- in-process mirrors (orchestrator/circuit_mirror.py). Every change a mirror
-- acts on takes the next value (sql/triggers/circuit_mirror.sql), so a
-- mirror that reads a row while a notification about it is on its way, or
-- hears of a change twice, keeps whichever is newer.
--
-- One sequence for every key rather than a per-row counter: a row deleted
-- and created again still gets versions above the ones mirrors hold. For one
-- key, versions follow commit order: the value is taken while the row lock
-- is held (BEFORE UPDATE), or for a new row under its unique-index entry.
CREATE SEQUENCE consistency.circuit_state_version AS bigint;
REVOKE ALL ON SEQUENCE consistency.circuit_state_version FROM PUBLIC;

ALTER TABLE consistency.circuit_breaker_states
    ADD COLUMN version bigint NOT NULL DEFAULT nextval('consistency.circuit_state_version');
ALTER SEQUENCE consistency.circuit_state_version OWNED BY consistency.circuit_breaker_states.version;

COMMENT ON COLUMN consistency.circuit_breaker_states.version IS
    'Taken from circuit_state_version whenever state, or whether failure_count > 0, changes; '
    'orders what in-process mirrors read and hear on channel consistency_circuit_state.';

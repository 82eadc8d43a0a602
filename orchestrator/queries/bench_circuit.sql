-- Named queries of `consistency bench circuit` (orchestrator/bench/circuit.py).

-- name: bench_circuit_locking_acquire --
-- The design the issue measured against: the closed path locks the row on
-- every call (a transaction id, a WAL record, one writer at a time). Created
-- in the benchmark's scratch database only.
CREATE FUNCTION consistency._bench_locking_acquire(p_key text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_state text;
BEGIN
    SELECT s.state INTO v_state FROM consistency.circuit_breaker_states s
     WHERE s.circuit_key = p_key FOR UPDATE;
    RETURN v_state IS NULL OR v_state IN ('closed', 'disabled');
END
$$

-- name: bench_circuit_call_locking --
SELECT consistency._bench_locking_acquire(%(key)s)

-- name: bench_circuit_round_trip --
SELECT %(key)s::text IS NOT NULL

-- name: bench_circuit_record_failure --
SELECT consistency.circuit_record_failure(%(key)s, NULL)

-- name: bench_circuit_add_key --
INSERT INTO consistency.circuit_breaker_states (circuit_key) VALUES (%(key)s)

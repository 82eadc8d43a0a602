-- Named queries of the circuit breaker (orchestrator/breaker.py, the circuit
-- CLI and bench). The logic is in sql/functions/circuit.sql.

-- name: circuit_acquire --
SELECT consistency.circuit_acquire(%(key)s)

-- name: circuit_record_success --
SELECT consistency.circuit_record_success(%(key)s)

-- name: circuit_record_failure --
SELECT consistency.circuit_record_failure(%(key)s, %(error)s)

-- name: circuit_status --
SELECT circuit_key, state, failure_count, success_count, last_failure_at, opened_at, closed_at
  FROM consistency.circuit_status(%(key)s)

-- name: circuit_force --
SELECT consistency.circuit_force(%(key)s, %(state)s, %(actor)s, %(reason)s)

-- name: circuit_session_setup --
-- Every pooled connection: a transition waiting on a row lock held by a
-- long transaction gives up, and the breaker falls back, instead of holding
-- the booking.
SELECT set_config('statement_timeout', %(ms)s::text, false)

-- name: circuit_settings --
-- The in-process fallback uses the same thresholds as the database.
SELECT key, value
  FROM consistency.settings
 WHERE key LIKE 'circuit\_breaker.%%'

-- name: circuit_review_enqueue --
-- A booking refused by an open circuit goes to the manual review queue
-- (review_enqueue picks the priority from the reason when it is NULL).
SELECT consistency.review_enqueue(%(call_id)s::bigint, %(reason)s::text, %(context)s::jsonb,
                                  %(priority)s::integer, 'circuit breaker')

-- name: circuit_mirror --
-- What an in-process mirror holds per key (orchestrator/circuit_mirror.py).
SELECT circuit_key, state, failing, version
  FROM consistency.circuit_mirror(%(keys)s::text[])

-- name: circuit_mirror_listen --
-- The channel sql/functions/circuit_mirror.sql notifies.
LISTEN consistency_circuit_state

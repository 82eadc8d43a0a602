-- Named queries of `consistency serve` (orchestrator/server.py). Every
-- connection runs as consistency_monitor in read-only mode.

-- name: serve_session --
-- Drop to the monitor's rights: the login role only needs membership.
SET ROLE consistency_monitor;
SET default_transaction_read_only = on;
SET statement_timeout = '10s';

-- name: serve_metrics --
SELECT consistency.metrics()

-- name: serve_status --
SELECT consistency.status(%(hours)s)

-- name: serve_ping --
SELECT pg_is_in_recovery()

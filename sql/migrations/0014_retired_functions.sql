-- Functions the guard's definitions no longer create. Definitions are
-- repeatable (CREATE OR REPLACE) and never drop what they stopped defining,
-- so an upgraded database would keep them: callable by their grants, and
-- unknown to migrate's check of the schema's routines. Each is dropped by
-- its exact signature; a fresh install has none of them.

-- Merged into _insert_alerts, the single writer of alerts (alerts.sql).
DROP FUNCTION IF EXISTS consistency._raise_alerts(text, text, text, bigint[], text[], jsonb[],
                                                  boolean);
DROP FUNCTION IF EXISTS consistency._insert_alert(text, text, text, bigint, text, jsonb,
                                                  boolean, timestamptz);

-- An alias of NOT _alert_has_pending_delivery (retention.sql), and a test's
-- helper (relay.sql).
DROP FUNCTION IF EXISTS consistency._archivable(bigint);
DROP FUNCTION IF EXISTS consistency._relay_sinks_configured();

-- Guarantees, cheaper: the sync triggers raise a statement's G3 alerts as
-- one set (consistency._raise_alerts, sql/functions/alerts.sql) instead of
-- one raise_alert per call, so 0004's per-call helper goes.
DROP FUNCTION IF EXISTS consistency._alert_unlinked(bigint, bigint, integer);

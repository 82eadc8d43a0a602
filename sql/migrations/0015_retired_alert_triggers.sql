-- Alerts are counted and handed to the relay by their one writer,
-- _insert_alerts (sql/functions/alerts.sql), in plain statements: the two
-- statement triggers on alerts that did it (and their transition tables)
-- go. Trigger definitions are repeatable and never drop what they stopped
-- defining, so an upgraded database would keep them and count and enqueue
-- every alert twice; a fresh install has none of them at this point.
DROP TRIGGER IF EXISTS alerts_count ON consistency.alerts;
DROP TRIGGER IF EXISTS alerts_relay_enqueue ON consistency.alerts;
DROP FUNCTION IF EXISTS consistency._count_alerts();
DROP FUNCTION IF EXISTS consistency._relay_enqueue();

-- Every alert gets one delivery row per registered sink (that takes its
-- severity) in the same transaction that writes it: a relay started later,
-- or a NOTIFY nobody heard, loses nothing.
DROP TRIGGER IF EXISTS alerts_relay_enqueue ON consistency.alerts;
CREATE TRIGGER alerts_relay_enqueue
    AFTER INSERT ON consistency.alerts
    REFERENCING NEW TABLE AS new_alerts
    FOR EACH STATEMENT EXECUTE FUNCTION consistency._relay_enqueue();

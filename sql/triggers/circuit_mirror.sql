-- Versions and notifications for the breaker clients' mirrors; the function
-- and the reasons are in sql/functions/circuit_mirror.sql.
--
-- UPDATE: BEFORE, so the new version is stored in the row it describes, and
-- only when the state or "has failures" changes (the common second or third
-- failure fires nothing). INSERT and DELETE: AFTER, so an INSERT ... ON
-- CONFLICT DO NOTHING that inserted nothing notifies nothing.
DROP TRIGGER IF EXISTS circuit_state_changed ON consistency.circuit_breaker_states;
CREATE TRIGGER circuit_state_changed
    BEFORE UPDATE ON consistency.circuit_breaker_states
    FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state
          OR (OLD.failure_count > 0) IS DISTINCT FROM (NEW.failure_count > 0))
    EXECUTE FUNCTION consistency._circuit_state_changed();

DROP TRIGGER IF EXISTS circuit_state_created_or_deleted ON consistency.circuit_breaker_states;
CREATE TRIGGER circuit_state_created_or_deleted
    AFTER INSERT OR DELETE ON consistency.circuit_breaker_states
    FOR EACH ROW
    EXECUTE FUNCTION consistency._circuit_state_changed();

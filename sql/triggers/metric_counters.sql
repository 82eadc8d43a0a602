-- Monotonic counters of the metrics exporter, counted where the rows are
-- written (sql/functions/metrics.sql): check runs and circuit transitions
-- need no scan per scrape. Alerts are counted by their one writer,
-- _insert_alerts (alerts.sql).
DROP TRIGGER IF EXISTS check_runs_count ON consistency.check_runs;
CREATE TRIGGER check_runs_count
    AFTER INSERT ON consistency.check_runs
    REFERENCING NEW TABLE AS new_runs
    FOR EACH STATEMENT EXECUTE FUNCTION consistency._count_check_runs();

DROP TRIGGER IF EXISTS circuit_events_count ON consistency.circuit_breaker_events;
CREATE TRIGGER circuit_events_count
    AFTER INSERT ON consistency.circuit_breaker_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION consistency._count_circuit_transitions();

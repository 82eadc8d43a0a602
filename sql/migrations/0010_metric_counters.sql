-- Metrics: monotonic counters for the exporter (consistency.metrics()), and
-- the index that keeps a scrape's consistency rate cheap on a large outbox.
--
-- A counter derived by counting rows would go backwards when retention moves
-- alerts out of the outbox, and would cost a scan of every alert per scrape.
-- So the guard counts as it writes: a statement trigger appends one delta row
-- per (metric, labels) of the statement (an INSERT never waits for another
-- session, so no application transaction queues behind a shared counter row),
-- and now and then one transaction folds the deltas into metric_counters
-- (sql/functions/metrics.sql). A scrape sums both: a handful of rows.

CREATE TABLE consistency.metric_counters (
    metric  text NOT NULL,
    label1  text NOT NULL DEFAULT '',
    label2  text NOT NULL DEFAULT '',
    value   bigint NOT NULL,
    PRIMARY KEY (metric, label1, label2)
);
COMMENT ON TABLE consistency.metric_counters IS
    'Folded monotonic counters of the metrics exporter (alerts, corrections, circuit transitions, check runs)';

CREATE TABLE consistency.metric_counter_deltas (
    id      bigserial PRIMARY KEY,
    metric  text NOT NULL,
    label1  text NOT NULL DEFAULT '',
    label2  text NOT NULL DEFAULT '',
    value   bigint NOT NULL
);
COMMENT ON TABLE consistency.metric_counter_deltas IS
    'Counter increments not folded into metric_counters yet (insert-only; folded by _fold_metric_counters)';

-- Back-fill from what is already recorded. The SHARE locks keep writers out
-- until this transaction, which also creates the counting triggers, commits:
-- nothing is counted twice or missed.
LOCK TABLE consistency.alerts, consistency.alerts_archive, consistency.check_runs,
           consistency.circuit_breaker_events IN SHARE MODE;

INSERT INTO consistency.metric_counters (metric, label1, label2, value)
SELECT 'alerts', alert_type, severity, count(*)
  FROM (SELECT alert_type, severity FROM consistency.alerts
        UNION ALL
        SELECT alert_type, severity FROM consistency.alerts_archive) AS a
 GROUP BY alert_type, severity;

INSERT INTO consistency.metric_counters (metric, label1, label2, value)
SELECT 'corrections', r.key, '', sum((r.value ->> 'corrected')::bigint)
  FROM consistency.check_runs AS c, jsonb_each(c.rules) AS r
 GROUP BY r.key
HAVING sum((r.value ->> 'corrected')::bigint) > 0;

INSERT INTO consistency.metric_counters (metric, label1, label2, value)
SELECT 'check_runs', '', '', count(*) FROM consistency.check_runs HAVING count(*) > 0;

INSERT INTO consistency.metric_counters (metric, label1, label2, value)
SELECT 'circuit_transitions', circuit_key, to_state, count(*)
  FROM consistency.circuit_breaker_events
 GROUP BY circuit_key, to_state;

-- The consistency rate of a scrape: the calls that got a critical or warning
-- alert since a point in time, read from the index alone (a day of a busy
-- deployment otherwise costs a scrape thousands of heap pages of alerts).
CREATE INDEX IF NOT EXISTS alerts_call_issue_idx
    ON consistency.alerts (detected_at) INCLUDE (entity_id)
    WHERE entity_type = 'call' AND severity IN ('critical', 'warning');

-- What _insert_alerts, the one writer of alert rows, writes beside each
-- alert in the same transaction: its count and its deliveries, for one
-- entity and for a set, with no trigger on alerts doing it.
BEGIN;
SELECT plan(14);

SELECT is_empty(
    $$ SELECT tgname FROM pg_catalog.pg_trigger
        WHERE tgrelid = 'consistency.alerts'::regclass AND NOT tgisinternal $$,
    'no trigger on alerts: the writer counts and enqueues');

SET LOCAL consistency.fake_now = '2030-01-01 12:00:30+00';

-- Counting, no sink registered.
SELECT is(cardinality(consistency._insert_alerts('w_set', 'warning', 'call', ARRAY[11, 12, 11, 13],
                                                 NULL, NULL, false, consistency.now(), true)), 3,
          'a set of three entities (one listed twice) writes three alerts');
SELECT results_eq(
    $$ SELECT label2, value FROM consistency.metric_counter_deltas WHERE metric = 'alerts' AND label1 = 'w_set' $$,
    $$ VALUES ('warning', 3::bigint) $$,
    'the set is counted once, by its size, as one delta row');
SELECT is(cardinality(consistency._insert_alerts('w_set', 'warning', 'call', ARRAY[11, 12, 14],
                                                 NULL, NULL, false, consistency.now(), true)), 1,
          'a set the throttle thins writes the rest');
SELECT results_eq(
    $$ SELECT value FROM consistency._metric_counter_values('alerts') WHERE label1 = 'w_set' $$,
    $$ VALUES (4::bigint) $$, 'and counts only what it wrote');
SELECT is_empty($$ SELECT * FROM consistency.relay_deliveries $$, 'no sink, no delivery row');

-- Deliveries: an info sink, a warning sink with a 60 s digest.
CREATE TEMP TABLE sink AS
SELECT consistency.relay_register_sink(repeat('a', 64), 'webhook+http://h:1/***', 'webhook+http') AS all_,
       consistency.relay_register_sink(repeat('b', 64), 'smtp://m:25', 'smtp', 'warning', 60) AS warn;
CREATE TEMP TABLE written AS
SELECT consistency._insert_alerts('w_one', 'critical', 'call', ARRAY[21], ARRAY['one'],
                                  ARRAY['{}'::jsonb], false, consistency.now(), true) AS one,
       consistency._insert_alerts('w_info', 'info', 'call', ARRAY[22, 23], NULL, NULL, false,
                                  consistency.now(), true) AS info,
       consistency._insert_alerts('w_warn', 'warning', 'call', ARRAY[24, 25], NULL, NULL, false,
                                  consistency.now(), false) AS warn;
SELECT bag_eq(
    $$ SELECT d.alert_id, d.sink_id, d.status, d.next_attempt_at, d.created_at
         FROM consistency.relay_deliveries d $$,
    $$ SELECT w.one[1] AS alert_id, s.all_ AS sink_id, 'pending' AS status,
              '2030-01-01 12:00:30+00'::timestamptz AS due, '2030-01-01 12:00:30+00'::timestamptz AS created
         FROM written w, sink s
       UNION ALL
       SELECT w.one[1], s.warn, 'pending', '2030-01-01 12:00:30+00', '2030-01-01 12:00:30+00'
         FROM written w, sink s
       UNION ALL
       SELECT unnest(w.info), s.all_, 'pending', '2030-01-01 12:00:30+00', '2030-01-01 12:00:30+00'
         FROM written w, sink s
       UNION ALL
       SELECT unnest(w.warn), s.all_, 'pending', '2030-01-01 12:00:30+00', '2030-01-01 12:00:30+00'
         FROM written w, sink s
       UNION ALL
       SELECT unnest(w.warn), s.warn, 'pending', '2030-01-01 12:01:00+00', '2030-01-01 12:00:30+00'
         FROM written w, sink s $$,
    'one pending row per alert and sink that takes its severity, single or set; non-critical '
    'rows of a digest sink due at the end of the window');

-- A relay_delivery_failed alert skips the sink it is about, single or set.
CREATE TEMP TABLE failed AS
SELECT consistency._insert_alerts('relay_delivery_failed', 'critical', 'system', ARRAY[31],
                                  NULL, ARRAY[jsonb_build_object('sink_id', s.warn)], false,
                                  consistency.now(), false) AS one,
       consistency._insert_alerts('relay_delivery_failed', 'critical', 'system', ARRAY[32, 33],
                                  NULL, ARRAY[jsonb_build_object('sink_id', s.all_),
                                              jsonb_build_object('sink_id', s.warn)], false,
                                  consistency.now(), false) AS set_
  FROM sink s;
SELECT bag_eq(
    $$ SELECT a.entity_id, d.sink_id FROM consistency.relay_deliveries d
         JOIN consistency.alerts a ON a.id = d.alert_id
        WHERE a.alert_type = 'relay_delivery_failed' $$,
    $$ SELECT 31::bigint, all_ FROM sink UNION ALL SELECT 32, warn FROM sink
       UNION ALL SELECT 33, all_ FROM sink $$,
    'relay_delivery_failed reaches every sink but the one that failed');

-- One that names no sink (raised by hand, or a writer that forgets the key)
-- reaches every sink: the skip is for the sink it names, not for all.
CREATE TEMP TABLE unnamed AS
SELECT ARRAY[consistency.raise_alert('relay_delivery_failed', 'critical', 'system', NULL,
                                     'a sink gave up', '{}'::jsonb)] AS one,
       consistency._insert_alerts('relay_delivery_failed', 'critical', 'system', ARRAY[71, 72],
                                  NULL, NULL, false, consistency.now(), false) AS set_;
SELECT is((SELECT count(*)::int FROM consistency.relay_deliveries d, unnamed u
            WHERE d.alert_id = ANY (u.one)),
          2, 'a relay_delivery_failed naming no sink reaches both sinks');
SELECT is((SELECT count(*)::int FROM consistency.relay_deliveries d, unnamed u
            WHERE d.alert_id = ANY (u.set_)),
          4, 'a set of them without metadata reaches both sinks, each');

-- What raise_alert writes goes the same way, and a throttled call writes nothing.
SELECT isnt(consistency.raise_alert('w_api', 'warning', 'call', 41, 'd'), NULL, 'raise_alert writes');
SELECT is(consistency.raise_alert('w_api', 'warning', 'call', 41, 'd'), NULL, 'and is throttled after');
SELECT results_eq(
    $$ SELECT (SELECT count(*) FROM consistency.relay_deliveries d JOIN consistency.alerts a
                   ON a.id = d.alert_id WHERE a.alert_type = 'w_api'),
              (SELECT sum(value) FROM consistency.metric_counter_deltas WHERE label1 = 'w_api') $$,
    $$ VALUES (2::bigint, 1::numeric) $$,
    'one alert: two deliveries, counted once; the throttled call neither');

-- The owner may still INSERT into alerts by hand: such a row is not the
-- writer's, and nothing counts or enqueues it.
INSERT INTO consistency.alerts (alert_type, severity, entity_type, entity_id, description)
VALUES ('w_by_hand', 'critical', 'system', 1, 'd');
SELECT is((SELECT count(*)::int FROM consistency.relay_deliveries d JOIN consistency.alerts a
             ON a.id = d.alert_id WHERE a.alert_type = 'w_by_hand')
          + (SELECT count(*)::int FROM consistency.metric_counter_deltas WHERE label1 = 'w_by_hand'),
          0, 'an alert inserted by hand is neither counted nor relayed');

SELECT * FROM finish();
ROLLBACK;

-- Metrics: counters counted as rows are written (and kept through
-- retention), circuit key families, the documents of metrics() and status(),
-- and who may read them.
BEGIN;
SELECT plan(17);

SELECT results_eq(
    $$ SELECT consistency._circuit_family(k)
         FROM unnest(ARRAY['appointment_booking:service:42', 'calendar:create', 'calendar',
                           'svc:0f8fad5b-d9cb-469f-a165-70867728950e', 'a:b:12:x', 'x:',
                           repeat('k', 300)]) WITH ORDINALITY AS t(k, n) ORDER BY n $$,
    $$ VALUES ('appointment_booking:service'), ('calendar'), ('calendar'), ('svc'),
              ('a:b:12'), ('x'), (repeat('k', 100)) $$,
    'a family is the key up to its last colon, at most 100 characters');

SELECT is(jsonb_array_length(consistency.metrics() -> 'alerts_total'), 0,
          'a new database counts no alert');
SELECT is(consistency.metrics() -> 'last_check', 'null'::jsonb, 'and has no last check');
SELECT is((consistency.metrics() -> 'day' ->> 'consistency_ratio')::numeric, 1.0,
          'no calls: consistency ratio 1');

SET LOCAL consistency.fake_now = '2001-01-01 00:00:00+00';
SELECT consistency.raise_alert('t_old', 'critical', 'call', 1, 'd');
SELECT consistency.raise_alert('t_old', 'critical', 'call', 2, 'd');
SELECT consistency.raise_alert('t_old', 'critical', 'call', 2, 'throttled away');
RESET consistency.fake_now;

SELECT results_eq(
    $$ SELECT label2, value FROM consistency._metric_counter_values('alerts') WHERE label1 = 't_old' $$,
    $$ VALUES ('critical', 2::bigint) $$, 'each inserted alert is counted once, a throttled one not');
SELECT is((SELECT count(*)::int FROM consistency.metric_counter_deltas WHERE label1 = 't_old'), 2,
          'as one delta row per inserting statement');
SELECT is(consistency.archive_alerts(), 2::bigint, 'retention archives both');
SELECT results_eq(
    $$ SELECT e ->> 'type', (e ->> 'value')::int FROM jsonb_array_elements(consistency.metrics() -> 'alerts_total') e $$,
    $$ VALUES ('t_old', 2) $$, 'the counter keeps its value after archiving');

SELECT consistency._fold_metric_counters();
SELECT is((SELECT count(*)::int FROM consistency.metric_counter_deltas), 0, 'a fold empties the deltas');
SELECT results_eq(
    $$ SELECT value FROM consistency.metric_counters WHERE metric = 'alerts' AND label1 = 't_old' $$,
    $$ VALUES (2::bigint) $$, 'into the folded counter');
SELECT consistency.raise_alert('t_old', 'critical', 'call', 3, 'd');
SELECT consistency._fold_metric_counters();
SELECT results_eq(
    $$ SELECT value FROM consistency._metric_counter_values('alerts') WHERE label1 = 't_old' $$,
    $$ VALUES (3::bigint) $$, 'a second fold adds to it');

SELECT consistency.circuit_force('appointment_booking:service:1', 'forced_open', 'tap', 'x');
SELECT consistency.circuit_force('appointment_booking:service:2', 'forced_open', 'tap', 'x');
SELECT consistency.circuit_force('appointment_booking:service:2', 'closed', 'tap', 'x');
SELECT results_eq(
    $$ SELECT e ->> 'key', e ->> 'to', (e ->> 'value')::int
         FROM jsonb_array_elements(consistency.metrics() -> 'circuit_transitions_total') e $$,
    $$ VALUES ('appointment_booking:service', 'closed', 1),
              ('appointment_booking:service', 'forced_open', 2) $$,
    'transitions are counted by family and target state');
SELECT is(consistency.metrics() -> 'circuits' -> 0 -> 'states',
          '{"closed": 1, "open": 0, "half_open": 0, "forced_open": 1, "disabled": 0}'::jsonb,
          'circuits of a family by state');

SELECT throws_ok($$ SELECT consistency.status(0) $$, '22023',
                 'hours must be between 1 and 744, got 0', 'status() refuses a bad period');
SELECT is(jsonb_array_length(consistency.status(6) -> 'series'), 6, 'one point per hour');

SET LOCAL ROLE consistency_monitor;
SELECT lives_ok($$ SELECT consistency.metrics(), consistency.status() $$,
                'the monitor reads metrics() and status()');
SELECT throws_ok($$ SELECT * FROM consistency.metric_counter_deltas $$, '42501', NULL,
                 'but not the counter tables');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;

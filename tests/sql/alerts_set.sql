BEGIN;
SELECT plan(11);

-- _insert_alerts for a set of entities: raise_alert's semantics per key.
SET LOCAL consistency.fake_now = '2030-01-01 12:00:00+00';

SELECT isnt(consistency.raise_alert('appointment_unlinked', 'warning', 'call', 2, 'single'), NULL,
          'a single alert for call 2 first');

CREATE TEMP TABLE set_ids ON COMMIT DROP AS
SELECT unnest(consistency._insert_alerts('appointment_unlinked', 'warning', 'call',
                                         ARRAY[3, 1, 2, 3, NULL]::bigint[],
                                         ARRAY['three', 'one', 'two', 'three again', 'none'],
                                         ARRAY['{"k": 3}', '{"k": 1}', NULL, '{"k": 33}', NULL]::jsonb[],
                                         false, consistency.now(), true)) AS id;
SELECT results_eq(
    $$ SELECT a.entity_id, a.description, a.metadata FROM consistency.alerts a JOIN set_ids USING (id)
        ORDER BY a.id $$,
    $$ VALUES (1::bigint, 'one', '{"k": 1}'::jsonb), (3::bigint, 'three', '{"k": 3}'::jsonb),
              (NULL::bigint, 'none', '{}'::jsonb) $$,
    'one alert per entity not alerted within the window, in entity order; the first entry of a '
    'duplicate wins; NULL metadata is {}; the new ids are returned');

SELECT is((SELECT count(*)::int FROM consistency.alerts WHERE entity_id = 2), 1,
          'an entity alerted a moment ago is throttled in a set as by raise_alert');
SELECT is((SELECT last_alert_at FROM consistency.alert_throttle
            WHERE alert_type = 'appointment_unlinked' AND entity_id = 1), '2030-01-01 12:00:00+00'::timestamptz,
          'the set records its keys in the throttle');
SELECT is(consistency.raise_alert('appointment_unlinked', 'warning', 'call', 1, 'again'), NULL,
          'raise_alert is throttled by a key the set wrote');
SELECT is(consistency.raise_alert('appointment_unlinked', 'warning', 'call', NULL, 'again'), NULL,
          'NULL entity ids share one throttle key, set or single');

SELECT results_eq(
    $$ SELECT alert_type, severity, entity_type, detected_at, auto_corrected, corrected_at
         FROM consistency.alerts WHERE entity_id = 1 $$,
    $$ VALUES ('appointment_unlinked', 'warning', 'call', '2030-01-01 12:00:00+00'::timestamptz, false,
               NULL::timestamptz) $$,
    'rows carry type, severity, entity type and consistency.now()');

SET LOCAL consistency.fake_now = '2030-01-01 12:05:00+00';
SELECT is(cardinality(consistency._insert_alerts('appointment_unlinked', 'info', 'call', ARRAY[1, 2, 4],
                                                 NULL, NULL, true, consistency.now(), true)), 3,
          'once the window has passed, every entity is alerted again');
SELECT results_eq(
    $$ SELECT description, metadata, auto_corrected, corrected_at FROM consistency.alerts WHERE entity_id = 4 $$,
    $$ VALUES ('', '{}'::jsonb, true, '2030-01-01 12:05:00+00'::timestamptz) $$,
    'missing descriptions and metadata default like raise_alert; auto_corrected sets corrected_at');
SELECT is(cardinality(consistency._insert_alerts('appointment_unlinked', 'info', 'call', ARRAY[]::bigint[],
                                                 NULL, NULL, false, consistency.now(), true)), 0,
          'an empty set writes nothing');

SELECT throws_ok($$ SELECT consistency.raise_alert('x', 'info', 'customer', 1, 'd') $$,
                 '22023', 'entity_type must be call, appointment, circuit or system, got customer',
                 'unknown entity type refused');

SELECT * FROM finish();
ROLLBACK;

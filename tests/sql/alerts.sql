BEGIN;
SELECT plan(14);

SET LOCAL consistency.fake_now = '2030-01-01 12:00:00+00';

SELECT isnt(consistency.raise_alert('appointment_unlinked', 'warning', 'call', 42, 'lost it',
                                    '{"appointment_id": 7}'), NULL, 'first alert is written');
SELECT results_eq(
    $$ SELECT alert_type, severity, entity_type, entity_id, description, metadata, detected_at,
              auto_corrected, corrected_at
         FROM consistency.alerts $$,
    $$ VALUES ('appointment_unlinked', 'warning', 'call', 42::bigint, 'lost it',
               '{"appointment_id": 7}'::jsonb, '2030-01-01 12:00:00+00'::timestamptz, false,
               NULL::timestamptz) $$,
    'alert row carries every field, detected_at from consistency.now()');

SELECT is(consistency.raise_alert('appointment_unlinked', 'warning', 'call', 42, 'again'), NULL,
          'same type and entity within the window is throttled');
SET LOCAL consistency.fake_now = '2030-01-01 12:04:59+00';
SELECT is(consistency.raise_alert('appointment_unlinked', 'warning', 'call', 42, 'again'), NULL,
          'still throttled just inside the 5 minute window');
SELECT isnt(consistency.raise_alert('session_outcome_corrected', 'warning', 'call', 42, 'other'), NULL,
            'a different type for the same entity is not throttled');
SELECT isnt(consistency.raise_alert('appointment_unlinked', 'warning', 'call', 43, 'other call'), NULL,
            'the same type for another entity is not throttled');
SELECT isnt(consistency.raise_alert('appointment_unlinked', 'warning', 'appointment', 42, 'x'), NULL,
            'the same id of another entity type is not throttled');
SET LOCAL consistency.fake_now = '2030-01-01 12:05:00+00';
SELECT isnt(consistency.raise_alert('appointment_unlinked', 'warning', 'call', 42, 'later'), NULL,
            'allowed again once the window has passed');
SELECT is((SELECT count(*)::int FROM consistency.alerts WHERE alert_type = 'appointment_unlinked'
              AND entity_type = 'call' AND entity_id = 42), 2, 'two rows for the throttled key');

SELECT isnt(consistency.raise_alert('relay_started', 'info', 'system', NULL, 'x'), NULL,
            'an alert without entity id is written');
SELECT is(consistency.raise_alert('relay_started', 'info', 'system', NULL, 'x'), NULL,
          'and throttled like any other (NULL ids are the same entity)');

SELECT throws_ok($$ SELECT consistency.raise_alert('x', 'fatal', 'call', 1, 'd') $$, '22023',
                 'severity must be critical, warning or info, got fatal', 'unknown severity refused');
SELECT throws_ok($$ SELECT consistency.raise_alert('', 'info', 'call', 1, 'd') $$, '22023',
                 'alert_type must not be empty', 'empty alert type refused');

UPDATE consistency.settings SET value = '0' WHERE key = 'monitoring.alert_throttle_minutes';
SELECT isnt(consistency.raise_alert('appointment_unlinked', 'warning', 'call', 42, 'no throttle'), NULL,
            'a throttle of 0 minutes never suppresses');

SELECT * FROM finish();
ROLLBACK;

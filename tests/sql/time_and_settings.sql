BEGIN;
SELECT plan(18);

-- consistency.now(): real clock unless consistency.fake_now is set
SELECT ok(abs(extract(epoch FROM consistency.now() - clock_timestamp())) < 5,
          'now() follows the real clock by default');
SET LOCAL consistency.fake_now = '2030-01-02 03:04:05+00';
SELECT is(consistency.now(), '2030-01-02 03:04:05+00'::timestamptz, 'fake_now moves time');
SET LOCAL consistency.fake_now = '';
SELECT ok(consistency.now() < '2030-01-01'::timestamptz, 'an empty fake_now means the real clock');
SET LOCAL SESSION AUTHORIZATION consistency_app;
SET LOCAL consistency.fake_now = '2099-01-01 00:00:00+00';
SELECT throws_ok($$ SELECT consistency.now() $$, '42501',
                 'consistency.fake_now is for tests: only a superuser session may move the clock',
                 'an application session cannot move the guard''s clock');
RESET SESSION AUTHORIZATION;
SET LOCAL consistency.fake_now = '';

-- reading
SELECT is(consistency.setting('validation.max_appointment_age_seconds'), '300'::jsonb,
          'setting() returns the default');
SELECT is(consistency.setting_int('circuit_breaker.failure_threshold'), 3, 'setting_int()');
SELECT is(consistency.setting_numeric('circuit_breaker.timeout_seconds'), 10::numeric,
          'setting_numeric()');
SELECT throws_ok($$ SELECT consistency.setting('no.such.key') $$, '42704',
                 'unknown setting "no.such.key"', 'setting() refuses an unknown key');

-- refused changes write nothing
CREATE TEMP TABLE audit_before AS SELECT count(*) AS n FROM consistency.audit_log;
SELECT throws_ok($$ SELECT consistency.set_setting('no.such.key', '5', 'tester') $$, '42704',
                 'unknown setting "no.such.key"', 'set_setting() refuses an unknown key');
SELECT throws_ok($$ SELECT consistency.set_setting('monitoring.recent_hours', '"two"', 'tester') $$,
                 '22023', 'invalid value for monitoring.recent_hours: must be a number, got "two"',
                 'wrong type refused');
SELECT throws_ok($$ SELECT consistency.set_setting('retention.alert_days', '-1', 'tester') $$,
                 '22023', 'invalid value for retention.alert_days: must be greater than 0, got -1',
                 'negative refused');
SELECT throws_ok($$ SELECT consistency.set_setting('circuit_breaker.failure_threshold', '0', 'tester') $$,
                 '22023', NULL, 'zero refused where a positive is needed');
SELECT throws_ok($$ SELECT consistency.set_setting('circuit_breaker.failure_threshold', '2.5', 'tester') $$,
                 '22023', 'invalid value for circuit_breaker.failure_threshold: must be an integer, got 2.5',
                 'fraction refused for an integer setting');
SELECT results_eq($$ SELECT value FROM consistency.settings WHERE key IN
                        ('monitoring.recent_hours', 'retention.alert_days', 'circuit_breaker.failure_threshold')
                      ORDER BY key $$,
                  $$ VALUES ('3'::jsonb), ('1'::jsonb), ('90'::jsonb) $$,
                  'refused values left every setting unchanged');
SELECT is((SELECT count(*) FROM consistency.audit_log), (SELECT n FROM audit_before),
          'refused changes wrote no audit row');

-- accepted changes are audited; zero is fine where allowed
SELECT ok(consistency.set_setting('monitoring.alert_throttle_minutes', '0', 'tester'),
          'zero accepted for the throttle (non-negative)');
SELECT results_eq(
    $$ SELECT actor, action, target_type, target_id, before, after FROM consistency.audit_log
        ORDER BY id DESC LIMIT 1 $$,
    $$ VALUES ('tester', 'setting.set', 'setting', 'monitoring.alert_throttle_minutes',
               '{"value": 5}'::jsonb, '{"value": 0}'::jsonb) $$,
    'a change writes an audit row with before and after');
SELECT ok(NOT consistency.set_setting('monitoring.alert_throttle_minutes', '0', 'tester'),
          'setting the same value again is not a change');

SELECT * FROM finish();
ROLLBACK;

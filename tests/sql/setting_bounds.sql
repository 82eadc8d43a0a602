-- Every setting has a minimum and a maximum, enforced by set_setting: a value
-- no part of the guard can use is refused (one error, nothing written).
BEGIN;
SELECT plan(11);

SELECT is_empty($$ SELECT key FROM consistency.settings
                    WHERE min_value IS NULL OR max_value IS NULL OR min_value > max_value $$,
                'every setting has bounds, minimum <= maximum');

CREATE TEMP TABLE audit_before AS SELECT count(*) AS n FROM consistency.audit_log;
SELECT throws_ok($$ SELECT consistency.set_setting('monitoring.recent_hours', '2147483647', 't') $$,
                 '22023', 'invalid value for monitoring.recent_hours: must be at most 8760, got 2147483647',
                 'an hour count that would overflow every check is refused');
SELECT throws_ok($$ SELECT consistency.set_setting('circuit_breaker.cooldown_seconds', '1e300', 't') $$,
                 '22023', 'invalid value for circuit_breaker.cooldown_seconds: must be at most 86400, got 1.00e+300',
                 'a cooldown beyond any interval is refused, and quoted short');
SELECT throws_ok($$ SELECT consistency.set_setting('circuit_breaker.cooldown_seconds', '1e-9', 't') $$,
                 '22023', 'invalid value for circuit_breaker.cooldown_seconds: must be at least 0.000001, got 0.000000001',
                 'a cooldown below the clock''s resolution is refused');
SELECT throws_ok($$ SELECT consistency.set_setting('retention.alert_days', '36501', 't') $$,
                 '22023', NULL, 'retention beyond a century is refused');
SELECT throws_ok($$ SELECT consistency.set_setting('validation.max_retry_attempts', '1000000', 't') $$,
                 '22023', NULL, 'a million retries are refused');
SELECT throws_ok($$ SELECT consistency.set_setting('monitoring.recent_hours', to_jsonb(repeat('x', 100000)), 't') $$,
                 '22023', 'invalid value for monitoring.recent_hours: must be a number, got "' || repeat('x', 39) || '...',
                 'a huge wrong value is quoted shortened');
SELECT results_eq($$ SELECT value FROM consistency.settings
                      WHERE key IN ('monitoring.recent_hours', 'circuit_breaker.cooldown_seconds')
                      ORDER BY key $$,
                  $$ VALUES ('30'::jsonb), ('1'::jsonb) $$, 'refused values changed nothing');
SELECT is((SELECT count(*) FROM consistency.audit_log), (SELECT n FROM audit_before),
          'refused values wrote no audit row');

SELECT ok(consistency.set_setting('monitoring.recent_hours', '8760', 't')
          AND consistency.set_setting('circuit_breaker.cooldown_seconds', '0.000001', 't')
          AND consistency.set_setting('monitoring.alert_throttle_minutes', '0', 't'),
          'the bounds themselves are accepted');
SELECT lives_ok($$ SELECT count(*) FROM consistency.run_check() $$,
                'a check over the largest default window runs');

SELECT * FROM finish();
ROLLBACK;

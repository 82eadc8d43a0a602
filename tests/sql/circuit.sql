-- Circuit breaker transitions with moved time (defaults: 3 failures open,
-- 30 s cooldown, 2 probe successes close, 10 s before a probe counts as lost).
BEGIN;
SELECT plan(56);

SET LOCAL consistency.fake_now = '2030-01-01 12:00:00+00';

-- unknown key, below threshold, success resets
SELECT ok(consistency.circuit_acquire('svc:a'), 'an unknown key is closed: acquire permits');
SELECT results_eq($$ SELECT state, failure_count, success_count, opened_at
                      FROM consistency.circuit_status('svc:a') $$,
                  $$ VALUES ('closed', 0, 0, NULL::timestamptz) $$,
                  'status of an unknown key: closed, zero counts');
SELECT is((SELECT count(*)::int FROM consistency.circuit_breaker_states), 0,
          'acquire and status on an unknown key write nothing');
SELECT consistency.circuit_record_success('svc:a');
SELECT is((SELECT count(*)::int FROM consistency.circuit_breaker_states), 0,
          'a success on a closed circuit without failures writes nothing');

SELECT consistency.circuit_record_failure('svc:a', 'boom 1');
SELECT consistency.circuit_record_failure('svc:a', 'boom 2');
SELECT results_eq($$ SELECT state, failure_count FROM consistency.circuit_status('svc:a') $$,
                  $$ VALUES ('closed', 2) $$, 'two failures (below the threshold) stay closed');
SELECT ok(consistency.circuit_acquire('svc:a'), 'below the threshold calls are still permitted');
SELECT consistency.circuit_record_success('svc:a');
SELECT is((SELECT failure_count FROM consistency.circuit_status('svc:a')), 0,
          'a success resets the consecutive failure count');
SELECT consistency.circuit_record_failure('svc:a', 'boom 3');
SELECT consistency.circuit_record_failure('svc:a', 'boom 4');
SELECT is((SELECT state FROM consistency.circuit_status('svc:a')), 'closed',
          'after the reset two more failures are again below the threshold');

-- opens at the threshold
SET LOCAL consistency.fake_now = '2030-01-01 12:00:05+00';
SELECT consistency.circuit_record_failure('svc:a', 'boom 5');
SELECT results_eq($$ SELECT state, failure_count, last_failure_at, opened_at
                      FROM consistency.circuit_status('svc:a') $$,
                  $$ VALUES ('open', 3, '2030-01-01 12:00:05+00'::timestamptz,
                             '2030-01-01 12:00:05+00'::timestamptz) $$,
                  'the third consecutive failure opens it; opened_at is now');
SELECT is((SELECT last_error FROM consistency.circuit_breaker_states WHERE circuit_key = 'svc:a'),
          'boom 5', 'the last error is kept');
SELECT results_eq($$ SELECT from_state, to_state, at FROM consistency.circuit_breaker_events
                     WHERE circuit_key = 'svc:a' $$,
                  $$ VALUES ('closed', 'open', '2030-01-01 12:00:05+00'::timestamptz) $$,
                  'one event row for the transition');
SELECT results_eq($$ SELECT severity, entity_type, entity_id, metadata->>'circuit_key',
                            metadata->>'failure_count'
                       FROM consistency.alerts WHERE alert_type = 'circuit_opened' $$,
                  $$ VALUES ('critical', 'circuit', hashtextextended('svc', 0), 'svc:a', '3') $$,
                  'circuit_opened critical alert, entity_id = hashtextextended(family, 0), key in metadata');
SELECT ok(NOT consistency.circuit_acquire('svc:a'), 'open: acquire refuses during the cooldown');
SELECT consistency.circuit_record_failure('svc:a', 'late');
SELECT results_eq($$ SELECT state, failure_count FROM consistency.circuit_status('svc:a') $$,
                  $$ VALUES ('open', 3) $$, 'failure_count keeps its value while open');
SELECT consistency.circuit_record_success('svc:a');
SELECT is((SELECT state FROM consistency.circuit_status('svc:a')), 'open',
          'a late success does not close an open circuit');
SELECT ok(consistency.circuit_acquire('svc:b'), 'keys are isolated: another key is still closed');

-- cooldown, half_open, one probe
SET LOCAL consistency.fake_now = '2030-01-01 12:00:34.999+00';
SELECT ok(NOT consistency.circuit_acquire('svc:a'), 'still refused 1 ms before the cooldown ends');
SET LOCAL consistency.fake_now = '2030-01-01 12:00:35+00';
SELECT ok(consistency.circuit_acquire('svc:a'), 'cooldown elapsed: the first caller is the probe');
SELECT results_eq($$ SELECT state, probe_started_at FROM consistency.circuit_breaker_states
                     WHERE circuit_key = 'svc:a' $$,
                  $$ VALUES ('half_open', '2030-01-01 12:00:35+00'::timestamptz) $$,
                  'half_open with the probe''s start time');
SELECT ok(NOT consistency.circuit_acquire('svc:a'), 'only one probe: the next caller is refused');
SELECT consistency.circuit_record_success('svc:a');
SELECT results_eq($$ SELECT state, success_count FROM consistency.circuit_status('svc:a') $$,
                  $$ VALUES ('half_open', 1) $$, 'one probe success is not enough to close');
SELECT ok(consistency.circuit_acquire('svc:a'), 'once the probe reported, the next probe may go');
SELECT ok(NOT consistency.circuit_acquire('svc:a'), 'and again only one');
SET LOCAL consistency.fake_now = '2030-01-01 12:00:36+00';
SELECT consistency.circuit_record_success('svc:a');
SELECT results_eq($$ SELECT state, failure_count, success_count, closed_at
                      FROM consistency.circuit_status('svc:a') $$,
                  $$ VALUES ('closed', 0, 0, '2030-01-01 12:00:36+00'::timestamptz) $$,
                  'the second probe success closes it, counters reset, closed_at set');
SELECT results_eq($$ SELECT from_state, to_state FROM consistency.circuit_breaker_events
                     WHERE circuit_key = 'svc:a' ORDER BY id $$,
                  $$ VALUES ('closed', 'open'), ('open', 'half_open'), ('half_open', 'closed') $$,
                  'one event per transition, in order');
SELECT results_eq($$ SELECT severity, metadata->>'circuit_key' FROM consistency.alerts
                     WHERE alert_type = 'circuit_closed' $$,
                  $$ VALUES ('info', 'svc:a') $$, 'circuit_closed info alert');

-- a probe failure reopens with a new opened_at
SET LOCAL consistency.fake_now = '2030-01-01 12:10:00+00';
SELECT consistency.circuit_record_failure('svc:a') FROM generate_series(1, 3);
SET LOCAL consistency.fake_now = '2030-01-01 12:10:30+00';
SELECT ok(consistency.circuit_acquire('svc:a'), 'probe after the second opening');
SET LOCAL consistency.fake_now = '2030-01-01 12:10:31+00';
SELECT consistency.circuit_record_failure('svc:a', 'probe failed');
SELECT results_eq($$ SELECT state, opened_at, failure_count FROM consistency.circuit_status('svc:a') $$,
                  $$ VALUES ('open', '2030-01-01 12:10:31+00'::timestamptz, 4) $$,
                  'a probe failure reopens it with a new opened_at');
SET LOCAL consistency.fake_now = '2030-01-01 12:11:00+00';
SELECT ok(NOT consistency.circuit_acquire('svc:a'), 'the cooldown runs from the new opened_at');

-- a lost probe does not wedge the circuit
SET LOCAL consistency.fake_now = '2030-01-01 12:11:01+00';
SELECT ok(consistency.circuit_acquire('svc:a'), 'probe that will never report');
SET LOCAL consistency.fake_now = '2030-01-01 12:11:10.999+00';
SELECT ok(NOT consistency.circuit_acquire('svc:a'), 'refused while the probe is younger than timeout_seconds');
SET LOCAL consistency.fake_now = '2030-01-01 12:11:11+00';
SELECT ok(consistency.circuit_acquire('svc:a'), 'after timeout_seconds the lost probe is replaced');
SELECT ok(NOT consistency.circuit_acquire('svc:a'), 'by exactly one new probe');

-- operator overrides
SELECT ok(consistency.circuit_force('svc:c', 'forced_open', 'ops:ann', 'calendar maintenance'),
          'force forced_open on an unknown key');
SELECT ok(NOT consistency.circuit_acquire('svc:c'), 'forced_open refuses');
SET LOCAL consistency.fake_now = '2030-01-02 12:00:00+00';
SELECT ok(NOT consistency.circuit_acquire('svc:c'), 'forced_open refuses whatever the cooldown');
SELECT ok(NOT consistency.circuit_force('svc:c', 'forced_open', 'ops:ann', 'again'),
          'forcing the state it is in changes nothing');
SELECT results_eq($$ SELECT actor, action, target_type, target_id, before->>'state', after->>'state',
                            after->>'reason'
                       FROM consistency.audit_log WHERE action = 'circuit.force' $$,
                  $$ VALUES ('ops:ann', 'circuit.force', 'circuit', 'svc:c', 'closed', 'forced_open',
                             'calendar maintenance') $$,
                  'circuit_force is audited once (the no-op is not)');
SELECT results_eq($$ SELECT from_state, to_state, reason, actor FROM consistency.circuit_breaker_events
                     WHERE circuit_key = 'svc:c' $$,
                  $$ VALUES ('closed', 'forced_open', 'calendar maintenance', 'ops:ann') $$,
                  'a forced transition is an event with its actor');
SELECT consistency.circuit_force('svc:c', 'disabled', 'ops:ann', 'breaker misbehaves');
SELECT consistency.circuit_record_failure('svc:c') FROM generate_series(1, 5);
SELECT ok(consistency.circuit_acquire('svc:c'), 'disabled permits every call');
SELECT is((SELECT state FROM consistency.circuit_status('svc:c')), 'disabled',
          'failures never open a disabled circuit');
SELECT consistency.circuit_force('svc:c', 'closed', 'ops:ann', 'back to normal');
SELECT results_eq($$ SELECT state, failure_count FROM consistency.circuit_status('svc:c') $$,
                  $$ VALUES ('closed', 0) $$, 'force closed resets the circuit');
SELECT throws_ok($$ SELECT consistency.circuit_force('svc:c', 'open', 'ops', 'x') $$, '22023',
                 'state must be forced_open, disabled or closed, got open', 'unknown forced state refused');
SELECT throws_ok($$ SELECT consistency.circuit_force('svc:c', 'closed', ' ', 'x') $$, '22023',
                 'actor must not be empty', 'empty actor refused');
SELECT throws_ok($$ SELECT consistency.circuit_acquire('') $$, '22023',
                 'circuit key must not be empty', 'empty key refused');

-- One rule for a key at every entry point: not empty, at most 500 characters.
SELECT throws_ok($$ SELECT consistency.circuit_acquire(NULL) $$, '22023',
                 'circuit key must not be empty', 'acquire refuses a NULL key');
SELECT throws_ok($$ SELECT consistency.circuit_record_success(repeat(' ', 600)) $$, '22023',
                 'circuit key must not be empty', 'a key of 600 blanks is empty, not too long');
SELECT throws_ok($$ SELECT consistency.circuit_record_failure('   ') $$, '22023',
                 'circuit key must not be empty', 'record_failure refuses a blank key');
SELECT throws_ok($$ SELECT consistency.circuit_force('', 'disabled', 'ops', 'x') $$, '22023',
                 'circuit key must not be empty', 'force refuses an empty key');
SELECT throws_ok($$ SELECT consistency.circuit_acquire(repeat('k', 501)) $$, '22023',
                 'circuit key is too long: 501 characters (at most 500)', 'acquire refuses 501 characters');
SELECT throws_ok($$ SELECT consistency.circuit_record_success(repeat('é', 501)) $$, '22023',
                 'circuit key is too long: 501 characters (at most 500)', 'characters, not bytes, are counted');
SELECT throws_ok($$ SELECT consistency.circuit_record_failure(repeat('k', 501)) $$, '22023',
                 'circuit key is too long: 501 characters (at most 500)', 'record_failure refuses 501 characters');
SELECT lives_ok($$ SELECT consistency.circuit_acquire(repeat('é', 500)),
                          consistency.circuit_record_failure(repeat('é', 500)),
                          consistency.circuit_record_success(repeat('é', 500)) $$,
                'a key of 500 characters (1000 bytes) is a key');

-- keys are data
SELECT consistency.circuit_record_failure($k$x'); DROP TABLE consistency.settings; --$k$, 'e')
  FROM generate_series(1, 3);
SELECT results_eq($$ SELECT state FROM consistency.circuit_status($k$x'); DROP TABLE consistency.settings; --$k$) $$,
                  $$ VALUES ('open') $$, 'a key with quotes and semicolons is just a key');
SELECT has_table('consistency', 'settings', 'and nothing it contains was executed');

-- thresholds come from settings
UPDATE consistency.settings SET value = '1' WHERE key = 'circuit_breaker.failure_threshold';
SELECT consistency.circuit_record_failure('svc:d');
SELECT is((SELECT state FROM consistency.circuit_status('svc:d')), 'open',
          'failure_threshold = 1: the first failure of a new key opens it');

SELECT * FROM finish();
ROLLBACK;

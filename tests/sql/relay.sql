BEGIN;
SELECT plan(60);

SET LOCAL consistency.fake_now = '2030-01-01 10:00:00+00';
DO $$ BEGIN PERFORM consistency.raise_alert('too_old', 'critical', 'call', 90, 'two hours ago'); END $$;
SET LOCAL consistency.fake_now = '2030-01-01 12:00:00+00';

DO $$ BEGIN PERFORM consistency.raise_alert('before_sinks', 'critical', 'call', 1, 'raised before any sink'); END $$;
SELECT is_empty($$ SELECT * FROM consistency.relay_sinks $$, 'no sink configured yet');

SELECT is(consistency.relay_register_sink(repeat('a', 64), 'webhook+http://h:1/***', 'webhook+http'),
          consistency.relay_register_sink(repeat('a', 64), 'webhook+http://h:1/***', 'webhook+http'),
          'registering the same fingerprint twice keeps one sink');
DO $$ BEGIN PERFORM consistency.relay_register_sink(repeat('b', 64), 'slack+https://hooks/***',
                                               'slack+https', 'warning'); END $$;
SELECT is((SELECT count(*) FROM consistency.relay_sinks), 2::bigint, 'two sinks registered');
SELECT throws_ok($$ SELECT consistency.relay_register_sink('secret-url', 'x', 'x') $$,
                 '22023', NULL, 'a fingerprint that is not a hash is refused (no URL stored)');
SELECT throws_ok($$ SELECT consistency.relay_register_sink(repeat('c', 64), 'x', 'x', 'loud') $$,
                 '22023', NULL, 'an unknown min_severity is refused');
SELECT is((SELECT count(*) FROM consistency.relay_deliveries), 0::bigint,
          'alerts raised before a sink existed are not replayed to it');

-- Backlog: only a sink seen for the first time, only alerts of that period.
CREATE TEMP TABLE backlog_sink AS
SELECT consistency.relay_register_sink(repeat('e', 64), 'webhook+http://late:1/***', 'webhook+http',
                                       'info', NULL, '1 hour') AS id;
SELECT results_eq($$ SELECT a.alert_type FROM consistency.relay_deliveries d
                      JOIN consistency.alerts a ON a.id = d.alert_id
                     WHERE d.sink_id = (SELECT id FROM backlog_sink) $$,
                  $$ VALUES ('before_sinks') $$,
                  'a new sink with --backlog 1h receives the alerts of the last hour only');
DO $$ BEGIN PERFORM consistency.relay_register_sink(repeat('e', 64), 'webhook+http://late:1/***',
                                                    'webhook+http', 'info', NULL, '10 hours'); END $$;
SELECT is((SELECT count(*) FROM consistency.relay_deliveries WHERE sink_id = (SELECT id FROM backlog_sink)),
          1::bigint, 'a sink already known never receives a backlog again');
DO $$ BEGIN PERFORM consistency.relay_unregister_sink((SELECT id FROM backlog_sink)); END $$;

CREATE TEMP TABLE ids AS
SELECT consistency.raise_alert('crit', 'critical', 'call', 2, 'c') AS crit,
       consistency.raise_alert('info', 'info', 'call', 3, 'i') AS info;
CREATE TEMP TABLE sink AS
SELECT (SELECT id FROM consistency.relay_sinks WHERE fingerprint = repeat('a', 64)) AS hook,
       (SELECT id FROM consistency.relay_sinks WHERE fingerprint = repeat('b', 64)) AS slack;
CREATE TEMP VIEW hook_rows AS
SELECT d.*, CASE d.alert_id WHEN ids.crit THEN 'crit' ELSE 'info' END AS which
  FROM consistency.relay_deliveries d, ids, sink
 WHERE d.sink_id = sink.hook AND d.alert_id IN (ids.crit, ids.info);

SELECT bag_eq($$ SELECT alert_id, sink_id, status, attempts FROM consistency.relay_deliveries $$,
              $$ SELECT crit AS a, hook AS s, 'pending' AS st, 0 AS n FROM ids, sink
                 UNION ALL SELECT crit, slack, 'pending', 0 FROM ids, sink
                 UNION ALL SELECT info, hook, 'pending', 0 FROM ids, sink $$,
              'one pending row per alert and sink, info skipped by the warning sink');
SELECT is(consistency._alert_has_pending_delivery((SELECT crit FROM ids)), true,
          'an alert with a pending delivery is held back from retention');

-- Claim, per-sink limits, lease, renew, release.
SELECT is((SELECT count(*) FROM consistency.relay_claim('r1', ARRAY[(SELECT hook FROM sink)],
                                                       ARRAY[1], '30 seconds')), 1::bigint,
          'a claim takes no more than the sink''s limit');
SELECT is((SELECT count(*) FROM consistency.relay_claim('r1', ARRAY[(SELECT hook FROM sink)],
                                                       ARRAY[10], '30 seconds',
                                                       p_due_by => '2030-01-01 11:59:59+00')),
          0::bigint, 'what became due after p_due_by (a --once pass) is left out');
SELECT is((SELECT count(*) FROM consistency.relay_claim('r1', ARRAY[(SELECT hook FROM sink)],
                                                       ARRAY[10], '30 seconds')), 1::bigint,
          'the next claim takes the other due row');
SELECT is((SELECT count(*) FROM consistency.relay_claim('r2', ARRAY[(SELECT hook FROM sink)],
                                                       ARRAY[10], '30 seconds')), 0::bigint,
          'a second relay finds nothing while the lease holds');
SELECT results_eq($$ SELECT status, attempts, lease_owner, lease_expires_at FROM hook_rows ORDER BY which $$,
                  $$ VALUES ('in_flight', 1, 'r1', '2030-01-01 12:00:30+00'::timestamptz),
                            ('in_flight', 1, 'r1', '2030-01-01 12:00:30+00'::timestamptz) $$,
                  'claimed rows are in flight under r1''s lease, one attempt counted');
SET LOCAL consistency.fake_now = '2030-01-01 12:00:20+00';
SELECT is(consistency.relay_renew('r1', ARRAY(SELECT id FROM hook_rows), '30 seconds'), 2,
          'the owner renews its leases while the sends run');
SELECT is(consistency.relay_renew('r2', ARRAY(SELECT id FROM hook_rows), '30 seconds'), 0,
          'another relay cannot renew them');
SET LOCAL consistency.fake_now = '2030-01-01 12:00:40+00';
SELECT is((SELECT count(*) FROM consistency.relay_claim('r2', ARRAY[(SELECT hook FROM sink)],
                                                       ARRAY[10], '30 seconds')), 0::bigint,
          'a renewed lease outlives the original one');
SELECT is(consistency.relay_release('r1', ARRAY(SELECT id FROM hook_rows WHERE which = 'info')), 1,
          'a stopping relay releases a row it never started');
SELECT results_eq($$ SELECT status, attempts, next_attempt_at FROM hook_rows WHERE which = 'info' $$,
                  $$ VALUES ('pending', 0, '2030-01-01 12:00:40+00'::timestamptz) $$,
                  'a released row is due at once and its attempt is taken back');
SET LOCAL consistency.fake_now = '2030-01-01 12:01:31+00';
SELECT is((SELECT array_agg(alert_id ORDER BY alert_id)
             FROM consistency.relay_claim('r2', ARRAY[(SELECT hook FROM sink)], ARRAY[10],
                                          '30 seconds')),
          (SELECT ARRAY[crit, info] FROM ids),
          'after the lease runs out another relay takes the rows over');

-- A stale owner cannot fail what another relay now holds.
SELECT is(consistency.relay_fail('r1', (SELECT id FROM hook_rows WHERE which = 'crit'), 'late'),
          'in_flight', 'a relay whose lease ran out cannot fail the row');

-- Transient failure: back to pending with a capped backoff.
SELECT is(consistency.relay_fail('r2', (SELECT id FROM hook_rows WHERE which = 'info'),
                                 'HTTP 503', false, NULL, NULL, 1, 300),
          'pending', 'a transient failure goes back to pending');
SELECT ok((SELECT next_attempt_at BETWEEN '2030-01-01 12:01:31+00'::timestamptz + interval '1 second'
                                      AND '2030-01-01 12:01:31+00'::timestamptz + interval '1.1 second'
             FROM hook_rows WHERE which = 'info'),
          'the retry after attempt 1 waits base * 2^0 seconds plus at most 10 % jitter');
SELECT results_eq($$ SELECT last_error, last_error_at FROM consistency.relay_sinks
                      WHERE id = (SELECT hook FROM sink) $$,
                  $$ VALUES ('HTTP 503', '2030-01-01 12:01:31+00'::timestamptz) $$,
                  'the sink keeps its last error');
UPDATE consistency.relay_deliveries SET attempts = 20, status = 'in_flight', lease_owner = 'r2',
       lease_expires_at = consistency.now() + interval '30 seconds'
 WHERE id = (SELECT id FROM hook_rows WHERE which = 'info');
SELECT is(consistency.relay_fail('r2', (SELECT id FROM hook_rows WHERE which = 'info'),
                                 'HTTP 503', false, NULL, NULL, 1, 300), 'pending',
          'twenty transient failures are still retried (no attempt limit by default)');
SELECT ok((SELECT next_attempt_at <= '2030-01-01 12:01:31+00'::timestamptz + interval '330 seconds'
             FROM hook_rows WHERE which = 'info'),
          'the backoff is capped at max delay (plus jitter)');

-- Retry-After wins when later than the backoff; nothing waits past the give-up age.
SET LOCAL consistency.fake_now = '2030-01-01 12:10:00+00';
DO $$ BEGIN PERFORM consistency.relay_claim('r2', ARRAY[(SELECT hook FROM sink)], ARRAY[10], '30 seconds'); END $$;
DO $$ BEGIN
PERFORM consistency.relay_fail('r2', id, 'HTTP 429', false, 120, NULL, 0.01, 1)
   FROM hook_rows WHERE which = 'info';
END $$;
SELECT is((SELECT next_attempt_at FROM hook_rows WHERE which = 'info'),
          '2030-01-01 12:12:00+00'::timestamptz, 'Retry-After of 120 s is honoured');
SET LOCAL consistency.fake_now = '2030-01-01 12:12:00+00';
DO $$ BEGIN PERFORM consistency.relay_claim('r2', ARRAY[(SELECT hook FROM sink)], ARRAY[10], '30 seconds'); END $$;
DO $$ BEGIN
PERFORM consistency.relay_fail('r2', id, 'HTTP 429', false, 86400, NULL, 0.01, 1, '1 hour')
   FROM hook_rows WHERE which = 'info';
END $$;
SELECT is((SELECT next_attempt_at FROM hook_rows WHERE which = 'info'),
          '2030-01-01 13:00:00+00'::timestamptz,
          'the last retry falls on the give-up age (created 12:00, give up after 1 h)');

-- Completion.
SELECT is(consistency.relay_complete(ARRAY(SELECT id FROM hook_rows WHERE which = 'crit')), 1,
          'completing marks the row delivered');
SELECT is(consistency.relay_complete(ARRAY(SELECT id FROM hook_rows WHERE which = 'crit')), 0,
          'completing twice changes nothing');
SELECT is((SELECT last_success_at FROM consistency.relay_sinks WHERE id = (SELECT hook FROM sink)),
          '2030-01-01 12:12:00+00'::timestamptz, 'the sink records its last success');

-- Give-up age: a failure at or past it ends the row dead and tells the other sinks.
SET LOCAL consistency.fake_now = '2030-01-01 13:00:00+00';
DO $$ BEGIN PERFORM consistency.relay_claim('r2', ARRAY[(SELECT hook FROM sink)], ARRAY[10], '30 seconds'); END $$;
SELECT is(consistency.relay_fail('r2', id, 'HTTP 503', false, NULL, NULL, 1, 300, '1 hour'),
          'dead', 'a failure at the give-up age ends the delivery dead')
  FROM hook_rows WHERE which = 'info';
SELECT results_eq($$ SELECT dead_at, last_error FROM hook_rows WHERE which = 'info' $$,
                  $$ VALUES ('2030-01-01 13:00:00+00'::timestamptz, 'given up after 01:00:00: HTTP 503') $$,
                  'a dead row says when and why');
SELECT results_eq($$ SELECT a.severity, d.sink_id, a.entity_id, (a.metadata ->> 'status')
                       FROM consistency.alerts a
                       JOIN consistency.relay_deliveries d ON d.alert_id = a.id
                      WHERE a.alert_type = 'relay_delivery_failed' $$,
                  $$ SELECT 'warning', slack, hook, 'dead' FROM sink $$,
                  'relay_delivery_failed (about the hook sink) goes to the other sinks only');

-- Permanent failure on the Slack sink: dead at once.
DO $$ BEGIN PERFORM consistency.relay_claim('r3', ARRAY[(SELECT slack FROM sink)], ARRAY[10], '30 seconds'); END $$;
SELECT is(consistency.relay_fail('r3', d.id, 'HTTP 400 invalid_payload', true),
          'dead', 'a permanent failure is final after one try')
  FROM consistency.relay_deliveries d, ids
 WHERE d.alert_id = ids.crit AND d.sink_id = (SELECT slack FROM sink);
SELECT is((SELECT count(*) FROM consistency.alerts WHERE alert_type = 'relay_delivery_failed'
             AND severity = 'critical' AND entity_id = (SELECT slack FROM sink)), 1::bigint,
          'a lost critical alert raises a critical relay_delivery_failed');
SELECT is(consistency._alert_has_pending_delivery((SELECT crit FROM ids)), false,
          'delivered and dead rows no longer hold the alert back');

-- Limits are checked at claim time.
CREATE TEMP TABLE more AS
SELECT consistency.raise_alert('m1', 'critical', 'call', 600, 'm1') AS m1,
       consistency.raise_alert('m2', 'critical', 'call', 601, 'm2') AS m2;
DO $$ BEGIN PERFORM consistency.relay_claim('r4', ARRAY[(SELECT hook FROM sink)], ARRAY[10], '30 seconds'); END $$;
SET LOCAL consistency.fake_now = '2030-01-01 13:01:00+00';
SELECT is((SELECT count(*) FROM consistency.relay_claim('r5', ARRAY[(SELECT hook FROM sink)], ARRAY[10],
                                                       '30 seconds', 1)), 0::bigint,
          'a row whose lease ran out at its attempt limit is not sent again');
SELECT results_eq($$ SELECT d.status, d.attempts, d.last_error FROM consistency.relay_deliveries d, more
                      WHERE d.sink_id = (SELECT hook FROM sink) AND d.alert_id = more.m1 $$,
                  $$ VALUES ('dead', 1, 'no outcome of attempt 1: the relay sending it stopped or lost the database before recording one') $$,
                  'it is buried at claim time with the reason');
SELECT is((SELECT count(*) FROM consistency.alerts WHERE alert_type = 'relay_delivery_failed'
             AND entity_id = (SELECT hook FROM sink)), 1::bigint,
          'more dead deliveries on one sink within the throttle window raise no second notice');

-- Re-drive, audited.
SELECT throws_ok($$ SELECT consistency.relay_redrive(999999, NULL, NULL, 'ops') $$, '22023', NULL,
                 'an unknown sink is refused');
SELECT is(consistency.relay_redrive((SELECT hook FROM sink), NULL, 'm1', 'ops'), 1,
          're-drive with --type takes only that alert type');
SELECT results_eq($$ SELECT d.status, d.attempts, d.redriven_at, d.dead_at FROM consistency.relay_deliveries d, more
                      WHERE d.sink_id = (SELECT hook FROM sink) AND d.alert_id = more.m1 $$,
                  $$ VALUES ('pending', 0, '2030-01-01 13:01:00+00'::timestamptz, NULL::timestamptz) $$,
                  'a re-driven row is pending again, attempts and give-up age start over');
SELECT is((SELECT after ->> 'deliveries' FROM consistency.audit_log WHERE action = 'relay_redrive'
            ORDER BY id DESC LIMIT 1), '1', 'the re-drive is in the audit log');
SELECT is(consistency.relay_redrive(NULL, '30 seconds', 'crit', 'ops'), 0,
          '--since leaves out what died earlier');

-- Status: one function for `relay status` and the metrics.
CREATE TEMP TABLE m3 AS SELECT consistency.raise_alert('m3', 'critical', 'call', 602, 'm3') AS id;
DO $$ BEGIN PERFORM consistency.relay_claim('r5', ARRAY[(SELECT hook FROM sink)], ARRAY[10], '30 seconds'); END $$;
DO $$ BEGIN PERFORM consistency.relay_fail('r5', d.id, 'HTTP 502', false, NULL, NULL, 600, 600)
   FROM consistency.relay_deliveries d, m3 WHERE d.alert_id = m3.id AND d.sink_id = (SELECT hook FROM sink); END $$;
SET LOCAL consistency.fake_now = '2030-01-01 13:02:00+00';
SELECT results_eq($$ SELECT DISTINCT pending, in_flight, retrying, retrying_oldest_seconds, dead,
                                     delivered_last_hour, last_error
                      FROM consistency.relay_status() WHERE sink_id = (SELECT hook FROM sink) $$,
                  $$ VALUES (0::bigint, 1::bigint, 1::bigint, 60::double precision, 3::bigint,
                             1::bigint, 'HTTP 502') $$,
                  'relay_status: pending, in flight, retrying (oldest age), dead, delivered in the last hour, last error');
SELECT results_eq($$ SELECT status, deliveries FROM consistency.relay_status()
                      WHERE sink_id = (SELECT hook FROM sink) $$,
                  $$ VALUES ('dead', 3::bigint), ('delivered', 1::bigint), ('in_flight', 1::bigint),
                            ('pending', 1::bigint) $$,
                  'relay_status keeps one row per sink and delivery status');

SET LOCAL consistency.fake_now = '2030-01-01 14:00:00+00';
SELECT is(consistency.relay_heartbeat(ARRAY[(SELECT hook FROM sink)]), 1, 'a heartbeat per sink');
SELECT is((SELECT last_seen_at FROM consistency.relay_sinks WHERE id = (SELECT hook FROM sink)),
          '2030-01-01 14:00:00+00'::timestamptz, 'the heartbeat refreshes last_seen_at');

-- Alerts raised while the application role writes (here the guard's G2
-- trigger; the role itself may not call raise_alert); the rows follow.
SET LOCAL ROLE consistency_app;
INSERT INTO public.calls (external_call_id, appointment_made) VALUES ('relay-from-app', true);
RESET ROLE;
CREATE TEMP TABLE app_alert AS
SELECT a.id FROM consistency.alerts a JOIN public.calls c ON c.id = a.entity_id
 WHERE c.external_call_id = 'relay-from-app' AND a.alert_type = 'appointment_made_mismatch';
SELECT is((SELECT count(*) FROM consistency.relay_deliveries d, app_alert
            WHERE d.alert_id = app_alert.id AND d.status = 'pending'),
          2::bigint, 'an alert raised by a write of consistency_app gets its delivery rows');

SELECT ok(consistency.relay_unregister_sink((SELECT slack FROM sink)), 'a sink can be unregistered');
SELECT is((SELECT count(*) FROM consistency.relay_deliveries WHERE sink_id = (SELECT slack FROM sink)),
          0::bigint, 'unregistering a sink drops its delivery rows');

-- Digest sink: non-critical rows wait for the end of their window, together.
SET LOCAL consistency.fake_now = '2030-01-01 14:10:30+00';
CREATE TEMP TABLE digest AS
SELECT consistency.relay_register_sink(repeat('d', 64), 'smtp://mail:25', 'smtp', 'info', 60) AS id;
CREATE TEMP TABLE digest_alerts AS
SELECT consistency.raise_alert('w1', 'warning', 'call', 500, 'w') AS w1,
       consistency.raise_alert('w2', 'info', 'call', 501, 'i') AS w2,
       consistency.raise_alert('c1', 'critical', 'call', 502, 'c') AS c1;
SELECT results_eq($$ SELECT d.next_attempt_at FROM consistency.relay_deliveries d, digest_alerts x
                      WHERE d.sink_id = (SELECT id FROM digest) AND d.alert_id IN (x.w1, x.w2) $$,
                  $$ VALUES ('2030-01-01 14:11:00+00'::timestamptz),
                            ('2030-01-01 14:11:00+00'::timestamptz) $$,
                  'warnings and info for a digest sink are due together at the end of the window');
SELECT is((SELECT d.next_attempt_at FROM consistency.relay_deliveries d, digest_alerts x
            WHERE d.sink_id = (SELECT id FROM digest) AND d.alert_id = x.c1),
          '2030-01-01 14:10:30+00'::timestamptz, 'a critical alert never waits for a digest');

-- What a server's answer or a broken setting holds never stops the recording
-- of a failure: a Retry-After no interval can hold waits until the give-up
-- age, and a notice that cannot be raised leaves the burial done.
SET LOCAL consistency.fake_now = '2030-01-02 00:00:00+00';
CREATE TEMP TABLE hostile AS
SELECT consistency.relay_register_sink(repeat('f', 64), 'webhook+http://hostile:1/***', 'webhook+http') AS sink,
       consistency.raise_alert('h1', 'critical', 'call', 700, 'h1') AS h1,
       consistency.raise_alert('h2', 'critical', 'call', 701, 'h2') AS h2,
       consistency.raise_alert('h3', 'critical', 'call', 702, 'h3') AS h3;
CREATE TEMP VIEW hostile_rows AS
SELECT d.*, CASE d.alert_id WHEN h.h1 THEN 'h1' WHEN h.h2 THEN 'h2' ELSE 'h3' END AS which
  FROM consistency.relay_deliveries d, hostile h
 WHERE d.sink_id = h.sink AND d.alert_id IN (h.h1, h.h2, h.h3);
DO $$ BEGIN PERFORM consistency.relay_claim('r6', ARRAY[(SELECT sink FROM hostile)], ARRAY[10], '30 seconds'); END $$;
SELECT is(consistency.relay_fail('r6', id, 'HTTP 429', false, 'Infinity', NULL, 1, 300, '1 hour'),
          'pending', 'Retry-After: Infinity is recorded') FROM hostile_rows WHERE which = 'h1';
SELECT is(consistency.relay_fail('r6', id, 'HTTP 429', false, 1e300, NULL, 1, 300, '1 hour'),
          'pending', 'Retry-After: 1e300 is recorded') FROM hostile_rows WHERE which = 'h2';
SELECT results_eq($$ SELECT next_attempt_at FROM hostile_rows WHERE which IN ('h1', 'h2') $$,
                  $$ VALUES ('2030-01-02 01:00:00+00'::timestamptz), ('2030-01-02 01:00:00+00'::timestamptz) $$,
                  'both wait until the give-up age, no longer');
UPDATE consistency.settings SET value = '"soon"' WHERE key = 'monitoring.alert_throttle_minutes';
SELECT is(consistency.relay_fail('r6', id, 'HTTP 400', true), 'dead',
          'a refusal is buried though relay_delivery_failed cannot be raised')
  FROM hostile_rows WHERE which = 'h3';
SELECT is((SELECT status FROM hostile_rows WHERE which = 'h3'), 'dead', 'and the row says so');

SELECT * FROM finish();
ROLLBACK;

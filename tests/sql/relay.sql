BEGIN;
SELECT plan(29);

SET LOCAL consistency.fake_now = '2030-01-01 12:00:00+00';

DO $$ BEGIN PERFORM consistency.raise_alert('before_sinks', 'critical', 'call', 1, 'raised before any sink'); END $$;
SELECT is(consistency._relay_sinks_configured(), false, 'no sink configured yet');

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

CREATE TEMP TABLE ids AS
SELECT consistency.raise_alert('crit', 'critical', 'call', 2, 'c') AS crit,
       consistency.raise_alert('info', 'info', 'call', 3, 'i') AS info;
CREATE TEMP TABLE sink AS
SELECT (SELECT id FROM consistency.relay_sinks WHERE fingerprint = repeat('a', 64)) AS hook,
       (SELECT id FROM consistency.relay_sinks WHERE fingerprint = repeat('b', 64)) AS slack;

SELECT bag_eq($$ SELECT alert_id, sink_id, status, attempts FROM consistency.relay_deliveries $$,
              $$ SELECT crit AS a, hook AS s, 'pending' AS st, 0 AS n FROM ids, sink
                 UNION ALL SELECT crit, slack, 'pending', 0 FROM ids, sink
                 UNION ALL SELECT info, hook, 'pending', 0 FROM ids, sink $$,
              'one pending row per alert and sink, info skipped by the warning sink');
SELECT is(consistency._alert_has_pending_delivery((SELECT crit FROM ids)), true,
          'an alert with a pending delivery is held back from retention');

-- Claim and lease.
SELECT is((SELECT count(*) FROM consistency.relay_claim('r1', ARRAY[(SELECT hook FROM sink)], 10,
                                                       '30 seconds')), 2::bigint,
          'the first relay claims both due rows of its sink');
SELECT is((SELECT count(*) FROM consistency.relay_claim('r2', ARRAY[(SELECT hook FROM sink)], 10,
                                                       '30 seconds')), 0::bigint,
          'a second relay finds nothing while the lease holds');
SELECT results_eq($$ SELECT status, attempts, lease_owner, lease_expires_at
                       FROM consistency.relay_deliveries WHERE sink_id = (SELECT hook FROM sink)
                      ORDER BY alert_id $$,
                  $$ VALUES ('in_flight', 1, 'r1', '2030-01-01 12:00:30+00'::timestamptz),
                            ('in_flight', 1, 'r1', '2030-01-01 12:00:30+00'::timestamptz) $$,
                  'claimed rows are in flight under r1''s lease, one attempt counted');
SET LOCAL consistency.fake_now = '2030-01-01 12:00:31+00';
SELECT is((SELECT array_agg(alert_id ORDER BY alert_id)
             FROM consistency.relay_claim('r2', ARRAY[(SELECT hook FROM sink)], 10, '30 seconds')),
          (SELECT ARRAY[crit, info] FROM ids),
          'after the lease runs out another relay takes the rows over');

-- A stale owner cannot fail what another relay now holds.
SELECT is(consistency.relay_fail('r1', (SELECT d.id FROM consistency.relay_deliveries d, ids
                                         WHERE d.alert_id = ids.crit
                                           AND d.sink_id = (SELECT hook FROM sink)), 'late'),
          'in_flight', 'a relay whose lease ran out cannot fail the row');

-- Transient failure: back to pending with a backoff.
SELECT is(consistency.relay_fail('r2', (SELECT d.id FROM consistency.relay_deliveries d, ids
                                         WHERE d.alert_id = ids.info
                                           AND d.sink_id = (SELECT hook FROM sink)),
                                 'HTTP 503', false, NULL, 5, 1, 300),
          'pending', 'a transient failure goes back to pending');
SELECT ok((SELECT next_attempt_at BETWEEN '2030-01-01 12:00:33+00' AND '2030-01-01 12:00:33.21+00'
             FROM consistency.relay_deliveries d, ids
            WHERE d.alert_id = ids.info AND d.sink_id = (SELECT hook FROM sink)),
          'second attempt waits base * 2^1 seconds plus at most 10 % jitter');

-- Retry-After wins when later than the backoff.
DO $$ BEGIN PERFORM consistency.relay_claim('r2', ARRAY[(SELECT hook FROM sink)], 10, '30 seconds'); END $$;
SET LOCAL consistency.fake_now = '2030-01-01 12:01:10+00';
SELECT is((SELECT count(*) FROM consistency.relay_claim('r2', ARRAY[(SELECT hook FROM sink)], 10,
                                                       '30 seconds')), 2::bigint,
          'the retry and the expired lease are both due again');
DO $$ BEGIN
PERFORM consistency.relay_fail('r2', d.id, 'HTTP 429', false, 120, 5, 1, 300)
   FROM consistency.relay_deliveries d, ids
  WHERE d.alert_id = ids.info AND d.sink_id = (SELECT hook FROM sink);
END $$;
SELECT is((SELECT next_attempt_at FROM consistency.relay_deliveries d, ids
            WHERE d.alert_id = ids.info AND d.sink_id = (SELECT hook FROM sink)),
          '2030-01-01 12:03:10+00'::timestamptz, 'Retry-After of 120 s is honoured');

-- Completion.
SELECT is(consistency.relay_complete(ARRAY(SELECT d.id FROM consistency.relay_deliveries d, ids
                                            WHERE d.alert_id = ids.crit
                                              AND d.sink_id = (SELECT hook FROM sink))), 1,
          'completing marks the row delivered');
SELECT is(consistency.relay_complete(ARRAY(SELECT d.id FROM consistency.relay_deliveries d, ids
                                            WHERE d.alert_id = ids.crit
                                              AND d.sink_id = (SELECT hook FROM sink))), 0,
          'completing twice changes nothing');

-- Permanent failure on the Slack sink: failed at once, alert to the other sink only.
DO $$ BEGIN PERFORM consistency.relay_claim('r3', ARRAY[(SELECT slack FROM sink)], 10, '30 seconds'); END $$;
SELECT is(consistency.relay_fail('r3', d.id, 'HTTP 400 invalid_payload', true),
          'failed', 'a permanent failure is final after one try')
  FROM consistency.relay_deliveries d, ids
 WHERE d.alert_id = ids.crit AND d.sink_id = (SELECT slack FROM sink);
SELECT results_eq($$ SELECT a.severity, d.sink_id, (a.metadata ->> 'status')
                       FROM consistency.alerts a
                       JOIN consistency.relay_deliveries d ON d.alert_id = a.id
                      WHERE a.alert_type = 'relay_delivery_failed' $$,
                  $$ SELECT 'critical', hook, 'failed' FROM sink $$,
                  'relay_delivery_failed (critical, as the lost alert) goes to the other sink only');
SELECT is(consistency._alert_has_pending_delivery((SELECT crit FROM ids)), false,
          'delivered and failed rows no longer hold the alert back');

-- Dead letter after max attempts.
SET LOCAL consistency.fake_now = '2030-01-01 12:10:00+00';
DO $$ BEGIN PERFORM consistency.relay_claim('r2', ARRAY[(SELECT hook FROM sink)], 10, '30 seconds'); END $$;
SELECT is(consistency.relay_fail('r2', d.id, 'HTTP 503', false, NULL, 4),
          'dead', 'transient failures stop after max attempts')
  FROM consistency.relay_deliveries d, ids
 WHERE d.alert_id = ids.info AND d.sink_id = (SELECT hook FROM sink);
SELECT is((SELECT count(*) FROM consistency.alerts WHERE alert_type = 'relay_delivery_failed'),
          2::bigint, 'a dead letter raises relay_delivery_failed too');

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
SET LOCAL consistency.fake_now = '2030-01-01 12:10:30+00';
CREATE TEMP TABLE digest AS
SELECT consistency.relay_register_sink(repeat('d', 64), 'smtp://mail:25', 'smtp', 'info', 60) AS id;
CREATE TEMP TABLE digest_alerts AS
SELECT consistency.raise_alert('w1', 'warning', 'call', 500, 'w') AS w1,
       consistency.raise_alert('w2', 'info', 'call', 501, 'i') AS w2,
       consistency.raise_alert('c1', 'critical', 'call', 502, 'c') AS c1;
SELECT results_eq($$ SELECT d.next_attempt_at FROM consistency.relay_deliveries d, digest_alerts x
                      WHERE d.sink_id = (SELECT id FROM digest) AND d.alert_id IN (x.w1, x.w2) $$,
                  $$ VALUES ('2030-01-01 12:11:00+00'::timestamptz),
                            ('2030-01-01 12:11:00+00'::timestamptz) $$,
                  'warnings and info for a digest sink are due together at the end of the window');
SELECT is((SELECT d.next_attempt_at FROM consistency.relay_deliveries d, digest_alerts x
            WHERE d.sink_id = (SELECT id FROM digest) AND d.alert_id = x.c1),
          '2030-01-01 12:10:30+00'::timestamptz, 'a critical alert never waits for a digest');

SELECT * FROM finish();
ROLLBACK;

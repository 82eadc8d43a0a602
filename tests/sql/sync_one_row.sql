-- A statement of one appointment row takes the sync's one-row path
-- (consistency._link_sync_insert/_update/_delete); the same write in a
-- statement of two rows takes the set path. Each scenario runs both ways on
-- twin calls (one-row: call s1, set: call s2, the set statement's second row
-- on scratch call 999) and the calls and their alerts must come out alike,
-- and as G1-G5 say.
BEGIN;
SELECT plan(30);

SET LOCAL consistency.fake_now = '2030-01-01 12:00:00+00';

INSERT INTO calls (id, external_call_id, session_outcome)
SELECT g, 'call-' || g, CASE WHEN g % 100 IN (31, 32) THEN 'information_only' END
  FROM generate_series(11, 92) g
UNION ALL
SELECT 999, 'call-999', NULL;
-- The scratch call keeps an active appointment whatever a scenario does to
-- the set statement's second row.
INSERT INTO appointments (id, call_id, external_booking_id)
SELECT 99900 + g, 999, 'scratch-' || g FROM generate_series(1, 20) g;

-- What a scenario compares: the call's link state and outcome, and its
-- unlinked alerts (which appointment left, how many).
CREATE FUNCTION pg_temp.state(p_call bigint) RETURNS text LANGUAGE sql AS $$
    SELECT format('n=%s made=%s status=%s stamped=%s outcome=%s alerts=%s', c.active_appointment_count,
                  c.appointment_made, c.appointment_link_status,
                  c.appointment_linked_at IS NOT DISTINCT FROM '2030-01-01 12:00:00+00'::timestamptz,
                  coalesce(c.session_outcome, '-'),
                  (SELECT coalesce(string_agg(a.alert_type || coalesce(':' || (a.metadata ->> 'appointments_removed'), ''),
                                              ',' ORDER BY a.alert_type), '-')
                     FROM consistency.alerts a WHERE a.entity_type = 'call' AND a.entity_id = c.id))
      FROM calls c WHERE c.id = p_call $$;
CREATE FUNCTION pg_temp.gone(p_call bigint) RETURNS bigint LANGUAGE sql AS $$
    SELECT (a.metadata ->> 'appointment_id')::bigint FROM consistency.alerts a
     WHERE a.alert_type = 'appointment_unlinked' AND a.entity_id = p_call $$;

-- Fixtures: for scenario s, appointments s*100+1 (call s1) and s*100+2 (call s2).
-- s=2: one active appointment each; s=3: an outcome G5 corrects; s=4: two each.
INSERT INTO appointments (id, call_id, external_booking_id)
SELECT s * 100 + k, s * 10 + k, 'a-' || s || '-' || k
  FROM generate_series(2, 9) s, generate_series(1, 2) k
 WHERE s NOT IN (3, 7);
INSERT INTO appointments (id, call_id, external_booking_id)
SELECT s * 100 + 10 + k, s * 10 + k, 'b-' || s || '-' || k
  FROM generate_series(4, 4) s, generate_series(1, 2) k;

-- 1. first appointment ----------------------------------------------------------
INSERT INTO appointments (id, call_id, external_booking_id) VALUES (101, 11, 'first-1');
INSERT INTO appointments (id, call_id, external_booking_id) VALUES (102, 12, 'first-2'), (99990, 999, 's1');
SELECT is(pg_temp.state(11), 'n=1 made=t status=linked stamped=t outcome=- alerts=-',
          'one-row insert: the call is linked, stamped');
SELECT is(pg_temp.state(11), pg_temp.state(12), 'one-row and set insert agree');

-- 3. first appointment of a call whose outcome contradicts it (G5) -----------------
INSERT INTO appointments (id, call_id, external_booking_id) VALUES (301, 31, 'g5-1');
INSERT INTO appointments (id, call_id, external_booking_id) VALUES (302, 32, 'g5-2'), (99991, 999, 's3');
SELECT is(pg_temp.state(31),
          'n=1 made=t status=linked stamped=t outcome=appointment_booked alerts=session_outcome_corrected',
          'one-row insert corrects the outcome, with its alert');
SELECT is(pg_temp.state(31), pg_temp.state(32), 'one-row and set insert agree on G5');

-- 4. a second appointment is cancelled: still linked, no alert --------------------
UPDATE appointments SET status = 'cancelled' WHERE id = 401;
UPDATE appointments SET status = 'cancelled' WHERE id IN (402, 99901);
SELECT is(pg_temp.state(41), 'n=1 made=t status=linked stamped=t outcome=- alerts=-',
          'cancelling one of two keeps the call linked, no alert');
SELECT is(pg_temp.state(41), pg_temp.state(42), 'one-row and set cancel of one of two agree');

-- 2. the only appointment is cancelled (G3) ---------------------------------------
UPDATE appointments SET status = 'cancelled' WHERE id = 201;
UPDATE appointments SET status = 'cancelled' WHERE id IN (202, 99902);
SELECT is(pg_temp.state(21),
          'n=0 made=f status=cancelled stamped=t outcome=- alerts=appointment_unlinked:1',
          'one-row cancel of the only appointment: cancelled, one alert');
SELECT is(pg_temp.state(21), pg_temp.state(22), 'one-row and set cancel agree');
SELECT is(pg_temp.gone(21), 201::bigint, 'the alert names the cancelled appointment');
SELECT is(pg_temp.gone(22), 202::bigint, 'so does the set path''s');

-- 5. soft delete of the only appointment ------------------------------------------
UPDATE appointments SET deleted_at = now() WHERE id = 501;
UPDATE appointments SET deleted_at = now() WHERE id IN (502, 99903);
SELECT is(pg_temp.state(51), pg_temp.state(52), 'one-row and set soft delete agree');
SELECT is(pg_temp.gone(51), 501::bigint, 'a soft delete alerts with its appointment');

-- 6. the appointment is taken off its call (call_id NULL) ---------------------------
UPDATE appointments SET call_id = NULL WHERE id = 601;
UPDATE appointments SET call_id = NULL WHERE id IN (602, 99904);
SELECT is(pg_temp.state(61),
          'n=0 made=f status=cancelled stamped=t outcome=- alerts=appointment_unlinked:1',
          'one-row unassignment unlinks the call');
SELECT is(pg_temp.state(61), pg_temp.state(62), 'one-row and set unassignment agree');
SELECT is((SELECT active_appointment_count FROM calls WHERE id = 999),
          (SELECT count(*)::int FROM appointments WHERE call_id = 999 AND deleted_at IS NULL AND status <> 'cancelled'),
          'the set statements'' second rows moved the scratch call''s count, row for row');

-- 7. restored: a cancelled appointment becomes active again ---------------------
UPDATE appointments SET status = 'scheduled' WHERE id = 201;
UPDATE appointments SET status = 'scheduled' WHERE id IN (202, 99907);
SELECT is(pg_temp.state(21),
          'n=1 made=t status=linked stamped=t outcome=- alerts=appointment_unlinked:1',
          'restoring the cancelled appointment links the call again');
SELECT is(pg_temp.state(21), pg_temp.state(22), 'one-row and set restore agree');

-- 8. an update that changes no link: no call is written --------------------------------
CREATE TEMP TABLE before_writes AS
SELECT pg_stat_get_xact_tuples_updated('public.calls'::regclass) AS n;
UPDATE appointments SET starts_at = now() + interval '2 days', updated_at = now() WHERE id = 801;
UPDATE appointments SET id = 8801 WHERE id = 802;
SELECT is(pg_stat_get_xact_tuples_updated('public.calls'::regclass), (SELECT n FROM before_writes),
          'a reschedule, or a new id, of an active appointment writes no call');
SELECT is(pg_temp.state(81), pg_temp.state(82), 'both calls stay as they were');
INSERT INTO appointments (call_id, external_booking_id) SELECT 81, 'none' WHERE false;
UPDATE appointments SET status = 'cancelled' WHERE id = -1;
DELETE FROM appointments WHERE id = -1;
SELECT is(pg_stat_get_xact_tuples_updated('public.calls'::regclass), (SELECT n FROM before_writes),
          'statements of no rows write no call');

-- 9. a move to another call: one call unlinked, the other linked -----------------
-- To a higher id (the call left is updated first), then to a lower one.
UPDATE appointments SET call_id = 71 WHERE id = 901;
UPDATE appointments SET call_id = CASE WHEN id = 902 THEN 72 ELSE call_id END WHERE id IN (902, 99908);
SELECT is(pg_temp.state(91),
          'n=0 made=f status=cancelled stamped=t outcome=- alerts=appointment_unlinked:1',
          'the call the appointment left is unlinked');
SELECT is(pg_temp.state(71), 'n=1 made=t status=linked stamped=t outcome=- alerts=-',
          'the call it moved to is linked');
SELECT is(pg_temp.state(91) || ' / ' || pg_temp.state(71), pg_temp.state(92) || ' / ' || pg_temp.state(72),
          'one-row and set move agree');
UPDATE appointments SET call_id = 13 WHERE id = 8801;
UPDATE appointments SET call_id = CASE WHEN id = 801 THEN 14 ELSE call_id END WHERE id IN (801, 99909);
SELECT is(pg_temp.state(82) || ' / ' || pg_temp.state(13),
          'n=0 made=f status=cancelled stamped=t outcome=- alerts=appointment_unlinked:1'
          || ' / n=1 made=t status=linked stamped=t outcome=- alerts=-',
          'a move to a lower id: unlinked, and linked');
SELECT is(pg_temp.state(82) || ' / ' || pg_temp.state(13), pg_temp.state(81) || ' / ' || pg_temp.state(14),
          'one-row and set move to a lower id agree');

-- 10. hard delete ---------------------------------------------------------------------
DELETE FROM appointments WHERE id = 411;
DELETE FROM appointments WHERE id IN (412, 99905);
SELECT is(pg_temp.state(41),
          'n=0 made=f status=cancelled stamped=t outcome=- alerts=appointment_unlinked:1',
          'one-row delete of the last active appointment: cancelled, one alert');
SELECT is(pg_temp.state(41), pg_temp.state(42), 'one-row and set delete agree');
SELECT is(pg_temp.gone(41), 411::bigint, 'the alert names the deleted appointment');
DELETE FROM appointments WHERE id = 401;
SELECT is(pg_temp.state(41), pg_temp.state(42), 'deleting an already cancelled appointment changes nothing');

SELECT is_empty($$ SELECT * FROM consistency.violations() $$, 'no violation after all of it');

SELECT * FROM finish();
ROLLBACK;

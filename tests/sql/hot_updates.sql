-- The sync's UPDATE of calls is a HOT update: no index of calls names a
-- column it writes (sql/indexes.sql), so it adds no entry to any index of
-- calls, whether the call's link state stays (a second appointment) or
-- changes (a first appointment, losing the last one). Counted with the
-- transaction's own statistics (pg_stat_get_xact_*).
BEGIN;
SELECT plan(5);

INSERT INTO calls (id, external_call_id, session_outcome)
SELECT g, 'hot-' || g, 'appointment_booked' FROM generate_series(1, 4) g;
INSERT INTO appointments (id, call_id, external_booking_id) VALUES (11, 1, 'hot-b11');

CREATE TEMP TABLE counted (step text, updated bigint, hot bigint);
CREATE FUNCTION pg_temp.count_as(p_step text) RETURNS void LANGUAGE sql AS $$
    INSERT INTO counted
    SELECT p_step, pg_stat_get_xact_tuples_updated('public.calls'::regclass),
           pg_stat_get_xact_tuples_hot_updated('public.calls'::regclass)
$$;
-- Updates and HOT updates of calls made by the step just done.
CREATE TEMP VIEW step AS
SELECT c.step, c.updated - lag(c.updated) OVER w AS updated, c.hot - lag(c.hot) OVER w AS hot
  FROM counted c WINDOW w AS (ORDER BY c.updated, c.hot);

SELECT pg_temp.count_as('start');
INSERT INTO appointments (id, call_id, external_booking_id) VALUES (12, 1, 'hot-b12');
SELECT pg_temp.count_as('second appointment');
INSERT INTO appointments (id, call_id, external_booking_id) VALUES (21, 2, 'hot-b21');
SELECT pg_temp.count_as('first appointment');
UPDATE appointments SET status = 'cancelled' WHERE id = 21;
SELECT pg_temp.count_as('only appointment cancelled');
INSERT INTO appointments (id, call_id, external_booking_id)
VALUES (31, 3, 'hot-b31'), (41, 4, 'hot-b41'), (42, 4, 'hot-b42');
SELECT pg_temp.count_as('first appointments, one statement');

SELECT results_eq($$ SELECT updated, hot FROM step WHERE step = 'second appointment' $$,
                  $$ VALUES (1::bigint, 1::bigint) $$,
                  'the sync UPDATE of an already-linked call is HOT');
SELECT results_eq($$ SELECT updated, hot FROM step WHERE step = 'first appointment' $$,
                  $$ VALUES (1::bigint, 1::bigint) $$,
                  'a first appointment (unlinked -> linked) is a HOT update of its call');
SELECT results_eq($$ SELECT updated, hot FROM step WHERE step = 'only appointment cancelled' $$,
                  $$ VALUES (1::bigint, 1::bigint) $$,
                  'losing the last appointment (linked -> cancelled) is a HOT update too');
SELECT results_eq($$ SELECT updated, hot FROM step WHERE step = 'first appointments, one statement' $$,
                  $$ VALUES (2::bigint, 2::bigint) $$,
                  'so is every call of a batch');
SELECT is_empty(
    $$ SELECT c.relname
         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE i.indrelid = 'public.calls'::regclass
          AND (EXISTS (SELECT FROM pg_attribute a
                        WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                          AND a.attname IN ('appointment_made', 'appointment_link_status',
                                            'active_appointment_count', 'appointment_linked_at'))
               OR pg_get_expr(i.indpred, i.indrelid)
                  ~ '\m(appointment_made|appointment_link_status|active_appointment_count)\M') $$,
    'no index of calls names a column the sync writes');

SELECT * FROM finish();
ROLLBACK;

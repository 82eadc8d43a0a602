-- Named queries of the benchmark dataset. The dataset is loaded with the
-- guard's triggers bypassed (session_replication_role = replica, which needs
-- a superuser) and with every derived column already consistent, so each
-- variant starts from the same, correct state.

-- name: bench_load_calls --
-- ~60 %% of calls booked and linked; created_at spread over the last days so
-- that window queries see a realistic slice.
INSERT INTO public.calls (external_call_id, company_id, customer_id, direction, status,
                          from_number, to_number, session_outcome, external_booking_id,
                          appointment_made, appointment_link_status, appointment_linked_at,
                          customer_link_status, customer_linked_at, customer_link_method,
                          created_at, active_appointment_count)
SELECT 'bench-call-' || g,
       1 + g %% 50,
       CASE WHEN g %% 3 = 0 THEN g END,
       CASE WHEN g %% 5 = 0 THEN 'outbound' ELSE 'inbound' END,
       'completed',
       '+1555' || lpad((g %% 10000000)::text, 7, '0'),
       '+1555' || lpad(((g * 7) %% 10000000)::text, 7, '0'),
       CASE WHEN g %% 10 < 6 THEN 'appointment_booked' ELSE 'information_only' END,
       CASE WHEN g %% 10 < 6 THEN 'bench-booking-' || g END,
       g %% 10 < 6,
       CASE WHEN g %% 10 < 6 THEN 'linked' ELSE 'unlinked' END,
       CASE WHEN g %% 10 < 6 THEN now() - make_interval(secs => (%(calls)s - g) * %(spread)s) END,
       CASE WHEN g %% 3 = 0 THEN 'linked' ELSE 'unlinked' END,
       CASE WHEN g %% 3 = 0 THEN now() - make_interval(secs => (%(calls)s - g) * %(spread)s) END,
       CASE WHEN g %% 3 = 0 THEN 'phone_match' END,
       now() - make_interval(secs => (%(calls)s - g) * %(spread)s),
       -- Active appointments that bench_load_appointments will give this call:
       -- rank r of the call among linked calls (in id order), L linked calls in
       -- all; its first appointment (n = 0) is row r, its second (n = 1, also
       -- active) row L + r, and only the first %(appointments)s rows are loaded.
       CASE WHEN g %% 10 < 6 THEN
           ((g / 10) * 6 + g %% 10 <= %(appointments)s)::int
         + ((%(calls)s / 10) * 6 + least(%(calls)s %% 10, 5) + (g / 10) * 6 + g %% 10
                <= %(appointments)s)::int
       ELSE 0 END
  FROM generate_series(1, %(calls)s) AS g

-- name: bench_load_appointments --
-- One active appointment per linked call first (ORDER BY n), then extras (as many
-- as there are calls in all) on linked calls: every other one cancelled, so
-- both the "still linked" and the "last one gone" paths exist.
INSERT INTO public.appointments (call_id, company_id, customer_id, service_id, starts_at, ends_at,
                                 status, external_booking_id, source, created_at)
SELECT c.id, c.company_id, c.customer_id, 1 + c.id %% 20,
       c.created_at + interval '2 days', c.created_at + interval '2 days 30 minutes',
       CASE WHEN x.n = 0 OR x.n %% 2 = 1 THEN 'scheduled' ELSE 'cancelled' END,
       CASE WHEN x.n = 0 THEN c.external_booking_id ELSE c.external_booking_id || '-' || x.n END,
       'voice_agent', c.created_at + interval '1 second'
  FROM public.calls c
 CROSS JOIN LATERAL (
       SELECT generate_series(0, CASE WHEN c.id %% 3 = 0 THEN 2 ELSE 1 END) AS n) x
 WHERE c.appointment_link_status = 'linked'
   AND c.external_call_id LIKE 'bench-call-%%'
 ORDER BY x.n, c.id
 LIMIT %(appointments)s

-- name: bench_create_database --
CREATE DATABASE {name}

-- name: bench_drop_database --
DROP DATABASE IF EXISTS {name} WITH (FORCE)

-- name: bench_server_version --
SHOW server_version

-- name: bench_bypass_triggers --
-- Loading the dataset consistent already: the guard's triggers stay out of it
-- (a superuser's right), for the rest of the transaction.
SET LOCAL session_replication_role = replica

-- name: bench_analyze --
ANALYZE public.calls, public.appointments

-- name: bench_vacuum_analyze --
VACUUM ANALYZE public.calls, public.appointments

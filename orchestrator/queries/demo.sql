-- Named queries of `consistency demo` (orchestrator/demo.py): the voice
-- agent's writes, the calendar's, and what the demo reads back. The agent
-- and the calendar write as consistency_app when the login may SET ROLE to it.

-- name: demo_may_act_as_app --
SELECT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user)
    OR pg_catalog.pg_has_role(current_user, 'consistency_app', 'MEMBER')

-- name: demo_act_as_app --
SET ROLE consistency_app

-- name: demo_may_bypass_triggers --
-- A legacy feed writing with triggers off (session_replication_role =
-- replica, as logical replication and pg_restore --disable-triggers do)
-- needs a superuser, or the right to set that parameter.
SELECT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user)
    OR pg_catalog.has_parameter_privilege('session_replication_role', 'SET')

-- name: demo_call_insert --
INSERT INTO public.calls (external_call_id, company_id, customer_id, direction, status,
                          from_number, to_number, session_outcome, appointment_made)
VALUES (%(external_call_id)s, 1, %(customer_id)s, %(direction)s, 'in_progress',
        %(from_number)s, '+4930555000', %(outcome)s, %(appointment_made)s)
RETURNING id

-- name: demo_call_booked --
-- What the agent reports after the calendar confirmed a booking.
UPDATE public.calls
   SET session_outcome = 'appointment_booked', external_booking_id = %(booking_id)s,
       status = 'completed', updated_at = consistency.now()
 WHERE id = %(call_id)s

-- name: demo_call_outcome --
UPDATE public.calls
   SET session_outcome = %(outcome)s, status = 'completed', updated_at = consistency.now()
 WHERE id = %(call_id)s

-- name: demo_call_booking_failed --
UPDATE public.calls
   SET session_outcome = 'technical_issue', status = 'completed', booking_failed = true,
       booking_failure_reason = %(reason)s, requires_manual_processing = true,
       updated_at = consistency.now()
 WHERE id = %(call_id)s

-- name: demo_review_enqueue --
SELECT consistency.review_enqueue(%(call_id)s, %(reason)s, %(context)s::jsonb, NULL,
                                  'voice agent')

-- name: demo_appointment_webhook --
-- The calendar's webhook: the booking arrives as an appointment.
INSERT INTO public.appointments (call_id, company_id, customer_id, service_id, starts_at,
                                 ends_at, status, external_booking_id, source)
VALUES (%(call_id)s, 1, %(customer_id)s, 1, %(starts_at)s,
        %(starts_at)s::timestamptz + interval '30 minutes', 'scheduled', %(booking_id)s,
        'voice_agent')
RETURNING id

-- name: demo_pick_appointment --
-- An active appointment booked by the agent, for a caller who cancels or
-- moves it (SKIP LOCKED: two callers never pick the same one).
SELECT a.id
  FROM public.appointments a
 WHERE a.deleted_at IS NULL AND a.status <> 'cancelled' AND a.source = 'voice_agent'
   AND a.call_id IS NOT NULL
 ORDER BY a.id DESC
 LIMIT 1 OFFSET %(offset)s
   FOR UPDATE SKIP LOCKED

-- name: demo_cancel_appointment --
UPDATE public.appointments
   SET status = 'cancelled', updated_at = consistency.now()
 WHERE id = %(appointment_id)s

-- name: demo_move_appointment --
-- Rescheduled by a later call: a new time, and the appointment now belongs
-- to the call that moved it.
UPDATE public.appointments
   SET call_id = %(call_id)s, starts_at = starts_at + interval '1 day',
       ends_at = ends_at + interval '1 day', updated_at = consistency.now()
 WHERE id = %(appointment_id)s

-- name: demo_batch_import --
-- The front desk's bookings for callers who asked to be called back,
-- imported from the calendar in one statement.
INSERT INTO public.appointments (call_id, company_id, customer_id, service_id, starts_at,
                                 ends_at, status, external_booking_id, source)
SELECT c.id, 1, c.customer_id, 2, consistency.now() + interval '2 days',
       consistency.now() + interval '2 days 30 minutes', 'confirmed',
       'desk-' || c.external_call_id, 'calendar_import'
  FROM public.calls c
 WHERE c.session_outcome = 'callback_requested' AND c.active_appointment_count = 0
   AND NOT c.booking_failed
 ORDER BY c.id
 LIMIT %(limit)s

-- name: demo_legacy_replica_role --
SET LOCAL session_replication_role = replica

-- name: demo_legacy_calls --
-- The legacy feed's calls, written with triggers off: %(plain)s without a
-- direction, %(booked)s reported booked with no booking behind them (the
-- monitor alerts, a person decides), %(linked)s with an appointment the
-- call's flags do not show (the monitor recomputes them).
WITH plain AS (
    INSERT INTO public.calls (external_call_id, company_id, direction, status, session_outcome)
    SELECT format('legacy-%%s-%%s', %(tag)s::text, g), 1, NULL, 'completed', 'information_only'
      FROM generate_series(1, %(plain)s) g
    RETURNING id
), booked AS (
    INSERT INTO public.calls (external_call_id, company_id, direction, status, session_outcome)
    SELECT format('legacy-booked-%%s-%%s', %(tag)s::text, g), 1, 'inbound', 'completed',
           'appointment_booked'
      FROM generate_series(1, %(booked)s) g
    RETURNING id
), linked AS (
    INSERT INTO public.calls (external_call_id, company_id, direction, status, session_outcome)
    SELECT format('legacy-linked-%%s-%%s', %(tag)s::text, g), 1, 'inbound', 'completed',
           'appointment_booked'
      FROM generate_series(1, %(linked)s) g
    RETURNING id, external_call_id
), appointments AS (
    INSERT INTO public.appointments (call_id, company_id, service_id, starts_at, ends_at,
                                     status, external_booking_id, source)
    SELECT l.id, 1, 1, consistency.now() + interval '1 day',
           consistency.now() + interval '1 day 30 minutes', 'scheduled',
           'legacy-' || l.external_call_id, 'legacy'
      FROM linked l
    RETURNING id
)
SELECT (SELECT count(*) FROM plain), (SELECT count(*) FROM booked),
       (SELECT count(*) FROM appointments)

-- name: demo_live --
-- The live view, one query per refresh.
SELECT (SELECT count(*) FROM public.calls) AS calls,
       coalesce((SELECT s.state FROM consistency.circuit_breaker_states s
                  WHERE s.circuit_key = %(key)s), 'closed') AS circuit,
       (SELECT count(*) FROM consistency.circuit_breaker_events e
         WHERE e.circuit_key = %(key)s AND e.to_state = 'open') AS opens,
       (SELECT count(*) FILTER (WHERE a.severity = 'critical') FROM consistency.alerts a),
       (SELECT count(*) FILTER (WHERE a.severity = 'warning') FROM consistency.alerts a),
       (SELECT count(*) FILTER (WHERE a.severity = 'info') FROM consistency.alerts a),
       (SELECT coalesce(sum(r.corrected), 0) FROM consistency.check_runs r) AS corrected,
       (SELECT count(*) FROM consistency.check_runs) AS check_runs,
       (SELECT count(*) FROM consistency.manual_review_queue q
         WHERE q.status = 'pending') AS review_pending,
       (SELECT count(*) FROM consistency.relay_deliveries d
         WHERE d.status = 'delivered') AS delivered

-- name: demo_undelivered --
SELECT count(*) FROM consistency.relay_deliveries d WHERE d.status <> 'delivered'
   AND d.status <> 'dead'

-- name: demo_pending_bookings --
-- Bookings still in flight: the final check waits until they are overdue.
SELECT count(*) FROM public.calls c WHERE c.appointment_link_status = 'pending_creation'

-- name: demo_summary --
-- "What just happened", every figure read back from the database.
WITH rules AS (
    SELECT r.key AS rule, sum((r.value ->> 'found')::int) AS found,
           sum((r.value ->> 'corrected')::int) AS corrected,
           sum((r.value ->> 'alerted')::int) AS alerted
      FROM consistency.check_runs c, jsonb_each(c.rules) r
     GROUP BY r.key
), events AS (
    SELECT e.to_state, count(*) AS n, min(e.at) AS first_at, max(e.at) AS last_at
      FROM consistency.circuit_breaker_events e
     WHERE e.circuit_key = %(key)s
     GROUP BY e.to_state
)
SELECT jsonb_build_object(
    'calls', (SELECT count(*) FROM public.calls),
    'calls_legacy', (SELECT count(*) FROM public.calls WHERE external_call_id LIKE 'legacy-%%'),
    'appointments_voice_agent',
        (SELECT count(*) FROM public.appointments WHERE source = 'voice_agent'),
    'appointments_imported',
        (SELECT count(*) FROM public.appointments WHERE source = 'calendar_import'),
    'appointments_cancelled',
        (SELECT count(*) FROM public.appointments WHERE status = 'cancelled'),
    'appointments_moved',
        (SELECT count(*) FROM public.appointments a JOIN public.calls c ON c.id = a.call_id
          WHERE c.session_outcome = 'appointment_rescheduled'),
    'appointments_active',
        (SELECT count(*) FROM public.appointments
          WHERE deleted_at IS NULL AND status <> 'cancelled'),
    'calls_linked', (SELECT count(*) FROM public.calls
                      WHERE appointment_link_status = 'linked'),
    'circuit_opened', coalesce((SELECT n FROM events WHERE to_state = 'open'), 0),
    'circuit_half_open', coalesce((SELECT n FROM events WHERE to_state = 'half_open'), 0),
    'circuit_closed', coalesce((SELECT n FROM events WHERE to_state = 'closed'), 0),
    'circuit_first_open_at', (SELECT first_at FROM events WHERE to_state = 'open'),
    'circuit_last_closed_at', (SELECT last_at FROM events WHERE to_state = 'closed'),
    'circuit_state', coalesce((SELECT s.state FROM consistency.circuit_breaker_states s
                                WHERE s.circuit_key = %(key)s), 'closed'),
    'review_by_reason', (SELECT coalesce(jsonb_object_agg(q.reason, q.n), '{}')
                           FROM (SELECT reason, count(*) AS n
                                   FROM consistency.manual_review_queue GROUP BY reason) q),
    'review_pending', (SELECT count(*) FROM consistency.manual_review_queue
                        WHERE status = 'pending'),
    'alerts_by_type', (SELECT coalesce(jsonb_object_agg(t.alert_type, t.n), '{}')
                         FROM (SELECT alert_type, count(*) AS n
                                 FROM consistency.alerts GROUP BY alert_type) t),
    'alerts_by_severity', (SELECT coalesce(jsonb_object_agg(t.severity, t.n), '{}')
                             FROM (SELECT severity, count(*) AS n
                                     FROM consistency.alerts GROUP BY severity) t),
    'rollbacks_by_actor', (SELECT coalesce(jsonb_object_agg(t.actor, t.n), '{}')
                             FROM (SELECT metadata ->> 'actor' AS actor, count(*) AS n
                                     FROM consistency.alerts
                                    WHERE alert_type = 'appointment_rollback'
                                    GROUP BY 1) t),
    'rules', (SELECT coalesce(jsonb_object_agg(rule, jsonb_build_object(
                  'found', found, 'corrected', corrected, 'alerted', alerted)), '{}')
                FROM rules),
    'check_runs', (SELECT count(*) FROM consistency.check_runs),
    'delivered', (SELECT coalesce(jsonb_object_agg(s.name, x.n), '{}')
                    FROM (SELECT sink_id, count(*) AS n FROM consistency.relay_deliveries
                           WHERE status = 'delivered' GROUP BY sink_id) x
                    JOIN consistency.relay_sinks s ON s.id = x.sink_id),
    'violations', (SELECT count(*) FROM consistency.violations())
)

-- name: demo_create_database --
CREATE DATABASE {database}

-- name: demo_drop_database --
DROP DATABASE IF EXISTS {database} WITH (FORCE)

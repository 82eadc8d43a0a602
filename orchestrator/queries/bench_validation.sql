-- Named queries of `consistency bench validation` (orchestrator/bench/validation.py).

-- name: bench_validation_max_age --
-- The dataset is days old: without this every validation would stop at
-- appointment_too_old instead of walking the whole cascade.
UPDATE consistency.settings SET value = '1000000000'
 WHERE key = 'validation.max_appointment_age_seconds'

-- name: bench_validation_linked --
-- One active appointment per linked call (the one the voice agent booked).
SELECT a.id, a.call_id, a.external_booking_id
  FROM public.appointments a
 WHERE a.deleted_at IS NULL AND a.status <> 'cancelled' AND a.external_booking_id NOT LIKE '%%-%%-%%-%%'

-- name: bench_validation_unlinked --
SELECT c.id FROM public.calls c WHERE c.appointment_link_status = 'unlinked'

-- Named queries of post-booking validation and the manual review queue
-- (orchestrator.validation, orchestrator.review).

-- name: validate_booking --
SELECT ok, reason, details
  FROM consistency.validate_booking(%(call_id)s, %(appointment_id)s, %(external_booking_id)s)

-- name: rollback_booking --
SELECT consistency.rollback_booking(%(call_id)s, %(reason)s, %(actor)s)

-- name: review_enqueue --
SELECT consistency.review_enqueue(%(call_id)s, %(reason)s, %(context)s::jsonb, %(priority)s,
                                  %(actor)s)

-- name: review_claim --
SELECT id, call_id, reason, priority, status, context, assigned_to, assigned_at, resolved_at,
       resolution_notes, created_at
  FROM consistency.review_claim(%(reviewer)s)
 WHERE id IS NOT NULL

-- name: review_resolve --
SELECT id, call_id, reason, priority, status, context, assigned_to, assigned_at, resolved_at,
       resolution_notes, created_at
  FROM consistency.review_resolve(%(id)s, %(reviewer)s, %(status)s, %(notes)s)

-- name: review_list --
SELECT id, call_id, reason, priority, status, context, assigned_to, assigned_at, resolved_at,
       resolution_notes, created_at
  FROM consistency.review_list(%(status)s, %(limit)s)

-- name: retry_settings --
SELECT consistency.setting_int('validation.max_retry_attempts'),
       consistency.setting_numeric('validation.base_delay_seconds')

-- name: bench_validation_max_age --
-- The dataset is days old: without this every validation would stop at
-- appointment_too_old instead of walking the whole cascade.
UPDATE consistency.settings SET value = '1000000000'
 WHERE key = 'validation.max_appointment_age_seconds'

-- name: bench_validation_linked --
-- One active appointment per linked call (the one the voice agent booked).
SELECT a.id, a.call_id, a.external_booking_id
  FROM public.appointments a
 WHERE a.deleted_at IS NULL AND a.status <> 'cancelled' AND a.external_booking_id NOT LIKE '%-%-%-%'

-- name: bench_validation_unlinked --
SELECT c.id FROM public.calls c WHERE c.appointment_link_status = 'unlinked'

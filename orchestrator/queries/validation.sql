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
-- The table, not consistency.setting_int(): a plain read runs none of the
-- owner's code, whoever asks (orchestrator/owner_code.py).
SELECT (SELECT (s.value)::integer FROM consistency.settings s
         WHERE s.key = 'validation.max_retry_attempts'),
       (SELECT (s.value)::numeric FROM consistency.settings s
         WHERE s.key = 'validation.base_delay_seconds')

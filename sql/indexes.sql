-- The indexes the guard's rules rely on (DESIGN.md, "Application tables"),
-- rendered with the adoption profile. Each is created only when the table
-- has no equivalent one, recognised by definition, whatever its name (see
-- consistency._ensure_index): an application's own index on the same
-- columns with the same predicate serves the guard as well.
--
-- No index of calls names appointment_made or appointment_link_status, in a
-- key or a predicate: those are the columns every change of a call's link
-- state writes (its first appointment, a cancellation, the sync's every
-- UPDATE), and an index on either makes each such UPDATE non-HOT, a new
-- entry in every index of calls (measured: ~40 us of a ~300 us cancellation
-- at 100k calls, more as the indexes outgrow memory). The monitor's link
-- rules read them in the same pass that counts each call's appointments
-- (calls_created_at_idx or calls_pkey), session_outcome_mismatch in the
-- calls of the window.
SELECT consistency._ensure_index('public.calls', 'calls_created_at_idx', '(created_at)');
SELECT consistency._ensure_index('public.calls', 'calls_external_booking_id_idx',
                                 $i$({{ calls.booking_id }})$i$);
SELECT consistency._ensure_index('public.appointments', 'appointments_call_id_idx', '(call_id)');
SELECT consistency._ensure_index('public.appointments', 'appointments_created_at_idx',
                                 '(created_at)');

-- Orphan rule: appointments without a call are rare; index only those.
SELECT consistency._ensure_index('public.appointments', 'appointments_orphan_idx', $i$
    (created_at) WHERE call_id IS NULL AND deleted_at IS NULL $i$);

-- The flag rules look for rare states; partial indexes hold only those rows,
-- so a whole-table check reads the drift, not the table.
SELECT consistency._ensure_index('public.calls', 'calls_missing_direction_idx', $i$
    (created_at) WHERE direction IS NULL OR direction = '' $i$);
SELECT consistency._ensure_index('public.calls', 'calls_booking_failed_idx', $i$
    (created_at) WHERE booking_failed $i$);

-- Link rules (consistency._link_state): the active appointments of a call,
-- in call_id order. A window probes it per call; a whole-table check reads
-- it once as an index-only scan (grouped, no sort) merged with calls_pkey.
-- Its predicate columns change only when an appointment is cancelled or
-- deleted, which already writes a new index entry (status, deleted_at).
SELECT consistency._ensure_index('public.appointments', 'appointments_active_call_idx', $i$
    (call_id) WHERE {{ active() }} $i$);
{% for column in calls.links %}

-- Each of the application's own link columns: the sync finds the calls
-- pointing at an appointment that changed (the name is PostgreSQL's choice).
SELECT consistency._ensure_index('public.calls', NULL, $i$({{ column }})$i$);
{% endfor %}

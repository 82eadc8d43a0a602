-- Guarantees G1 and G3 (see DESIGN.md "Guarantees"), the appointment side:
-- the functions of the triggers of sql/triggers/appointment_link_sync.sql.
-- The call side (G2, G4-G7) is in call_rules.sql; repair and inspection in
-- resync.sql.
--
-- Appointment side (G1, G3): statement-level AFTER triggers turn the
-- transition tables into one delta per call and apply them with ONE relative
-- UPDATE of calls per statement (n = n + delta). Under READ COMMITTED an
-- UPDATE that finds its row changed by a concurrent, committed writer
-- re-evaluates the SET list against the newest row version, so a relative
-- update composes with every concurrent writer, in every commit order. The
-- link fields are derived from the new counter in the same SET list, hence
-- from the newest version too.
--
-- Rights: every trigger function is SECURITY DEFINER with a pinned
-- search_path, so any role that may write calls/appointments gets the
-- guarantees and their alerts without any right in schema consistency (a
-- firing trigger checks no EXECUTE right), and raise_alert stays owner-only.
--
-- G3 alerts of a statement are raised as one set (_insert_alerts: one
-- throttle upsert, one INSERT), not one raise_alert per call.
--
-- A statement of one row (an application's everyday write: a call's
-- appointment booked, cancelled, restored) takes a path of its own: one read
-- of the transition tables, then a plain UPDATE of its call by id. The set
-- path's plan (aggregates, sorts, a join, a data-modifying CTE) costs more
-- to start than the rest of a one-row sync (docs/benchmarks.md, "one-row
-- path"). Both paths render their SET lists from link_fields(), and
-- tests/sql/sync_one_row.sql runs every write both ways.
--
-- Lock order: every statement locks calls in ascending id order (deltas are
-- sorted by call id and joined by nested loop or merge join, never by hash
-- join, whose order follows the physical table), so two batches touching the
-- same calls in opposite orders wait for each other instead of deadlocking.

-- ---------------------------------------------------------------------------
-- Appointment side

CREATE OR REPLACE FUNCTION consistency._link_sync_insert()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
AS $$
DECLARE
    v_rows    bigint;
    v_call    bigint;
    v_recheck bigint[];
    v_outcome boolean;
BEGIN
    SELECT count(*), min(n.call_id) FILTER (WHERE {{ active('n') }})
      INTO v_rows, v_call
      FROM new_rows n;
    IF v_rows = 0 THEN
        RETURN NULL;
    END IF;
    IF v_rows = 1 THEN
        IF v_call IS NOT NULL THEN
            UPDATE public.calls c
               SET active_appointment_count = c.active_appointment_count + 1,
                   {{ link_fields('c.active_appointment_count + 1' + refs('c'), cancels=false) }}
             WHERE c.id = v_call
            RETURNING c.session_outcome NOT IN ({{ outcome.booking }}) INTO v_outcome;
            IF v_outcome THEN
                PERFORM consistency._recheck_outcome(ARRAY[v_call]);
            END IF;
        END IF;
{% if calls.links %}
        PERFORM consistency._link_sync_refs(ARRAY(
            SELECT n.id FROM new_rows n WHERE {{ active('n') }}));
{% endif %}
        RETURN NULL;
    END IF;

    -- Inserts only add active appointments: no call can lose its last one here.
    WITH d AS (
        SELECT n.call_id, count(*)::integer AS delta
          FROM new_rows n
         WHERE n.call_id IS NOT NULL AND {{ active('n') }}
         GROUP BY n.call_id
         ORDER BY n.call_id
    ), u AS (
        UPDATE public.calls c
           SET active_appointment_count = c.active_appointment_count + d.delta,
               {{ link_fields('c.active_appointment_count + d.delta' + refs('c'), cancels=false) }}
          FROM d
         WHERE c.id = d.call_id
        RETURNING c.id, c.active_appointment_count{{ refs('c') }} AS n, c.session_outcome
    )
    SELECT array_agg(u.id) INTO v_recheck
      FROM u
     WHERE u.n > 0 AND u.session_outcome NOT IN ({{ outcome.booking }});

    IF v_recheck IS NOT NULL THEN
        PERFORM consistency._recheck_outcome(v_recheck);
    END IF;
{% if calls.links %}
    PERFORM consistency._link_sync_refs(ARRAY(
        SELECT n.id FROM new_rows n WHERE {{ active('n') }}));
{% endif %}
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION consistency._link_sync_update()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
AS $$
DECLARE
    v_rows     bigint;
    v_gone     bigint;
    v_from     bigint;
    v_to       bigint;
    v_left     integer;
    v_outcome  boolean;
    v_recheck  bigint[];
    v_calls    bigint[];
    v_texts    text[];
    v_metadata jsonb[];
BEGIN
    -- One row: the call it was active on (v_from) and the one it is active
    -- on now (v_to), equal when its link did not change (a reschedule, a
    -- note); either may be NULL (cancelled or soft-deleted, restored,
    -- unassigned, assigned). A move changes two calls, and takes the set
    -- path: one UPDATE of both costs less than two of one (each UPDATE of
    -- calls prepares its triggers' WHEN clauses and CHECK constraints anew).
    SELECT count(*), min(o.id), min(o.call_id) FILTER (WHERE {{ active('o') }}),
           (SELECT min(n.call_id) FILTER (WHERE {{ active('n') }}) FROM new_rows n)
      INTO v_rows, v_gone, v_from, v_to
      FROM old_rows o;
    IF v_rows = 0 THEN
        RETURN NULL;
    END IF;
    IF v_rows = 1 AND (v_from IS NULL OR v_to IS NULL OR v_from = v_to) THEN
        IF v_to IS NULL AND v_from IS NOT NULL THEN
            UPDATE public.calls c
               SET active_appointment_count = c.active_appointment_count - 1,
                   {{ link_fields('c.active_appointment_count - 1' + refs('c')) }}
             WHERE c.id = v_from
            RETURNING c.active_appointment_count{{ refs('c') }} INTO v_left;
            IF v_left <= 0 THEN
                PERFORM consistency._insert_alerts('appointment_unlinked', 'warning', 'call', ARRAY[v_from],
                                                   ARRAY[consistency._unlinked_text(v_from, v_gone)],
                                                   ARRAY[consistency._unlinked_metadata(v_gone, 1)],
                                                   true, consistency.now(), true);
            END IF;
        ELSIF v_from IS NULL AND v_to IS NOT NULL THEN
            UPDATE public.calls c
               SET active_appointment_count = c.active_appointment_count + 1,
                   {{ link_fields('c.active_appointment_count + 1' + refs('c'), cancels=false) }}
             WHERE c.id = v_to
            RETURNING c.session_outcome NOT IN ({{ outcome.booking }}) INTO v_outcome;
            IF v_outcome THEN
                PERFORM consistency._recheck_outcome(ARRAY[v_to]);
            END IF;
        END IF;
{% if calls.links %}
        -- Whether it is still active, with or without a call.
        PERFORM consistency._link_sync_refs(ARRAY(
            (SELECT o.id FROM old_rows o WHERE {{ active('o') }}
             EXCEPT
             SELECT n.id FROM new_rows n WHERE {{ active('n') }})
            UNION
            (SELECT n.id FROM new_rows n WHERE {{ active('n') }}
             EXCEPT
             SELECT o.id FROM old_rows o WHERE {{ active('o') }})));
{% endif %}
        RETURN NULL;
    END IF;

    -- -1 for every old active row, +1 for every new active row, per call:
    -- rows whose call_id, status and deleted_at did not change cancel out and
    -- the HAVING drops them, so an UPDATE of unrelated columns writes nothing
    -- and needs no join of the two transition tables. The ids of the rows
    -- that left are kept for the G3 alert, so nothing is read twice.
    WITH d AS (
        SELECT x.call_id, sum(x.delta)::integer AS delta,
               max(x.id) FILTER (WHERE x.delta < 0) AS gone,
               count(*) FILTER (WHERE x.delta < 0)::integer AS gone_count
          FROM (SELECT o.call_id, o.id, -1 AS delta
                  FROM old_rows o
                 WHERE o.call_id IS NOT NULL AND {{ active('o') }}
                UNION ALL
                SELECT n.call_id, n.id, 1
                  FROM new_rows n
                 WHERE n.call_id IS NOT NULL AND {{ active('n') }}) x
         GROUP BY x.call_id
        HAVING sum(x.delta) <> 0
         ORDER BY x.call_id
    ), u AS (
        UPDATE public.calls c
           SET active_appointment_count = c.active_appointment_count + d.delta,
               {{ link_fields('c.active_appointment_count + d.delta' + refs('c')) }}
          FROM d
         WHERE c.id = d.call_id
        RETURNING c.id, c.active_appointment_count{{ refs('c') }} AS n, d.delta, d.gone, d.gone_count,
                  c.session_outcome
    )
    -- G5 (see _recheck_outcome), and G3: calls whose count just dropped to
    -- zero, alerted as one set below.
    SELECT array_agg(u.id) FILTER (WHERE u.n > 0 AND u.session_outcome
                                         NOT IN ({{ outcome.booking }})),
           array_agg(u.id) FILTER (WHERE u.n <= 0 AND u.delta < 0),
           array_agg(consistency._unlinked_text(u.id, u.gone)) FILTER (WHERE u.n <= 0 AND u.delta < 0),
           array_agg(consistency._unlinked_metadata(u.gone, u.gone_count)) FILTER (WHERE u.n <= 0 AND u.delta < 0)
      INTO v_recheck, v_calls, v_texts, v_metadata
      FROM u;

    IF v_recheck IS NOT NULL THEN
        PERFORM consistency._recheck_outcome(v_recheck);
    END IF;
    IF v_calls IS NOT NULL THEN
        PERFORM consistency._insert_alerts('appointment_unlinked', 'warning', 'call', v_calls, v_texts,
                                           v_metadata, true, consistency.now(), true);
    END IF;
{% if calls.links %}
    -- Appointments that became active or stopped being active.
    PERFORM consistency._link_sync_refs(ARRAY(
        (SELECT o.id FROM old_rows o WHERE {{ active('o') }}
         EXCEPT
         SELECT n.id FROM new_rows n WHERE {{ active('n') }})
        UNION
        (SELECT n.id FROM new_rows n WHERE {{ active('n') }}
         EXCEPT
         SELECT o.id FROM old_rows o WHERE {{ active('o') }})));
{% endif %}
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION consistency._link_sync_delete()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
AS $$
DECLARE
    v_rows     bigint;
    v_gone     bigint;
    v_from     bigint;
    v_left     integer;
    v_calls    bigint[];
    v_texts    text[];
    v_metadata jsonb[];
BEGIN
    SELECT count(*), min(o.id), min(o.call_id) FILTER (WHERE {{ active('o') }})
      INTO v_rows, v_gone, v_from
      FROM old_rows o;
    IF v_rows = 0 THEN
        RETURN NULL;
    END IF;
    IF v_rows = 1 THEN
        IF v_from IS NOT NULL THEN
            UPDATE public.calls c
               SET active_appointment_count = c.active_appointment_count - 1,
                   {{ link_fields('c.active_appointment_count - 1' + refs('c'), stamps=false) }}
             WHERE c.id = v_from
            RETURNING c.active_appointment_count{{ refs('c') }} INTO v_left;
            IF v_left <= 0 THEN
                PERFORM consistency._insert_alerts('appointment_unlinked', 'warning', 'call', ARRAY[v_from],
                                                   ARRAY[consistency._unlinked_text(v_from, v_gone)],
                                                   ARRAY[consistency._unlinked_metadata(v_gone, 1)],
                                                   true, consistency.now(), true);
            END IF;
        END IF;
{% if calls.links %}
        PERFORM consistency._link_sync_refs(ARRAY(
            SELECT o.id FROM old_rows o WHERE {{ active('o') }}));
{% endif %}
        RETURN NULL;
    END IF;

    -- A call deleted in this statement (ON DELETE SET NULL fires the UPDATE
    -- trigger) is invisible here and simply not updated. Counts only go down,
    -- so G5 cannot newly apply.
    WITH d AS (
        SELECT o.call_id, -count(*)::integer AS delta, max(o.id) AS gone
          FROM old_rows o
         WHERE o.call_id IS NOT NULL AND {{ active('o') }}
         GROUP BY o.call_id
         ORDER BY o.call_id
    ), u AS (
        UPDATE public.calls c
           SET active_appointment_count = c.active_appointment_count + d.delta,
               {{ link_fields('c.active_appointment_count + d.delta' + refs('c'), stamps=false) }}
          FROM d
         WHERE c.id = d.call_id
        RETURNING c.id, c.active_appointment_count{{ refs('c') }} AS n, d.gone, -d.delta AS gone_count
    )
    -- G3: calls whose count just dropped to zero, alerted as one set below.
    SELECT array_agg(u.id), array_agg(consistency._unlinked_text(u.id, u.gone)),
           array_agg(consistency._unlinked_metadata(u.gone, u.gone_count))
      INTO v_calls, v_texts, v_metadata
      FROM u
     WHERE u.n <= 0;

    IF v_calls IS NOT NULL THEN
        PERFORM consistency._insert_alerts('appointment_unlinked', 'warning', 'call', v_calls, v_texts,
                                           v_metadata, true, consistency.now(), true);
    END IF;
{% if calls.links %}
    -- A link column with a foreign key was already cleared by its ON DELETE
    -- action (and its call recounted then); one without still names the row.
    PERFORM consistency._link_sync_refs(ARRAY(
        SELECT o.id FROM old_rows o WHERE {{ active('o') }}));
{% endif %}
    RETURN NULL;
END
$$;

-- G5 for calls the sync just linked: the sync's UPDATE does not write
-- session_outcome (so that it skips the call-rule trigger), so calls whose
-- outcome now contradicts their appointments get a second, rare write of
-- that column, which runs the rule (correction and alert) in one place.
-- These calls are already locked by this transaction.
CREATE OR REPLACE FUNCTION consistency._recheck_outcome(p_call_ids bigint[])
RETURNS void
LANGUAGE sql VOLATILE
BEGIN ATOMIC
    UPDATE public.calls SET session_outcome = session_outcome WHERE id = ANY (p_call_ids);
END;

-- G3: one alert per call that lost its last active appointment in a
-- statement, raised for all of them at once by the sync functions above;
-- appointment_id is the (highest) appointment that left, and
-- appointments_removed how many left the call in that statement. Plain SQL
-- expressions, inlined into the sync's query (SQL-standard bodies: resolved
-- when created, so inlining needs no search_path of the caller).
CREATE OR REPLACE FUNCTION consistency._unlinked_text(p_call_id bigint, p_appointment_id bigint)
RETURNS text
LANGUAGE sql STABLE
RETURN format('call %s lost its last active appointment (%s); link status set to cancelled',
              p_call_id, p_appointment_id);

CREATE OR REPLACE FUNCTION consistency._unlinked_metadata(p_appointment_id bigint, p_removed integer)
RETURNS jsonb
LANGUAGE sql STABLE
RETURN jsonb_build_object('appointment_id', p_appointment_id, 'appointments_removed', p_removed);

-- TRUNCATE has no transition table: recount everything.
CREATE OR REPLACE FUNCTION consistency._link_sync_truncate()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM consistency._resync(NULL);
    RETURN NULL;
END
$$;
{% if calls.links %}

-- ---------------------------------------------------------------------------
-- The application's own link columns (profile: calls.appointment_links)
--
-- active_appointment_refs counts the link columns of a call that name an
-- active appointment (a column naming the same appointment as call_id counts
-- too: G1 asks only whether the sum is positive). It is recounted, never
-- adjusted by a delta, so that the two writers of it agree whatever their
-- order: the call-side rule (a link column written) and the appointment-side
-- sync (a referenced appointment changed), each under the call's row lock.

-- Active appointments among these ids, counting an id once per slot.
CREATE OR REPLACE FUNCTION consistency._active_refs(p_ids bigint[])
RETURNS integer
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT count(*)::integer
      FROM unnest(p_ids) AS r(id)
      JOIN public.appointments a ON a.id = r.id
     WHERE {{ active('a') }};
END;

-- The same, locking the appointments counted (see _call_rules).
CREATE OR REPLACE FUNCTION consistency._lock_active_refs(p_ids bigint[])
RETURNS integer
LANGUAGE sql VOLATILE
BEGIN ATOMIC
    SELECT count(*)::integer
      FROM (SELECT 1
              FROM unnest(p_ids) AS r(id)
              JOIN public.appointments a ON a.id = r.id
             WHERE {{ active('a') }}
               FOR SHARE OF a) x;
END;

-- Appointment side: recount the calls that point at these appointments
-- (whose activeness a statement just changed), with G3 and G5 as the sync
-- applies them. Locks the calls in id order first; the recount is a new
-- statement, whose snapshot sees every writer those locks waited for.
CREATE OR REPLACE FUNCTION consistency._link_sync_refs(p_appointment_ids bigint[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
AS $$
DECLARE
    v_ids      bigint[];
    v_recheck  bigint[];
    v_calls    bigint[];
    v_texts    text[];
    v_metadata jsonb[];
BEGIN
    SELECT array_agg(x.id ORDER BY x.id) INTO v_ids
      FROM (
{% for column in calls.links %}
{% if not loop.first %}
            UNION
{% endif %}
            SELECT c.id FROM public.calls c WHERE c.{{ column }} = ANY (p_appointment_ids)
{% endfor %}
           ) x;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;
    PERFORM 1 FROM public.calls c WHERE c.id = ANY (v_ids) ORDER BY c.id FOR NO KEY UPDATE;

    WITH r AS (
        SELECT c.id, c.active_appointment_refs AS before,
               consistency._active_refs({{ link_array('c') }}) AS n,
               (SELECT max(l.id) FROM unnest({{ link_array('c') }}) AS l(id)
                 WHERE l.id = ANY (p_appointment_ids)) AS gone
          FROM public.calls c
         WHERE c.id = ANY (v_ids)
    ), u AS (
        UPDATE public.calls c
           SET active_appointment_refs = r.n,
               {{ link_fields('c.active_appointment_count + r.n') }}
          FROM r
         WHERE c.id = r.id AND c.active_appointment_refs <> r.n
        RETURNING c.id, c.active_appointment_count + r.n AS n,
                  c.active_appointment_count + r.before AS n_before, r.before - r.n AS removed,
                  r.gone, c.session_outcome
    )
    SELECT array_agg(u.id) FILTER (WHERE u.n > 0 AND u.session_outcome NOT IN ({{ outcome.booking }})),
           array_agg(u.id) FILTER (WHERE u.n <= 0 AND u.n_before > 0),
           array_agg(consistency._unlinked_text(u.id, u.gone)) FILTER (WHERE u.n <= 0 AND u.n_before > 0),
           array_agg(consistency._unlinked_metadata(u.gone, u.removed))
               FILTER (WHERE u.n <= 0 AND u.n_before > 0)
      INTO v_recheck, v_calls, v_texts, v_metadata
      FROM u;

    IF v_recheck IS NOT NULL THEN
        PERFORM consistency._recheck_outcome(v_recheck);
    END IF;
    IF v_calls IS NOT NULL THEN
        PERFORM consistency._insert_alerts('appointment_unlinked', 'warning', 'call', v_calls, v_texts,
                                           v_metadata, true, consistency.now(), true);
    END IF;
END
$$;
{% endif %}


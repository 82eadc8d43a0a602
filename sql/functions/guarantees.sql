-- Guarantees G1-G7 (see DESIGN.md "Guarantees").
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
-- Call side (G2, G4-G7): BEFORE ROW triggers (sql/triggers/call_rules.sql)
-- limited by column lists and WHEN clauses, so that unrelated application
-- writes never call PL/pgSQL and the sync UPDATE above (which writes
-- consistent rows, and none of the rule columns) skips them on a bitmap test.
--
-- Rights: every trigger function is SECURITY DEFINER with a pinned
-- search_path, so any role that may write calls/appointments gets the
-- guarantees and their alerts without any right in schema consistency (a
-- firing trigger checks no EXECUTE right), and raise_alert stays owner-only.
--
-- G3 alerts of a statement are raised as one set (_insert_alerts: one
-- throttle upsert, one INSERT), not one raise_alert per call.
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
    v_recheck bigint[];
BEGIN
    -- Inserts only add active appointments: no call can lose its last one here.
    WITH d AS (
        SELECT n.call_id, count(*)::integer AS delta
          FROM new_rows n
         WHERE n.call_id IS NOT NULL AND n.deleted_at IS NULL AND n.status <> 'cancelled'
         GROUP BY n.call_id
         ORDER BY n.call_id
    ), u AS (
        UPDATE public.calls c
           SET active_appointment_count = c.active_appointment_count + d.delta,
               appointment_link_status  = CASE WHEN c.active_appointment_count + d.delta{{ refs('c') }} > 0
                                               THEN {{ link.linked }} ELSE c.appointment_link_status END,
               appointment_made         = c.active_appointment_count + d.delta{{ refs('c') }} > 0,
               appointment_linked_at    = CASE WHEN c.appointment_link_status <> {{ link.linked }}
                                                AND c.active_appointment_count + d.delta{{ refs('c') }} > 0
                                               THEN {{ calls.appointment_linked_at.now() }}
                                               ELSE c.appointment_linked_at END
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
        SELECT n.id FROM new_rows n WHERE n.deleted_at IS NULL AND n.status <> 'cancelled'));
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
    v_recheck  bigint[];
    v_calls    bigint[];
    v_texts    text[];
    v_metadata jsonb[];
BEGIN
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
                 WHERE o.call_id IS NOT NULL AND o.deleted_at IS NULL AND o.status <> 'cancelled'
                UNION ALL
                SELECT n.call_id, n.id, 1
                  FROM new_rows n
                 WHERE n.call_id IS NOT NULL AND n.deleted_at IS NULL AND n.status <> 'cancelled') x
         GROUP BY x.call_id
        HAVING sum(x.delta) <> 0
         ORDER BY x.call_id
    ), u AS (
        UPDATE public.calls c
           SET active_appointment_count = c.active_appointment_count + d.delta,
               appointment_link_status  = CASE WHEN c.active_appointment_count + d.delta{{ refs('c') }} > 0 THEN {{ link.linked }}
                                               WHEN c.appointment_link_status = {{ link.linked }} THEN {{ link.cancelled }}
                                               ELSE c.appointment_link_status END,
               appointment_made         = c.active_appointment_count + d.delta{{ refs('c') }} > 0,
               appointment_linked_at    = CASE WHEN c.appointment_link_status <> {{ link.linked }}
                                                AND c.active_appointment_count + d.delta{{ refs('c') }} > 0
                                               THEN {{ calls.appointment_linked_at.now() }}
                                               ELSE c.appointment_linked_at END
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
        (SELECT o.id FROM old_rows o WHERE o.deleted_at IS NULL AND o.status <> 'cancelled'
         EXCEPT
         SELECT n.id FROM new_rows n WHERE n.deleted_at IS NULL AND n.status <> 'cancelled')
        UNION
        (SELECT n.id FROM new_rows n WHERE n.deleted_at IS NULL AND n.status <> 'cancelled'
         EXCEPT
         SELECT o.id FROM old_rows o WHERE o.deleted_at IS NULL AND o.status <> 'cancelled')));
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
    v_calls    bigint[];
    v_texts    text[];
    v_metadata jsonb[];
BEGIN
    -- A call deleted in this statement (ON DELETE SET NULL fires the UPDATE
    -- trigger) is invisible here and simply not updated. Counts only go down,
    -- so G5 cannot newly apply.
    WITH d AS (
        SELECT o.call_id, -count(*)::integer AS delta, max(o.id) AS gone
          FROM old_rows o
         WHERE o.call_id IS NOT NULL AND o.deleted_at IS NULL AND o.status <> 'cancelled'
         GROUP BY o.call_id
         ORDER BY o.call_id
    ), u AS (
        UPDATE public.calls c
           SET active_appointment_count = c.active_appointment_count + d.delta,
               appointment_link_status  = CASE WHEN c.active_appointment_count + d.delta{{ refs('c') }} > 0 THEN {{ link.linked }}
                                               WHEN c.appointment_link_status = {{ link.linked }} THEN {{ link.cancelled }}
                                               ELSE c.appointment_link_status END,
               appointment_made         = c.active_appointment_count + d.delta > 0
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
        SELECT o.id FROM old_rows o WHERE o.deleted_at IS NULL AND o.status <> 'cancelled'));
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

-- ---------------------------------------------------------------------------
-- Call side

-- G2, G4-G7 for one row. Only called when the trigger's WHEN clause found a
-- rule broken (or, on INSERT, a row that needs defaults), so it may be plain.
CREATE OR REPLACE FUNCTION consistency._call_rules()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_linked          boolean;
    v_written_made    boolean := NEW.appointment_made;
    v_written_status  text := NEW.appointment_link_status;
    v_written_outcome text := NEW.session_outcome;
    -- The row's link fields are left to an UPDATE's triggers (see below).
    v_conflict        boolean := false;
{% if calls.links %}
    -- This write changed the call's own link columns: the link state it
    -- implies is derived here, not claimed by the written flags.
    v_links_changed   boolean := false;
    v_gone            bigint;
{% endif %}
BEGIN
    -- The counter changes only through the sync triggers (which never get
    -- here: they write consistent rows, and calls_link_guard lets nested
    -- statements in only when G1/G2 are broken) and resync_calls(); a direct
    -- write would break G1 for good.
    IF TG_OP = 'INSERT' AND NEW.active_appointment_count IS DISTINCT FROM 0 THEN
        RAISE EXCEPTION 'calls.active_appointment_count is maintained by consistency-guard'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'leave it out of the INSERT: a new call has no appointments yet';
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.active_appointment_count IS DISTINCT FROM OLD.active_appointment_count
       AND NOT EXISTS (SELECT 1 FROM consistency._resync_txn r WHERE r.xact = pg_catalog.pg_current_xact_id()) THEN
        RAISE EXCEPTION 'calls.active_appointment_count is maintained by consistency-guard'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'write appointments instead; consistency.resync_calls() repairs a drifted count';
    END IF;
{% if calls.links %}

    -- The application's own link columns (profile: calls.appointment_links).
    -- active_appointment_refs is recounted whenever one of them is written;
    -- the referenced appointments are locked (FOR SHARE) so that a concurrent
    -- cancel either finishes first (and is seen here) or waits for this
    -- transaction and then finds this call pointing at it. The recount is
    -- idempotent, so a second trigger firing on the same row agrees with it.
    IF TG_OP = 'INSERT' AND NEW.active_appointment_refs IS DISTINCT FROM 0 THEN
        RAISE EXCEPTION 'calls.active_appointment_refs is maintained by consistency-guard'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'leave it out of the INSERT';
    END IF;
    IF TG_OP = 'INSERT'
{% for column in calls.links %}
       OR NEW.{{ column }} IS DISTINCT FROM OLD.{{ column }}
{% endfor %}
    THEN
        v_links_changed := true;
        NEW.active_appointment_refs := consistency._lock_active_refs({{ link_array('NEW') }});
    ELSIF NEW.active_appointment_refs IS DISTINCT FROM OLD.active_appointment_refs
          AND NOT EXISTS (SELECT 1 FROM consistency._resync_txn r
                           WHERE r.xact = pg_catalog.pg_current_xact_id()) THEN
        RAISE EXCEPTION 'calls.active_appointment_refs is maintained by consistency-guard'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'write the link columns or the appointments instead';
    END IF;
{% endif %}

    v_linked := NEW.active_appointment_count{{ refs('NEW') }} > 0;

    -- An INSERT whose call already exists (same id or same call id) is about
    -- to conflict. INSERT ... ON CONFLICT DO UPDATE hands this row to the
    -- UPDATE as EXCLUDED: corrected here as a new call without appointments,
    -- it would carry that correction onto the existing (maybe linked) call.
    -- Its link fields are left as written for the UPDATE's own triggers to
    -- judge; if the row is inserted after all (the other one went away
    -- meanwhile), _call_rules_inserted checks it at the statement's end.
    IF TG_OP = 'INSERT' AND NOT v_linked
       AND (NEW.appointment_made OR NEW.appointment_link_status = {{ link.linked }}
            OR (NEW.session_outcome = {{ outcome.appointment_booked }}
                AND NEW.appointment_link_status NOT IN ({{ link.pending_creation }}, {{ link.cancelled }}, {{ link.creation_failed }})))
       AND EXISTS (SELECT 1 FROM public.calls c
                    WHERE c.id = NEW.id OR c.{{ calls.call_id }} = NEW.{{ calls.call_id }}) THEN
        v_conflict := true;
        PERFORM consistency._call_rule_alert(TG_OP, NEW.{{ calls.call_id }}, '_recheck', NEW.id,
                                             'recheck', '{}');
    END IF;

    -- G1/G2: link status and flag follow the appointments, whatever was written.
    IF v_conflict THEN
        NULL;
    ELSIF v_linked THEN
        IF NEW.appointment_link_status IS DISTINCT FROM {{ link.linked }} THEN
            NEW.appointment_link_status := {{ link.linked }};
            NEW.appointment_linked_at := {{ calls.appointment_linked_at.now() }};
        END IF;
        NEW.appointment_made := true;
    ELSE
{% if calls.links %}
        -- G3: this write of the link columns (or their ON DELETE action) took
        -- the call's last active appointment away.
        IF v_links_changed AND TG_OP = 'UPDATE'
           AND OLD.active_appointment_count + OLD.active_appointment_refs > 0 THEN
            NEW.appointment_link_status := {{ link.cancelled }};
            v_gone := (SELECT max(o.id) FROM unnest({{ link_array('OLD') }}) AS o(id)
                        WHERE array_position({{ link_array('NEW') }}, o.id) IS NULL);
            PERFORM consistency.raise_alert('appointment_unlinked', 'warning', 'call', NEW.id,
                                            consistency._unlinked_text(NEW.id, v_gone),
                                            consistency._unlinked_metadata(v_gone, 1), true);
        ELSIF NEW.appointment_link_status = {{ link.linked }} THEN
{% else %}
        IF NEW.appointment_link_status = {{ link.linked }} THEN
{% endif %}
            NEW.appointment_link_status := CASE
                WHEN TG_OP = 'UPDATE' AND OLD.appointment_link_status <> {{ link.linked }}
                THEN OLD.appointment_link_status ELSE {{ link.unlinked }} END;
        END IF;
        NEW.appointment_made := false;
        -- G4: booked but no appointment yet: a booking in flight.
        IF NEW.session_outcome = {{ outcome.appointment_booked }}
           AND NEW.appointment_link_status NOT IN ({{ link.pending_creation }}, {{ link.cancelled }}, {{ link.creation_failed }}) THEN
            NEW.appointment_link_status := {{ link.pending_creation }};
        -- An outcome corrected away from a booking ends the flight: left
        -- pending, the monitor would later roll the call back as failed.
        ELSIF NEW.appointment_link_status = {{ link.pending_creation }}
              AND (NEW.session_outcome IS NULL
                   OR NEW.session_outcome NOT IN ({{ outcome.booking }})) THEN
            NEW.appointment_link_status := {{ link.unlinked }};
        END IF;
    END IF;

    -- G5: a call with an active appointment booked something.
    IF v_linked AND NEW.session_outcome IS NOT NULL
       AND NEW.session_outcome NOT IN ({{ outcome.booking }}) THEN
        NEW.session_outcome := {{ outcome.appointment_booked }};
        PERFORM consistency._call_rule_alert(
            TG_OP, NEW.{{ calls.call_id }}, 'session_outcome_corrected', NEW.id,
            format('call %s has %s active appointment(s) but session_outcome %s; set to %s',
                   NEW.id, NEW.active_appointment_count{{ refs('NEW') }}, v_written_outcome,
                   NEW.session_outcome),
            jsonb_build_object('written', v_written_outcome, 'corrected', NEW.session_outcome,
                               'active_appointments', NEW.active_appointment_count{{ refs('NEW') }}));
    END IF;

    -- G2 alert: the write claimed a link state the appointments contradict.
    -- A booking in flight (G4) is not yet an inconsistency: no alert.
    IF (v_written_made IS DISTINCT FROM v_linked
        OR (v_written_status = {{ link.linked }}) IS DISTINCT FROM v_linked)
       AND NEW.appointment_link_status <> {{ link.pending_creation }}
       AND NOT v_conflict
{% if calls.links %}
       -- Flags left as they were by a write of the link columns claim nothing.
       AND NOT (v_links_changed
                AND (TG_OP = 'INSERT'
                     OR (v_written_made IS NOT DISTINCT FROM OLD.appointment_made
                         AND v_written_status IS NOT DISTINCT FROM OLD.appointment_link_status)))
{% endif %}
    THEN
        PERFORM consistency._call_rule_alert(
            TG_OP, NEW.{{ calls.call_id }}, 'appointment_made_mismatch', NEW.id,
            format('call %s written with appointment_made=%s, link status %s, but it has %s active '
                   'appointment(s); corrected', NEW.id, v_written_made, v_written_status,
                   NEW.active_appointment_count{{ refs('NEW') }}),
            jsonb_build_object('written_appointment_made', v_written_made,
                               'written_link_status', v_written_status,
                               'appointment_made', NEW.appointment_made,
                               'link_status', NEW.appointment_link_status,
                               'active_appointments', NEW.active_appointment_count{{ refs('NEW') }}));
    END IF;

    -- G6
    IF NEW.direction IS NULL OR NEW.direction = '' THEN
        NEW.direction := {{ direction.inbound }};
    END IF;

    -- G7
    IF NEW.customer_id IS NOT NULL THEN
        IF NEW.customer_link_status IS DISTINCT FROM {{ customer.linked }} OR NEW.customer_linked_at IS NULL
           OR (TG_OP = 'UPDATE' AND NEW.customer_id IS DISTINCT FROM OLD.customer_id) THEN
            NEW.customer_link_status := {{ customer.linked }};
            -- A time written with the customer is kept; otherwise linking is now.
            IF NEW.customer_linked_at IS NULL
               OR (TG_OP = 'UPDATE' AND NEW.customer_linked_at IS NOT DISTINCT FROM OLD.customer_linked_at) THEN
                NEW.customer_linked_at := {{ calls.customer_linked_at.now() }};
            END IF;
            NEW.customer_link_method := coalesce(NEW.customer_link_method, {{ method.phone_match }});
        END IF;
    ELSIF NEW.customer_link_status = {{ customer.linked }} THEN
        NEW.customer_link_status := {{ customer.unlinked }};
        NEW.customer_linked_at := NULL;
        NEW.customer_link_method := NULL;
    END IF;

    RETURN NEW;
END
$$;

-- The alerts of the call rules (warnings, auto-corrected). An UPDATE's BEFORE
-- ROW trigger runs on the row it then writes: raised at once. An INSERT's
-- runs before an ON CONFLICT clause may drop the row, so the alert waits in
-- an owner-only table for the AFTER INSERT statement trigger, which raises
-- it only if the row is there. The session flag only wakes that trigger
-- (forging it finds nothing to raise); a statement trigger, because an
-- AFTER ROW trigger (even one whose WHEN is false) costs every inserted row.
-- alert_type '_recheck' is no alert: a row whose rules were left to a
-- conflicting UPDATE (see _call_rules) is checked again if it was inserted.
CREATE OR REPLACE FUNCTION consistency._call_rule_alert(
    p_op text, p_external_call_id text, p_alert_type text, p_call_id bigint,
    p_description text, p_metadata jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_op <> 'INSERT' THEN
        PERFORM consistency.raise_alert(p_alert_type, 'warning', 'call', p_call_id, p_description,
                                        p_metadata, true);
        RETURN;
    END IF;
    INSERT INTO consistency._call_alerts_pending AS p
           (xact, call_id, external_call_id, alert_type, description, metadata)
    VALUES (pg_catalog.pg_current_xact_id(), p_call_id, p_external_call_id, p_alert_type,
            p_description, p_metadata)
    ON CONFLICT (xact, call_id, alert_type) DO UPDATE
       SET external_call_id = EXCLUDED.external_call_id, description = EXCLUDED.description,
           metadata = EXCLUDED.metadata;
    PERFORM pg_catalog.set_config('consistency.call_alerts_pending', 'on', true);
END
$$;

CREATE OR REPLACE FUNCTION consistency._call_rules_inserted()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_alert record;
BEGIN
    PERFORM pg_catalog.set_config('consistency.call_alerts_pending', '', true);
    FOR v_alert IN
        DELETE FROM consistency._call_alerts_pending p
         WHERE p.xact = pg_catalog.pg_current_xact_id()
        RETURNING p.call_id, p.external_call_id, p.alert_type, p.description, p.metadata
    LOOP
        -- A row ON CONFLICT dropped is not there (its id was never used, or
        -- belongs to another call).
        IF NOT EXISTS (SELECT 1 FROM public.calls c
                        WHERE c.id = v_alert.call_id
                          AND c.{{ calls.call_id }} IS NOT DISTINCT FROM v_alert.external_call_id) THEN
            CONTINUE;
        END IF;
        IF v_alert.alert_type = '_recheck' THEN
            -- A rewrite of the outcome runs every call rule on the row (the
            -- rule trigger's WHEN clause is the rules themselves).
            UPDATE public.calls c SET session_outcome = c.session_outcome WHERE c.id = v_alert.call_id;
        ELSE
            PERFORM consistency.raise_alert(v_alert.alert_type, 'warning', 'call', v_alert.call_id,
                                            v_alert.description, v_alert.metadata, true);
        END IF;
    END LOOP;
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
     WHERE a.deleted_at IS NULL AND a.status <> 'cancelled';
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
             WHERE a.deleted_at IS NULL AND a.status <> 'cancelled'
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
               appointment_link_status = CASE WHEN c.active_appointment_count + r.n > 0 THEN {{ link.linked }}
                                              WHEN c.appointment_link_status = {{ link.linked }} THEN {{ link.cancelled }}
                                              ELSE c.appointment_link_status END,
               appointment_made        = c.active_appointment_count + r.n > 0,
               appointment_linked_at   = CASE WHEN c.appointment_link_status <> {{ link.linked }}
                                               AND c.active_appointment_count + r.n > 0
                                              THEN {{ calls.appointment_linked_at.now() }}
                                              ELSE c.appointment_linked_at END
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

-- ---------------------------------------------------------------------------
-- Repair and inspection

-- Recompute counter and link fields of the given calls (NULL: all) from the
-- appointments; returns how many calls were changed. Used by the monitor
-- after a TRUNCATE, disabled triggers or a restore left the counter wrong.
CREATE OR REPLACE FUNCTION consistency._resync(p_call_ids bigint[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
AS $$
DECLARE
    v_changed integer;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        -- The recount must see every commit that precedes our locks, which a
        -- transaction snapshot taken earlier would not.
        RAISE EXCEPTION 'resync_calls needs READ COMMITTED, not %', current_setting('transaction_isolation')
            USING ERRCODE = 'invalid_transaction_state';
    END IF;

    -- First lock, in id order like the sync triggers: waits for every writer
    -- that already changed these calls' counters. The recount below is a new
    -- statement, so its snapshot sees their commits; writers that come later
    -- queue behind our locks and add their delta to the true count.
    PERFORM 1
       FROM public.calls c
      WHERE p_call_ids IS NULL OR c.id = ANY (p_call_ids)
      ORDER BY c.id
        FOR NO KEY UPDATE;

    -- Lets the counter guard through for this transaction only; a row of an
    -- owner-only table, which no application role can write.
    INSERT INTO consistency._resync_txn (xact) VALUES (pg_catalog.pg_current_xact_id())
        ON CONFLICT DO NOTHING;
    WITH t AS (
        SELECT c.id, count(a.id)::integer AS n
{% if calls.links %}
               , consistency._active_refs({{ link_array('c') }}) AS refs
{% endif %}
          FROM public.calls c
          LEFT JOIN public.appointments a
                 ON a.call_id = c.id AND a.deleted_at IS NULL AND a.status <> 'cancelled'
         WHERE p_call_ids IS NULL OR c.id = ANY (p_call_ids)
         GROUP BY c.id
    )
    UPDATE public.calls c
       SET active_appointment_count = t.n,
{% if calls.links %}
           active_appointment_refs  = t.refs,
{% endif %}
           appointment_link_status  = CASE WHEN t.n{{ with_links(' + t.refs') }} > 0 THEN {{ link.linked }}
                                           WHEN c.appointment_link_status = {{ link.linked }} THEN {{ link.cancelled }}
                                           ELSE c.appointment_link_status END,
           appointment_made         = t.n{{ with_links(' + t.refs') }} > 0,
           appointment_linked_at    = CASE WHEN t.n{{ with_links(' + t.refs') }} > 0 AND c.appointment_link_status <> {{ link.linked }}
                                           THEN {{ calls.appointment_linked_at.now() }}
                                           ELSE c.appointment_linked_at END
      FROM t
     WHERE c.id = t.id
       AND (c.active_appointment_count <> t.n
{% if calls.links %}
            OR c.active_appointment_refs <> t.refs
{% endif %}
            OR (c.appointment_link_status = {{ link.linked }}) <> (t.n{{ with_links(' + t.refs') }} > 0)
            OR c.appointment_made <> (t.n{{ with_links(' + t.refs') }} > 0));
    GET DIAGNOSTICS v_changed = ROW_COUNT;
    DELETE FROM consistency._resync_txn WHERE xact = pg_catalog.pg_current_xact_id();
    RETURN v_changed;
END
$$;

CREATE OR REPLACE FUNCTION consistency.resync_calls(p_call_ids bigint[] DEFAULT NULL)
RETURNS integer
LANGUAGE sql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT consistency._resync(p_call_ids) $$;

COMMENT ON FUNCTION consistency.resync_calls(bigint[]) IS
    'Recompute active_appointment_count and the link fields of these calls (NULL: all) from '
    'their appointments, locking them in id order; returns the number of calls changed.';

-- Every call that breaks G1 or G2, or whose counter disagrees with its
-- appointments (which would break G1 on the next change). Writes nothing.
CREATE OR REPLACE FUNCTION consistency.violations()
RETURNS TABLE (call_id bigint, rule text, expected text, actual text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH t AS (
        SELECT c.id, c.appointment_link_status, c.appointment_made, c.active_appointment_count,
{% if calls.links %}
               c.active_appointment_refs,
               consistency._active_refs({{ link_array('c') }}) AS refs,
{% endif %}
               count(a.id)::integer AS n
          FROM public.calls c
          LEFT JOIN public.appointments a
                 ON a.call_id = c.id AND a.deleted_at IS NULL AND a.status <> 'cancelled'
         GROUP BY c.id
    )
    SELECT t.id, v.rule, v.expected, v.actual
      FROM t
     CROSS JOIN LATERAL (VALUES
           ('G1_link',
            CASE WHEN t.n{{ with_links(' + t.refs') }} > 0 THEN 'linked' ELSE 'not linked' END,
            t.appointment_link_status,
            (t.appointment_link_status = {{ link.linked }}) <> (t.n{{ with_links(' + t.refs') }} > 0)),
           ('G2_flag',
            (t.appointment_link_status = {{ link.linked }})::text,
            t.appointment_made::text,
            t.appointment_made <> (t.appointment_link_status = {{ link.linked }})),
{% if calls.links %}
           ('active_appointment_refs',
            t.refs::text,
            t.active_appointment_refs::text,
            t.active_appointment_refs <> t.refs),
{% endif %}
           ('active_appointment_count',
            t.n::text,
            t.active_appointment_count::text,
            t.active_appointment_count <> t.n)) AS v(rule, expected, actual, broken)
     WHERE v.broken
     ORDER BY t.id, v.rule
$$;

COMMENT ON FUNCTION consistency.violations() IS
    'Calls breaking G1 (link status vs active appointments), G2 (appointment_made vs link status) '
    'or whose active_appointment_count is wrong; read-only.';

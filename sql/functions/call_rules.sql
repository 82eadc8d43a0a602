-- Guarantees G2 and G4-G7 (see DESIGN.md "Guarantees"), the call side: the
-- functions of the triggers of sql/triggers/call_rules.sql. Their rights
-- are those of the appointment side (appointment_link_sync.sql).
--
-- Call side (G2, G4-G7): BEFORE ROW triggers (sql/triggers/call_rules.sql)
-- limited by column lists and WHEN clauses, so that unrelated application
-- writes never call PL/pgSQL and the sync's UPDATE (which writes
-- consistent rows, and none of the rule columns) skips them on a bitmap test.

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

-- Post-booking validation and the atomic rollback of a failed booking.

-- Read-only, yet SECURITY DEFINER: whoever validates (the application's
-- login, a DBA from the CLI) runs the owner's code only where PostgreSQL
-- keeps it to the owner's rights (orchestrator/owner_code.py).
CREATE OR REPLACE FUNCTION consistency.validate_booking(
    p_call_id             bigint,
    p_appointment_id      bigint DEFAULT NULL,
    p_external_booking_id text DEFAULT NULL)
RETURNS TABLE (ok boolean, reason text, details jsonb)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_made     boolean;
    v_outcome  text;
    v_link     text;
    v_appt     public.appointments%ROWTYPE;
    v_age      numeric;
    v_max_age  int;
    v_issues   text[] := ARRAY[]::text[];
{% if calls.links %}
    -- Appointments the call points at through its own link columns.
    v_links    bigint[];
{% endif %}
BEGIN
    PERFORM consistency._require_id(p_call_id, 'call_id');
    IF p_external_booking_id IS NOT NULL AND btrim(p_external_booking_id) = '' THEN
        RAISE EXCEPTION 'external_booking_id must not be empty (pass NULL to skip the check)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    SELECT c.appointment_made, c.session_outcome, c.appointment_link_status{{ with_links(', ' + link_array('c')) }}
      INTO v_made, v_outcome, v_link{{ with_links(', v_links') }}
      FROM public.calls c
     WHERE c.id = p_call_id;
    -- _require_call's error, raised here: reading the call through it would
    -- cost each validation 5-10 us (a fifth of its time in the server).
    IF NOT FOUND THEN
        RAISE EXCEPTION 'call % does not exist', p_call_id USING ERRCODE = 'no_data_found';
    END IF;

    -- 1. existence
    IF p_appointment_id IS NOT NULL THEN
        SELECT * INTO v_appt FROM public.appointments a WHERE a.id = p_appointment_id;
        IF NOT FOUND OR v_appt.deleted_at IS NOT NULL OR v_appt.status = 'cancelled' THEN
            RETURN QUERY SELECT false, 'appointment_not_found',
                jsonb_build_object('call_id', p_call_id, 'appointment_id', p_appointment_id,
                                   'state', CASE WHEN v_appt.id IS NULL THEN 'missing'
                                                 WHEN v_appt.deleted_at IS NOT NULL THEN 'deleted'
                                                 ELSE 'cancelled' END);
            RETURN;
        END IF;
    ELSE
        SELECT * INTO v_appt
          FROM public.appointments a
         WHERE {{ with_links('(') }}a.call_id = p_call_id{{ with_links(' OR a.id = ANY (v_links))') }}
           AND {{ active('a') }}
         ORDER BY a.created_at DESC, a.id DESC
         LIMIT 1;
        IF NOT FOUND THEN
            RETURN QUERY SELECT false, 'appointment_not_linked',
                jsonb_build_object('call_id', p_call_id);
            RETURN;
        END IF;
    END IF;

    -- 2. link
    IF v_appt.call_id IS DISTINCT FROM p_call_id{{ with_links(' AND v_appt.id <> ALL (v_links)') }} THEN
        RETURN QUERY SELECT false, 'appointment_wrong_call',
            jsonb_build_object('call_id', p_call_id, 'appointment_id', v_appt.id,
                               'appointment_call_id', v_appt.call_id,
                               'expected_call_id', p_call_id);
        RETURN;
    END IF;

    -- 3. external id
    IF p_external_booking_id IS NOT NULL
       AND v_appt.{{ appointments.booking_id }} IS DISTINCT FROM p_external_booking_id THEN
        RETURN QUERY SELECT false, 'external_booking_id_mismatch',
            jsonb_build_object('call_id', p_call_id, 'appointment_id', v_appt.id,
                               'expected_id', p_external_booking_id,
                               'actual_id', v_appt.{{ appointments.booking_id }});
        RETURN;
    END IF;

    -- 4. recency (a created_at of +/-infinity, or NULL, has no age: too old)
    IF isfinite(v_appt.created_at) THEN
        v_age := round(extract(epoch FROM consistency.now() - {{ appointments.created_at.convert('v_appt.created_at') }}), 3);
    END IF;
    v_max_age := consistency.setting_int('validation.max_appointment_age_seconds');
    IF v_age IS NULL OR v_age > v_max_age THEN
        RETURN QUERY SELECT false, 'appointment_too_old',
            jsonb_build_object('call_id', p_call_id, 'appointment_id', v_appt.id,
                               'created_at', v_appt.created_at,
                               'age_seconds', v_age, 'max_age_seconds', v_max_age);
        RETURN;
    END IF;

    -- 5. call flags
    IF NOT v_made THEN
        v_issues := v_issues || 'appointment_made_false'::text;
    END IF;
    IF v_outcome IS NULL OR v_outcome NOT IN ({{ outcome.booking }}) THEN
        v_issues := v_issues || 'session_outcome_not_booking'::text;
    END IF;
    IF v_link IS DISTINCT FROM {{ link.linked }} THEN
        v_issues := v_issues || 'link_status_not_linked'::text;
    END IF;
    IF cardinality(v_issues) > 0 THEN
        RETURN QUERY SELECT false, 'call_flags_inconsistent',
            jsonb_build_object('call_id', p_call_id, 'appointment_id', v_appt.id,
                               'issues', to_jsonb(v_issues),
                               'appointment_made', v_made, 'session_outcome', v_outcome,
                               'appointment_link_status', v_link);
        RETURN;
    END IF;

    RETURN QUERY SELECT true, NULL::text,
        jsonb_build_object('call_id', p_call_id, 'appointment_id', v_appt.id,
                           'external_booking_id', v_appt.{{ appointments.booking_id }},
                           'age_seconds', v_age, 'max_age_seconds', v_max_age);
END
$$;

CREATE OR REPLACE FUNCTION consistency._rollback_fields(p_call public.calls)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
RETURN jsonb_build_object('appointment_made', p_call.appointment_made,
                          'appointment_link_status', p_call.appointment_link_status,
                          'session_outcome', p_call.session_outcome,
                          'booking_failed', p_call.booking_failed,
                          'booking_failure_reason', p_call.booking_failure_reason,
                          'requires_manual_processing', p_call.requires_manual_processing);

-- One transaction does all of it (the caller's, or a savepoint of it): the
-- call's flags, the critical alert with its NOTIFY, the review item and the
-- audit row. Any error aborts every piece, and a NOTIFY of an aborted
-- transaction is never delivered, so no listener hears of a rollback that
-- did not happen.
CREATE OR REPLACE FUNCTION consistency.rollback_booking(
    p_call_id bigint,
    p_reason  text,
    p_actor   text DEFAULT 'system')
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_before     public.calls;
    v_after      public.calls;
    v_link_kept  boolean;
    v_alert_id   bigint;
    v_review_id  bigint;
    v_metadata   jsonb;
    v_desc       text;
    v_repeat     boolean;
BEGIN
    PERFORM consistency._require_id(p_call_id, 'call_id');
    PERFORM consistency._require_text(p_reason, 'rollback reason');
    PERFORM consistency._require_text(p_actor, 'actor');

    -- Lock the call first: two rollbacks of one call serialise here, and an
    -- appointment committed before the lock is seen by the next statement
    -- (READ COMMITTED takes a new snapshot per statement).
    v_before := consistency._require_call(p_call_id, p_lock => true);

    v_link_kept := EXISTS (SELECT 1 FROM public.appointments a
                            WHERE a.call_id = p_call_id
                              AND {{ active('a') }}){{ with_links('
                   OR consistency._active_refs(' + link_array('v_before') + ') > 0') }};

    -- Rolled back already, for this reason, and alerted: the call would not
    -- change, and the people who must act were told. A repeat (an
    -- application retrying, or a flood) is audited and adds no alert; the
    -- earlier alert's id is returned.
    IF v_before.booking_failed AND v_before.requires_manual_processing
       AND v_before.booking_failure_reason = p_reason
       AND (v_link_kept OR (NOT v_before.appointment_made
                            AND v_before.appointment_link_status = {{ link.creation_failed }}
                            AND v_before.session_outcome = {{ outcome.creation_failed }})) THEN
        SELECT max(a.id) INTO v_alert_id
          FROM consistency.alerts a
         WHERE a.entity_type = 'call' AND a.entity_id = p_call_id
           AND a.alert_type = 'appointment_rollback' AND a.metadata ->> 'reason' = p_reason;
    END IF;
    v_repeat := v_alert_id IS NOT NULL;

    IF v_repeat THEN
        v_after := v_before;
    ELSIF v_link_kept THEN
        -- G1 wins: the call has an active appointment, so its link fields
        -- and outcome stay what G1/G2/G5 make them; writing them here would
        -- only be corrected again (and alerted as session_outcome_corrected).
        UPDATE public.calls c
           SET booking_failed = true,
               booking_failure_reason = p_reason,
               requires_manual_processing = true,
               updated_at = {{ calls.updated_at.now() }}
         WHERE c.id = p_call_id
        RETURNING c.* INTO v_after;
    ELSE
        UPDATE public.calls c
           SET appointment_made = false,
               appointment_link_status = {{ link.creation_failed }},
               session_outcome = {{ outcome.creation_failed }},
               booking_failed = true,
               booking_failure_reason = p_reason,
               requires_manual_processing = true,
               updated_at = {{ calls.updated_at.now() }}
         WHERE c.id = p_call_id
        RETURNING c.* INTO v_after;
    END IF;

    v_metadata := jsonb_build_object('reason', p_reason, 'actor', p_actor,
                                     'link_kept', v_link_kept,
                                     'previous', consistency._rollback_fields(v_before));
    v_desc := format('booking of call %s rolled back: %s', p_call_id, p_reason);
    IF NOT v_repeat THEN
        v_alert_id := consistency.raise_alert('appointment_rollback', 'critical', 'call',
                                              p_call_id, v_desc, v_metadata);
    END IF;
    IF v_alert_id IS NULL THEN
        -- Throttled: the call was rolled back moments ago. Each rollback is
        -- an event someone must see, not a repeated symptom, so it is never
        -- suppressed; the metadata says it went past the throttle.
        v_alert_id := (consistency._insert_alerts('appointment_rollback', 'critical', 'call',
                                                  ARRAY[p_call_id], ARRAY[v_desc],
                                                  ARRAY[v_metadata || '{"throttle_bypassed": true}'],
                                                  false, consistency.now()))[1];
    END IF;

    v_review_id := consistency.review_enqueue(
        p_call_id, 'appointment_rollback',
        jsonb_build_object('alert_id', v_alert_id, 'reason', p_reason, 'link_kept', v_link_kept),
        1, p_actor);

    PERFORM consistency._audit(p_actor, 'booking.rollback', 'call', p_call_id::text,
                               consistency._rollback_fields(v_before),
                               consistency._rollback_fields(v_after)
                                   || jsonb_build_object('alert_id', v_alert_id,
                                                         'review_item_id', v_review_id,
                                                         'link_kept', v_link_kept,
                                                         'repeat', v_repeat));
    RETURN v_alert_id;
END
$$;

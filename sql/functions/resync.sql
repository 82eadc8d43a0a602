-- Repair and inspection of G1, G2 and the counter: resync_calls (the
-- monitor's repair, and the TRUNCATE trigger's recount) and violations(),
-- which lists what resync_calls would repair.

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
                 ON a.call_id = c.id AND {{ active('a') }}
         WHERE p_call_ids IS NULL OR c.id = ANY (p_call_ids)
         GROUP BY c.id
    )
    UPDATE public.calls c
       SET active_appointment_count = t.n,
{% if calls.links %}
           active_appointment_refs  = t.refs,
{% endif %}
           {{ link_fields('t.n' + with_links(' + t.refs')) }}
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
                 ON a.call_id = c.id AND {{ active('a') }}
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

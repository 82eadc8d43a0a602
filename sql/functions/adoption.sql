-- Installing on an existing application (DESIGN.md): indexes recognised by
-- definition, and the back-fill that brings existing rows to G1-G7.
-- Called by `consistency migrate` as the owner; no grant.

-- What makes two indexes equivalent: access method, key columns or
-- expressions with their operator classes, options and collations, and the
-- predicate, as PostgreSQL prints them. Not the name, not uniqueness, not
-- INCLUDE columns (a unique index serves the guard's lookups as well).
CREATE OR REPLACE FUNCTION consistency._index_signature(p_index oid)
RETURNS text
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT am.amname || ' ('
           || (SELECT string_agg(pg_get_indexdef(i.indexrelid, k, true) || ' ' || i.indclass[k - 1]
                                 || ' ' || i.indoption[k - 1] || ' ' || i.indcollation[k - 1],
                                 ', ' ORDER BY k)
                 FROM generate_series(1, i.indnkeyatts) AS k)
           || ')' || coalesce(' WHERE ' || pg_get_expr(i.indpred, i.indrelid, true), '')
      FROM pg_index i
      JOIN pg_class c ON c.oid = i.indexrelid
      JOIN pg_am am ON am.oid = c.relam
     WHERE i.indexrelid = p_index;
END;

-- Create the index p_definition ("(columns) [WHERE predicate]", the guard's
-- own text rendered with quoted profile values) on p_table, unless a valid
-- index of that table is equivalent. The definition is first built on an
-- empty temporary copy of the table, so that PostgreSQL itself normalises
-- it. The name is p_name when it is free (else, or when NULL, PostgreSQL
-- picks one). Returns the name of the index that serves, existing or new.
CREATE OR REPLACE FUNCTION consistency._ensure_index(p_table regclass, p_name text,
                                                     p_definition text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_shadow    text := format('cg_shadow_%s', p_table::oid);
    v_wanted    text;
    v_existing  text;
    v_name      text;
BEGIN
    IF to_regclass(format('pg_temp.%I', v_shadow)) IS NULL THEN
        EXECUTE format('CREATE TEMPORARY TABLE %I (LIKE %s) ON COMMIT DROP', v_shadow, p_table);
    END IF;
    EXECUTE format('CREATE INDEX cg_shadow_index ON pg_temp.%I %s', v_shadow, p_definition);
    v_wanted := consistency._index_signature(to_regclass('pg_temp.cg_shadow_index'));
    DROP INDEX pg_temp.cg_shadow_index;

    SELECT c.relname INTO v_existing
      FROM pg_index i
      JOIN pg_class c ON c.oid = i.indexrelid
     WHERE i.indrelid = p_table AND i.indisvalid
       AND consistency._index_signature(i.indexrelid) = v_wanted
     ORDER BY c.relname = p_name DESC, c.relname
     LIMIT 1;
    IF v_existing IS NOT NULL THEN
        RETURN v_existing;
    END IF;

    IF p_name IS NOT NULL
       AND to_regclass(format('%I.%I', (SELECT n.nspname FROM pg_class c
                                          JOIN pg_namespace n ON n.oid = c.relnamespace
                                         WHERE c.oid = p_table), p_name)) IS NULL THEN
        EXECUTE format('CREATE INDEX %I ON %s %s', p_name, p_table, p_definition);
        v_name := p_name;
    ELSE
        EXECUTE format('CREATE INDEX ON %s %s', p_table, p_definition);
        SELECT c.relname INTO v_name
          FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
         WHERE i.indrelid = p_table AND consistency._index_signature(i.indexrelid) = v_wanted
         ORDER BY c.oid DESC
         LIMIT 1;
    END IF;
    -- uninstall drops what the guard created, never an application's index.
    INSERT INTO consistency.installed_objects (kind, table_name, name)
    SELECT 'index', c.relname, v_name FROM pg_class c WHERE c.oid = p_table
    ON CONFLICT DO NOTHING;
    RETURN v_name;
END
$$;

-- The back-fill of an install: every existing call brought to G1-G7 as the
-- triggers would have left it, in one pass under lock, one audit row per
-- kind of change and one summary alert (none when nothing changed). Returns
-- what it changed (also what `migrate --dry-run` prints: the same
-- transaction, rolled back).
--
-- The triggers see the rows it writes: each row is written whole (counters,
-- link fields, outcome, direction, customer fields in one UPDATE), so the
-- call rules find nothing left to correct and raise no alert of their own.
--
-- What the back-fill decides that a trigger decides from the write it sees:
-- a call without an active appointment that still says linked, or reports
-- a booking, but has appointments (cancelled or deleted) lost them: G3,
-- cancelled. One that says linked with no appointment at all was never
-- linked: G1 makes it unlinked, and G4 a booking in flight when it reports
-- one (the monitor then rolls it back as a booking without appointment).
-- SECURITY DEFINER (like _ensure_index): migrate run by a DBA for the owner
-- calls it, and its writes fire the application's triggers on calls.
CREATE OR REPLACE FUNCTION consistency._adopt(p_profile text)
RETURNS TABLE (rule text, column_name text, to_value text, from_values jsonb, rows bigint)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
AS $$
DECLARE
    v_plan    jsonb;
    v_calls   bigint;
BEGIN
    -- Nothing may change between counting and writing (as in 0004): writers
    -- of appointments first, the order in which they reach calls.
    LOCK TABLE public.appointments IN SHARE MODE;
    LOCK TABLE public.calls IN EXCLUSIVE MODE;

    -- Lets the counter guard through (the counters are written with the
    -- link fields they imply); see consistency._resync.
    INSERT INTO consistency._resync_txn (xact) VALUES (pg_catalog.pg_current_xact_id())
        ON CONFLICT DO NOTHING;

    -- One statement: every call's target, the calls that change, their
    -- UPDATE, and the changes by kind (from the rows as they were).
    WITH a AS (
        SELECT a.call_id,
               count(*) FILTER (WHERE {{ active('a') }}) AS n,
               min(a.created_at) FILTER (WHERE {{ active('a') }}) AS first_at
          FROM public.appointments a
         WHERE a.call_id IS NOT NULL
         GROUP BY a.call_id
    ), t AS (
        SELECT c.id, c.active_appointment_count AS count0, c.active_appointment_refs AS refs0,
               coalesce(a.n, 0)::integer AS n, ({{ link_count() }})::integer AS refs,
               a.call_id IS NOT NULL{% for column in calls.links %} OR c.{{ column }} IS NOT NULL{% endfor %} AS had,
               c.appointment_link_status::text AS status0, c.appointment_made AS made0,
               c.appointment_linked_at AS linked_at0, c.session_outcome::text AS outcome0,
               c.direction::text AS direction0, c.customer_id, c.customer_link_status::text AS customer0,
               c.customer_linked_at AS customer_at0, c.customer_link_method::text AS method0,
               coalesce({{ calls.appointment_linked_at.convert(appointments.created_at.convert('a.first_at')) }},
                        {{ calls.appointment_linked_at.now() }}) AS first_at,
               coalesce({{ calls.customer_linked_at.convert(calls.created_at.convert('c.created_at')) }},
                        {{ calls.customer_linked_at.now() }}) AS created_at
          FROM public.calls c
          LEFT JOIN a ON a.call_id = c.id{{ link_joins('c') }}
    ), g1 AS (
        SELECT t.*, t.n + t.refs > 0 AS linked,
               CASE WHEN t.n + t.refs > 0 THEN {{ link.linked }}
                    WHEN t.status0 = {{ link.linked }} AND t.had THEN {{ link.cancelled }}
                    WHEN t.status0 = {{ link.linked }} THEN {{ link.unlinked }}
                    ELSE t.status0 END AS status1
          FROM t
    ), g4 AS (
        SELECT g1.*,
               CASE WHEN NOT g1.linked AND g1.outcome0 = {{ outcome.appointment_booked }}
                         AND g1.status1 NOT IN ({{ link.pending_creation }}, {{ link.cancelled }}, {{ link.creation_failed }})
                    THEN CASE WHEN g1.had THEN {{ link.cancelled }} ELSE {{ link.pending_creation }} END
                    WHEN NOT g1.linked AND g1.status1 = {{ link.pending_creation }}
                         AND (g1.outcome0 IS NULL OR g1.outcome0 NOT IN ({{ outcome.booking }}))
                    THEN {{ link.unlinked }}
                    ELSE g1.status1 END AS status
          FROM g1
    ), target AS (
        SELECT g4.id, g4.count0, g4.n, g4.refs0, g4.refs,
               g4.status0, g4.status,
               g4.made0, g4.linked AS made,
               g4.linked_at0,
               CASE WHEN g4.linked AND g4.status0 IS DISTINCT FROM {{ link.linked }}
                    THEN coalesce(g4.linked_at0, g4.first_at) ELSE g4.linked_at0 END AS linked_at,
               g4.outcome0,
               CASE WHEN g4.linked AND g4.outcome0 IS NOT NULL AND g4.outcome0 NOT IN ({{ outcome.booking }})
                    THEN {{ outcome.appointment_booked }} ELSE g4.outcome0 END AS outcome,
               g4.direction0,
               CASE WHEN g4.direction0 IS NULL OR g4.direction0 = '' THEN {{ direction.inbound }}
                    ELSE g4.direction0 END AS direction,
               g4.customer0,
               CASE WHEN g4.customer_id IS NOT NULL THEN {{ customer.linked }}
                    WHEN g4.customer0 = {{ customer.linked }} THEN {{ customer.unlinked }}
                    ELSE g4.customer0 END AS customer,
               g4.customer_at0,
               CASE WHEN g4.customer_id IS NOT NULL
                         AND (g4.customer0 IS DISTINCT FROM {{ customer.linked }} OR g4.customer_at0 IS NULL)
                    THEN coalesce(g4.customer_at0, g4.created_at)
                    WHEN g4.customer_id IS NULL AND g4.customer0 = {{ customer.linked }} THEN NULL
                    ELSE g4.customer_at0 END AS customer_at,
               g4.method0,
               CASE WHEN g4.customer_id IS NOT NULL
                         AND (g4.customer0 IS DISTINCT FROM {{ customer.linked }} OR g4.customer_at0 IS NULL)
                    THEN coalesce(g4.method0, {{ method.phone_match }})
                    WHEN g4.customer_id IS NULL AND g4.customer0 = {{ customer.linked }} THEN NULL
                    ELSE g4.method0 END AS method
          FROM g4
    ), x AS (
        SELECT * FROM target x
         WHERE x.count0 <> x.n OR x.refs0 <> x.refs
            OR x.status0 IS DISTINCT FROM x.status OR x.made0 <> x.made
            OR x.linked_at0 IS DISTINCT FROM x.linked_at
            OR x.outcome0 IS DISTINCT FROM x.outcome OR x.direction0 IS DISTINCT FROM x.direction
            OR x.customer0 IS DISTINCT FROM x.customer OR x.customer_at0 IS DISTINCT FROM x.customer_at
            OR x.method0 IS DISTINCT FROM x.method
    ), written AS (
        -- Each row whole: the call rules see nothing left to correct.
        UPDATE public.calls c
           SET active_appointment_count = x.n,
               active_appointment_refs = x.refs,
               appointment_link_status = x.status,
               appointment_made = x.made,
               appointment_linked_at = x.linked_at,
               session_outcome = x.outcome,
               direction = x.direction,
               customer_link_status = x.customer,
               customer_linked_at = x.customer_at,
               customer_link_method = x.method
          FROM x
         WHERE c.id = x.id
        RETURNING c.id
    ), changes AS (
        SELECT ch.rule, ch.column_name, ch.to_value, ch.from_value, x.id
          FROM x
         CROSS JOIN LATERAL (VALUES
               ('counter', 'active_appointment_count', x.n::text, x.count0::text),
               ('counter', 'active_appointment_refs', x.refs::text, x.refs0::text),
               (CASE x.status WHEN {{ link.linked }} THEN 'G1'
                              WHEN {{ link.pending_creation }} THEN 'G4'
                              WHEN {{ link.cancelled }} THEN 'G3'
                              ELSE CASE WHEN x.status0 = {{ link.pending_creation }} THEN 'G4' ELSE 'G1' END
                END, 'appointment_link_status', x.status, x.status0),
               ('G2', 'appointment_made', x.made::text, x.made0::text),
               ('G1', 'appointment_linked_at',
                CASE WHEN x.linked_at IS DISTINCT FROM x.linked_at0 THEN 'set' END, NULL),
               ('G5', 'session_outcome', x.outcome, x.outcome0),
               ('G6', 'direction', x.direction, x.direction0),
               ('G7', 'customer_link_status', x.customer, x.customer0),
               ('G7', 'customer_linked_at',
                CASE WHEN x.customer_at IS NOT DISTINCT FROM x.customer_at0 THEN NULL
                     WHEN x.customer_at IS NULL THEN 'cleared' ELSE 'set' END, NULL),
               ('G7', 'customer_link_method', x.method, x.method0))
               AS ch(rule, column_name, to_value, from_value)
         WHERE ch.to_value IS DISTINCT FROM ch.from_value
           AND NOT (ch.column_name IN ('appointment_linked_at', 'customer_linked_at')
                    AND ch.to_value IS NULL)
    ), kinds AS (
        SELECT k.rule, k.column_name, k.to_value, count(*) AS rows,
               jsonb_agg(k.id ORDER BY k.id) AS ids
          FROM changes k
         GROUP BY k.rule, k.column_name, k.to_value
    ), froms AS (
        SELECT f.rule, f.column_name, f.to_value,
               jsonb_object_agg(coalesce(f.from_value, 'NULL'), f.n) AS from_values
          FROM (SELECT k.rule, k.column_name, k.to_value, k.from_value, count(*) AS n
                  FROM changes k GROUP BY k.rule, k.column_name, k.to_value, k.from_value) f
         GROUP BY f.rule, f.column_name, f.to_value
    )
    SELECT (SELECT count(*) FROM written),
           coalesce(jsonb_agg(jsonb_build_object(
               'rule', k.rule, 'column_name', k.column_name, 'to_value', k.to_value,
               'from_values', f.from_values, 'rows', k.rows, 'ids', k.ids)
               ORDER BY k.column_name, k.rule, k.to_value), '[]')
      INTO v_calls, v_plan
      FROM kinds k
      JOIN froms f ON f.rule = k.rule AND f.column_name = k.column_name
                  AND f.to_value IS NOT DISTINCT FROM k.to_value;

    DELETE FROM consistency._resync_txn WHERE xact = pg_catalog.pg_current_xact_id();

    -- One audit row per kind of change of the application's columns, with
    -- every call it changed (the counters are the guard's own).
    PERFORM consistency._audit(
                'consistency migrate', 'adoption.backfill', 'calls', k ->> 'column_name',
                jsonb_build_object('values', k -> 'from_values'),
                jsonb_build_object('rule', k -> 'rule', 'value', k -> 'to_value',
                                   'rows', k -> 'rows', 'call_ids', k -> 'ids',
                                   'profile', p_profile))
       FROM jsonb_array_elements(v_plan) AS k
      WHERE k ->> 'rule' <> 'counter';

    IF EXISTS (SELECT 1 FROM jsonb_array_elements(v_plan) AS k WHERE k ->> 'rule' <> 'counter') THEN
        PERFORM consistency.raise_alert(
            'adoption_backfill', 'warning', 'system', 0,
            format('consistency migrate brought existing calls to the guarantees G1-G7 (profile '
                   '%s); audit_log action adoption.backfill lists each change', p_profile),
            jsonb_build_object('calls_written', v_calls, 'profile', p_profile,
                               'rows_per_column',
                               (SELECT jsonb_object_agg(c.name, c.n)
                                  FROM (SELECT k ->> 'column_name' AS name,
                                               sum((k ->> 'rows')::bigint) AS n
                                          FROM jsonb_array_elements(v_plan) AS k
                                         WHERE k ->> 'rule' <> 'counter'
                                         GROUP BY 1) c)),
            true);
    END IF;

    RETURN QUERY
    SELECT k ->> 'rule', k ->> 'column_name', k ->> 'to_value', k -> 'from_values',
           (k ->> 'rows')::bigint
      FROM jsonb_array_elements(v_plan) AS k;
END
$$;

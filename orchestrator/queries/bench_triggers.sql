-- Named queries of `consistency bench triggers`. Everything here runs in the
-- benchmark's scratch database only, as a superuser.

-- name: bench_triggers_setup --
-- The "naive" variant: what the original system shipped, one UPDATE of calls
-- per appointment row, link state recomputed with EXISTS on the way out, and
-- the call rules as a plain row trigger without a WHEN clause.
-- bench_set_variant() switches between the three variants by enabling and
-- disabling triggers, so every variant runs on the same data and plans.
CREATE FUNCTION public.bench_naive_sync() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.call_id IS NOT NULL THEN
        UPDATE public.calls c
           SET appointment_made = x.active,
               appointment_link_status = CASE WHEN x.active THEN 'linked' ELSE 'cancelled' END
          FROM (SELECT EXISTS (SELECT 1 FROM public.appointments a
                                WHERE a.call_id = OLD.call_id AND a.deleted_at IS NULL
                                  AND a.status <> 'cancelled') AS active) x
         WHERE c.id = OLD.call_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.call_id IS NOT NULL
       AND NEW.deleted_at IS NULL AND NEW.status <> 'cancelled' THEN
        UPDATE public.calls
           SET appointment_made = true, appointment_link_status = 'linked',
               appointment_linked_at = coalesce(appointment_linked_at, now())
         WHERE id = NEW.call_id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER bench_naive_sync
    AFTER INSERT OR UPDATE OR DELETE ON public.appointments
    FOR EACH ROW EXECUTE FUNCTION public.bench_naive_sync();

CREATE FUNCTION public.bench_naive_call_rules() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.direction IS NULL OR NEW.direction = '' THEN
        NEW.direction := 'inbound';
    END IF;
    IF NEW.session_outcome = 'appointment_booked'
       AND NEW.appointment_link_status NOT IN ('linked', 'pending_creation', 'cancelled',
                                               'creation_failed')
       AND NOT EXISTS (SELECT 1 FROM public.appointments a
                        WHERE a.call_id = NEW.id AND a.deleted_at IS NULL
                          AND a.status <> 'cancelled') THEN
        NEW.appointment_link_status := 'pending_creation';
    END IF;
    IF NEW.customer_id IS NOT NULL AND NEW.customer_link_status <> 'linked' THEN
        NEW.customer_link_status := 'linked';
        NEW.customer_linked_at := now();
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER bench_naive_call_rules
    BEFORE INSERT OR UPDATE OF session_outcome, direction, customer_id ON public.calls
    FOR EACH ROW EXECUTE FUNCTION public.bench_naive_call_rules();

CREATE FUNCTION public.bench_set_variant(p_variant text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    IF p_variant NOT IN ('baseline', 'row_level', 'guard') THEN
        RAISE EXCEPTION 'unknown variant %%', p_variant;
    END IF;
    FOR r IN
        SELECT t.tgrelid::regclass AS rel, t.tgname,
               CASE WHEN t.tgname LIKE 'bench\_naive\_%%' THEN p_variant = 'row_level'
                    ELSE p_variant = 'guard' END AS enabled
          FROM pg_trigger t
         WHERE t.tgrelid IN ('public.calls'::regclass, 'public.appointments'::regclass)
           AND NOT t.tgisinternal
    LOOP
        EXECUTE format('ALTER TABLE %%s %%s TRIGGER %%I', r.rel,
                       CASE WHEN r.enabled THEN 'ENABLE' ELSE 'DISABLE' END, r.tgname);
    END LOOP;
END
$$;

-- Calls a voice agent has not booked on yet: half of the dataset's unlinked
-- calls are still in progress (no outcome), half were reported booked and
-- wait for their appointment (G4, pending_creation). Both are what a first
-- appointment meets; written consistent, with the guard's triggers bypassed.
SET session_replication_role = replica;
UPDATE public.calls
   SET session_outcome = CASE WHEN id %% 2 = 0 THEN NULL ELSE 'appointment_booked' END,
       appointment_link_status = CASE WHEN id %% 2 = 0 THEN 'unlinked' ELSE 'pending_creation' END
 WHERE appointment_link_status = 'unlinked';
SET session_replication_role = origin;

-- One sample of a workload, timed inside the server (clock_timestamp()
-- around the statements only): single-row kinds run one statement per id,
-- the others one statement for all ids. Returns milliseconds.
CREATE FUNCTION public.bench_workload(p_kind text, p_ids bigint[], p_targets bigint[],
                                      p_tag text) RETURNS double precision
LANGUAGE plpgsql AS $$
DECLARE
    v_start timestamptz;
    v_id    bigint;
BEGIN
    v_start := clock_timestamp();
    CASE p_kind
    WHEN 'insert_one' THEN
        FOR i IN 1 .. cardinality(p_ids) LOOP
            INSERT INTO public.appointments (call_id, company_id, service_id, starts_at, ends_at,
                                             status, external_booking_id, source)
            VALUES (p_ids[i], 1, 1, now() + interval '1 day', now() + interval '1 day 30 minutes',
                    'scheduled', p_tag || '-' || i, 'voice_agent');
        END LOOP;
    WHEN 'insert_many' THEN
        INSERT INTO public.appointments (call_id, company_id, service_id, starts_at, ends_at,
                                         status, external_booking_id, source)
        SELECT u.call_id, 1, 1, now() + interval '1 day', now() + interval '1 day 30 minutes',
               'scheduled', p_tag || '-' || u.ord, 'voice_agent'
          FROM unnest(p_ids) WITH ORDINALITY AS u(call_id, ord);
    WHEN 'cancel' THEN
        FOREACH v_id IN ARRAY p_ids LOOP
            UPDATE public.appointments SET status = 'cancelled', updated_at = now() WHERE id = v_id;
        END LOOP;
    WHEN 'soft_delete' THEN
        FOREACH v_id IN ARRAY p_ids LOOP
            UPDATE public.appointments SET deleted_at = now(), updated_at = now() WHERE id = v_id;
        END LOOP;
    WHEN 'move' THEN
        FOR i IN 1 .. cardinality(p_ids) LOOP
            UPDATE public.appointments SET call_id = p_targets[i], updated_at = now()
             WHERE id = p_ids[i];
        END LOOP;
    WHEN 'delete_many' THEN
        DELETE FROM public.appointments WHERE id = ANY (p_ids);
    WHEN 'outcome' THEN
        FOREACH v_id IN ARRAY p_ids LOOP
            UPDATE public.calls SET session_outcome = 'appointment_booked', updated_at = now()
             WHERE id = v_id;
        END LOOP;
    END CASE;
    RETURN extract(epoch FROM clock_timestamp() - v_start) * 1000.0;
END
$$;

-- What a committed sample changes, put back afterwards (on another
-- connection, with the triggers bypassed), so that every sample starts from
-- the same data: the calls it may touch and their appointments as they were,
-- and the highest appointment and alert ids before it.
CREATE UNLOGGED TABLE public.bench_saved_calls (LIKE public.calls);
CREATE UNLOGGED TABLE public.bench_saved_appointments (LIKE public.appointments);
CREATE UNLOGGED TABLE public.bench_saved_marks (appointments bigint, alerts bigint);

CREATE FUNCTION public.bench_save(p_calls bigint[], p_appointments bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_calls bigint[];
BEGIN
    DELETE FROM public.bench_saved_calls;
    DELETE FROM public.bench_saved_appointments;
    DELETE FROM public.bench_saved_marks;
    v_calls := ARRAY(SELECT unnest(p_calls)
                     UNION
                     SELECT a.call_id FROM public.appointments a
                      WHERE a.id = ANY (p_appointments) AND a.call_id IS NOT NULL);
    INSERT INTO public.bench_saved_calls SELECT * FROM public.calls WHERE id = ANY (v_calls);
    INSERT INTO public.bench_saved_appointments
    SELECT * FROM public.appointments WHERE id = ANY (p_appointments) OR call_id = ANY (v_calls);
    INSERT INTO public.bench_saved_marks
    SELECT (SELECT max(id) FROM public.appointments),
           (SELECT coalesce(max(id), 0) FROM consistency.alerts);
END
$$;

CREATE FUNCTION public.bench_restore() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_marks public.bench_saved_marks;
    v_calls text;
    v_appointments text;
BEGIN
    SELECT * INTO v_marks FROM public.bench_saved_marks;
    SELECT string_agg(format('%%I', attname), ', ' ORDER BY attnum) INTO v_calls
      FROM pg_attribute WHERE attrelid = 'public.calls'::regclass AND attnum > 0 AND NOT attisdropped;
    SELECT string_agg(format('%%I', attname), ', ' ORDER BY attnum) INTO v_appointments
      FROM pg_attribute WHERE attrelid = 'public.appointments'::regclass AND attnum > 0
                          AND NOT attisdropped;
    PERFORM set_config('session_replication_role', 'replica', true);
    -- The saved tables have no statistics: the statements below would be
    -- estimated at thousands of rows and JIT-compiled, seconds per sample.
    PERFORM set_config('jit', 'off', true);
    DELETE FROM public.appointments WHERE id > v_marks.appointments;
    DELETE FROM public.appointments a USING public.bench_saved_appointments s WHERE a.id = s.id;
    EXECUTE format('INSERT INTO public.appointments (%%s) SELECT %%s FROM public.bench_saved_appointments',
                   v_appointments, v_appointments);
    EXECUTE format('UPDATE public.calls c SET (%%s) = ROW(s.*) FROM public.bench_saved_calls s
                     WHERE s.id = c.id', v_calls);
    DELETE FROM consistency.relay_deliveries WHERE alert_id > v_marks.alerts;
    DELETE FROM consistency.alerts WHERE id > v_marks.alerts;
    DELETE FROM consistency.alert_throttle;
    PERFORM set_config('session_replication_role', 'origin', true);
END
$$;

-- name: bench_triggers_set_variant --
SELECT public.bench_set_variant(%(variant)s)

-- name: bench_triggers_pools --
-- The ids the workloads draw from: calls already linked (a second
-- appointment), calls not linked yet (a first appointment), calls awaiting
-- the agent's outcome, every appointment, and the appointments that are
-- their call's only active one (cancelling or deleting it unlinks the call).
SELECT 'linked', array_agg(id ORDER BY id) FROM public.calls WHERE appointment_link_status = 'linked'
UNION ALL
SELECT 'open', array_agg(id ORDER BY id) FROM public.calls
 WHERE appointment_link_status IN ('unlinked', 'pending_creation')
UNION ALL
SELECT 'no_outcome', array_agg(id ORDER BY id) FROM public.calls
 WHERE appointment_link_status = 'unlinked' AND session_outcome IS NULL
UNION ALL
SELECT 'appointments', array_agg(id ORDER BY id) FROM public.appointments
UNION ALL
SELECT 'only', array_agg(a.id ORDER BY a.id)
  FROM public.appointments a JOIN public.calls c ON c.id = a.call_id
 WHERE c.active_appointment_count = 1 AND a.deleted_at IS NULL AND a.status <> 'cancelled'

-- name: bench_triggers_sample --
SELECT public.bench_workload(%(kind)s, %(ids)s::bigint[], %(targets)s::bigint[], %(tag)s)

-- name: bench_triggers_save --
SELECT public.bench_save(%(calls)s::bigint[], %(appointments)s::bigint[])

-- name: bench_triggers_restore --
SELECT public.bench_restore()

-- name: bench_triggers_violations --
SELECT count(*) FROM consistency.violations()

-- Named queries of `consistency bench triggers`. Everything here runs in the
-- benchmark's scratch database only.

-- name: bench_triggers_setup --
-- The "naive" variant: what the original system shipped, one UPDATE of calls
-- per appointment row, link state recomputed with EXISTS on the way out.
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
               CASE WHEN t.tgname = 'bench_naive_sync' THEN p_variant = 'row_level'
                    ELSE p_variant = 'guard' END AS enabled
          FROM pg_trigger t
          JOIN pg_proc p ON p.oid = t.tgfoid
         WHERE t.tgrelid IN ('public.calls'::regclass, 'public.appointments'::regclass)
           AND NOT t.tgisinternal
    LOOP
        EXECUTE format('ALTER TABLE %%s %%s TRIGGER %%I', r.rel,
                       CASE WHEN r.enabled THEN 'ENABLE' ELSE 'DISABLE' END, r.tgname);
    END LOOP;
END
$$;

-- name: bench_triggers_set_variant --
SELECT public.bench_set_variant(%(variant)s)

-- name: bench_triggers_linked_calls --
SELECT id FROM public.calls WHERE appointment_link_status = 'linked' ORDER BY id

-- name: bench_triggers_appointment_ids --
SELECT id FROM public.appointments ORDER BY id

-- name: bench_triggers_insert_one --
INSERT INTO public.appointments (call_id, company_id, service_id, starts_at, ends_at, status,
                                 external_booking_id, source)
VALUES (%(call)s, 1, 1, now() + interval '1 day', now() + interval '1 day 30 minutes',
        'scheduled', %(tag)s, 'voice_agent')

-- name: bench_triggers_insert_many --
INSERT INTO public.appointments (call_id, company_id, service_id, starts_at, ends_at, status,
                                 external_booking_id, source)
SELECT u.call_id, 1, 1, now() + interval '1 day', now() + interval '1 day 30 minutes',
       'scheduled', %(tag)s || '-' || u.ord, 'voice_agent'
  FROM unnest(%(calls)s::bigint[]) WITH ORDINALITY AS u(call_id, ord)

-- name: bench_triggers_delete_many --
DELETE FROM public.appointments WHERE id = ANY (%(ids)s::bigint[])

-- name: bench_triggers_violations --
SELECT count(*) FROM consistency.violations()

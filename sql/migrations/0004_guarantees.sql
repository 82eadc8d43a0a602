-- Guarantees G1-G7: the per-call counter of active appointments that the
-- appointment-side sync triggers keep with relative updates (n = n + delta).
--
-- Why a counter: at READ COMMITTED a set-based UPDATE that recomputes "has an
-- active appointment" from a subquery reads the statement's snapshot, which
-- cannot see a concurrent transaction's commit; two writers racing on one call
-- then leave it wrong. A relative update is re-applied by PostgreSQL to the
-- newest row version after waiting for the other writer, so it is right in
-- every commit order.

-- Lock order: appointments before calls, the order in which a writer of
-- appointments reaches calls (its own row lock, then the foreign-key check and
-- the sync trigger on calls). SHARE blocks writers of appointments until this
-- transaction commits and waits for those in flight, so the count below is
-- exact: no appointment can change between counting it and the triggers
-- (installed in this same transaction) taking over.
LOCK TABLE public.appointments IN SHARE MODE;
LOCK TABLE public.calls IN ACCESS EXCLUSIVE MODE;

ALTER TABLE public.calls
    ADD COLUMN IF NOT EXISTS active_appointment_count integer NOT NULL DEFAULT 0;

-- Every appointment write now updates its call's row. Leaving room on each
-- page lets those updates be HOT (the counter is in no index, and the link
-- columns only change when a call crosses zero): no index entries to add,
-- no page to find. Applies to pages written from now on (and after a
-- VACUUM FULL or CLUSTER of an existing table).
ALTER TABLE public.calls SET (fillfactor = 85);

COMMENT ON COLUMN public.calls.active_appointment_count IS
    'Active appointments of this call (deleted_at IS NULL AND status <> ''cancelled''), kept by '
    'the guard''s triggers; direct writes are refused. Repair with consistency.resync_calls().';

-- Back-fill the true count. The link fields derived from it are the
-- adoption back-fill's (consistency._adopt, after the definitions): it
-- applies G1-G7 as the triggers do, audited. Only rows whose count changes
-- are written.
UPDATE public.calls c
   SET active_appointment_count = t.n
  FROM (SELECT c2.id, count(a.id)::integer AS n
          FROM public.calls c2
          LEFT JOIN public.appointments a
                 ON a.call_id = c2.id AND a.deleted_at IS NULL AND a.status <> 'cancelled'
         GROUP BY c2.id) t
 WHERE t.id = c.id
   AND c.active_appointment_count <> t.n;

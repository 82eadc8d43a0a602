-- G2, G4-G7 on calls, and the guard of the appointment counter. BEFORE ROW
-- triggers that only adjust NEW. Their WHEN clauses are the rules themselves:
-- true only for a row that breaks one, so consistent writes (including every
-- UPDATE made by the appointment sync) never enter PL/pgSQL, and a corrected
-- row cannot fire them again (no loops, one alert of a kind per change).
DROP TRIGGER IF EXISTS calls_rules_insert ON public.calls;
CREATE TRIGGER calls_rules_insert
    BEFORE INSERT ON public.calls
    FOR EACH ROW
    WHEN (NEW.active_appointment_count IS DISTINCT FROM 0
          OR NEW.appointment_made
          OR NEW.appointment_link_status = {{ link.linked }}
          OR (NEW.session_outcome = {{ outcome.appointment_booked }}
              AND NEW.appointment_link_status NOT IN ({{ link.pending_creation }}, {{ link.cancelled }}, {{ link.creation_failed }}))
          OR (NEW.appointment_link_status = {{ link.pending_creation }}
              AND {{ outcome.not_booking('NEW.session_outcome') }})
          OR NEW.direction IS NULL OR NEW.direction = ''
          OR (NEW.customer_id IS NULL AND NEW.customer_link_status = {{ customer.linked }})
          OR (NEW.customer_id IS NOT NULL
              AND (NEW.customer_link_status IS DISTINCT FROM {{ customer.linked }}
                   OR NEW.customer_linked_at IS NULL OR NEW.customer_link_method IS NULL))
{% if calls.links %}
          OR NEW.active_appointment_refs IS DISTINCT FROM 0
{% for column in calls.links %}
          OR NEW.{{ column }} IS NOT NULL
{% endfor %}
{% endif %}
          )
    EXECUTE FUNCTION consistency._call_rules();

-- The insert rules' alerts, raised only for rows really inserted (see
-- consistency._call_rule_alert). The session flag, set by a pending alert,
-- is the fast path; but any session may clear it (a RETURNING set_config()
-- runs after the BEFORE triggers), so the trigger also fires while this
-- backend's statistics count more rows inserted into the pending table than
-- deleted from it. Those counters are the backend's own (no read of the
-- table, no lock), executable by every role as a WHEN clause needs, and
-- only the trigger function deletes pending rows, so a row left behind
-- always shows. A count left over from a failed statement (its rows rolled
-- back) only makes the trigger find nothing, until the backend's statistics
-- are flushed, at the latest a second later.
DROP TRIGGER IF EXISTS calls_rules_inserted ON public.calls;
CREATE TRIGGER calls_rules_inserted
    AFTER INSERT ON public.calls
    FOR EACH STATEMENT
    WHEN (current_setting('consistency.call_alerts_pending', true) = 'on'
          OR pg_catalog.pg_stat_get_xact_tuples_inserted('consistency._call_alerts_pending'::regclass)
             > pg_catalog.pg_stat_get_xact_tuples_deleted('consistency._call_alerts_pending'::regclass))
    EXECUTE FUNCTION consistency._call_rules_inserted();

-- Columns the appointment sync never writes: its UPDATE skips this trigger
-- on a bitmap test, before the WHEN clause is even prepared (PostgreSQL
-- prepares a WHEN clause once per statement, which would cost a single-row
-- sync more than the rest of its work).
DROP TRIGGER IF EXISTS calls_rules_update ON public.calls;
CREATE TRIGGER calls_rules_update
    BEFORE UPDATE OF session_outcome, direction, customer_id, customer_link_status,
                     customer_linked_at, customer_link_method{% for column in calls.links %}, {{ column }}{% endfor %}

    ON public.calls
    FOR EACH ROW
    WHEN (NEW.appointment_made IS DISTINCT FROM (NEW.active_appointment_count{{ refs('NEW') }} > 0)
          OR (NEW.appointment_link_status = {{ link.linked }}) IS DISTINCT FROM (NEW.active_appointment_count{{ refs('NEW') }} > 0)
          OR (NEW.active_appointment_count{{ refs('NEW') }} = 0
              AND NEW.session_outcome = {{ outcome.appointment_booked }}
              AND NEW.appointment_link_status NOT IN ({{ link.pending_creation }}, {{ link.cancelled }}, {{ link.creation_failed }}))
          OR (NEW.active_appointment_count{{ refs('NEW') }} = 0
              AND NEW.appointment_link_status = {{ link.pending_creation }}
              AND {{ outcome.not_booking('NEW.session_outcome') }})
          OR (NEW.active_appointment_count{{ refs('NEW') }} > 0
              AND NEW.session_outcome NOT IN ({{ outcome.booking }}))
          OR NEW.direction IS NULL OR NEW.direction = ''
          OR (NEW.customer_id IS NULL AND NEW.customer_link_status = {{ customer.linked }})
          OR (NEW.customer_id IS NOT NULL
              AND (NEW.customer_link_status IS DISTINCT FROM {{ customer.linked }}
                   OR NEW.customer_linked_at IS NULL OR NEW.customer_link_method IS NULL
                   OR NEW.customer_id IS DISTINCT FROM OLD.customer_id))
{% for column in calls.links %}
          OR NEW.{{ column }} IS DISTINCT FROM OLD.{{ column }}
{% endfor %}
          )
    EXECUTE FUNCTION consistency._call_rules();

-- The link columns are written by the sync triggers too, so this one cannot
-- skip them by column. pg_trigger_depth() in a WHEN clause is the depth of
-- the statement being checked: 0 for an application's own UPDATE, which
-- always reaches the function (it refuses direct writes of the counter
-- unless resync_calls() runs in this transaction, and corrects G1/G2, G4,
-- G5 like the rule trigger above). At depth >= 1 the statement is the
-- sync's UPDATE, run as the guard's owner (SECURITY DEFINER), or an
-- application's own trigger writing calls: only the owner is let through on
-- a row whose flags agree with the counter (the sync writes consistent rows
-- by construction and never enters); any other role reaches the function,
-- which refuses its write of the counter. A role granted UPDATE on the whole
-- table after the install (migrate grants it column by column, the counter
-- left out) would otherwise write the counter with matching flags from a
-- trigger of its own. "The owner" is whoever holds UPDATE on calls WITH
-- GRANT OPTION: the owner, its members and superusers, and a role the owner
-- deliberately gave that option; a check by privilege, not by name, so it
-- survives a renamed role and a restore, and costs ~0.2 µs per row.
-- Kept this small on purpose: the clause is prepared once per statement,
-- and the rules in full (IN lists) cost a single-row sync about a third more.
DROP TRIGGER IF EXISTS calls_link_guard ON public.calls;
CREATE TRIGGER calls_link_guard
    BEFORE UPDATE OF appointment_made, appointment_link_status, active_appointment_count{{ with_links(', active_appointment_refs') }}
    ON public.calls
    FOR EACH ROW
    WHEN (pg_trigger_depth() = 0
          OR NEW.appointment_made <> (NEW.active_appointment_count{{ refs('NEW') }} > 0)
          OR NEW.appointment_made <> (NEW.appointment_link_status = {{ link.linked }})
          OR NOT pg_catalog.has_table_privilege('public.calls'::regclass, 'UPDATE WITH GRANT OPTION'))
    EXECUTE FUNCTION consistency._call_rules();

-- Application tables calls / appointments.
-- On a new database both are created as the contract describes. Beside an
-- existing application only the guard's missing columns are added, each
-- nullable or with a default, so no INSERT the application makes starts
-- failing. A CHECK, UNIQUE or foreign key comes only with a column this
-- migration creates: the application's own columns, constraints and rows
-- are left alone (what the guard will write there is checked against them
-- before anything runs, see orchestrator/adoption.py). Rows are brought to
-- G1-G7 after the guard's functions exist (consistency._adopt), and the
-- indexes the guard relies on come with the definitions (sql/indexes.sql),
-- each only when the table has no equivalent one.
-- Rendered with the adoption profile: calls.call_id names the column holding
-- the voice platform's call id, appointments.booking_id the calendar's
-- booking id. (No template expression in a comment: a line break in a
-- quoted name would end it.)

CREATE SCHEMA IF NOT EXISTS consistency;

-- What migrate added to the application's schema, so that `consistency
-- uninstall` takes away exactly that: a table it created (then the table,
-- its columns and the indexes an application may have come to use are the
-- application's), a column or an index it added to a table that existed.
CREATE TABLE consistency.installed_objects (
    kind          text NOT NULL CHECK (kind IN ('table', 'column', 'index')),
    table_name    text NOT NULL,
    name          text NOT NULL,
    installed_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (kind, table_name, name)
);

DO $migration$
DECLARE
    v_new_calls        boolean := pg_catalog.to_regclass('public.calls') IS NULL;
    v_new_appointments boolean := pg_catalog.to_regclass('public.appointments') IS NULL;
    v_added            text[] := '{}';
    v_column           record;
BEGIN
    CREATE TABLE IF NOT EXISTS public.calls (
        id                          bigserial PRIMARY KEY,
        external_call_id            text NOT NULL UNIQUE,
        company_id                  bigint,
        customer_id                 bigint,
        direction                   text,
        status                      text,
        from_number                 text,
        to_number                   text,
        session_outcome             text,
        external_booking_id         text,
        appointment_made            boolean NOT NULL DEFAULT false,
        appointment_link_status     text NOT NULL DEFAULT 'unlinked',
        appointment_linked_at       timestamptz,
        customer_link_status        text NOT NULL DEFAULT 'unlinked',
        customer_linked_at          timestamptz,
        customer_link_method        text,
        booking_failed              boolean NOT NULL DEFAULT false,
        booking_failure_reason      text,
        requires_manual_processing  boolean NOT NULL DEFAULT false,
        created_at                  timestamptz NOT NULL DEFAULT now(),
        updated_at                  timestamptz
    );

    -- An existing application's calls table: add what the guard needs.
    FOR v_column IN
        SELECT * FROM (VALUES
{% if calls.call_id == 'external_call_id' %}
            ('external_call_id', 'text'),
{% endif %}
            ('company_id', 'bigint'),
            ('customer_id', 'bigint'),
            ('direction', 'text'),
            ('status', 'text'),
            ('from_number', 'text'),
            ('to_number', 'text'),
            ('session_outcome', 'text'),
{% if calls.booking_id == 'external_booking_id' %}
            ('external_booking_id', 'text'),
{% endif %}
            ('appointment_made', 'boolean NOT NULL DEFAULT false'),
            ('appointment_link_status', 'text NOT NULL DEFAULT ''unlinked'''),
            ('appointment_linked_at', 'timestamptz'),
            ('customer_link_status', 'text NOT NULL DEFAULT ''unlinked'''),
            ('customer_linked_at', 'timestamptz'),
            ('customer_link_method', 'text'),
            ('booking_failed', 'boolean NOT NULL DEFAULT false'),
            ('booking_failure_reason', 'text'),
            ('requires_manual_processing', 'boolean NOT NULL DEFAULT false'),
            ('created_at', 'timestamptz NOT NULL DEFAULT now()'),
            ('updated_at', 'timestamptz')) AS c(name, definition)
         WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                            WHERE a.attrelid = 'public.calls'::pg_catalog.regclass
                              AND a.attname = c.name AND NOT a.attisdropped)
    LOOP
        EXECUTE format('ALTER TABLE public.calls ADD COLUMN %I %s', v_column.name,
                       v_column.definition);
        v_added := v_added || v_column.name;
    END LOOP;
    INSERT INTO consistency.installed_objects (kind, table_name, name)
    SELECT 'table', 'calls', 'calls' WHERE v_new_calls
    UNION ALL
    SELECT 'column', 'calls', c FROM unnest(v_added) AS c WHERE NOT v_new_calls;

    IF 'external_call_id' = ANY (v_added) THEN
        -- Calls written before the guard existed get a stable synthetic id,
        -- so that the column can carry its NOT NULL / UNIQUE promise.
        UPDATE public.calls SET external_call_id = 'legacy-' || id WHERE external_call_id IS NULL;
        ALTER TABLE public.calls ALTER COLUMN external_call_id SET NOT NULL;
        ALTER TABLE public.calls ADD CONSTRAINT calls_external_call_id_key UNIQUE (external_call_id);
    END IF;
    IF v_new_calls OR 'appointment_link_status' = ANY (v_added) THEN
        ALTER TABLE public.calls ADD CONSTRAINT calls_appointment_link_status_check
            CHECK (appointment_link_status IN ('unlinked', 'pending_creation', 'linked', 'cancelled',
                                               'creation_failed', 'not_applicable'));
    END IF;
    IF v_new_calls OR 'customer_link_status' = ANY (v_added) THEN
        ALTER TABLE public.calls ADD CONSTRAINT calls_customer_link_status_check
            CHECK (customer_link_status IN ('unlinked', 'linked', 'failed', 'not_applicable'));
    END IF;

    CREATE TABLE IF NOT EXISTS public.appointments (
        id                   bigserial PRIMARY KEY,
        call_id              bigint REFERENCES public.calls (id) ON DELETE SET NULL,
        company_id           bigint,
        customer_id          bigint,
        service_id           bigint,
        starts_at            timestamptz,
        ends_at              timestamptz,
        status               text NOT NULL DEFAULT 'scheduled',
        external_booking_id  text UNIQUE,
        source               text,
        created_at           timestamptz NOT NULL DEFAULT now(),
        updated_at           timestamptz,
        deleted_at           timestamptz
    );

    v_added := '{}';
    FOR v_column IN
        SELECT * FROM (VALUES
            ('call_id', 'bigint'),
            ('company_id', 'bigint'),
            ('customer_id', 'bigint'),
            ('service_id', 'bigint'),
            ('starts_at', 'timestamptz'),
            ('ends_at', 'timestamptz'),
            ('status', 'text NOT NULL DEFAULT ''scheduled'''),
{% if appointments.booking_id == 'external_booking_id' %}
            ('external_booking_id', 'text'),
{% endif %}
            ('source', 'text'),
            ('created_at', 'timestamptz NOT NULL DEFAULT now()'),
            ('updated_at', 'timestamptz'),
            ('deleted_at', 'timestamptz')) AS c(name, definition)
         WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                            WHERE a.attrelid = 'public.appointments'::pg_catalog.regclass
                              AND a.attname = c.name AND NOT a.attisdropped)
    LOOP
        EXECUTE format('ALTER TABLE public.appointments ADD COLUMN %I %s', v_column.name,
                       v_column.definition);
        v_added := v_added || v_column.name;
    END LOOP;
    INSERT INTO consistency.installed_objects (kind, table_name, name)
    SELECT 'table', 'appointments', 'appointments' WHERE v_new_appointments
    UNION ALL
    SELECT 'column', 'appointments', c FROM unnest(v_added) AS c WHERE NOT v_new_appointments;
    IF 'external_booking_id' = ANY (v_added) THEN
        ALTER TABLE public.appointments
            ADD CONSTRAINT appointments_external_booking_id_key UNIQUE (external_booking_id);
    END IF;
    IF 'call_id' = ANY (v_added) THEN
        -- A new, empty column: the foreign key holds at once. An application's
        -- own call_id keeps whatever it allows (the monitor finds call ids
        -- naming no call).
        ALTER TABLE public.appointments
            ADD CONSTRAINT appointments_call_id_fkey FOREIGN KEY (call_id)
            REFERENCES public.calls (id) ON DELETE SET NULL;
    END IF;
END
$migration$;

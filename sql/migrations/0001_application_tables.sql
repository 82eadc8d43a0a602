-- Application tables calls / appointments.
-- The guard installs both on a new database and beside an existing
-- application: tables are created when absent, and when they exist the
-- guard's columns are added (and back-filled) without touching the
-- application's own columns or data.

CREATE SCHEMA IF NOT EXISTS consistency;

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
ALTER TABLE public.calls
    ADD COLUMN IF NOT EXISTS external_call_id           text,
    ADD COLUMN IF NOT EXISTS company_id                 bigint,
    ADD COLUMN IF NOT EXISTS customer_id                bigint,
    ADD COLUMN IF NOT EXISTS direction                  text,
    ADD COLUMN IF NOT EXISTS status                     text,
    ADD COLUMN IF NOT EXISTS from_number                text,
    ADD COLUMN IF NOT EXISTS to_number                  text,
    ADD COLUMN IF NOT EXISTS session_outcome            text,
    ADD COLUMN IF NOT EXISTS external_booking_id        text,
    ADD COLUMN IF NOT EXISTS appointment_made           boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS appointment_link_status    text NOT NULL DEFAULT 'unlinked',
    ADD COLUMN IF NOT EXISTS appointment_linked_at      timestamptz,
    ADD COLUMN IF NOT EXISTS customer_link_status       text NOT NULL DEFAULT 'unlinked',
    ADD COLUMN IF NOT EXISTS customer_linked_at         timestamptz,
    ADD COLUMN IF NOT EXISTS customer_link_method       text,
    ADD COLUMN IF NOT EXISTS booking_failed             boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS booking_failure_reason     text,
    ADD COLUMN IF NOT EXISTS requires_manual_processing boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS created_at                 timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN IF NOT EXISTS updated_at                 timestamptz;

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

ALTER TABLE public.appointments
    ADD COLUMN IF NOT EXISTS call_id             bigint,
    ADD COLUMN IF NOT EXISTS company_id          bigint,
    ADD COLUMN IF NOT EXISTS customer_id         bigint,
    ADD COLUMN IF NOT EXISTS service_id          bigint,
    ADD COLUMN IF NOT EXISTS starts_at           timestamptz,
    ADD COLUMN IF NOT EXISTS ends_at             timestamptz,
    ADD COLUMN IF NOT EXISTS status              text NOT NULL DEFAULT 'scheduled',
    ADD COLUMN IF NOT EXISTS external_booking_id text,
    ADD COLUMN IF NOT EXISTS source              text,
    ADD COLUMN IF NOT EXISTS created_at          timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN IF NOT EXISTS updated_at          timestamptz,
    ADD COLUMN IF NOT EXISTS deleted_at          timestamptz;

-- Back-fill: an application that had calls but no external_call_id gets a
-- stable synthetic one, so the column can carry its NOT NULL / UNIQUE promise.
UPDATE public.calls
   SET external_call_id = 'legacy-' || id
 WHERE external_call_id IS NULL;

ALTER TABLE public.calls ALTER COLUMN external_call_id SET NOT NULL;

-- Constraints the contract promises, added only when the application's table
-- lacks them (an existing, equivalent constraint under another name is kept).
DO $migration$
BEGIN
    IF NOT EXISTS (
        SELECT 1
          FROM pg_constraint c
          JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
         WHERE c.conrelid = 'public.calls'::regclass
           AND c.contype IN ('u', 'p')
           AND array_length(c.conkey, 1) = 1
           AND a.attname = 'external_call_id'
    ) THEN
        ALTER TABLE public.calls
            ADD CONSTRAINT calls_external_call_id_key UNIQUE (external_call_id);
    END IF;

    IF NOT EXISTS (
        SELECT 1
          FROM pg_constraint c
          JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
         WHERE c.conrelid = 'public.appointments'::regclass
           AND c.contype IN ('u', 'p')
           AND array_length(c.conkey, 1) = 1
           AND a.attname = 'external_booking_id'
    ) THEN
        ALTER TABLE public.appointments
            ADD CONSTRAINT appointments_external_booking_id_key UNIQUE (external_booking_id);
    END IF;

    IF NOT EXISTS (
        SELECT 1
          FROM pg_constraint c
          JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
         WHERE c.conrelid = 'public.appointments'::regclass
           AND c.contype = 'f'
           AND a.attname = 'call_id'
    ) THEN
        -- NOT VALID first so that an application with orphaned call ids can
        -- still install; the monitor reports those rows instead.
        ALTER TABLE public.appointments
            ADD CONSTRAINT appointments_call_id_fkey FOREIGN KEY (call_id)
            REFERENCES public.calls (id) ON DELETE SET NULL NOT VALID;
        BEGIN
            ALTER TABLE public.appointments VALIDATE CONSTRAINT appointments_call_id_fkey;
        EXCEPTION WHEN foreign_key_violation THEN
            RAISE WARNING 'appointments.call_id has values without a call; '
                          'appointments_call_id_fkey left NOT VALID';
        END;
    END IF;
END
$migration$;

-- Back-fill the guard's derived columns so that G1, G2, G6 and G7 already
-- hold for rows written before the guard existed.
UPDATE public.calls c
   SET appointment_link_status = 'linked',
       appointment_made        = true,
       appointment_linked_at   = coalesce(c.appointment_linked_at, a.first_active_at)
  FROM (SELECT call_id, min(created_at) AS first_active_at
          FROM public.appointments
         WHERE call_id IS NOT NULL AND deleted_at IS NULL AND status <> 'cancelled'
         GROUP BY call_id) a
 WHERE a.call_id = c.id
   AND (c.appointment_link_status IS DISTINCT FROM 'linked' OR NOT c.appointment_made);

UPDATE public.calls c
   SET appointment_link_status = CASE WHEN c.appointment_link_status = 'linked'
                                      THEN 'unlinked' ELSE c.appointment_link_status END,
       appointment_made = false
 WHERE (c.appointment_made OR c.appointment_link_status = 'linked')
   AND NOT EXISTS (SELECT 1 FROM public.appointments a
                    WHERE a.call_id = c.id AND a.deleted_at IS NULL AND a.status <> 'cancelled');

UPDATE public.calls SET direction = 'inbound' WHERE direction IS NULL OR direction = '';

UPDATE public.calls
   SET customer_link_status = 'linked',
       customer_linked_at   = coalesce(customer_linked_at, created_at),
       customer_link_method = coalesce(customer_link_method, 'phone_match')
 WHERE customer_id IS NOT NULL AND customer_link_status <> 'linked';

ALTER TABLE public.calls
    ADD CONSTRAINT calls_appointment_link_status_check CHECK (appointment_link_status IN
        ('unlinked', 'pending_creation', 'linked', 'cancelled', 'creation_failed', 'not_applicable')),
    ADD CONSTRAINT calls_customer_link_status_check CHECK (customer_link_status IN
        ('unlinked', 'linked', 'failed', 'not_applicable'));

CREATE INDEX IF NOT EXISTS calls_created_at_idx ON public.calls (created_at);
CREATE INDEX IF NOT EXISTS calls_appointment_made_created_at_idx
    ON public.calls (appointment_made, created_at);
-- The monitor only ever looks for calls in a transitional or failed state;
-- a partial index keeps that scan proportional to the problem, not the table.
CREATE INDEX IF NOT EXISTS calls_link_status_attention_idx
    ON public.calls (appointment_link_status, created_at)
    WHERE appointment_link_status NOT IN ('linked', 'unlinked');
CREATE INDEX IF NOT EXISTS calls_external_booking_id_idx ON public.calls (external_booking_id);
CREATE INDEX IF NOT EXISTS appointments_call_id_idx ON public.appointments (call_id);
CREATE INDEX IF NOT EXISTS appointments_created_at_idx ON public.appointments (created_at);

-- Alert relay: deliveries are retried until a give-up age rather than a
-- handful of attempts, end `dead` (a permanent refusal included) and can be
-- re-driven; each sink keeps what relay_status reports about it.

-- A permanent refusal and an exhausted retry are one state for the operator:
-- both wait for `relay redrive`.
UPDATE consistency.relay_deliveries SET status = 'dead' WHERE status = 'failed';

ALTER TABLE consistency.relay_deliveries
    -- When the delivery ended dead (what `relay redrive --since` selects).
    ADD COLUMN dead_at     timestamptz,
    -- When it was last re-driven: the give-up age counts from here, else
    -- from created_at.
    ADD COLUMN redriven_at timestamptz;
UPDATE consistency.relay_deliveries SET dead_at = next_attempt_at WHERE status = 'dead';

ALTER TABLE consistency.relay_deliveries
    DROP CONSTRAINT relay_deliveries_status_check,
    ADD CONSTRAINT relay_deliveries_status_check
        CHECK (status IN ('pending', 'in_flight', 'delivered', 'dead')),
    ADD CONSTRAINT relay_deliveries_dead_ck CHECK ((status = 'dead') = (dead_at IS NOT NULL));

ALTER TABLE consistency.relay_sinks
    ADD COLUMN last_success_at timestamptz,
    -- Redacted by the relay before it reaches the database.
    ADD COLUMN last_error      text,
    ADD COLUMN last_error_at   timestamptz;

-- relay_status: delivered in the last hour and dead per sink without a scan
-- of every delivery ever made.
CREATE INDEX relay_deliveries_delivered_idx ON consistency.relay_deliveries (sink_id, delivered_at)
    WHERE status = 'delivered';
CREATE INDEX relay_deliveries_dead_idx ON consistency.relay_deliveries (sink_id, dead_at)
    WHERE status = 'dead';

-- Signatures and result columns that change (on an upgrade; a fresh install
-- has no functions yet): sql/functions/relay.sql
-- creates the current ones right after the migrations.
DROP FUNCTION IF EXISTS consistency.relay_register_sink(text, text, text, text, integer);
DROP FUNCTION IF EXISTS consistency.relay_claim(text, bigint[], integer, interval);
DROP FUNCTION IF EXISTS consistency.relay_fail(text, bigint, text, boolean, double precision, integer,
                                     double precision, double precision);
DROP FUNCTION IF EXISTS consistency.relay_status();

-- Alert relay: the sinks that alerts are delivered to, and one delivery row
-- per (alert, sink). The relay process is stateless; everything it needs to
-- resume after a crash, a restart or next to another relay lives here.

-- A sink is identified by a slow salted hash of its URL (without the relay-side
-- options min_severity, dashboard_url and digest), never by the URL itself: Slack
-- webhook paths, webhook tokens and SMTP passwords are secrets.
CREATE TABLE consistency.relay_sinks (
    id            bigserial PRIMARY KEY,
    fingerprint   text NOT NULL UNIQUE CHECK (fingerprint ~ '^[0-9a-f]{64}$'),
    name          text NOT NULL CHECK (name <> ''),
    scheme        text NOT NULL CHECK (scheme <> ''),
    min_severity  text NOT NULL DEFAULT 'info'
                  CHECK (min_severity IN ('critical', 'warning', 'info')),
    -- Email digest: warnings and info wait for the end of a window of this
    -- many seconds and go out as one message; critical alerts never wait.
    digest_seconds integer CHECK (digest_seconds IS NULL OR digest_seconds > 0),
    created_at    timestamptz NOT NULL DEFAULT consistency.now(),
    last_seen_at  timestamptz NOT NULL DEFAULT consistency.now()
);
COMMENT ON TABLE consistency.relay_sinks IS
    'Alert sinks a relay has registered; name is the URL with secrets redacted';

-- For in_flight rows next_attempt_at equals lease_expires_at, so one partial
-- index finds both retries that are due and leases that have run out.
CREATE TABLE consistency.relay_deliveries (
    id                bigserial PRIMARY KEY,
    alert_id          bigint NOT NULL REFERENCES consistency.alerts (id) ON DELETE CASCADE,
    sink_id           bigint NOT NULL REFERENCES consistency.relay_sinks (id) ON DELETE CASCADE,
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'in_flight', 'delivered', 'failed', 'dead')),
    attempts          integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at   timestamptz NOT NULL DEFAULT consistency.now(),
    last_error        text,
    delivered_at      timestamptz,
    lease_owner       text,
    lease_expires_at  timestamptz,
    created_at        timestamptz NOT NULL DEFAULT consistency.now(),
    CONSTRAINT relay_deliveries_alert_sink_key UNIQUE (alert_id, sink_id),
    CONSTRAINT relay_deliveries_lease_ck
        CHECK ((status = 'in_flight') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL)),
    CONSTRAINT relay_deliveries_delivered_ck
        CHECK ((status = 'delivered') = (delivered_at IS NOT NULL))
);
COMMENT ON TABLE consistency.relay_deliveries IS
    'One row per alert and sink: at-least-once delivery state, claimed under a lease';

CREATE INDEX relay_deliveries_due_idx ON consistency.relay_deliveries (sink_id, next_attempt_at)
    WHERE status IN ('pending', 'in_flight');

-- The delivery log partners query and act on (DeliveryService), and endpoints that disable
-- themselves after failing without a break.

ALTER TABLE webhook_endpoints
    ADD COLUMN disabled_at TIMESTAMPTZ,
    -- Start of the current unbroken run of failed attempts; cleared by a success.
    ADD COLUMN failing_since TIMESTAMPTZ;

ALTER TABLE deliveries
    ADD COLUMN destination TEXT NOT NULL DEFAULT '',
    ADD COLUMN last_response_status INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN succeeded_at TIMESTAMPTZ,
    -- What causes the next attempt, recorded on it: 'scheduled', 'manual_redelivery' or
    -- 'bulk_replay', with who asked (subject and picket.common.v1.Role) and the replay.
    ADD COLUMN next_trigger TEXT NOT NULL DEFAULT 'scheduled'
        CHECK (next_trigger IN ('scheduled', 'manual_redelivery', 'bulk_replay')),
    ADD COLUMN next_requested_by TEXT,
    ADD COLUMN next_requested_role INTEGER,
    ADD COLUMN next_replay_id UUID;

ALTER TABLE delivery_attempts
    ADD COLUMN trigger TEXT NOT NULL DEFAULT 'scheduled',
    ADD COLUMN requested_by TEXT,
    ADD COLUMN requested_role INTEGER,
    ADD COLUMN replay_id UUID,
    ADD COLUMN retry_after_ms BIGINT,
    ADD COLUMN response_excerpt TEXT NOT NULL DEFAULT '';

-- Newest first, page by page.
DROP INDEX deliveries_by_partner;
CREATE INDEX deliveries_by_partner ON deliveries (partner_id, created_at DESC, delivery_id DESC);

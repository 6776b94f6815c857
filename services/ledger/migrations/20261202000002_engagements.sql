-- Incident-response engagements a partner asked for, and the work investigators log on them.

CREATE TABLE engagements (
    engagement_id UUID PRIMARY KEY,
    partner_id TEXT NOT NULL REFERENCES retainers (partner_id),
    tenant_id TEXT NOT NULL DEFAULT '',
    incident_id TEXT NOT NULL DEFAULT '',
    request TEXT NOT NULL,
    -- picket.ledger.v1.RequestChannel: how the partner asked.
    channel INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('open', 'closed')),
    partner_contact_name TEXT NOT NULL DEFAULT '',
    partner_contact_email TEXT NOT NULL DEFAULT '',
    partner_contact_phone TEXT NOT NULL DEFAULT '',
    opened_by TEXT NOT NULL,
    opened_role INTEGER NOT NULL,
    opened_at TIMESTAMPTZ NOT NULL,
    closed_at TIMESTAMPTZ,
    investigator_subject TEXT NOT NULL DEFAULT '',
    estimated_minutes BIGINT NOT NULL DEFAULT 0,
    logged_minutes BIGINT NOT NULL DEFAULT 0,
    hold_id UUID REFERENCES holds (hold_id),
    summary TEXT NOT NULL DEFAULT '',
    -- The investigation's recommendations: [{recommendation_id, title, detail, priority, recorded_at, recorded_by}].
    recommendations JSONB NOT NULL DEFAULT '[]'
);
CREATE INDEX engagements_by_partner ON engagements (partner_id, opened_at DESC);

CREATE TABLE work_entries (
    work_entry_id UUID PRIMARY KEY,
    engagement_id UUID NOT NULL REFERENCES engagements (engagement_id),
    partner_id TEXT NOT NULL,
    investigator_subject TEXT NOT NULL,
    investigator_role INTEGER NOT NULL,
    minutes BIGINT NOT NULL CHECK (minutes > 0),
    description TEXT NOT NULL,
    performed_at TIMESTAMPTZ NOT NULL,
    logged_at TIMESTAMPTZ NOT NULL,
    idempotency_key TEXT NOT NULL,
    -- The packs it drew on, oldest first: [{pack_id, minutes}] (no pack_id: the overdraft).
    debits JSONB NOT NULL,
    transfer_ids UUID[] NOT NULL
);
CREATE INDEX work_entries_by_engagement ON work_entries (engagement_id, logged_at);

-- Offboarding sagas: their state, each service's progress in each step, and the deletion
-- certificates that conclude them. These rows are the proof of deletion: the purge of a tenant
-- removes its data everywhere else, and keeps these.

-- The tenants the offboarding service may be asked to offboard, from TenantOnboarded: their
-- partner and names, for the request's checks and the certificate. A tenant's row is removed
-- when its offboarding completes.
CREATE TABLE tenants (
    tenant_id TEXT PRIMARY KEY,
    partner_id TEXT NOT NULL,
    display_name TEXT NOT NULL DEFAULT '',
    microsoft_tenant_id TEXT NOT NULL DEFAULT '',
    onboarded_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE offboardings (
    offboarding_id UUID PRIMARY KEY,
    partner_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    tenant_display_name TEXT NOT NULL DEFAULT '',
    microsoft_tenant_id TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL,
    retention_seconds BIGINT NOT NULL CHECK (retention_seconds >= 0),
    state TEXT NOT NULL CHECK (state IN ('disconnecting', 'scheduled', 'purging', 'completed', 'cancelled')),
    requested_by TEXT NOT NULL,
    requested_role INTEGER NOT NULL,
    requested_at TIMESTAMPTZ NOT NULL,
    disconnected_at TIMESTAMPTZ,
    -- True once the scanner reported the tenant's tokens dropped.
    tokens_dropped BOOLEAN NOT NULL DEFAULT false,
    purge_due_at TIMESTAMPTZ NOT NULL,
    purge_started_at TIMESTAMPTZ,
    -- The PurgeRequested attempt last sent.
    purge_attempt INTEGER NOT NULL DEFAULT 0,
    completed_at TIMESTAMPTZ,
    cancelled_at TIMESTAMPTZ,
    cancel_reason TEXT NOT NULL DEFAULT '',
    cancelled_by TEXT NOT NULL DEFAULT '',
    cancelled_role INTEGER NOT NULL DEFAULT 0,
    certificate_id UUID,
    updated_at TIMESTAMPTZ NOT NULL
);
-- At most one offboarding in progress per tenant.
CREATE UNIQUE INDEX offboardings_one_active ON offboardings (tenant_id)
    WHERE state IN ('disconnecting', 'scheduled', 'purging');
CREATE INDEX offboardings_by_partner ON offboardings (partner_id, requested_at DESC);
CREATE INDEX offboardings_due ON offboardings (purge_due_at) WHERE state = 'scheduled';

-- Each required service's progress in each step.
CREATE TABLE progress (
    offboarding_id UUID NOT NULL REFERENCES offboardings (offboarding_id),
    service TEXT NOT NULL,
    step TEXT NOT NULL CHECK (step IN ('disconnect', 'purge')),
    status TEXT NOT NULL CHECK (status IN ('pending', 'requested', 'overdue', 'confirmed')),
    first_requested_at TIMESTAMPTZ,
    last_requested_at TIMESTAMPTZ,
    request_count INTEGER NOT NULL DEFAULT 0,
    next_request_at TIMESTAMPTZ,
    confirmed_at TIMESTAMPTZ,
    -- [{table, row_count}] (purge only).
    tables JSONB NOT NULL DEFAULT '[]',
    confirmation_event_id TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (offboarding_id, step, service)
);
CREATE INDEX progress_waiting ON progress (next_request_at) WHERE status <> 'confirmed';

CREATE TABLE certificates (
    certificate_id UUID PRIMARY KEY,
    offboarding_id UUID NOT NULL UNIQUE REFERENCES offboardings (offboarding_id),
    partner_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    -- The certificate as canonical JSON, and the hex SHA-256 of it.
    body JSONB NOT NULL,
    sha256 TEXT NOT NULL,
    issued_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX certificates_by_partner ON certificates (partner_id, issued_at DESC);

-- Scanning: each tenant's access health and schedule, scan runs, the latest result of each check,
-- the findings published (so only changes are published), the log windows fetched, the countries
-- each user signed in from, and the fixes applied.
ALTER TABLE tenants
    ADD COLUMN service_plans TEXT[] NOT NULL DEFAULT '{}',
    ADD COLUMN access_last_success_at TIMESTAMPTZ,
    ADD COLUMN access_last_error TEXT NOT NULL DEFAULT '',
    ADD COLUMN access_last_error_at TIMESTAMPTZ,
    ADD COLUMN access_consecutive_failures INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN access_throttled_until TIMESTAMPTZ,
    ADD COLUMN last_configuration_scan_at TIMESTAMPTZ,
    ADD COLUMN last_monitoring_poll_at TIMESTAMPTZ,
    ADD COLUMN next_configuration_scan_at TIMESTAMPTZ,
    ADD COLUMN next_monitoring_poll_at TIMESTAMPTZ,
    ADD COLUMN disconnected_at TIMESTAMPTZ;

CREATE INDEX tenants_configuration_due ON tenants (next_configuration_scan_at) WHERE state = 'active';
CREATE INDEX tenants_monitoring_due ON tenants (next_monitoring_poll_at) WHERE state = 'active';

CREATE TABLE scans (
    scan_id UUID PRIMARY KEY,
    partner_id TEXT NOT NULL,
    tenant_id UUID NOT NULL REFERENCES tenants (tenant_id),
    kind TEXT NOT NULL CHECK (kind IN ('configuration', 'monitoring', 'full')),
    trigger TEXT NOT NULL CHECK (trigger IN ('schedule', 'on_demand', 'onboarding')),
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'partial', 'failed', 'cancelled')),
    -- The principal that asked for an on-demand scan, as protobuf JSON.
    requested_by JSONB,
    queued_at TIMESTAMPTZ NOT NULL,
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    -- A running scan whose lease passed is taken to have crashed and is queued again.
    lease_until TIMESTAMPTZ,
    checks_evaluated INTEGER NOT NULL DEFAULT 0,
    checks_passed INTEGER NOT NULL DEFAULT 0,
    checks_failed INTEGER NOT NULL DEFAULT 0,
    checks_not_applicable INTEGER NOT NULL DEFAULT 0,
    checks_errored INTEGER NOT NULL DEFAULT 0,
    findings_observed INTEGER NOT NULL DEFAULT 0,
    findings_cleared INTEGER NOT NULL DEFAULT 0,
    graph_requests INTEGER NOT NULL DEFAULT 0,
    throttled_responses INTEGER NOT NULL DEFAULT 0,
    -- ScanError messages as protobuf JSON.
    errors JSONB NOT NULL DEFAULT '[]',
    window_start TIMESTAMPTZ,
    window_end TIMESTAMPTZ
);

-- One queued or running scan of each kind per tenant.
CREATE UNIQUE INDEX scans_open ON scans (tenant_id, kind) WHERE state IN ('queued', 'running');
CREATE INDEX scans_queue ON scans (queued_at) WHERE state = 'queued';
CREATE INDEX scans_running ON scans (lease_until) WHERE state = 'running';
CREATE INDEX scans_by_partner ON scans (partner_id, queued_at DESC, scan_id);

CREATE TABLE check_results (
    tenant_id UUID NOT NULL REFERENCES tenants (tenant_id),
    check_id TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('passed', 'failed', 'not_applicable', 'error')),
    failing_subjects INTEGER NOT NULL,
    failing_fingerprints TEXT[] NOT NULL,
    evaluated_at TIMESTAMPTZ NOT NULL,
    scan_id UUID NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (tenant_id, check_id)
);

-- What was last published for each (tenant, check, subject).
CREATE TABLE findings (
    tenant_id UUID NOT NULL REFERENCES tenants (tenant_id),
    fingerprint TEXT NOT NULL,
    check_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    target TEXT NOT NULL,
    failing BOOLEAN NOT NULL,
    first_observed_at TIMESTAMPTZ NOT NULL,
    last_observed_at TIMESTAMPTZ NOT NULL,
    cleared_at TIMESTAMPTZ,
    last_scan_id UUID NOT NULL,
    PRIMARY KEY (tenant_id, fingerprint)
);

CREATE INDEX findings_failing ON findings (tenant_id, check_id) WHERE failing;

-- Occurrences of windowed detections already published (a sign-in, an audit record...), so a
-- window read again for late data publishes nothing twice.
CREATE TABLE finding_occurrences (
    tenant_id UUID NOT NULL REFERENCES tenants (tenant_id),
    fingerprint TEXT NOT NULL,
    occurrence TEXT NOT NULL,
    observed_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, fingerprint, occurrence)
);

-- Every log window a monitoring poll fetched.
CREATE TABLE monitoring_windows (
    tenant_id UUID NOT NULL REFERENCES tenants (tenant_id),
    source TEXT NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    window_end TIMESTAMPTZ NOT NULL,
    records INTEGER NOT NULL,
    scan_id UUID NOT NULL,
    fetched_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, source, window_end)
);

-- Countries each user signed in from successfully, for the new-country detection.
CREATE TABLE sign_in_countries (
    tenant_id UUID NOT NULL REFERENCES tenants (tenant_id),
    user_id TEXT NOT NULL,
    country TEXT NOT NULL,
    first_seen_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, user_id, country)
);

-- Each FixRequested the scanner took on, so a redelivery never applies a fix twice.
CREATE TABLE fixes (
    fix_id UUID PRIMARY KEY,
    tenant_id UUID NOT NULL REFERENCES tenants (tenant_id),
    partner_id TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    check_id TEXT NOT NULL,
    action TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('applying', 'applied', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 1,
    received_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    summary TEXT NOT NULL DEFAULT ''
);

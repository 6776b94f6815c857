-- The prioritization policy's state: what each tenant has launched, every recommendation with where
-- it stands, incidents with their decisions and timeline, auto-approve rules and partner settings.
-- Replaces the first cut's findings, incidents and timeline tables (no deployment kept data in them).

DROP TABLE incident_timeline;
DROP TABLE incidents;
DROP TABLE findings;

-- A partner's settings; a partner without a row has the service's defaults.
CREATE TABLE partner_policies (
    partner_id TEXT PRIMARY KEY,
    max_open_configuration_incidents INTEGER NOT NULL CHECK (max_open_configuration_incidents >= 1),
    time_zone TEXT NOT NULL,
    theme_launch_hour INTEGER NOT NULL CHECK (theme_launch_hour BETWEEN 0 AND 23),
    correlation_window_seconds BIGINT NOT NULL CHECK (correlation_window_seconds > 0),
    updated_at TIMESTAMPTZ NOT NULL,
    updated_by JSONB
);

-- Each tenant the prioritizer knows; the row is locked while its policy runs, and `version` rises on
-- every change of its state so a cached copy can be trusted only while it matches.
CREATE TABLE tenants (
    partner_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    launched_themes INTEGER NOT NULL,
    onboarded_at TIMESTAMPTZ NOT NULL,
    last_launch_at TIMESTAMPTZ NOT NULL,
    version BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (partner_id, tenant_id)
);

CREATE TABLE theme_launches (
    partner_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    theme_order INTEGER NOT NULL,
    theme_id TEXT NOT NULL,
    launched_at TIMESTAMPTZ NOT NULL,
    launched_by JSONB NOT NULL,
    PRIMARY KEY (partner_id, tenant_id, theme_order)
);

-- Every finding of a tenant (configuration recommendation or suspicious behaviour), keyed by
-- fingerprint: its latest observation and where it stands with the policy.
CREATE TABLE recommendations (
    partner_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    check_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('configuration', 'monitoring')),
    severity TEXT NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    target TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id TEXT NOT NULL,
    theme TEXT NOT NULL,
    theme_order INTEGER NOT NULL,
    recommended_fix TEXT NOT NULL,
    fix_action INTEGER NOT NULL,
    fix_parameters JSONB NOT NULL,
    evidence JSONB NOT NULL,
    scan_id TEXT NOT NULL,
    observed_at TIMESTAMPTZ NOT NULL,
    first_observed_at TIMESTAMPTZ NOT NULL,
    last_observed_at TIMESTAMPTZ NOT NULL,
    failing BOOLEAN NOT NULL,
    muted_until TIMESTAMPTZ,
    ignored_at TIMESTAMPTZ,
    standing TEXT NOT NULL CHECK (standing IN ('idle', 'queued', 'open', 'awaiting_fix')),
    by_hand BOOLEAN NOT NULL,
    queued_at TIMESTAMPTZ,
    -- The open incident, or the last one it had.
    incident_id UUID,
    last_decision_id UUID,
    PRIMARY KEY (partner_id, tenant_id, fingerprint)
);

CREATE INDEX recommendations_muted ON recommendations (muted_until) WHERE muted_until IS NOT NULL;

CREATE TABLE incidents (
    incident_id UUID PRIMARY KEY,
    partner_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    check_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('configuration', 'monitoring')),
    severity TEXT NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    target TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id TEXT NOT NULL,
    theme TEXT NOT NULL,
    recommended_fix TEXT NOT NULL,
    fix_action INTEGER NOT NULL,
    fix_parameters JSONB NOT NULL,
    evidence JSONB NOT NULL,
    scan_id TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('open', 'awaiting_fix', 'muted', 'ignored', 'resolved', 'offboarded')),
    resolution TEXT CHECK (resolution IN ('fixed', 'cleared', 'offboarded')),
    origin TEXT NOT NULL CHECK (origin IN ('automatic', 'dequeued', 'manual')),
    override_reason TEXT NOT NULL,
    occurrence_count INTEGER NOT NULL,
    opened_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    last_seen_at TIMESTAMPTZ NOT NULL,
    resolved_at TIMESTAMPTZ,
    fix_id UUID,
    last_fix_error TEXT NOT NULL,
    muted_until TIMESTAMPTZ,
    decision_due_at TIMESTAMPTZ,
    escalation_level INTEGER NOT NULL,
    escalated_at TIMESTAMPTZ,
    last_decision_id UUID,
    version BIGINT NOT NULL
);

-- One incident in progress per fingerprint: repeats join it instead of opening another. Muted and
-- ignored incidents are closed; the recommendation opens a new one when it becomes eligible again.
CREATE UNIQUE INDEX incidents_one_active_per_fingerprint
    ON incidents (partner_id, tenant_id, fingerprint)
    WHERE state IN ('open', 'awaiting_fix');

CREATE INDEX incidents_by_partner ON incidents (partner_id, opened_at DESC, incident_id DESC);
CREATE INDEX incidents_by_tenant ON incidents (partner_id, tenant_id, opened_at DESC, incident_id DESC);
CREATE INDEX incidents_decision_due ON incidents (decision_due_at) WHERE state = 'open';

-- Every decision on an incident: who (principal and role, or an auto-approve rule), what and when.
CREATE TABLE decisions (
    decision_id UUID PRIMARY KEY,
    incident_id UUID NOT NULL REFERENCES incidents (incident_id),
    kind TEXT NOT NULL CHECK (kind IN ('approve', 'mute', 'ignore', 'unignore')),
    actor JSONB NOT NULL,
    comment TEXT NOT NULL,
    decided_at TIMESTAMPTZ NOT NULL,
    muted_until TIMESTAMPTZ,
    auto_approve_rule_id UUID,
    fix_id UUID,
    authority_basis TEXT NOT NULL
);

CREATE INDEX decisions_by_incident ON decisions (incident_id, decided_at);

-- What happened to each incident, in order.
CREATE TABLE incident_timeline (
    seq BIGSERIAL PRIMARY KEY,
    entry_id UUID NOT NULL,
    incident_id UUID NOT NULL REFERENCES incidents (incident_id),
    kind TEXT NOT NULL,
    actor JSONB NOT NULL,
    occurred_at TIMESTAMPTZ NOT NULL,
    from_state TEXT,
    to_state TEXT,
    summary TEXT NOT NULL,
    decision_id UUID,
    details JSONB NOT NULL,
    version BIGINT NOT NULL
);

CREATE INDEX incident_timeline_by_incident ON incident_timeline (incident_id, seq);

CREATE TABLE auto_approve_rules (
    rule_id UUID PRIMARY KEY,
    partner_id TEXT NOT NULL,
    check_id TEXT NOT NULL,
    all_tenants BOOLEAN NOT NULL,
    tenant_ids TEXT[] NOT NULL,
    description TEXT NOT NULL,
    created_by JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    approvals INTEGER NOT NULL DEFAULT 0,
    last_applied_at TIMESTAMPTZ
);

CREATE INDEX auto_approve_rules_by_partner ON auto_approve_rules (partner_id, created_at DESC, rule_id DESC);

-- What the prioritizer knows of each finding: its latest observation, keyed by fingerprint.
CREATE TABLE findings (
    partner_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    check_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('configuration', 'monitoring')),
    severity TEXT NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    target TEXT NOT NULL,
    theme TEXT NOT NULL,
    recommended_fix TEXT NOT NULL,
    evidence JSONB NOT NULL DEFAULT '{}'::jsonb,
    scan_id TEXT NOT NULL,
    first_observed_at TIMESTAMPTZ NOT NULL,
    last_observed_at TIMESTAMPTZ NOT NULL,
    cleared_at TIMESTAMPTZ,
    PRIMARY KEY (partner_id, tenant_id, fingerprint)
);

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
    theme TEXT NOT NULL,
    recommended_fix TEXT NOT NULL,
    evidence JSONB NOT NULL DEFAULT '{}'::jsonb,
    state TEXT NOT NULL CHECK (state IN ('open', 'awaiting_fix', 'muted', 'ignored', 'resolved', 'offboarded')),
    resolution TEXT CHECK (resolution IN ('fixed', 'cleared', 'offboarded')),
    scan_id TEXT NOT NULL,
    occurrence_count INTEGER NOT NULL DEFAULT 1,
    opened_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    last_seen_at TIMESTAMPTZ NOT NULL,
    resolved_at TIMESTAMPTZ,
    version BIGINT NOT NULL DEFAULT 1
);

-- One incident at a time per fingerprint: repeats join it instead of opening another.
CREATE UNIQUE INDEX incidents_one_active_per_fingerprint
    ON incidents (partner_id, tenant_id, fingerprint)
    WHERE state NOT IN ('resolved', 'offboarded');

CREATE INDEX incidents_by_partner ON incidents (partner_id, opened_at DESC, incident_id DESC);

-- What happened to each incident, in order.
CREATE TABLE incident_timeline (
    seq BIGSERIAL PRIMARY KEY,
    incident_id UUID NOT NULL REFERENCES incidents (incident_id),
    at TIMESTAMPTZ NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);

CREATE INDEX incident_timeline_by_incident ON incident_timeline (incident_id, seq);

-- What this service deleted for each offboarding it purged, so a repeated PurgeRequested gets the
-- original report. It names the offboarding only, never the tenant.
CREATE TABLE purge_reports (
    offboarding_id UUID PRIMARY KEY,
    tables JSONB NOT NULL,
    total_rows BIGINT NOT NULL,
    completed_at TIMESTAMPTZ NOT NULL
);

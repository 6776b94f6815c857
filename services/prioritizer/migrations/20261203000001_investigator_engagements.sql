-- The engagements investigators are assigned to, as the ledger announces them (EngagementAssigned,
-- EngagementClosed): while one is open, its investigator reads the incidents of its tenant and the
-- partner's authority map. `as_of` is the time of the last event applied, so a late one changes
-- nothing; a closed engagement stays closed.
CREATE TABLE investigator_engagements (
    engagement_id UUID PRIMARY KEY,
    partner_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    investigator_subject TEXT NOT NULL,
    closed BOOLEAN NOT NULL,
    as_of TIMESTAMPTZ NOT NULL
);

CREATE INDEX investigator_engagements_open
    ON investigator_engagements (investigator_subject, partner_id, tenant_id) WHERE NOT closed;

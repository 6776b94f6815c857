-- Who the partner's authority map says must hear of an incident, per event type: the informed
-- owners of the stage the event belongs to, and for openings and resolutions the owners who talk
-- to the client. One scope per partner-wide map or tenant deviation, replaced whole on every
-- AuthorityMapChanged (newer versions only).
CREATE TABLE authority_scopes (
    partner_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL DEFAULT '',
    version BIGINT NOT NULL,
    PRIMARY KEY (partner_id, tenant_id)
);

CREATE TABLE authority_routes (
    partner_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL DEFAULT '',
    event_type TEXT NOT NULL,
    owner_id TEXT NOT NULL,
    -- 'email' (address: an e-mail address) or 'webhook' (address: an endpoint id of the partner).
    channel TEXT NOT NULL CHECK (channel IN ('email', 'webhook')),
    address TEXT NOT NULL,
    PRIMARY KEY (partner_id, tenant_id, event_type, channel, address),
    FOREIGN KEY (partner_id, tenant_id) REFERENCES authority_scopes (partner_id, tenant_id) ON DELETE CASCADE
);

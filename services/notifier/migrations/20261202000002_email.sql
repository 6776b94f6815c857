-- E-mail recipients a partner configured, for all its tenants (tenant_id '') or one, and
-- deliveries by e-mail beside those by webhook.

CREATE TABLE email_recipients (
    recipient_id UUID PRIMARY KEY,
    partner_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL DEFAULT '',
    email TEXT NOT NULL,
    display_name TEXT NOT NULL DEFAULT '',
    -- Event types to e-mail, such as `incident.opened`; empty means all.
    event_types TEXT[] NOT NULL DEFAULT '{}',
    enabled BOOLEAN NOT NULL DEFAULT true,
    -- picket.common.v1.Severity: incident events below it are not e-mailed (0 = all).
    minimum_severity INTEGER NOT NULL DEFAULT 0,
    authority_owner_id TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX email_recipients_by_partner ON email_recipients (partner_id, tenant_id);
CREATE UNIQUE INDEX email_recipients_once ON email_recipients (partner_id, tenant_id, lower(email));

-- A delivery outlives the endpoint or recipient it went to: the log keeps its destination, and
-- deleting an endpoint or recipient makes its waiting deliveries dead rather than erasing them.
ALTER TABLE deliveries
    ALTER COLUMN endpoint_id DROP NOT NULL,
    DROP CONSTRAINT deliveries_endpoint_id_fkey,
    ADD CONSTRAINT deliveries_endpoint_id_fkey FOREIGN KEY (endpoint_id)
        REFERENCES webhook_endpoints (endpoint_id) ON DELETE SET NULL,
    ADD COLUMN channel TEXT NOT NULL DEFAULT 'webhook' CHECK (channel IN ('webhook', 'email')),
    ADD COLUMN recipient_id UUID REFERENCES email_recipients (recipient_id) ON DELETE SET NULL,
    -- An e-mail to an address named by the event itself (a consent request forwarded to a
    -- customer's administrator) rather than to a recipient of the partner.
    ADD COLUMN direct BOOLEAN NOT NULL DEFAULT false,
    ADD CONSTRAINT deliveries_one_channel CHECK (
        (channel = 'webhook' AND recipient_id IS NULL) OR (channel = 'email' AND endpoint_id IS NULL));

-- Each destination hears of each change once: an incident's change is named by its id and
-- version (`incident.opened:<id>:v1`), whatever event carries it; any other event by its id.
ALTER TABLE deliveries ADD COLUMN change_key TEXT NOT NULL DEFAULT '';
UPDATE deliveries SET change_key = 'event:' || event_id;
CREATE UNIQUE INDEX deliveries_once_per_endpoint ON deliveries (endpoint_id, change_key)
    WHERE endpoint_id IS NOT NULL;
CREATE UNIQUE INDEX deliveries_once_per_recipient ON deliveries (recipient_id, change_key)
    WHERE recipient_id IS NOT NULL;
CREATE UNIQUE INDEX deliveries_once_per_address ON deliveries (destination, change_key) WHERE direct;

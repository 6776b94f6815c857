-- Tenants being offboarded: the notifier stops routing their events (the offboarding's own
-- notices still reach the partner) until the offboarding is cancelled or the tenant purged.
CREATE TABLE offboarded_tenants (
    tenant_id TEXT PRIMARY KEY,
    partner_id TEXT NOT NULL,
    offboarding_id UUID NOT NULL,
    since TIMESTAMPTZ NOT NULL
);
CREATE INDEX deliveries_by_tenant ON deliveries (tenant_id) WHERE tenant_id <> '';

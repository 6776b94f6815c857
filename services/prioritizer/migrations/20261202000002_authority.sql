-- Incident-response authority maps: a partner's deviation from the standard map (tenant_id '')
-- and per-tenant deviations, each a complete map as canonical protobuf JSON; every change with
-- who made it and what differs; and the grants that let a customer contact decide for a tenant.
CREATE TABLE authority_maps (
    partner_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL DEFAULT '',
    version BIGINT NOT NULL,
    map JSONB NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    updated_by JSONB NOT NULL,
    PRIMARY KEY (partner_id, tenant_id)
);

-- The version of a map that was reset to the standard (or to the partner's) keeps counting here,
-- so versions only rise.
CREATE TABLE authority_map_versions (
    partner_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL DEFAULT '',
    version BIGINT NOT NULL,
    PRIMARY KEY (partner_id, tenant_id)
);

CREATE TABLE authority_map_changes (
    change_id UUID PRIMARY KEY,
    partner_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL DEFAULT '',
    version BIGINT NOT NULL,
    changed_by JSONB NOT NULL,
    changed_at TIMESTAMPTZ NOT NULL,
    comment TEXT NOT NULL,
    differences TEXT[] NOT NULL,
    map JSONB NOT NULL
);
CREATE INDEX authority_map_changes_by_map ON authority_map_changes (partner_id, tenant_id, changed_at DESC);

CREATE TABLE customer_grants (
    grant_id UUID PRIMARY KEY,
    partner_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    customer_subject TEXT NOT NULL,
    email TEXT NOT NULL DEFAULT '',
    display_name TEXT NOT NULL DEFAULT '',
    -- picket.incidents.v1.DecisionKind and picket.common.v1.Severity values; empty = all.
    decisions INTEGER[] NOT NULL,
    severities INTEGER[] NOT NULL,
    granted_by JSONB NOT NULL,
    granted_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ,
    revoked_by JSONB,
    revoke_reason TEXT NOT NULL DEFAULT ''
);
CREATE INDEX customer_grants_by_tenant ON customer_grants (partner_id, tenant_id, granted_at DESC);
CREATE UNIQUE INDEX customer_grants_one_active ON customer_grants (partner_id, tenant_id, customer_subject)
    WHERE revoked_at IS NULL;

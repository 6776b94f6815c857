-- Customer tenants a partner onboarded, and their connection to Microsoft 365.
CREATE TABLE tenants (
    tenant_id UUID PRIMARY KEY,
    partner_id TEXT NOT NULL,
    -- The Entra tenant: as the partner named it at onboarding (GUID or domain), then its GUID
    -- once consent completed.
    microsoft_tenant TEXT NOT NULL DEFAULT '',
    microsoft_tenant_id TEXT NOT NULL DEFAULT '',
    display_name TEXT NOT NULL,
    primary_domain TEXT NOT NULL DEFAULT '',
    plan TEXT NOT NULL CHECK (plan IN ('essentials', 'standard', 'premium')),
    state TEXT NOT NULL CHECK (state IN ('pending_consent', 'active', 'consent_denied', 'consent_failed', 'disconnected')),
    state_reason TEXT NOT NULL DEFAULT '',
    consent_failure TEXT NOT NULL DEFAULT '',
    -- The opaque `state` of the admin-consent URL, which the redirect brings back.
    consent_state TEXT NOT NULL UNIQUE,
    consent_expires_at TIMESTAMPTZ NOT NULL,
    onboarded_by TEXT NOT NULL,
    idempotency_key TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMPTZ NOT NULL,
    consented_at TIMESTAMPTZ,
    activated_at TIMESTAMPTZ,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX tenants_by_partner ON tenants (partner_id, created_at, tenant_id);
CREATE UNIQUE INDEX tenants_idempotency ON tenants (partner_id, idempotency_key) WHERE idempotency_key <> '';

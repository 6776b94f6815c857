-- The administrator's sign-in that proves which Microsoft tenant consented: the hash of its `state`,
-- its PKCE verifier and nonce, each used once.
ALTER TABLE tenants
    ADD COLUMN signin_state_hash TEXT UNIQUE,
    ADD COLUMN signin_verifier TEXT NOT NULL DEFAULT '',
    ADD COLUMN signin_nonce TEXT NOT NULL DEFAULT '',
    ADD COLUMN signin_expires_at TIMESTAMPTZ;

-- Bindings made before this rule: a Microsoft tenant active in several Picket tenants stays with
-- the one that connected it first; each later one is set aside (consent failed, already connected,
-- its reason saying why), so the index below can be built and nothing is deleted. Its partner sees
-- the reason; scans stop there, and it reconnects by consent once the first is offboarded.
UPDATE tenants AS later
SET state = 'consent_failed',
    consent_failure = 'CONSENT_FAILURE_ALREADY_CONNECTED',
    state_reason = 'this Microsoft 365 tenant was connected to Picket through another tenant first; '
        || 'it must be offboarded there before it can connect here',
    updated_at = now()
WHERE later.state = 'active'
  AND EXISTS (
      SELECT 1 FROM tenants AS first
      WHERE first.state = 'active'
        AND lower(first.microsoft_tenant_id) = lower(later.microsoft_tenant_id)
        AND (coalesce(first.activated_at, first.created_at), first.tenant_id)
            < (coalesce(later.activated_at, later.created_at), later.tenant_id)
  );

-- A Microsoft tenant is active for at most one Picket tenant at a time, whichever partner holds it.
CREATE UNIQUE INDEX tenants_one_active_binding ON tenants (lower(microsoft_tenant_id))
    WHERE state = 'active';

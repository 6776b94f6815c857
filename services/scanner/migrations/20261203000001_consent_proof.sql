-- The administrator's sign-in that proves which Microsoft tenant consented: the hash of its `state`,
-- its PKCE verifier and nonce, each used once.
ALTER TABLE tenants
    ADD COLUMN signin_state_hash TEXT UNIQUE,
    ADD COLUMN signin_verifier TEXT NOT NULL DEFAULT '',
    ADD COLUMN signin_nonce TEXT NOT NULL DEFAULT '',
    ADD COLUMN signin_expires_at TIMESTAMPTZ;

-- A Microsoft tenant is active for at most one Picket tenant at a time, whichever partner holds it.
CREATE UNIQUE INDEX tenants_one_active_binding ON tenants (lower(microsoft_tenant_id))
    WHERE state = 'active';

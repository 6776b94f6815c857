-- The offboarding a tenant is in: while set, its findings, fixes and decisions no longer apply.
ALTER TABLE tenants ADD COLUMN offboarding_id UUID;

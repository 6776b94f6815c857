-- Each tenant's users as the last round of GET /users/delta left them, and the deltaLink the next
-- round starts from: a monitoring poll reads only the users created, changed or removed since.
CREATE TABLE directory_users (
    tenant_id UUID NOT NULL REFERENCES tenants (tenant_id),
    user_id TEXT NOT NULL,
    properties JSONB NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);

CREATE TABLE user_delta_links (
    tenant_id UUID PRIMARY KEY REFERENCES tenants (tenant_id),
    delta_link TEXT NOT NULL,
    -- The $select the link tracks: a scanner that needs other properties starts over.
    selected TEXT NOT NULL,
    synced_at TIMESTAMPTZ NOT NULL
);

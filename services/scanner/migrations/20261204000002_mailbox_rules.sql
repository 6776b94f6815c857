-- Each mailbox's inbox rules (and the folders they hide mail in) as last read: a monitoring poll
-- reads only the mailboxes due or active and carries the others forward from here. Mailboxes
-- without rules have no row.
CREATE TABLE mailbox_rules (
    tenant_id UUID NOT NULL REFERENCES tenants (tenant_id),
    user_id TEXT NOT NULL,
    mailbox JSONB NOT NULL,
    folders JSONB,
    read_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);

-- The retainer credit ledger: double-entry accounts and immutable transfers, in whole minutes of
-- investigation. Partner ledger records are financial records: offboarding a tenant keeps them.

-- One retainer account per partner; the operator's issued, consumed and expired accounts.
CREATE TABLE accounts (
    account_id UUID PRIMARY KEY,
    partner_id TEXT,
    kind TEXT NOT NULL CHECK (kind IN ('partner_retainer', 'operator_issued', 'operator_consumed', 'operator_expired')),
    debits_posted BIGINT NOT NULL DEFAULT 0,
    credits_posted BIGINT NOT NULL DEFAULT 0,
    debits_pending BIGINT NOT NULL DEFAULT 0,
    credits_pending BIGINT NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((kind = 'partner_retainer') = (partner_id IS NOT NULL))
);
CREATE UNIQUE INDEX accounts_one_retainer ON accounts (partner_id) WHERE kind = 'partner_retainer';
CREATE UNIQUE INDEX accounts_one_operator ON accounts (kind) WHERE partner_id IS NULL;
INSERT INTO accounts (account_id, kind) VALUES
    ('00000000-0000-0000-0000-000000000001', 'operator_issued'),
    ('00000000-0000-0000-0000-000000000002', 'operator_consumed'),
    ('00000000-0000-0000-0000-000000000003', 'operator_expired');

-- Every movement of credits: immutable once written.
CREATE TABLE transfers (
    transfer_id UUID PRIMARY KEY,
    partner_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    debit_account_id UUID NOT NULL REFERENCES accounts (account_id),
    credit_account_id UUID NOT NULL REFERENCES accounts (account_id),
    amount BIGINT NOT NULL CHECK (amount > 0),
    pending BOOLEAN NOT NULL,
    pack_id UUID,
    hold_id UUID,
    engagement_id UUID,
    work_entry_id UUID,
    idempotency_key TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    actor_subject TEXT NOT NULL,
    actor_role INTEGER NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL,
    CHECK (debit_account_id <> credit_account_id)
);
CREATE INDEX transfers_by_partner ON transfers (partner_id, created_at, transfer_id);

CREATE FUNCTION transfers_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'transfers are immutable: % refused', TG_OP;
END $$;
CREATE TRIGGER transfers_are_immutable BEFORE UPDATE OR DELETE ON transfers
    FOR EACH ROW EXECUTE FUNCTION transfers_are_immutable();

-- A partner's position: locked by every operation on its credits, one at a time.
CREATE TABLE retainers (
    partner_id TEXT PRIMARY KEY,
    -- Minutes debited beyond every pack, within the overdraft limit.
    overdrawn BIGINT NOT NULL DEFAULT 0 CHECK (overdrawn >= 0),
    overdraft_limit BIGINT NOT NULL DEFAULT 0 CHECK (overdraft_limit >= 0),
    low_balance_threshold BIGINT NOT NULL DEFAULT 0 CHECK (low_balance_threshold >= 0),
    terms_updated_at TIMESTAMPTZ,
    terms_updated_by TEXT NOT NULL DEFAULT '',
    terms_updated_role INTEGER NOT NULL DEFAULT 0
);

-- The retainer's sub-ledger: packs bought, drawn on oldest first.
CREATE TABLE packs (
    pack_id UUID PRIMARY KEY,
    partner_id TEXT NOT NULL REFERENCES retainers (partner_id),
    purchased BIGINT NOT NULL CHECK (purchased > 0),
    remaining BIGINT NOT NULL CHECK (remaining >= 0),
    used BIGINT NOT NULL DEFAULT 0,
    expired BIGINT NOT NULL DEFAULT 0,
    purchased_at TIMESTAMPTZ NOT NULL,
    valid_from TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    purchase_reference TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    issued_by TEXT NOT NULL,
    CHECK (purchased = remaining + used + expired)
);
CREATE INDEX packs_by_partner ON packs (partner_id, expires_at);

CREATE TABLE holds (
    hold_id UUID PRIMARY KEY,
    partner_id TEXT NOT NULL REFERENCES retainers (partner_id),
    engagement_id UUID,
    amount BIGINT NOT NULL CHECK (amount > 0),
    used BIGINT NOT NULL DEFAULT 0,
    state TEXT NOT NULL CHECK (state IN ('pending', 'closed', 'voided', 'expired')),
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    resolved_at TIMESTAMPTZ,
    description TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL
);
CREATE INDEX holds_pending ON holds (partner_id) WHERE state = 'pending';

-- Every mutating call's key, per partner: a retry gets the first answer, a reuse with other
-- fields is refused.
CREATE TABLE idempotency_keys (
    partner_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    operation TEXT NOT NULL,
    request_sha256 BYTEA NOT NULL,
    response BYTEA,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (partner_id, idempotency_key)
);

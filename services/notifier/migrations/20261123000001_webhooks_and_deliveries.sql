-- Webhook endpoints a partner configured, for all its tenants (tenant_id '') or one.
CREATE TABLE webhook_endpoints (
    endpoint_id UUID PRIMARY KEY,
    partner_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL DEFAULT '',
    url TEXT NOT NULL,
    -- `whsec_` secrets that sign each request; the previous one signs too while a rotation lasts.
    secret TEXT NOT NULL,
    previous_secret TEXT,
    previous_secret_expires_at TIMESTAMPTZ,
    -- Webhook event types to send, such as `incident.opened`; empty means all.
    event_types TEXT[] NOT NULL DEFAULT '{}',
    description TEXT NOT NULL DEFAULT '',
    enabled BOOLEAN NOT NULL DEFAULT true,
    disabled_reason TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX webhook_endpoints_by_partner ON webhook_endpoints (partner_id, tenant_id);

-- One delivery per (endpoint, event): a partner hears of each change once.
CREATE TABLE deliveries (
    delivery_id UUID PRIMARY KEY,
    partner_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    endpoint_id UUID NOT NULL REFERENCES webhook_endpoints (endpoint_id) ON DELETE CASCADE,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    -- The exact JSON body that is signed and sent on every attempt.
    body TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed', 'dead')),
    attempt_count INTEGER NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL,
    next_attempt_at TIMESTAMPTZ,
    last_attempt_at TIMESTAMPTZ,
    last_error TEXT NOT NULL DEFAULT '',
    UNIQUE (endpoint_id, event_id)
);

CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status IN ('pending', 'failed');
CREATE INDEX deliveries_by_partner ON deliveries (partner_id, created_at DESC);

-- Every attempt: when, how long, what the endpoint answered.
CREATE TABLE delivery_attempts (
    attempt_id UUID PRIMARY KEY,
    delivery_id UUID NOT NULL REFERENCES deliveries (delivery_id) ON DELETE CASCADE,
    attempt_number INTEGER NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    latency_ms INTEGER NOT NULL,
    response_status INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT ''
);

CREATE INDEX delivery_attempts_by_delivery ON delivery_attempts (delivery_id, attempt_number);

-- The platform kit's tables, created in each service's own schema (search_path).

-- Events a service committed together with its state change, waiting to be relayed to JetStream.
CREATE TABLE outbox (
    seq BIGSERIAL PRIMARY KEY,
    event_id UUID NOT NULL UNIQUE,
    subject TEXT NOT NULL,
    event_type TEXT NOT NULL,
    source TEXT NOT NULL,
    ce_subject TEXT NOT NULL,
    occurred_at TIMESTAMPTZ NOT NULL,
    payload BYTEA NOT NULL,
    trace_context JSONB NOT NULL DEFAULT '{}'::jsonb
);

-- Events each consumer has applied, written in the same transaction as the effect.
CREATE TABLE inbox (
    consumer TEXT NOT NULL,
    event_id TEXT NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

CREATE INDEX inbox_processed_at ON inbox (processed_at);

-- Events the outbox relay can never publish (larger than the NATS server accepts), moved out of its
-- way with the reason, so the events behind them flow; each is also announced on the dead-letter
-- subject and counted (picket_outbox_events_set_aside_total).
CREATE TABLE outbox_set_aside (
    seq BIGINT PRIMARY KEY,
    event_id UUID NOT NULL,
    subject TEXT NOT NULL,
    event_type TEXT NOT NULL,
    source TEXT NOT NULL,
    ce_subject TEXT NOT NULL,
    occurred_at TIMESTAMPTZ NOT NULL,
    payload BYTEA NOT NULL,
    trace_context JSONB NOT NULL,
    reason TEXT NOT NULL,
    set_aside_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

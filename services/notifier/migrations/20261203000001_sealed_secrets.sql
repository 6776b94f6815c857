-- Webhook signing secrets sealed at rest (envelope encryption under notifier.secret_keys, see
-- picket_platform::sealing and src/secrets.rs). The clear columns are emptied at start once their
-- row is sealed; secret_key_id says which key-encryption key wraps the row, for re-wrapping.
ALTER TABLE webhook_endpoints
    ADD COLUMN secret_sealed BYTEA,
    ADD COLUMN previous_secret_sealed BYTEA,
    ADD COLUMN secret_key_id TEXT,
    ADD COLUMN secret_hint TEXT NOT NULL DEFAULT '',
    ALTER COLUMN secret DROP NOT NULL;

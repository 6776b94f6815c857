-- The consent link's `state` is kept only as its SHA-256 (hex): a read of this table cannot
-- complete anyone's consent. The link itself is shown once, when it is issued.
UPDATE tenants SET consent_state = encode(sha256(convert_to(consent_state, 'UTF8')), 'hex');
ALTER TABLE tenants RENAME COLUMN consent_state TO consent_state_hash;

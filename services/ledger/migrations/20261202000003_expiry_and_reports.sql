-- The expiry sweep finds lapsed packs and holds; statements and listings read transfers and work
-- entries by engagement.
CREATE INDEX packs_lapsing ON packs (expires_at) WHERE remaining > 0;
CREATE INDEX holds_lapsing ON holds (expires_at) WHERE state = 'pending';
CREATE INDEX transfers_by_engagement ON transfers (engagement_id) WHERE engagement_id IS NOT NULL;
CREATE INDEX work_entries_by_partner ON work_entries (partner_id, logged_at);
CREATE INDEX transfers_by_hold ON transfers (hold_id) WHERE hold_id IS NOT NULL;

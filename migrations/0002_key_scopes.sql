-- A key may be limited to reading, and to a list of channels.
ALTER TABLE api_keys ADD COLUMN read_only INTEGER NOT NULL DEFAULT 0;
-- JSON array of channel names the key works on; NULL: every channel its user may use.
ALTER TABLE api_keys ADD COLUMN channels TEXT;

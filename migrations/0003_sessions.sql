-- Browser sessions. The cookie holds a random id; only its SHA-256 is stored. A session acts
-- with the limits of the key it was started with (read-only, channels) and ends no later than
-- that key: its expiry is capped by the key's, and a revoked key's sessions stop working.
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY,
    id_hash TEXT NOT NULL UNIQUE,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    key_id INTEGER NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX sessions_key ON sessions(key_id);
CREATE INDEX sessions_expiry ON sessions(expires_at);

-- What the channel list shows of each channel, written by the channel's index after each
-- change, so listing channels costs one D1 query however many there are.
ALTER TABLE channels ADD COLUMN package_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE channels ADD COLUMN last_upload INTEGER;

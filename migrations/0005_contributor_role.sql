-- A third role between owner and member: a contributor may upload and delete packages but not
-- manage the channel. SQLite cannot change a CHECK constraint in place, so the table is made
-- anew with its rows (no table refers to it).
CREATE TABLE memberships_with_contributors (
    channel TEXT NOT NULL REFERENCES channels(name) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('owner', 'contributor', 'member')),
    PRIMARY KEY (channel, user_id)
);
INSERT INTO memberships_with_contributors (channel, user_id, role)
    SELECT channel, user_id, role FROM memberships;
DROP TABLE memberships;
ALTER TABLE memberships_with_contributors RENAME TO memberships;
CREATE INDEX memberships_user ON memberships(user_id);

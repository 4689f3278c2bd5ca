-- Trusted publishers: a CI workflow (its OIDC token's issuer and repository, optionally its
-- workflow file, environment and git ref) that may exchange its token for a short-lived key
-- which uploads to one channel. `created_by` is the owner who registered it: the keys minted
-- for it belong to that user, so every upload names someone accountable.
CREATE TABLE trusted_publishers (
    id INTEGER PRIMARY KEY,
    channel TEXT NOT NULL REFERENCES channels(name) ON DELETE CASCADE,
    issuer TEXT NOT NULL,
    repository TEXT NOT NULL,
    workflow TEXT,
    environment TEXT,
    git_ref TEXT,
    created_by INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL
);
-- One publisher of the same description per channel (NULLs would count as distinct in a plain
-- UNIQUE constraint); repositories are compared without case, as GitHub and GitLab do.
CREATE UNIQUE INDEX trusted_publishers_unique ON trusted_publishers (
    channel, issuer, repository COLLATE NOCASE, IFNULL(workflow, ''), IFNULL(environment, ''),
    IFNULL(git_ref, '')
);
CREATE INDEX trusted_publishers_repository ON trusted_publishers (issuer, repository COLLATE NOCASE);

-- The OIDC tokens already exchanged (each is used once), kept until they expire
-- (milliseconds since the epoch), then deleted.
CREATE TABLE used_tokens (
    issuer TEXT NOT NULL,
    jti TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (issuer, jti)
);
CREATE INDEX used_tokens_expiry ON used_tokens(expires_at);

-- What a key minted for a trusted publisher was minted for: the CI run its token named.
CREATE TABLE minted_keys (
    key_id INTEGER PRIMARY KEY REFERENCES api_keys(id) ON DELETE CASCADE,
    issuer TEXT NOT NULL,
    repository TEXT NOT NULL,
    workflow TEXT,
    run_id TEXT,
    git_ref TEXT,
    commit_sha TEXT,
    environment TEXT
);
-- The publishers (one per channel) a minted key acts for. Removing a publisher removes these
-- rows, so its keys stop working on its channel, and a key left with none is no key.
CREATE TABLE minted_key_publishers (
    key_id INTEGER NOT NULL REFERENCES minted_keys(key_id) ON DELETE CASCADE,
    publisher_id INTEGER NOT NULL REFERENCES trusted_publishers(id) ON DELETE CASCADE,
    PRIMARY KEY (key_id, publisher_id)
);
CREATE INDEX minted_key_publishers_publisher ON minted_key_publishers(publisher_id);

-- Signing in with an identity provider (OpenID Connect, GitHub, Cloudflare Access).
--
-- An identity is the provider's own name for a person: the OIDC issuer's `sub` (with the
-- issuer, so that another provider's subjects never match), GitHub's numeric user id, or the
-- email Access vouches for. Each belongs to one user; the label (login, email) is for listings.
CREATE TABLE identities (
    id INTEGER PRIMARY KEY,
    provider TEXT NOT NULL CHECK (provider IN ('oidc', 'github', 'access')),
    -- The OIDC issuer URL; '' for GitHub and Access, of which a deployment knows one each.
    issuer TEXT NOT NULL DEFAULT '',
    subject TEXT NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    label TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    UNIQUE (provider, issuer, subject)
);
CREATE INDEX identities_user ON identities(user_id);

-- A session acts through a key. An identity's sign-in makes a key of its own for its session:
-- no limits, expiring with the session, its secret never kept nor shown, left out of key
-- listings, and gone with the identity (unlinking it ends its sessions).
ALTER TABLE api_keys ADD COLUMN identity_id INTEGER REFERENCES identities(id) ON DELETE CASCADE;

-- A session of an identity that ADMIN_IDENTITIES names acts as a site admin.
ALTER TABLE sessions ADD COLUMN site_admin INTEGER NOT NULL DEFAULT 0;

-- A sign-in under way: what the browser's callback must bring back (the state, of which only
-- the SHA-256 is kept, as the browser's attempt cookie holds it), and the nonce and PKCE
-- verifier the provider's answer is checked with. Each is taken (deleted) by its one callback.
-- `replaces`: the hash of the session the browser held when it started, which the sign-in
-- ends (the callback, a navigation from another site, does not carry the Strict cookie).
CREATE TABLE sign_in_attempts (
    state_hash TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    nonce TEXT NOT NULL,
    verifier TEXT NOT NULL,
    next TEXT NOT NULL,
    replaces TEXT,
    expires_at INTEGER NOT NULL
);
CREATE INDEX sign_in_attempts_expiry ON sign_in_attempts(expires_at);

//! The directory: every statement run against D1 (users, keys, channels, memberships, trusted
//! publishers), with the rows it returns. The Worker binds them (`edge::db`), the admin command binds them on the
//! local D1 file (`sqlite`) or inlines them for `wrangler d1 execute --remote`: all run the same
//! SQL, so a rule written into a statement holds for each.
//!
//! One such rule: a channel keeps at least one owner. The statements that demote or remove a
//! member carry it in their `WHERE` clause, so it holds atomically, and return no row when it
//! refuses; [`membership_refusal`] then says why.

use serde::Deserialize;

use crate::access::Role;
use crate::error::{ApiError, ErrorCode};
use crate::statement::Statement;

/// A key that is not revoked, with its user (see [`key_by_hash`]).
#[derive(Debug, Clone, Deserialize)]
pub struct KeyRow {
    pub key_id: i64,
    pub key_name: String,
    pub read_only: i64,
    /// JSON array of channel names; `None`: no limit.
    pub channels: Option<String>,
    pub expires_at: Option<f64>,
    pub user_id: i64,
    pub name: String,
    pub is_admin: i64,
    /// For a key minted for trusted publishers, what it was minted for (JSON, see
    /// [`MintedFor`]).
    pub minted: Option<String>,
}

impl KeyRow {
    /// What the key was minted for, if it was minted for trusted publishers.
    pub fn minted_for(&self) -> Option<MintedFor> {
        self.minted
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok())
    }
}

/// The CI run a minted key was minted for, and the publishers it still acts for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MintedFor {
    pub issuer: String,
    pub repository: String,
    pub workflow: Option<String>,
    pub run_id: Option<String>,
    pub git_ref: Option<String>,
    pub commit: Option<String>,
    pub environment: Option<String>,
    /// One per channel, each still registered.
    pub publishers: Vec<PublisherGrant>,
}

/// A channel a minted key uploads to, by virtue of its publisher there.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct PublisherGrant {
    pub channel: String,
    pub publisher: i64,
}

/// The columns of a [`KeyRow`], from `api_keys k JOIN users u`: one text for each statement
/// that reads a key with its user.
macro_rules! key_row_columns {
    () => {
        "k.id AS key_id, k.name AS key_name, k.read_only, k.channels, k.expires_at, k.user_id, \
         u.name, u.is_admin, \
         (SELECT json_object('issuer', m.issuer, 'repository', m.repository, \
         'workflow', m.workflow, 'run_id', m.run_id, 'git_ref', m.git_ref, \
         'commit', m.commit_sha, 'environment', m.environment, 'publishers', \
         json((SELECT json_group_array(json_object('channel', p.channel, 'publisher', p.id)) \
         FROM minted_key_publishers g JOIN trusted_publishers p ON p.id = g.publisher_id \
         WHERE g.key_id = m.key_id))) FROM minted_keys m WHERE m.key_id = k.id) AS minted"
    };
}

/// The statement reading the key that meets `$condition`, with its user, unless it was revoked
/// or was minted for trusted publishers none of which is registered any more.
macro_rules! active_key {
    ($condition:literal) => {
        concat!(
            "SELECT ",
            key_row_columns!(),
            " FROM api_keys k JOIN users u ON u.id = k.user_id WHERE ",
            $condition,
            " AND k.revoked_at IS NULL \
             AND (NOT EXISTS (SELECT 1 FROM minted_keys m WHERE m.key_id = k.id) \
             OR EXISTS (SELECT 1 FROM minted_key_publishers g WHERE g.key_id = k.id))"
        )
    };
}

/// The key whose secret hashes to `hash`, unless it was revoked, with its user.
pub fn key_by_hash(hash: &str) -> Statement {
    Statement::new(active_key!("k.key_hash = ?1"), vec![hash.into()])
}

/// The key with this id, unless it was revoked, with its user: what an upload ticket, which
/// names its key, is checked against when it is used.
pub fn key_by_id(id: i64) -> Statement {
    Statement::new(active_key!("k.id = ?1"), vec![id.into()])
}

/// A live session with the key it acts with (see [`session_by_hash`]).
#[derive(Debug, Clone, Deserialize)]
pub struct SessionRow {
    pub session_expires_at: f64,
    /// The session was started by an identity that `ADMIN_IDENTITIES` names.
    pub site_admin: i64,
    #[serde(flatten)]
    pub key: KeyRow,
}

/// The session whose id hashes to `hash`, unless it or its key was revoked. Expiry is the
/// caller's to check (against its own clock).
pub fn session_by_hash(hash: &str) -> Statement {
    Statement::new(
        concat!(
            "SELECT s.expires_at AS session_expires_at, s.site_admin, ",
            key_row_columns!(),
            " FROM sessions s JOIN api_keys k ON k.id = s.key_id JOIN users u ON u.id = k.user_id \
             WHERE s.id_hash = ?1 AND s.revoked_at IS NULL AND k.revoked_at IS NULL"
        ),
        vec![hash.into()],
    )
}

/// Starts a session of an active key (`site_admin`: of an identity `ADMIN_IDENTITIES` names).
/// Returns its row `id`, or no row when the key was revoked meanwhile.
pub fn create_session(
    hash: &str,
    key_id: i64,
    now: i64,
    expires_at: i64,
    site_admin: bool,
) -> Statement {
    Statement::new(
        "INSERT INTO sessions (id_hash, user_id, key_id, created_at, expires_at, site_admin) \
         SELECT ?1, user_id, id, ?3, ?4, ?5 FROM api_keys WHERE id = ?2 AND revoked_at IS NULL \
         RETURNING id",
        vec![
            hash.into(),
            key_id.into(),
            now.into(),
            expires_at.into(),
            site_admin.into(),
        ],
    )
}

/// Ends a session (sign-out). Returns its key's id, or no row when there was no live session.
pub fn end_session(hash: &str, now: i64) -> Statement {
    Statement::new(
        "UPDATE sessions SET revoked_at = ?2 WHERE id_hash = ?1 AND revoked_at IS NULL \
         RETURNING key_id",
        vec![hash.into(), now.into()],
    )
}

/// Forgets sessions that expired: they can never be used again.
pub fn delete_expired_sessions(now: i64) -> Statement {
    Statement::new(
        "DELETE FROM sessions WHERE expires_at <= ?1",
        vec![now.into()],
    )
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChannelRow {
    pub name: String,
    pub private: i64,
    pub created_at: f64,
    /// When its deletion began; `None` for a channel in service.
    pub deleting_at: Option<f64>,
    /// A mirror's rules as JSON ([`crate::mirror::MirrorRulesJson`]); `None` for a channel
    /// that takes uploads.
    pub mirror: Option<String>,
}

/// The channel, in service or being deleted.
pub fn channel(name: &str) -> Statement {
    Statement::new(
        "SELECT name, private, created_at, deleting_at, mirror FROM channels WHERE name = ?1",
        vec![name.into()],
    )
}

pub fn all_channels() -> Statement {
    Statement::new(
        "SELECT name, private, created_at, deleting_at, mirror FROM channels ORDER BY name",
        vec![],
    )
}

/// A channel with the role a user has in it, if any, and its figures.
#[derive(Debug, Clone, Deserialize)]
pub struct ChannelRoleRow {
    pub name: String,
    pub private: i64,
    pub created_at: f64,
    pub role: Option<String>,
    pub package_count: i64,
    pub last_upload: Option<f64>,
    /// A mirror's rules as JSON, as [`ChannelRow::mirror`].
    pub mirror: Option<String>,
}

/// Every channel with `user_id`'s role in each (none for `None`), for listings that the
/// access policy then filters.
pub fn channels_with_role(user_id: Option<i64>) -> Statement {
    Statement::new(
        "SELECT c.name, c.private, c.created_at, m.role, c.package_count, c.last_upload, \
         c.mirror FROM channels c \
         LEFT JOIN memberships m ON m.channel = c.name AND m.user_id = ?1 \
         WHERE c.deleting_at IS NULL ORDER BY c.name",
        vec![user_id.into()],
    )
}

/// Stores what the channel's index holds after a change: how many package files, and when the
/// newest was indexed (milliseconds; `None` when there is none).
pub fn set_channel_figures(name: &str, package_count: i64, last_upload: Option<i64>) -> Statement {
    Statement::new(
        "UPDATE channels SET package_count = ?2, last_upload = ?3 WHERE name = ?1",
        vec![name.into(), package_count.into(), last_upload.into()],
    )
}

/// The new channel's name, or no row when the name is taken. `mirror`: a mirror's rules as
/// JSON, `None` for a channel that takes uploads.
pub fn create_channel(name: &str, private: bool, mirror: Option<&str>, now: i64) -> Statement {
    Statement::new(
        "INSERT INTO channels (name, private, created_at, mirror) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (name) DO NOTHING RETURNING name",
        vec![name.into(), private.into(), now.into(), mirror.into()],
    )
}

/// The channel's name, or no row when there is no such channel in service.
/// Sets a channel's visibility and, when given, a mirror's rules (their JSON; a channel that
/// is no mirror never gets any). Returns the name, or no row when there is no such channel.
pub fn set_channel_settings(name: &str, private: bool, mirror: Option<&str>) -> Statement {
    Statement::new(
        "UPDATE channels SET private = ?2, mirror = COALESCE(?3, mirror) \
         WHERE name = ?1 AND deleting_at IS NULL RETURNING name",
        vec![name.into(), private.into(), mirror.into()],
    )
}

/// Takes a channel out of service before its objects are deleted: from then on it is served
/// to no one, and its row (keeping the name taken, and its owners) stays until
/// [`delete_channel`] follows the last object. Returns the name, or no row when there is no
/// such channel. A deletion begun earlier keeps its time.
pub fn begin_channel_deletion(name: &str, now: i64) -> Statement {
    Statement::new(
        "UPDATE channels SET deleting_at = COALESCE(deleting_at, ?2) WHERE name = ?1 \
         RETURNING name",
        vec![name.into(), now.into()],
    )
}

/// Removes a channel and its memberships, once its objects are gone; run as one batch.
pub fn delete_channel(name: &str) -> [Statement; 2] {
    [
        Statement::new(
            "DELETE FROM memberships WHERE channel = ?1",
            vec![name.into()],
        ),
        Statement::new("DELETE FROM channels WHERE name = ?1", vec![name.into()]),
    ]
}

#[derive(Debug, Clone, Deserialize)]
pub struct RoleRow {
    pub role: String,
}

pub fn role(channel: &str, user_id: i64) -> Statement {
    Statement::new(
        "SELECT role FROM memberships WHERE channel = ?1 AND user_id = ?2",
        vec![channel.into(), user_id.into()],
    )
}

#[derive(Debug, Clone, Deserialize)]
pub struct MembershipRow {
    pub channel: String,
    pub role: String,
}

pub fn memberships_of(user_id: i64) -> Statement {
    Statement::new(
        "SELECT channel, role FROM memberships WHERE user_id = ?1 ORDER BY channel",
        vec![user_id.into()],
    )
}

#[derive(Debug, Clone, Deserialize)]
pub struct MemberRow {
    pub user: String,
    pub role: String,
}

/// Owners first, then members, each by name.
pub fn members(channel: &str) -> Statement {
    Statement::new(
        "SELECT u.name AS user, m.role FROM memberships m JOIN users u ON u.id = m.user_id \
         WHERE m.channel = ?1 ORDER BY m.role DESC, u.name",
        vec![channel.into()],
    )
}

/// Makes `user_id` an owner, contributor or member of an existing channel. Returns the role,
/// or no row when the channel does not exist or the change would demote its last owner. Only a
/// demotion is refused: a channel left without owners (its owners' users deleted) still takes
/// members.
pub fn put_member(channel: &str, user_id: i64, role: Role) -> Statement {
    Statement::new(
        "INSERT INTO memberships (channel, user_id, role) \
         SELECT name, ?2, ?3 FROM channels WHERE name = ?1 AND (?3 = 'owner' \
         OR NOT EXISTS (SELECT 1 FROM memberships WHERE channel = ?1 AND user_id = ?2 \
         AND role = 'owner') \
         OR EXISTS (SELECT 1 FROM memberships WHERE channel = ?1 AND role = 'owner' \
         AND user_id != ?2)) \
         ON CONFLICT (channel, user_id) DO UPDATE SET role = excluded.role RETURNING role",
        vec![channel.into(), user_id.into(), role.as_str().into()],
    )
}

/// Removes a membership. Returns the role it had, or no row when there was none or it is the
/// channel's last owner.
pub fn remove_member(channel: &str, user_id: i64) -> Statement {
    Statement::new(
        "DELETE FROM memberships WHERE channel = ?1 AND user_id = ?2 AND (role != 'owner' \
         OR EXISTS (SELECT 1 FROM memberships WHERE channel = ?1 AND role = 'owner' \
         AND user_id != ?2)) RETURNING role",
        vec![channel.into(), user_id.into()],
    )
}

/// Why [`put_member`] or [`remove_member`] returned no row, given what is there now.
pub fn membership_refusal(
    channel: &str,
    user: &str,
    channel_exists: bool,
    current_role: Option<Role>,
) -> ApiError {
    if !channel_exists {
        ApiError::not_found(format!("no channel named '{channel}'"))
    } else if current_role == Some(Role::Owner) {
        ApiError::new(
            ErrorCode::LastOwner,
            format!(
                "{user} is the last owner of '{channel}'; a channel must keep at least one owner"
            ),
        )
    } else {
        ApiError::not_found(format!("{user} is not a member of '{channel}'"))
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct UserRow {
    pub id: i64,
    pub name: String,
    pub is_admin: i64,
    pub created_at: f64,
}

/// The new user, or no row when the name is taken.
pub fn create_user(name: &str, is_admin: bool, now: i64) -> Statement {
    Statement::new(
        "INSERT INTO users (name, is_admin, created_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (name) DO NOTHING RETURNING id, name, is_admin, created_at",
        vec![name.into(), is_admin.into(), now.into()],
    )
}

pub fn user_by_name(name: &str) -> Statement {
    Statement::new(
        "SELECT id, name, is_admin, created_at FROM users WHERE name = ?1",
        vec![name.into()],
    )
}

pub fn users() -> Statement {
    Statement::new(
        "SELECT id, name, is_admin, created_at FROM users ORDER BY name",
        vec![],
    )
}

/// A key as its owner may see it: never the secret, nor its hash.
#[derive(Debug, Clone, Deserialize)]
pub struct KeyListRow {
    pub id: i64,
    pub user: String,
    pub name: String,
    pub prefix: String,
    pub read_only: i64,
    pub channels: Option<String>,
    pub created_at: f64,
    pub expires_at: Option<f64>,
    pub revoked_at: Option<f64>,
}

/// The keys of one user, or of every user for `None`, oldest first; not the keys identity
/// sign-ins make for their sessions (see [`create_sign_in_key`]).
pub fn keys(user: Option<&str>) -> Statement {
    Statement::new(
        "SELECT k.id, u.name AS user, k.name, k.prefix, k.read_only, k.channels, k.created_at, \
         k.expires_at, k.revoked_at FROM api_keys k JOIN users u ON u.id = k.user_id \
         WHERE (?1 IS NULL OR u.name = ?1) AND k.identity_id IS NULL ORDER BY k.id",
        vec![user.into()],
    )
}

/// What a new key is, besides its secret.
#[derive(Debug, Clone)]
pub struct NewKey<'a> {
    pub user_id: i64,
    pub name: &'a str,
    pub hash: &'a str,
    pub prefix: &'a str,
    pub now: i64,
    pub expires_at: Option<i64>,
    pub read_only: bool,
    /// The channels it is limited to, as a JSON array; `None`: no limit.
    pub channels_json: Option<&'a str>,
}

/// Returns the new key's `id`.
pub fn create_key(key: &NewKey) -> Statement {
    Statement::new(
        "INSERT INTO api_keys \
         (user_id, name, key_hash, prefix, created_at, expires_at, read_only, channels) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
        vec![
            key.user_id.into(),
            key.name.into(),
            key.hash.into(),
            key.prefix.into(),
            key.now.into(),
            key.expires_at.into(),
            key.read_only.into(),
            key.channels_json.into(),
        ],
    )
}

/// Revokes an active key of `owner_id`, or of anyone for `None`. Returns its `id`, or no row
/// when there is no such active key.
pub fn revoke_key(id: i64, owner_id: Option<i64>, now: i64) -> Statement {
    Statement::new(
        "UPDATE api_keys SET revoked_at = ?3 WHERE id = ?1 AND revoked_at IS NULL \
         AND (?2 IS NULL OR user_id = ?2) RETURNING id",
        vec![id.into(), owner_id.into(), now.into()],
    )
}

/// A sign-in under way with an identity provider, as its callback takes it (see
/// [`take_sign_in_attempt`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SignInAttemptRow {
    pub provider: String,
    pub nonce: String,
    pub verifier: String,
    pub next: String,
    /// The hash of the session the browser held when it started.
    pub replaces: Option<String>,
    pub expires_at: f64,
}

/// What a new sign-in attempt keeps until its callback.
#[derive(Debug, Clone)]
pub struct NewSignInAttempt<'a> {
    /// The SHA-256 of the `state` the browser's attempt cookie holds.
    pub state_hash: &'a str,
    pub provider: &'a str,
    pub nonce: &'a str,
    pub verifier: &'a str,
    /// The path of this site to go to once signed in.
    pub next: &'a str,
    /// The hash of the session the browser holds, which the sign-in is to end.
    pub replaces: Option<&'a str>,
    pub expires_at: i64,
}

pub fn create_sign_in_attempt(attempt: &NewSignInAttempt) -> Statement {
    Statement::new(
        "INSERT INTO sign_in_attempts \
         (state_hash, provider, nonce, verifier, next, replaces, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        vec![
            attempt.state_hash.into(),
            attempt.provider.into(),
            attempt.nonce.into(),
            attempt.verifier.into(),
            attempt.next.into(),
            attempt.replaces.into(),
            attempt.expires_at.into(),
        ],
    )
}

/// Takes the attempt whose state hashes to `state_hash`: it is deleted as it is read, so a
/// second callback with the same state finds nothing. Expiry is the caller's to check.
pub fn take_sign_in_attempt(state_hash: &str) -> Statement {
    Statement::new(
        "DELETE FROM sign_in_attempts WHERE state_hash = ?1 \
         RETURNING provider, nonce, verifier, next, replaces, expires_at",
        vec![state_hash.into()],
    )
}

/// Forgets what can no longer be used: sign-in attempts and identity sign-ins' keys that
/// expired (their sessions go with them).
pub fn delete_expired_sign_ins(now: i64) -> [Statement; 2] {
    [
        Statement::new(
            "DELETE FROM sign_in_attempts WHERE expires_at <= ?1",
            vec![now.into()],
        ),
        Statement::new(
            "DELETE FROM api_keys WHERE identity_id IS NOT NULL AND expires_at <= ?1",
            vec![now.into()],
        ),
    ]
}

/// An identity with its user.
#[derive(Debug, Clone, Deserialize)]
pub struct IdentityRow {
    pub id: i64,
    pub provider: String,
    pub issuer: String,
    pub subject: String,
    pub label: String,
    pub user_id: i64,
    pub user: String,
    pub created_at: f64,
}

macro_rules! identity_columns {
    () => {
        "i.id, i.provider, i.issuer, i.subject, i.label, i.user_id, u.name AS user, i.created_at"
    };
}

/// The identity `subject` of `provider` (and, for OpenID Connect, `issuer`; '' otherwise).
pub fn identity(provider: &str, issuer: &str, subject: &str) -> Statement {
    Statement::new(
        concat!(
            "SELECT ",
            identity_columns!(),
            " FROM identities i JOIN users u ON u.id = i.user_id \
             WHERE i.provider = ?1 AND i.issuer = ?2 AND i.subject = ?3"
        ),
        vec![provider.into(), issuer.into(), subject.into()],
    )
}

/// Every identity, by provider and subject.
pub fn identities() -> Statement {
    Statement::new(
        concat!(
            "SELECT ",
            identity_columns!(),
            " FROM identities i JOIN users u ON u.id = i.user_id \
             ORDER BY i.provider, i.issuer, i.subject"
        ),
        vec![],
    )
}

/// What a new identity is.
#[derive(Debug, Clone)]
pub struct NewIdentity<'a> {
    pub provider: &'a str,
    pub issuer: &'a str,
    pub subject: &'a str,
    pub user_id: i64,
    pub label: &'a str,
    pub now: i64,
}

/// Links an identity to a user. Returns its `id`, or no row when the identity belongs to a
/// user already.
pub fn create_identity(identity: &NewIdentity) -> Statement {
    Statement::new(
        "INSERT INTO identities (provider, issuer, subject, user_id, label, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (provider, issuer, subject) DO NOTHING \
         RETURNING id",
        vec![
            identity.provider.into(),
            identity.issuer.into(),
            identity.subject.into(),
            identity.user_id.into(),
            identity.label.into(),
            identity.now.into(),
        ],
    )
}

/// Unlinks an identity; the keys of its sign-ins, and so their sessions, go with it. Returns
/// its `id`, or no row when there is no such identity.
pub fn delete_identity(provider: &str, issuer: &str, subject: &str) -> Statement {
    Statement::new(
        "DELETE FROM identities WHERE provider = ?1 AND issuer = ?2 AND subject = ?3 \
         RETURNING id",
        vec![provider.into(), issuer.into(), subject.into()],
    )
}

/// Removes a user made by a first sign-in whose identity another sign-in linked first, as long
/// as nothing refers to it yet.
pub fn delete_unused_user(user_id: i64) -> Statement {
    Statement::new(
        "DELETE FROM users WHERE id = ?1 \
         AND NOT EXISTS (SELECT 1 FROM identities WHERE user_id = ?1) \
         AND NOT EXISTS (SELECT 1 FROM api_keys WHERE user_id = ?1) \
         AND NOT EXISTS (SELECT 1 FROM memberships WHERE user_id = ?1) RETURNING id",
        vec![user_id.into()],
    )
}

/// The key an identity's sign-in makes for its session: no limits, expiring with the session,
/// its hash that of a secret nobody keeps. Returns its `id`.
pub fn create_sign_in_key(
    identity_id: i64,
    name: &str,
    hash: &str,
    now: i64,
    expires_at: i64,
) -> Statement {
    Statement::new(
        "INSERT INTO api_keys (user_id, name, key_hash, prefix, created_at, expires_at, identity_id) \
         SELECT user_id, ?2, ?3, '', ?4, ?5, id FROM identities WHERE id = ?1 RETURNING id",
        vec![
            identity_id.into(),
            name.into(),
            hash.into(),
            now.into(),
            expires_at.into(),
        ],
    )
}

/// A trusted publisher of a channel, as its owners see it listed.
#[derive(Debug, Clone, Deserialize)]
pub struct PublisherRow {
    pub id: i64,
    pub channel: String,
    pub issuer: String,
    pub repository: String,
    pub workflow: Option<String>,
    pub environment: Option<String>,
    pub git_ref: Option<String>,
    /// The user who registered it.
    pub created_by: String,
    pub created_at: f64,
}

/// The `id` a `RETURNING id` statement gives back.
#[derive(Debug, Clone, Deserialize)]
pub struct IdRow {
    pub id: i64,
}

/// What a new trusted publisher is.
#[derive(Debug, Clone)]
pub struct NewPublisher<'a> {
    pub channel: &'a str,
    pub issuer: &'a str,
    pub repository: &'a str,
    pub workflow: Option<&'a str>,
    pub environment: Option<&'a str>,
    pub git_ref: Option<&'a str>,
    pub created_by: i64,
    pub now: i64,
}

/// Registers a publisher for a channel in service. Returns its `id`, or no row when the channel
/// is not in service or has a publisher of the same description.
pub fn create_publisher(publisher: &NewPublisher) -> Statement {
    Statement::new(
        "INSERT INTO trusted_publishers \
         (channel, issuer, repository, workflow, environment, git_ref, created_by, created_at) \
         SELECT name, ?2, ?3, ?4, ?5, ?6, ?7, ?8 FROM channels \
         WHERE name = ?1 AND deleting_at IS NULL ON CONFLICT DO NOTHING RETURNING id",
        vec![
            publisher.channel.into(),
            publisher.issuer.into(),
            publisher.repository.into(),
            publisher.workflow.into(),
            publisher.environment.into(),
            publisher.git_ref.into(),
            publisher.created_by.into(),
            publisher.now.into(),
        ],
    )
}

/// The publishers of a channel, oldest first.
pub fn publishers(channel: &str) -> Statement {
    Statement::new(
        "SELECT p.id, p.channel, p.issuer, p.repository, p.workflow, p.environment, p.git_ref, \
         u.name AS created_by, p.created_at FROM trusted_publishers p \
         JOIN users u ON u.id = p.created_by WHERE p.channel = ?1 ORDER BY p.id",
        vec![channel.into()],
    )
}

/// A publisher a token may match (see [`publishers_of_repository`]).
#[derive(Debug, Clone, Deserialize)]
pub struct CandidateRow {
    pub id: i64,
    pub channel: String,
    pub repository: String,
    pub workflow: Option<String>,
    pub environment: Option<String>,
    pub git_ref: Option<String>,
    pub created_by: i64,
}

/// Every publisher, on a channel in service, for `repository` (compared without case) at
/// `issuer`: those a token of that repository may match, oldest first.
pub fn publishers_of_repository(issuer: &str, repository: &str) -> Statement {
    Statement::new(
        "SELECT p.id, p.channel, p.repository, p.workflow, p.environment, p.git_ref, \
         p.created_by \
         FROM trusted_publishers p JOIN channels c ON c.name = p.channel \
         WHERE p.issuer = ?1 AND p.repository = ?2 COLLATE NOCASE AND c.deleting_at IS NULL \
         ORDER BY p.id",
        vec![issuer.into(), repository.into()],
    )
}

/// Removes a publisher of a channel, and with it what its minted keys may do there. Returns its
/// `id`, or no row when the channel has no such publisher.
pub fn remove_publisher(channel: &str, id: i64) -> Statement {
    Statement::new(
        "DELETE FROM trusted_publishers WHERE channel = ?1 AND id = ?2 RETURNING id",
        vec![channel.into(), id.into()],
    )
}

/// Records that a token was used, until it expires (milliseconds). Returns the `jti`, or no row
/// when the token was used before.
pub fn use_token(issuer: &str, jti: &str, expires_at: i64) -> Statement {
    Statement::new(
        "INSERT INTO used_tokens (issuer, jti, expires_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT DO NOTHING RETURNING jti",
        vec![issuer.into(), jti.into(), expires_at.into()],
    )
}

/// Forgets used tokens that expired (they are refused as expired anyway) and minted keys that
/// expired (they never work again).
pub fn delete_expired_mints(now: i64) -> [Statement; 2] {
    [
        Statement::new(
            "DELETE FROM used_tokens WHERE expires_at <= ?1",
            vec![now.into()],
        ),
        Statement::new(
            "DELETE FROM api_keys WHERE expires_at <= ?1 \
             AND id IN (SELECT key_id FROM minted_keys)",
            vec![now.into()],
        ),
    ]
}

/// The CI run a key is minted for, as its token's claims name it.
#[derive(Debug, Clone)]
pub struct MintedRun<'a> {
    pub issuer: &'a str,
    pub repository: &'a str,
    pub workflow: Option<&'a str>,
    pub run_id: Option<&'a str>,
    pub git_ref: Option<&'a str>,
    pub commit: Option<&'a str>,
    pub environment: Option<&'a str>,
}

/// Creates a key minted for trusted publishers (`key` names its hash), what it was minted for,
/// and the publishers it acts for (`publisher_ids`, a JSON array of ids); run as one batch.
pub fn mint_key(key: &NewKey, run: &MintedRun, publisher_ids: &str) -> [Statement; 3] {
    [
        create_key(key),
        Statement::new(
            "INSERT INTO minted_keys \
             (key_id, issuer, repository, workflow, run_id, git_ref, commit_sha, environment) \
             SELECT id, ?2, ?3, ?4, ?5, ?6, ?7, ?8 FROM api_keys WHERE key_hash = ?1",
            vec![
                key.hash.into(),
                run.issuer.into(),
                run.repository.into(),
                run.workflow.into(),
                run.run_id.into(),
                run.git_ref.into(),
                run.commit.into(),
                run.environment.into(),
            ],
        ),
        Statement::new(
            "INSERT INTO minted_key_publishers (key_id, publisher_id) \
             SELECT k.id, p.id FROM api_keys k JOIN trusted_publishers p \
             ON p.id IN (SELECT value FROM json_each(?2)) WHERE k.key_hash = ?1",
            vec![key.hash.into(), publisher_ids.into()],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_has_a_parameter() {
        let key = NewKey {
            user_id: 1,
            name: "n",
            hash: "h",
            prefix: "p",
            now: 0,
            expires_at: None,
            read_only: false,
            channels_json: None,
        };
        let statements = [
            key_by_hash("h"),
            key_by_id(1),
            channel("c"),
            begin_channel_deletion("c", 0),
            channels_with_role(None),
            create_channel("c", true, Some("{}"), 0),
            set_channel_settings("c", false, None),
            role("c", 1),
            members("c"),
            put_member("c", 1, Role::Member),
            remove_member("c", 1),
            create_user("u", false, 0),
            keys(Some("u")),
            create_key(&key),
            revoke_key(1, None, 0),
            session_by_hash("h"),
            create_session("h", 1, 0, 1, false),
            end_session("h", 0),
            delete_expired_sessions(0),
            set_channel_figures("c", 1, None),
            create_sign_in_attempt(&NewSignInAttempt {
                state_hash: "h",
                provider: "github",
                nonce: "n",
                verifier: "v",
                next: "/",
                replaces: None,
                expires_at: 1,
            }),
            take_sign_in_attempt("h"),
            identity("oidc", "https://idp.example", "s"),
            identities(),
            create_identity(&NewIdentity {
                provider: "github",
                issuer: "",
                subject: "1",
                user_id: 1,
                label: "octo",
                now: 0,
            }),
            delete_identity("github", "", "1"),
            delete_unused_user(1),
            create_sign_in_key(1, "n", "h", 0, 1),
            create_publisher(&NewPublisher {
                channel: "c",
                issuer: "i",
                repository: "o/r",
                workflow: None,
                environment: None,
                git_ref: None,
                created_by: 1,
                now: 0,
            }),
            publishers("c"),
            publishers_of_repository("i", "o/r"),
            remove_publisher("c", 1),
            use_token("i", "j", 0),
        ];
        let run = MintedRun {
            issuer: "i",
            repository: "o/r",
            workflow: None,
            run_id: None,
            git_ref: None,
            commit: None,
            environment: None,
        };
        let statements = statements
            .into_iter()
            .chain(delete_expired_mints(0))
            .chain(delete_expired_sign_ins(0))
            .chain(mint_key(&key, &run, "[1]"));
        for statement in statements {
            // Inlining panics on a placeholder without a parameter.
            assert!(!statement.inline().contains('?'), "{}", statement.sql);
        }
    }

    #[test]
    fn refusals_say_why() {
        assert_eq!(
            membership_refusal("c", "u", false, None).code,
            ErrorCode::NotFound
        );
        assert_eq!(
            membership_refusal("c", "u", true, Some(Role::Owner)).code,
            ErrorCode::LastOwner
        );
        assert_eq!(
            membership_refusal("c", "u", true, None).code,
            ErrorCode::NotFound
        );
    }
}

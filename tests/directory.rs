//! The directory's statements run against real SQLite with the D1 schema (migrations/*.sql),
//! each scenario twice: with bound parameters, as the Worker runs them, and inlined, as the
//! admin command hands them to `wrangler d1 execute --remote`.

use std::fs;
use std::path::PathBuf;

use condaflare::access::Role;
use condaflare::directory::{self, *};
use condaflare::error::ErrorCode;
use condaflare::sqlite;
use condaflare::statement::Statement;
use rusqlite::Connection;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy)]
enum Mode {
    Bound,
    Inlined,
}

struct Db {
    conn: Connection,
    mode: Mode,
}

impl Db {
    /// A fresh in-memory database with every migration applied, in order.
    fn new(mode: Mode) -> Self {
        let conn = Connection::open_in_memory().unwrap();
        // D1 enforces foreign keys.
        conn.execute_batch("PRAGMA foreign_keys = ON").unwrap();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut migrations: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "sql"))
            .collect();
        migrations.sort();
        assert!(!migrations.is_empty());
        for path in migrations {
            conn.execute_batch(&fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        Self { conn, mode }
    }

    /// The rows a statement returns, as JSON objects by column name (as D1 answers).
    fn rows(&self, statement: &Statement) -> Vec<Value> {
        let answer = match self.mode {
            Mode::Bound => {
                let prepared = self.conn.prepare(&statement.sql).unwrap();
                assert_eq!(
                    prepared.parameter_count(),
                    statement.params.len(),
                    "{}",
                    statement.sql
                );
                sqlite::rows(&self.conn, statement)
            }
            Mode::Inlined => self
                .conn
                .prepare(&statement.inline())
                .and_then(sqlite::query),
        };
        answer.unwrap_or_else(|e| panic!("{}: {e}", statement.sql))
    }

    /// The rows, read as the statement's row type (so its columns are checked too).
    fn read<T: DeserializeOwned>(&self, statement: &Statement) -> Vec<T> {
        self.rows(statement)
            .into_iter()
            .map(|row| serde_json::from_value(row.clone()).unwrap_or_else(|e| panic!("{e}: {row}")))
            .collect()
    }

    fn user(&self, name: &str) -> i64 {
        let users: Vec<UserRow> = self.read(&create_user(name, false, 1));
        users[0].id
    }

    fn channel(&self, name: &str, owner: i64) {
        assert_eq!(self.rows(&create_channel(name, false, None, 1)).len(), 1);
        assert_eq!(
            self.role_after(&put_member(name, owner, Role::Owner)),
            Some("owner".into())
        );
    }

    /// The role a membership statement returns, if it returns a row.
    fn role_after(&self, statement: &Statement) -> Option<String> {
        let rows: Vec<RoleRow> = self.read(statement);
        assert!(rows.len() <= 1);
        rows.into_iter().next().map(|r| r.role)
    }

    fn role(&self, channel: &str, user_id: i64) -> Option<String> {
        self.role_after(&directory::role(channel, user_id))
    }

    fn key(&self, user_id: i64, name: &str) -> i64 {
        let hash = format!("hash-of-{name}");
        let rows = self.rows(&create_key(&NewKey {
            user_id,
            name,
            hash: &hash,
            prefix: "cfk-prefix12",
            now: 5,
            expires_at: None,
            read_only: false,
            channels_json: None,
        }));
        rows[0]["id"].as_i64().unwrap()
    }
}

/// Runs a scenario on a fresh database in each mode.
fn each_mode(scenario: impl Fn(&Db)) {
    for mode in [Mode::Bound, Mode::Inlined] {
        eprintln!("mode: {mode:?}");
        scenario(&Db::new(mode));
    }
}

#[test]
fn the_last_owner_is_neither_removed_nor_demoted() {
    each_mode(|db| {
        let ann = db.user("ann");
        let bob = db.user("bob");
        db.channel("team", ann);

        assert_eq!(db.role_after(&remove_member("team", ann)), None);
        assert_eq!(db.role_after(&put_member("team", ann, Role::Member)), None);
        assert_eq!(db.role("team", ann), Some("owner".into()));
        let why = membership_refusal("team", "ann", true, Some(Role::Owner));
        assert_eq!(why.code, ErrorCode::LastOwner);
        assert!(why.message.contains("last owner"), "{}", why.message);

        // Nor to a contributor.
        assert_eq!(
            db.role_after(&put_member("team", ann, Role::Contributor)),
            None
        );
        assert_eq!(db.role("team", ann), Some("owner".into()));

        // A member or a contributor is not an owner: ann is still the last one.
        for (role, stored) in [(Role::Member, "member"), (Role::Contributor, "contributor")] {
            assert_eq!(
                db.role_after(&put_member("team", bob, role)),
                Some(stored.into())
            );
            assert_eq!(db.role_after(&remove_member("team", ann)), None);
            assert_eq!(db.role_after(&put_member("team", ann, Role::Member)), None);
            assert_eq!(db.role("team", ann), Some("owner".into()));
        }

        // Owner again: a no-op for the last owner, always allowed.
        assert_eq!(
            db.role_after(&put_member("team", ann, Role::Owner)),
            Some("owner".into())
        );
    });
}

#[test]
fn with_a_second_owner_the_first_may_go() {
    each_mode(|db| {
        let ann = db.user("ann");
        let bob = db.user("bob");
        db.channel("team", ann);
        assert_eq!(
            db.role_after(&put_member("team", bob, Role::Member)),
            Some("member".into())
        );

        // Promotion.
        assert_eq!(
            db.role_after(&put_member("team", bob, Role::Owner)),
            Some("owner".into())
        );
        assert_eq!(db.role("team", bob), Some("owner".into()));

        // Now ann may step down, then leave; bob is the last owner.
        assert_eq!(
            db.role_after(&put_member("team", ann, Role::Member)),
            Some("member".into())
        );
        assert_eq!(
            db.role_after(&remove_member("team", ann)),
            Some("member".into())
        );
        assert_eq!(db.role("team", ann), None);
        assert_eq!(db.role_after(&remove_member("team", bob)), None);
        assert_eq!(db.role_after(&put_member("team", bob, Role::Member)), None);
        assert_eq!(db.role("team", bob), Some("owner".into()));

        let members: Vec<MemberRow> = db.read(&members("team"));
        assert_eq!(members.len(), 1);
        assert_eq!(
            (members[0].user.as_str(), members[0].role.as_str()),
            ("bob", "owner")
        );
    });
}

#[test]
fn removing_a_non_member_returns_no_row() {
    each_mode(|db| {
        let ann = db.user("ann");
        let bob = db.user("bob");
        db.channel("team", ann);
        assert_eq!(db.role_after(&remove_member("team", bob)), None);
        let why = membership_refusal("team", "bob", true, None);
        assert_eq!(why.code, ErrorCode::NotFound);
        assert_eq!(why.message, "bob is not a member of 'team'");
    });
}

#[test]
fn a_channel_without_owners_still_takes_members() {
    // Deleting a user removes their memberships (ON DELETE CASCADE), which can leave a channel
    // without owners; adding a member does not make that worse, and an owner repairs it.
    each_mode(|db| {
        let ann = db.user("ann");
        let bob = db.user("bob");
        let cid = db.user("cid");
        db.channel("team", ann);
        db.conn
            .execute("DELETE FROM users WHERE id = ?1", [ann])
            .unwrap();
        assert!(db.rows(&members("team")).is_empty());
        assert_eq!(
            db.role_after(&put_member("team", bob, Role::Member)),
            Some("member".into())
        );
        assert_eq!(
            db.role_after(&put_member("team", cid, Role::Owner)),
            Some("owner".into())
        );
        assert_eq!(
            db.role_after(&remove_member("team", bob)),
            Some("member".into())
        );
    });
}

#[test]
fn put_member_on_a_missing_channel_returns_no_row() {
    each_mode(|db| {
        let ann = db.user("ann");
        for role in [Role::Owner, Role::Member] {
            assert_eq!(db.role_after(&put_member("nowhere", ann, role)), None);
        }
        assert!(db.rows(&memberships_of(ann)).is_empty());
        assert_eq!(
            membership_refusal("nowhere", "ann", false, None).code,
            ErrorCode::NotFound
        );
    });
}

#[test]
fn a_taken_channel_name_returns_no_row() {
    each_mode(|db| {
        assert_eq!(
            db.rows(&create_channel("team", true, None, 10)),
            vec![json!({ "name": "team" })]
        );
        assert!(db.rows(&create_channel("team", false, None, 20)).is_empty());
        let channels: Vec<ChannelRow> = db.read(&channel("team"));
        assert_eq!(channels.len(), 1);
        assert_eq!((channels[0].private, channels[0].created_at), (1, 10.0));

        assert_eq!(db.rows(&set_channel_settings("team", false, None)).len(), 1);
        let channels: Vec<ChannelRow> = db.read(&channel("team"));
        assert_eq!(channels[0].private, 0);
        assert!(db
            .rows(&set_channel_settings("nowhere", true, None))
            .is_empty());

        // A mirror's rules change with its settings, and stay when none are given.
        db.rows(&create_channel(
            "forge",
            false,
            Some(r#"{"url":"https://a"}"#),
            30,
        ));
        db.rows(&set_channel_settings(
            "forge",
            true,
            Some(r#"{"url":"https://b"}"#),
        ));
        db.rows(&set_channel_settings("forge", true, None));
        let forge: Vec<ChannelRow> = db.read(&channel("forge"));
        assert_eq!(forge[0].mirror.as_deref(), Some(r#"{"url":"https://b"}"#));
        assert_eq!(forge[0].private, 1);
        // A channel that is no mirror gets no rules from a settings change without them.
        let team: Vec<ChannelRow> = db.read(&channel("team"));
        assert_eq!(team[0].mirror, None);
    });
}

#[test]
fn a_mirror_channel_keeps_its_rules() {
    each_mode(|db| {
        let rules = r#"{"url":"https://conda.example.org/c's","allow":["zlib"],"deny":[],"min_age_days":2}"#;
        assert_eq!(
            db.rows(&create_channel("mirror", false, Some(rules), 10))
                .len(),
            1
        );
        assert_eq!(db.rows(&create_channel("plain", false, None, 10)).len(), 1);
        let channels: Vec<ChannelRow> = db.read(&all_channels());
        let mirrors: Vec<_> = channels
            .iter()
            .map(|c| (c.name.as_str(), c.mirror.as_deref()))
            .collect();
        assert_eq!(mirrors, [("mirror", Some(rules)), ("plain", None)]);
        let channels: Vec<ChannelRow> = db.read(&channel("mirror"));
        assert_eq!(channels[0].mirror.as_deref(), Some(rules));
        // The channel list has them too.
        let listed: Vec<ChannelRoleRow> = db.read(&channels_with_role(None));
        let mirrors: Vec<_> = listed
            .iter()
            .map(|c| (c.name.as_str(), c.mirror.as_deref()))
            .collect();
        assert_eq!(mirrors, [("mirror", Some(rules)), ("plain", None)]);
    });
}

#[test]
fn a_taken_user_name_returns_no_row() {
    each_mode(|db| {
        let users: Vec<UserRow> = db.read(&create_user("ann", true, 7));
        assert_eq!((users[0].name.as_str(), users[0].is_admin), ("ann", 1));
        assert!(db.rows(&create_user("ann", false, 8)).is_empty());
        let users: Vec<UserRow> = db.read(&user_by_name("ann"));
        assert_eq!((users[0].is_admin, users[0].created_at), (1, 7.0));
        db.user("bob");
        let all: Vec<UserRow> = db.read(&directory::users());
        let names: Vec<_> = all.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["ann", "bob"]);
    });
}

#[test]
fn deleting_a_channel_removes_its_memberships() {
    each_mode(|db| {
        let ann = db.user("ann");
        db.channel("team", ann);
        db.channel("other", ann);
        for statement in delete_channel("team") {
            db.rows(&statement);
        }
        assert!(db.rows(&channel("team")).is_empty());
        let left: Vec<MembershipRow> = db.read(&memberships_of(ann));
        assert_eq!(left.len(), 1);
        assert_eq!(
            (left[0].channel.as_str(), left[0].role.as_str()),
            ("other", "owner")
        );
    });
}

#[test]
fn a_channel_being_deleted_keeps_its_name_and_owners_until_its_row_goes() {
    each_mode(|db| {
        let ann = db.user("ann");
        db.channel("team", ann);
        assert_eq!(db.rows(&begin_channel_deletion("team", 7)).len(), 1);
        // Begun again (a retry), it keeps the time it began.
        assert_eq!(db.rows(&begin_channel_deletion("team", 9)).len(), 1);
        let found: Vec<ChannelRow> = db.read(&channel("team"));
        assert_eq!(found[0].deleting_at, Some(7.0));
        // Listed to no one, its visibility fixed, its name still taken.
        let listed: Vec<ChannelRoleRow> = db.read(&channels_with_role(Some(ann)));
        assert!(listed.is_empty());
        assert!(db
            .rows(&set_channel_settings("team", true, None))
            .is_empty());
        assert!(db.rows(&create_channel("team", false, None, 10)).is_empty());
        assert_eq!(db.role("team", ann).as_deref(), Some("owner"));
        for statement in delete_channel("team") {
            db.rows(&statement);
        }
        assert_eq!(db.rows(&create_channel("team", false, None, 11)).len(), 1);
        let fresh: Vec<ChannelRow> = db.read(&channel("team"));
        assert_eq!(fresh[0].deleting_at, None);
        assert!(db.rows(&begin_channel_deletion("nothing", 1)).is_empty());
    });
}

#[test]
fn revoking_a_key_is_scoped_to_its_owner_unless_none() {
    each_mode(|db| {
        let ann = db.user("ann");
        let bob = db.user("bob");
        let anns = db.key(ann, "laptop");
        let bobs = db.key(bob, "ci");

        // Ann cannot revoke Bob's key; it stays valid.
        assert!(db.rows(&revoke_key(bobs, Some(ann), 100)).is_empty());
        assert_eq!(db.read::<KeyRow>(&key_by_hash("hash-of-ci")).len(), 1);

        // Her own, yes; once.
        assert_eq!(
            db.rows(&revoke_key(anns, Some(ann), 100)),
            vec![json!({ "id": anns })]
        );
        assert!(db.rows(&revoke_key(anns, Some(ann), 101)).is_empty());
        assert!(db.rows(&key_by_hash("hash-of-laptop")).is_empty());

        // An admin (no owner given) revokes anyone's.
        assert_eq!(
            db.rows(&revoke_key(bobs, None, 102)),
            vec![json!({ "id": bobs })]
        );
        assert!(db.rows(&revoke_key(bobs, None, 103)).is_empty());
        assert!(db.rows(&key_by_hash("hash-of-ci")).is_empty());
        assert!(db.rows(&revoke_key(9999, None, 104)).is_empty());

        let listed: Vec<KeyListRow> = db.read(&keys(None));
        assert_eq!(
            listed.iter().map(|k| k.revoked_at).collect::<Vec<_>>(),
            [Some(100.0), Some(102.0)]
        );
    });
}

#[test]
fn a_key_is_found_by_its_hash_with_its_user_and_limits() {
    each_mode(|db| {
        let ann = db.user("ann");
        let rows = db.rows(&create_key(&NewKey {
            user_id: ann,
            name: "ci",
            hash: "h1",
            prefix: "cfk-abcdefgh",
            now: 5,
            expires_at: Some(50),
            read_only: true,
            channels_json: Some(r#"["team"]"#),
        }));
        let id = rows[0]["id"].as_i64().unwrap();
        let found: Vec<KeyRow> = db.read(&key_by_hash("h1"));
        assert_eq!(found.len(), 1);
        let key = &found[0];
        assert_eq!(
            (key.key_id, key.key_name.as_str(), key.user_id),
            (id, "ci", ann)
        );
        assert_eq!((key.read_only, key.expires_at), (1, Some(50.0)));
        assert_eq!(key.channels.as_deref(), Some(r#"["team"]"#));
        assert_eq!((key.name.as_str(), key.is_admin), ("ann", 0));
        assert!(db.rows(&key_by_hash("h2")).is_empty());
        // By its id (an upload ticket names its key so), until it is revoked.
        let by_id: Vec<KeyRow> = db.read(&key_by_id(id));
        assert_eq!((by_id[0].key_id, by_id[0].read_only), (id, 1));
        assert_eq!(by_id[0].channels.as_deref(), Some(r#"["team"]"#));
        db.rows(&revoke_key(id, None, 6));
        assert!(db.rows(&key_by_id(id)).is_empty());
        assert!(db.rows(&key_by_hash("h1")).is_empty());
    });
}

#[test]
fn keys_of_everyone_or_of_one_user() {
    each_mode(|db| {
        let ann = db.user("ann");
        let bob = db.user("bob");
        db.key(bob, "b1");
        db.key(ann, "a1");
        db.key(bob, "b2");

        let all: Vec<KeyListRow> = db.read(&keys(None));
        let all: Vec<_> = all
            .iter()
            .map(|k| (k.user.as_str(), k.name.as_str()))
            .collect();
        assert_eq!(all, [("bob", "b1"), ("ann", "a1"), ("bob", "b2")]);

        let bobs: Vec<KeyListRow> = db.read(&keys(Some("bob")));
        let bobs: Vec<_> = bobs.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(bobs, ["b1", "b2"]);
        assert!(db.rows(&keys(Some("nobody"))).is_empty());

        // Never the secret's hash.
        for row in db.rows(&keys(None)) {
            assert!(row.get("key_hash").is_none(), "{row}");
        }
    });
}

#[test]
fn channels_with_the_role_of_one_user() {
    each_mode(|db| {
        let ann = db.user("ann");
        let bob = db.user("bob");
        let cid = db.user("cid");
        db.channel("alpha", ann);
        db.channel("beta", bob);
        db.channel("gamma", bob);
        db.role_after(&put_member("beta", ann, Role::Member));
        db.role_after(&put_member("gamma", cid, Role::Member));

        let roles = |user: Option<i64>| -> Vec<(String, Option<String>)> {
            db.read::<ChannelRoleRow>(&channels_with_role(user))
                .into_iter()
                .map(|c| (c.name, c.role))
                .collect()
        };
        let named = |pairs: &[(&str, Option<&str>)]| -> Vec<(String, Option<String>)> {
            pairs
                .iter()
                .map(|(n, r)| (n.to_string(), r.map(str::to_owned)))
                .collect()
        };
        // One row per channel whoever else is a member, in name order.
        assert_eq!(
            roles(Some(ann)),
            named(&[
                ("alpha", Some("owner")),
                ("beta", Some("member")),
                ("gamma", None)
            ])
        );
        assert_eq!(
            roles(Some(cid)),
            named(&[("alpha", None), ("beta", None), ("gamma", Some("member"))])
        );
        assert_eq!(
            roles(None),
            named(&[("alpha", None), ("beta", None), ("gamma", None)])
        );

        let all: Vec<ChannelRow> = db.read(&all_channels());
        assert_eq!(all.len(), 3);
    });
}

#[test]
fn members_list_owners_first() {
    each_mode(|db| {
        let zed = db.user("zed");
        let amy = db.user("amy");
        let bob = db.user("bob");
        db.channel("team", zed);
        db.role_after(&put_member("team", amy, Role::Member));
        db.role_after(&put_member("team", bob, Role::Owner));
        let listed: Vec<MemberRow> = db.read(&members("team"));
        let listed: Vec<_> = listed
            .iter()
            .map(|m| (m.user.as_str(), m.role.as_str()))
            .collect();
        assert_eq!(
            listed,
            [("bob", "owner"), ("zed", "owner"), ("amy", "member")]
        );
    });
}

#[test]
fn quotes_in_values_survive_inlining() {
    each_mode(|db| {
        let users: Vec<UserRow> = db.read(&create_user("o'brien", false, 1));
        assert_eq!(users[0].name, "o'brien");
        let found: Vec<UserRow> = db.read(&user_by_name("o'brien"));
        assert_eq!(found.len(), 1);
        // An injection attempt is just a name that is not there.
        assert!(db.rows(&user_by_name("x' OR '1'='1")).is_empty());
    });
}

#[test]
fn a_session_acts_with_its_key_until_it_or_the_key_ends() {
    each_mode(|db| {
        let ann = db.user("ann");
        let key = db.key(ann, "laptop");
        let started: Vec<Value> = db.rows(&create_session("s1", key, 10, 1000, false));
        assert_eq!(started.len(), 1);
        let found: Vec<SessionRow> = db.read(&session_by_hash("s1"));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].session_expires_at, 1000.0);
        let key_row = &found[0].key;
        assert_eq!((key_row.key_id, key_row.name.as_str()), (key, "ann"));
        assert_eq!(key_row.key_name, "laptop");
        // A forged id is just a session that is not there.
        assert!(db.rows(&session_by_hash("s2")).is_empty());

        // Sign-out ends it, once.
        let ended: Vec<Value> = db.rows(&end_session("s1", 20));
        assert_eq!(ended, vec![json!({"key_id": key})]);
        assert!(db.rows(&end_session("s1", 21)).is_empty());
        assert!(db.rows(&session_by_hash("s1")).is_empty());

        // Revoking the key ends its other sessions.
        assert_eq!(
            db.rows(&create_session("s3", key, 30, 1000, false)).len(),
            1
        );
        assert_eq!(db.rows(&session_by_hash("s3")).len(), 1);
        assert_eq!(db.rows(&revoke_key(key, Some(ann), 40)).len(), 1);
        assert!(db.rows(&session_by_hash("s3")).is_empty());
        // And a revoked key starts none.
        assert!(db
            .rows(&create_session("s4", key, 50, 1000, false))
            .is_empty());
        assert!(db
            .rows(&create_session("s5", 999, 50, 1000, false))
            .is_empty());
    });
}

#[test]
fn expired_sessions_are_forgotten() {
    each_mode(|db| {
        let ann = db.user("ann");
        let key = db.key(ann, "laptop");
        db.rows(&create_session("old", key, 10, 100, false));
        db.rows(&create_session("new", key, 10, 1000, false));
        db.rows(&delete_expired_sessions(100));
        assert!(db.rows(&session_by_hash("old")).is_empty());
        assert_eq!(db.rows(&session_by_hash("new")).len(), 1);
    });
}

#[test]
fn channel_figures_are_listed_with_the_role() {
    each_mode(|db| {
        let ann = db.user("ann");
        db.channel("alpha", ann);
        let listed: Vec<ChannelRoleRow> = db.read(&channels_with_role(Some(ann)));
        assert_eq!((listed[0].package_count, listed[0].last_upload), (0, None));
        db.rows(&set_channel_figures("alpha", 7, Some(1234)));
        let listed: Vec<ChannelRoleRow> = db.read(&channels_with_role(Some(ann)));
        assert_eq!(listed[0].package_count, 7);
        assert_eq!(listed[0].last_upload, Some(1234.0));
        assert_eq!(listed[0].role.as_deref(), Some("owner"));
    });
}

fn identity_of(db: &Db, provider: &str, issuer: &str, subject: &str, user_id: i64) -> i64 {
    let rows = db.rows(&create_identity(&NewIdentity {
        provider,
        issuer,
        subject,
        user_id,
        label: "label",
        now: 5,
    }));
    rows[0]["id"].as_i64().unwrap()
}

#[test]
fn a_sign_in_attempt_is_taken_once() {
    each_mode(|db| {
        let attempt = NewSignInAttempt {
            state_hash: "state-1",
            provider: "oidc",
            nonce: "nonce-1",
            verifier: "verifier-1",
            next: "/team",
            replaces: Some("old-session"),
            expires_at: 600,
        };
        db.rows(&create_sign_in_attempt(&attempt));
        let taken: Vec<SignInAttemptRow> = db.read(&take_sign_in_attempt("state-1"));
        assert_eq!(taken.len(), 1);
        assert_eq!(
            (taken[0].provider.as_str(), taken[0].nonce.as_str()),
            ("oidc", "nonce-1")
        );
        assert_eq!(
            (taken[0].verifier.as_str(), taken[0].next.as_str()),
            ("verifier-1", "/team")
        );
        assert_eq!(taken[0].replaces.as_deref(), Some("old-session"));
        assert_eq!(taken[0].expires_at, 600.0);
        // A replayed callback finds nothing; neither does a state never handed out.
        assert!(db.rows(&take_sign_in_attempt("state-1")).is_empty());
        assert!(db.rows(&take_sign_in_attempt("x' OR '1'='1")).is_empty());

        // Expired attempts are forgotten.
        db.rows(&create_sign_in_attempt(&NewSignInAttempt {
            state_hash: "old",
            expires_at: 100,
            ..attempt.clone()
        }));
        db.rows(&create_sign_in_attempt(&NewSignInAttempt {
            state_hash: "new",
            replaces: None,
            expires_at: 1000,
            ..attempt
        }));
        for statement in delete_expired_sign_ins(100) {
            db.rows(&statement);
        }
        assert!(db.rows(&take_sign_in_attempt("old")).is_empty());
        assert_eq!(db.rows(&take_sign_in_attempt("new")).len(), 1);
    });
}

#[test]
fn an_identity_belongs_to_one_user_and_is_found_under_its_issuer() {
    each_mode(|db| {
        let ann = db.user("ann");
        let bob = db.user("bob");
        let id = identity_of(db, "oidc", "https://idp.example", "sub-1", ann);
        let found: Vec<IdentityRow> = db.read(&identity("oidc", "https://idp.example", "sub-1"));
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].id, found[0].user_id), (id, ann));
        assert_eq!(found[0].user, "ann");
        // The same subject of another issuer, or of another provider, is someone else.
        assert!(db
            .rows(&identity("oidc", "https://other.example", "sub-1"))
            .is_empty());
        assert!(db.rows(&identity("github", "", "sub-1")).is_empty());
        // Linking it again, to anyone, changes nothing.
        let again = db.rows(&create_identity(&NewIdentity {
            provider: "oidc",
            issuer: "https://idp.example",
            subject: "sub-1",
            user_id: bob,
            label: "bob",
            now: 6,
        }));
        assert!(again.is_empty());
        let found: Vec<IdentityRow> = db.read(&identity("oidc", "https://idp.example", "sub-1"));
        assert_eq!(found[0].user_id, ann);

        identity_of(db, "github", "", "12345", bob);
        let listed: Vec<IdentityRow> = db.read(&identities());
        let listed: Vec<(&str, &str, &str)> = listed
            .iter()
            .map(|i| (i.provider.as_str(), i.subject.as_str(), i.user.as_str()))
            .collect();
        assert_eq!(
            listed,
            vec![("github", "12345", "bob"), ("oidc", "sub-1", "ann")]
        );
        // An unknown provider is refused by the schema.
        let statement = create_identity(&NewIdentity {
            provider: "myspace",
            issuer: "",
            subject: "1",
            user_id: ann,
            label: "",
            now: 0,
        });
        assert!(db.conn.execute(&statement.inline(), []).is_err());
    });
}

#[test]
fn a_sign_in_key_acts_as_its_user_is_hidden_and_goes_with_its_identity() {
    each_mode(|db| {
        let ann = db.user("ann");
        let laptop = db.key(ann, "laptop");
        let identity_id = identity_of(db, "github", "", "12345", ann);
        let rows = db.rows(&create_sign_in_key(
            identity_id,
            "GitHub sign-in",
            "hash-s",
            10,
            1000,
        ));
        let key = rows[0]["id"].as_i64().unwrap();
        // It is a key of ann's without limits, found by id as a session's key is.
        let found: Vec<KeyRow> = db.read(&key_by_id(key));
        assert_eq!(found[0].user_id, ann);
        assert_eq!(
            (found[0].read_only, found[0].channels.as_deref()),
            (0, None)
        );
        assert_eq!(found[0].expires_at, Some(1000.0));
        // Its secret is nobody's: no prefix to recognise it by, and no key listing shows it.
        let listed: Vec<KeyListRow> = db.read(&keys(Some("ann")));
        assert_eq!(
            listed.iter().map(|k| k.id).collect::<Vec<_>>(),
            vec![laptop]
        );
        let listed: Vec<KeyListRow> = db.read(&keys(None));
        assert_eq!(
            listed.iter().map(|k| k.id).collect::<Vec<_>>(),
            vec![laptop]
        );
        // An identity that is not there makes no key.
        assert!(db
            .rows(&create_sign_in_key(999, "n", "hash-t", 10, 1000))
            .is_empty());

        // A session of it, as a site admin the configuration names.
        db.rows(&create_session("s1", key, 10, 1000, true));
        let sessions: Vec<SessionRow> = db.read(&session_by_hash("s1"));
        assert_eq!(sessions[0].site_admin, 1);
        assert_eq!(sessions[0].key.is_admin, 0);
        db.rows(&create_session("s2", laptop, 10, 1000, false));
        let sessions: Vec<SessionRow> = db.read(&session_by_hash("s2"));
        assert_eq!(sessions[0].site_admin, 0);

        // Unlinking the identity takes its key and so its sessions; the user's own keys stay.
        let deleted = db.rows(&delete_identity("github", "", "12345"));
        assert_eq!(deleted, vec![json!({"id": identity_id})]);
        assert!(db.rows(&delete_identity("github", "", "12345")).is_empty());
        assert!(db.rows(&key_by_id(key)).is_empty());
        assert!(db.rows(&session_by_hash("s1")).is_empty());
        assert_eq!(db.rows(&session_by_hash("s2")).len(), 1);
    });
}

#[test]
fn expired_sign_in_keys_are_forgotten_with_their_sessions() {
    each_mode(|db| {
        let ann = db.user("ann");
        let laptop = db.key(ann, "laptop");
        let identity_id = identity_of(db, "access", "", "ann@example.com", ann);
        let old = db.rows(&create_sign_in_key(identity_id, "n", "hash-old", 10, 100));
        let old = old[0]["id"].as_i64().unwrap();
        let new = db.rows(&create_sign_in_key(identity_id, "n", "hash-new", 10, 1000));
        let new = new[0]["id"].as_i64().unwrap();
        db.rows(&create_session("s-old", old, 10, 100, false));
        for statement in delete_expired_sign_ins(100) {
            db.rows(&statement);
        }
        assert!(db.rows(&key_by_id(old)).is_empty());
        assert!(db.rows(&session_by_hash("s-old")).is_empty());
        assert_eq!(db.rows(&key_by_id(new)).len(), 1);
        // A key made by hand is never taken for a sign-in's, expired or not.
        assert_eq!(db.rows(&key_by_id(laptop)).len(), 1);
    });
}

#[test]
fn a_user_made_for_a_lost_race_is_removed_only_while_unused() {
    each_mode(|db| {
        let ann = db.user("ann");
        let removed = db.rows(&delete_unused_user(ann));
        assert_eq!(removed, vec![json!({"id": ann})]);
        let bob = db.user("bob");
        identity_of(db, "github", "", "1", bob);
        assert!(db.rows(&delete_unused_user(bob)).is_empty());
        let cid = db.user("cid");
        db.key(cid, "laptop");
        assert!(db.rows(&delete_unused_user(cid)).is_empty());
        let dan = db.user("dan");
        db.channel("team", dan);
        assert!(db.rows(&delete_unused_user(dan)).is_empty());
    });
}

const ISSUER: &str = "https://token.actions.githubusercontent.com";

fn publisher<'a>(channel: &'a str, repository: &'a str, by: i64) -> NewPublisher<'a> {
    NewPublisher {
        channel,
        issuer: ISSUER,
        repository,
        workflow: Some("release.yml"),
        environment: None,
        git_ref: None,
        created_by: by,
        now: 7,
    }
}

impl Db {
    fn publisher(&self, new: &NewPublisher) -> Option<i64> {
        let rows = self.rows(&create_publisher(new));
        rows.first().map(|row| row["id"].as_i64().unwrap())
    }

    /// Mints a key whose hash is `hash` for the publishers `ids`, expiring at `expires_at`.
    fn mint(&self, user_id: i64, hash: &str, ids: &[i64], expires_at: i64) {
        let key = NewKey {
            user_id,
            name: "trusted publisher",
            hash,
            prefix: "cfk-minted12",
            now: 10,
            expires_at: Some(expires_at),
            read_only: false,
            channels_json: None,
        };
        let run = MintedRun {
            issuer: ISSUER,
            repository: "Acme/Widgets",
            workflow: Some("release.yml"),
            run_id: Some("42"),
            git_ref: Some("refs/tags/v1"),
            commit: Some("abc"),
            environment: None,
        };
        for statement in mint_key(&key, &run, &serde_json::to_string(ids).unwrap()) {
            self.rows(&statement);
        }
    }

    fn minted(&self, hash: &str) -> Option<MintedFor> {
        let rows: Vec<KeyRow> = self.read(&key_by_hash(hash));
        rows.first()
            .map(|row| row.minted_for().expect("a minted key"))
    }
}

#[test]
fn publishers_are_registered_once_per_description_and_listed() {
    each_mode(|db| {
        let ann = db.user("ann");
        db.channel("team", ann);
        let first = db
            .publisher(&publisher("team", "acme/widgets", ann))
            .unwrap();
        // The same again, or with the repository in other case: refused.
        assert_eq!(db.publisher(&publisher("team", "acme/widgets", ann)), None);
        assert_eq!(db.publisher(&publisher("team", "ACME/Widgets", ann)), None);
        // Another environment makes another publisher; so does no workflow at all.
        let staged = db
            .publisher(&NewPublisher {
                environment: Some("release"),
                ..publisher("team", "acme/widgets", ann)
            })
            .unwrap();
        let any_workflow = db
            .publisher(&NewPublisher {
                workflow: None,
                ..publisher("team", "acme/widgets", ann)
            })
            .unwrap();
        assert_eq!(
            db.publisher(&NewPublisher {
                workflow: None,
                ..publisher("team", "acme/widgets", ann)
            }),
            None
        );
        // No channel, or one being deleted: no row.
        assert_eq!(
            db.publisher(&publisher("missing", "acme/widgets", ann)),
            None
        );
        db.channel("going", ann);
        db.rows(&begin_channel_deletion("going", 9));
        assert_eq!(db.publisher(&publisher("going", "acme/widgets", ann)), None);

        let listed: Vec<PublisherRow> = db.read(&publishers("team"));
        assert_eq!(
            listed.iter().map(|p| p.id).collect::<Vec<_>>(),
            [first, staged, any_workflow]
        );
        let p = &listed[0];
        assert_eq!(
            (p.channel.as_str(), p.issuer.as_str(), p.repository.as_str()),
            ("team", ISSUER, "acme/widgets")
        );
        assert_eq!(p.workflow.as_deref(), Some("release.yml"));
        assert_eq!(
            (p.environment.as_deref(), p.git_ref.as_deref()),
            (None, None)
        );
        assert_eq!((p.created_by.as_str(), p.created_at), ("ann", 7.0));
        assert!(db.rows(&publishers("other")).is_empty());

        // Removed only from its own channel.
        db.channel("other", ann);
        assert!(db.rows(&remove_publisher("other", first)).is_empty());
        assert_eq!(db.rows(&remove_publisher("team", first)).len(), 1);
        assert!(db.rows(&remove_publisher("team", first)).is_empty());
        assert_eq!(db.rows(&publishers("team")).len(), 2);
    });
}

#[test]
fn a_token_finds_the_publishers_of_its_repository_on_channels_in_service() {
    each_mode(|db| {
        let ann = db.user("ann");
        let bob = db.user("bob");
        for channel in ["alpha", "beta", "gamma"] {
            db.channel(channel, ann);
        }
        let alpha = db
            .publisher(&publisher("alpha", "Acme/Widgets", ann))
            .unwrap();
        let beta = db
            .publisher(&NewPublisher {
                git_ref: Some("refs/tags/*"),
                ..publisher("beta", "acme/widgets", bob)
            })
            .unwrap();
        db.publisher(&publisher("beta", "acme/gadgets", ann))
            .unwrap();
        db.publisher(&NewPublisher {
            issuer: "https://gitlab.com",
            ..publisher("alpha", "acme/widgets", ann)
        })
        .unwrap();
        db.publisher(&publisher("gamma", "acme/widgets", ann))
            .unwrap();
        db.rows(&begin_channel_deletion("gamma", 9));

        let found: Vec<CandidateRow> = db.read(&publishers_of_repository(ISSUER, "acme/WIDGETS"));
        let found: Vec<_> = found
            .iter()
            .map(|c| (c.id, c.channel.as_str(), c.git_ref.as_deref(), c.created_by))
            .collect();
        assert_eq!(
            found,
            [
                (alpha, "alpha", None, ann),
                (beta, "beta", Some("refs/tags/*"), bob)
            ]
        );
        assert!(db
            .rows(&publishers_of_repository(ISSUER, "acme/other"))
            .is_empty());
    });
}

#[test]
fn a_minted_key_acts_for_its_publishers_until_they_are_removed() {
    each_mode(|db| {
        let ann = db.user("ann");
        db.channel("alpha", ann);
        db.channel("beta", ann);
        let alpha = db
            .publisher(&publisher("alpha", "acme/widgets", ann))
            .unwrap();
        let beta = db
            .publisher(&publisher("beta", "acme/widgets", ann))
            .unwrap();
        db.mint(ann, "m1", &[alpha, beta], 1000);

        let rows: Vec<KeyRow> = db.read(&key_by_hash("m1"));
        assert_eq!((rows[0].user_id, rows[0].expires_at), (ann, Some(1000.0)));
        let minted = db.minted("m1").unwrap();
        assert_eq!(
            minted,
            MintedFor {
                issuer: ISSUER.into(),
                repository: "Acme/Widgets".into(),
                workflow: Some("release.yml".into()),
                run_id: Some("42".into()),
                git_ref: Some("refs/tags/v1".into()),
                commit: Some("abc".into()),
                environment: None,
                publishers: vec![
                    PublisherGrant {
                        channel: "alpha".into(),
                        publisher: alpha
                    },
                    PublisherGrant {
                        channel: "beta".into(),
                        publisher: beta
                    },
                ],
            }
        );
        // An ordinary key is minted for nothing.
        db.key(ann, "laptop");
        let plain: Vec<KeyRow> = db.read(&key_by_hash("hash-of-laptop"));
        assert_eq!(plain[0].minted, None);

        // Removing one publisher leaves the other; removing both leaves no key.
        db.rows(&remove_publisher("alpha", alpha));
        let left = db.minted("m1").unwrap().publishers;
        assert_eq!(left.iter().map(|g| g.publisher).collect::<Vec<_>>(), [beta]);
        db.rows(&remove_publisher("beta", beta));
        assert!(db.rows(&key_by_hash("m1")).is_empty());

        // Deleting a channel removes its publishers, and so its minted keys.
        let again = db
            .publisher(&publisher("alpha", "acme/widgets", ann))
            .unwrap();
        db.mint(ann, "m2", &[again], 1000);
        assert!(db.minted("m2").is_some());
        for statement in delete_channel("alpha") {
            db.rows(&statement);
        }
        assert!(db.rows(&publishers("alpha")).is_empty());
        assert!(db.rows(&key_by_hash("m2")).is_empty());
    });
}

#[test]
fn a_token_is_used_once_and_forgotten_with_the_keys_when_expired() {
    each_mode(|db| {
        let ann = db.user("ann");
        db.channel("alpha", ann);
        let alpha = db
            .publisher(&publisher("alpha", "acme/widgets", ann))
            .unwrap();
        assert_eq!(db.rows(&use_token(ISSUER, "jti-1", 100)).len(), 1);
        assert!(db.rows(&use_token(ISSUER, "jti-1", 100)).is_empty());
        // The same id from another issuer is another token.
        assert_eq!(
            db.rows(&use_token("https://gitlab.com", "jti-1", 100))
                .len(),
            1
        );
        assert_eq!(db.rows(&use_token(ISSUER, "jti-2", 300)).len(), 1);

        db.mint(ann, "old", &[alpha], 100);
        db.mint(ann, "new", &[alpha], 300);
        // An ordinary key that expired is kept (its owner sees it listed as expired).
        db.rows(&create_key(&NewKey {
            user_id: ann,
            name: "expired",
            hash: "plain",
            prefix: "cfk-plain123",
            now: 1,
            expires_at: Some(50),
            read_only: false,
            channels_json: None,
        }));
        for statement in delete_expired_mints(100) {
            db.rows(&statement);
        }
        assert_eq!(db.rows(&use_token(ISSUER, "jti-1", 100)).len(), 1);
        assert!(db.rows(&use_token(ISSUER, "jti-2", 300)).is_empty());
        assert!(db.rows(&key_by_hash("old")).is_empty());
        assert!(db.minted("new").is_some());
        assert_eq!(db.rows(&key_by_hash("plain")).len(), 1);
        let names: Vec<KeyListRow> = db.read(&keys(Some("ann")));
        assert_eq!(
            names.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(),
            ["trusted publisher", "expired"]
        );
    });
}

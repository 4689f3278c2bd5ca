//! The admin command (`npm run admin -- <command>`; [`USAGE`] is its one list of commands).
//!
//! scripts/admin.mjs is the entry point: it builds this binary when the crate changed, runs the
//! commands that need the running Worker (`channel delete`, `import`, `check`, `mirror sync`:
//! R2 objects and the index are the Worker's) and hands every other command here, as well as
//! the internal helpers those commands use (`check-name`, `solve`).
//!
//! Here users, keys, channels and memberships are changed in D1 with the Worker's own
//! statements (`directory`), names checked with `names` and keys made with `keys`, so the rules
//! the statements carry (a channel keeps at least one owner) hold here too. Locally the
//! statements run on the state's D1 file itself (the one `npm start` serves, or
//! `--persist-to DIR`), in one transaction per command; with `--remote` they are inlined for
//! `wrangler d1 execute --remote`. No server needs to run: this is how the first admin and key
//! come to be.
//!
//! Argument errors, unknown users and channels exit 2; refusals and failures exit 1; both print
//! `error: <sentence>` on stderr.

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use condaflare::access::Role;
use condaflare::directory::{
    self, IdRow, IdentityRow, KeyListRow, MemberRow, NewIdentity, NewKey, NewPublisher,
    PublisherRow, RoleRow, UserRow,
};
use condaflare::error::{ApiError, ErrorCode};
use condaflare::keys::{key_hash, key_prefix, new_key};
use condaflare::mirror::{MirrorRules, MirrorRulesJson};
use condaflare::mirror_sync::{self, SyncRequest};
use condaflare::names::check_channel_name;
use condaflare::signin::Provider;
use condaflare::sqlite;
use condaflare::statement::Statement;
use condaflare::trusted_publishing::{check_publisher, Conditions, Settings};
use rattler_conda_types::{Channel, ChannelConfig, RepoData};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

const USAGE: &str = "usage: npm run admin -- [--remote] [--persist-to DIR] [--json] <command>
commands (help: this list):
  user create <name> [--admin]        user list
  key create <user> [--name N] [--expires-days D] [--read-only] [--channel C]...
  key revoke <id>                     key list [<user>]
  channel create <name> --owner <user> [--private]
        [--mirror URL [--allow SPEC]... [--deny SPEC]... [--min-age-days N] [--credentials SECRET]]
  channel visibility <name> public|private
  channel list
  member add <channel> <user> --role owner|contributor|member
  member remove <channel> <user>      member list <channel>
  identity link <oidc|github|access> <subject> <user> [--issuer URL]
  identity unlink <oidc|github|access> <subject> [--issuer URL]
  identity list                       (OpenID Connect identities need the issuer's URL)
  publisher add <channel> --issuer github|gitlab|<url> --repository R --by <user>
      [--workflow W] [--environment E] [--ref R]   (GITHUB_OIDC_ISSUER etc. as the Worker's)
  publisher remove <channel> <id>     publisher list <channel>
through the running Worker (--url URL, default http://127.0.0.1:8787), with the key in
CONDAFLARE_API_KEY:
  channel delete <name>               (an owner's or a site admin's key)
  import <channel> <dir> [--force]    (uploads every package file under <dir>)
  check <channel> [--repair]          (a site admin's key; the channel's objects, rows and
  check --all [--repair]               index files; exits 1 if any is inconsistent)
  mirror sync <channel> <spec>... --subdir S... [--virtual-package NAME=VERSION[=BUILD]]...
        (fetches into the mirror the package files a solve of the specs for each platform S
        needs, each checked; see docs/mirrors.md for the virtual packages assumed)
Changes made here reach running Workers within their cache time (AUTH_CACHE_SECONDS).";

const DAY_MS: f64 = 86_400_000.0;

/// Why a command did not do its work, and so how the process exits.
#[derive(Debug)]
enum Failure {
    /// A wrong argument, or a user, channel or key that is not there: exit 2.
    Usage(String),
    /// A refusal (a taken name, a channel's last owner) or a failure of wrangler or D1: exit 1.
    Failed(String),
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        match error.code {
            ErrorCode::BadRequest | ErrorCode::InvalidName | ErrorCode::NotFound => {
                Self::Usage(error.message)
            }
            _ => Self::Failed(error.message),
        }
    }
}

type Outcome<T> = Result<T, Failure>;

fn usage<T>(message: impl Into<String>) -> Outcome<T> {
    Err(Failure::Usage(message.into()))
}

/// What a command did: the JSON printed with `--json`, the text printed otherwise.
struct Done {
    result: Value,
    text: String,
}

/// Where the statements run.
enum Database {
    /// The local state's D1 file (`npm start`'s `.wrangler/state`, or `--persist-to DIR`),
    /// opened directly: no server needs to run, and a running one sees each change at once.
    Local(rusqlite::Connection),
    /// The deployed database, through `wrangler d1 execute --remote`.
    Remote,
}

impl Database {
    fn open(remote: bool, persist_to: Option<String>) -> Outcome<Self> {
        if remote {
            return Ok(Self::Remote);
        }
        let state = PathBuf::from(persist_to.unwrap_or_else(|| ".wrangler/state".into()));
        let file = sqlite::local_d1_file(&state).map_err(Failure::Failed)?;
        let failed = |e: rusqlite::Error| Failure::Failed(format!("{}: {e}", file.display()));
        let conn = rusqlite::Connection::open_with_flags(
            &file,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE,
        )
        .map_err(failed)?;
        // The running server's workerd writes the same file; a write waits its turn.
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(failed)?;
        conn.execute_batch("PRAGMA foreign_keys = ON")
            .map_err(failed)?;
        Ok(Self::Local(conn))
    }

    /// Runs the statements, all or none, and returns the rows of each.
    fn run(&mut self, statements: &[Statement]) -> Outcome<Vec<Vec<Value>>> {
        let Self::Local(conn) = self else {
            return run_remote(statements);
        };
        let failed = |e: rusqlite::Error| Failure::Failed(e.to_string());
        let transaction = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(failed)?;
        let answers = statements
            .iter()
            .map(|statement| sqlite::rows(&transaction, statement).map_err(failed))
            .collect::<Outcome<Vec<_>>>()?;
        transaction.commit().map_err(failed)?;
        Ok(answers)
    }

    /// The rows of one statement.
    fn rows(&mut self, statement: Statement) -> Outcome<Vec<Value>> {
        Ok(self.run(&[statement])?.pop().unwrap_or_default())
    }

    /// The id of the user of that name.
    fn user_id(&mut self, name: &str) -> Outcome<i64> {
        let rows = self.rows(directory::user_by_name(name))?;
        match first::<UserRow>(&rows)? {
            Some(user) => Ok(user.id),
            None => usage(format!("no user named '{name}'")),
        }
    }
}

/// Runs the statements in one `wrangler d1 execute --remote` (D1 runs them as one batch) and
/// returns the rows of each.
fn run_remote(statements: &[Statement]) -> Outcome<Vec<Vec<Value>>> {
    let sql = statements
        .iter()
        .map(Statement::inline)
        .collect::<Vec<_>>()
        .join("; ");
    let output = Command::new("npx")
        .args([
            "wrangler",
            "d1",
            "execute",
            "DB",
            "--remote",
            "--json",
            "--command",
            &sql,
        ])
        .env("WRANGLER_SEND_METRICS", "false")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Failure::Failed(format!("could not run npx wrangler: {e}")))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(Failure::Failed(wrangler_error(
            &stdout,
            &String::from_utf8_lossy(&output.stderr),
        )));
    }
    let answers: Vec<Value> = serde_json::from_str(&stdout)
        .map_err(|e| Failure::Failed(format!("unexpected answer from wrangler ({e}): {stdout}")))?;
    Ok(answers
        .into_iter()
        .map(|answer| match answer.get("results") {
            Some(Value::Array(rows)) => rows.clone(),
            _ => Vec::new(),
        })
        .collect())
}

/// The sentence of a failed `wrangler d1 execute`: the database's own message when there is
/// one (`--json` puts it in `{"error": {"text": ...}}`), else whatever wrangler printed.
fn wrangler_error(stdout: &str, stderr: &str) -> String {
    let text = serde_json::from_str::<Value>(stdout.trim())
        .ok()
        .and_then(|v| v.pointer("/error/text")?.as_str().map(str::to_owned));
    let detail = text.unwrap_or_else(|| format!("{stdout}{stderr}").trim().to_owned());
    if detail.is_empty() {
        "wrangler d1 execute failed".to_owned()
    } else {
        detail
    }
}

/// The first row, read as `T`.
fn first<T: DeserializeOwned>(rows: &[Value]) -> Outcome<Option<T>> {
    rows.first().map(row::<T>).transpose()
}

fn row<T: DeserializeOwned>(value: &Value) -> Outcome<T> {
    serde_json::from_value(value.clone())
        .map_err(|e| Failure::Failed(format!("unexpected row from D1 ({e}): {value}")))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn check_channel(name: &str) -> Outcome<()> {
    check_channel_name(name).map_err(Failure::Usage)
}

/// User names follow the channel name rule.
fn check_user(name: &str) -> Outcome<()> {
    check_channel_name(name).map_err(|e| Failure::Usage(e.replace("channel name", "user name")))
}

/// A command's arguments, from which options are taken out one by one.
struct Args(Vec<String>);

impl Args {
    /// `--name value`: the value, taken out of the arguments.
    fn option(&mut self, name: &str) -> Outcome<Option<String>> {
        let Some(at) = self.0.iter().position(|a| a == name) else {
            return Ok(None);
        };
        if at + 1 >= self.0.len() {
            return usage(format!("{name} needs a value"));
        }
        let value = self.0.remove(at + 1);
        self.0.remove(at);
        Ok(Some(value))
    }

    /// `--name value`, as often as it is given: the values, in order, taken out.
    fn options(&mut self, name: &str) -> Outcome<Vec<String>> {
        let mut values = Vec::new();
        while let Some(value) = self.option(name)? {
            values.push(value);
        }
        Ok(values)
    }

    /// A bare `--flag`: whether it was there.
    fn flag(&mut self, name: &str) -> bool {
        match self.0.iter().position(|a| a == name) {
            Some(at) => {
                self.0.remove(at);
                true
            }
            None => false,
        }
    }

    /// Exactly `N` arguments left.
    fn positional<const N: usize>(self, synopsis: &str) -> Outcome<[String; N]> {
        self.0
            .try_into()
            .or_else(|_| usage(format!("usage: {synopsis}")))
    }
}

fn user_create(db: &mut Database, mut args: Args) -> Outcome<Done> {
    let admin = args.flag("--admin");
    let [name] = args.positional("user create <name> [--admin]")?;
    check_user(&name)?;
    let rows = db.rows(directory::create_user(&name, admin, now_ms()))?;
    let Some(user) = first::<UserRow>(&rows)? else {
        return Err(Failure::Failed(format!("a user named '{name}' exists")));
    };
    Ok(Done {
        result: json!({ "id": user.id, "name": user.name, "is_admin": user.is_admin }),
        text: format!(
            "created user {name}{}",
            if admin { " (site admin)" } else { "" }
        ),
    })
}

fn user_list(db: &mut Database, args: Args) -> Outcome<Done> {
    let [] = args.positional("user list")?;
    let rows = db.rows(directory::users())?;
    let mut lines = Vec::new();
    for value in &rows {
        let user: UserRow = row(value)?;
        let admin = if user.is_admin != 0 { "\tadmin" } else { "" };
        lines.push(format!("{}\t{}{admin}", user.id, user.name));
    }
    Ok(Done {
        result: Value::Array(rows),
        text: lines.join("\n"),
    })
}

fn key_create(db: &mut Database, mut args: Args) -> Outcome<Done> {
    let name = args.option("--name")?.unwrap_or_else(|| "default".into());
    let days = args.option("--expires-days")?;
    let read_only = args.flag("--read-only");
    let mut channels = Vec::new();
    while let Some(channel) = args.option("--channel")? {
        check_channel(&channel)?;
        channels.push(channel);
    }
    let [user] = args.positional(
        "key create <user> [--name N] [--expires-days D] [--read-only] [--channel C]...",
    )?;
    let now = now_ms();
    let expires_at = match days {
        None => None,
        Some(days) => match days.trim().parse::<f64>() {
            Ok(days) if days > 0.0 && days.is_finite() => {
                Some((now as f64 + days * DAY_MS).round() as i64)
            }
            _ => return usage("--expires-days takes a positive number"),
        },
    };
    let channels_json =
        (!channels.is_empty()).then(|| serde_json::to_string(&channels).expect("names serialize"));
    let user_id = db.user_id(&user)?;
    let key = new_key();
    let hash = key_hash(&key);
    let rows = db.rows(directory::create_key(&NewKey {
        user_id,
        name: &name,
        hash: &hash,
        prefix: key_prefix(&key),
        now,
        expires_at,
        read_only,
        channels_json: channels_json.as_deref(),
    }))?;
    let id = rows
        .first()
        .and_then(|r| r.get("id"))
        .and_then(Value::as_i64)
        .ok_or_else(|| Failure::Failed("D1 returned no id for the new key".into()))?;
    let mut limits = Vec::new();
    if read_only {
        limits.push("read-only".to_owned());
    }
    if !channels.is_empty() {
        limits.push(format!("only {}", channels.join(", ")));
    }
    let limits = if limits.is_empty() {
        String::new()
    } else {
        format!(" ({})", limits.join("; "))
    };
    Ok(Done {
        text: format!(
            "key {id} for {user}{limits}: {key}\n(shown once: store it now; only its hash is kept)"
        ),
        result: json!({
            "id": id,
            "user": user,
            "name": name,
            "key": key,
            "read_only": read_only,
            "channels": (!channels.is_empty()).then_some(channels),
        }),
    })
}

fn key_revoke(db: &mut Database, args: Args) -> Outcome<Done> {
    let [id] = args.positional("key revoke <id>")?;
    let key_id = match id.parse::<i64>() {
        Ok(key_id) if id.bytes().all(|b| b.is_ascii_digit()) => key_id,
        _ => return usage("a key id is a number (see 'key list')"),
    };
    // The admin command acts for the site: any user's key (`None`).
    let rows = db.rows(directory::revoke_key(key_id, None, now_ms()))?;
    if rows.is_empty() {
        return usage(format!("no active key with id {key_id}"));
    }
    Ok(Done {
        result: json!({ "id": key_id, "revoked": true }),
        text: format!("revoked key {key_id}"),
    })
}

fn key_list(db: &mut Database, args: Args) -> Outcome<Done> {
    let user = match args.0.len() {
        0 => None,
        _ => {
            let [user] = args.positional("key list [<user>]")?;
            Some(user)
        }
    };
    let rows = db.rows(directory::keys(user.as_deref()))?;
    let now = now_ms() as f64;
    let mut lines = Vec::new();
    for value in &rows {
        let key: KeyListRow = row(value)?;
        let state = if key.revoked_at.is_some_and(|t| t != 0.0) {
            "revoked"
        } else if key.expires_at.is_some_and(|t| t != 0.0 && t < now) {
            "expired"
        } else {
            "active"
        };
        lines.push(format!(
            "{}\t{}\t{}\t{}…\t{state}",
            key.id, key.user, key.name, key.prefix
        ));
    }
    Ok(Done {
        result: Value::Array(rows),
        text: lines.join("\n"),
    })
}

fn channel_create(db: &mut Database, mut args: Args) -> Outcome<Done> {
    const SYNOPSIS: &str = "channel create <name> --owner <user> [--private] \
        [--mirror URL [--allow SPEC]... [--deny SPEC]... [--min-age-days N] [--credentials SECRET]]";
    let owner = args.option("--owner")?;
    let private = args.flag("--private");
    let mirror = mirror_rules(&mut args)?;
    let [name] = args.positional(SYNOPSIS)?;
    check_channel(&name)?;
    let Some(owner) = owner else {
        return usage(format!("usage: {SYNOPSIS}"));
    };
    let mirror = mirror.map(|rules| rules.to_json());
    let mirror_text = mirror
        .as_ref()
        .map(|rules| serde_json::to_string(rules).expect("rules serialize"));
    let owner_id = db.user_id(&owner)?;
    // As the API does: the channel first, atomically refused when the name is taken, and only
    // then its owner, so a taken name never gains one.
    if db
        .rows(directory::create_channel(
            &name,
            private,
            mirror_text.as_deref(),
            now_ms(),
        ))?
        .is_empty()
    {
        return Err(Failure::Failed(format!("a channel named '{name}' exists")));
    }
    if db
        .rows(directory::put_member(&name, owner_id, Role::Owner))?
        .is_empty()
    {
        return Err(Failure::Failed(format!(
            "created channel {name}, but could not make {owner} its owner"
        )));
    }
    let visibility = if private { "private" } else { "public" };
    Ok(Done {
        result: json!({ "name": name, "private": private, "owner": owner, "mirror": mirror }),
        text: match &mirror {
            Some(rules) => format!(
                "created {visibility} channel {name}, owned by {owner}, mirroring {}",
                rules.url
            ),
            None => format!("created {visibility} channel {name}, owned by {owner}"),
        },
    })
}

fn channel_visibility(db: &mut Database, args: Args) -> Outcome<Done> {
    let [name, visibility] = args.positional("channel visibility <name> public|private")?;
    let private = match visibility.as_str() {
        "public" => false,
        "private" => true,
        _ => return usage("visibility is public or private"),
    };
    check_channel(&name)?;
    if db
        .rows(directory::set_channel_settings(&name, private, None))?
        .is_empty()
    {
        return usage(format!("no channel named '{name}'"));
    }
    Ok(Done {
        result: json!({ "name": name, "private": private }),
        text: format!("{name} is now {visibility}"),
    })
}

/// A mirror's rules from `--mirror URL [--allow SPEC]... [--deny SPEC]... [--min-age-days N]
/// [--credentials SECRET]`,
/// checked as the API checks them (`MIRROR_ALLOW_HTTP=true` in the environment admits http).
fn mirror_rules(args: &mut Args) -> Outcome<Option<MirrorRules>> {
    let url = args.option("--mirror")?;
    let allow = args.options("--allow")?;
    let deny = args.options("--deny")?;
    let min_age_days = args.option("--min-age-days")?;
    let credentials = args.option("--credentials")?;
    let Some(url) = url else {
        if !allow.is_empty() || !deny.is_empty() || min_age_days.is_some() || credentials.is_some()
        {
            return usage("--allow, --deny, --min-age-days and --credentials need --mirror URL");
        }
        return Ok(None);
    };
    let min_age_days = match min_age_days {
        Some(days) => days
            .parse()
            .map_err(|_| Failure::Usage(format!("--min-age-days is '{days}', not a number")))?,
        None => 0,
    };
    let json = MirrorRulesJson {
        url,
        allow,
        deny,
        min_age_days,
        credentials,
    };
    let allow_http = std::env::var("MIRROR_ALLOW_HTTP").is_ok_and(|v| v.trim() == "true");
    MirrorRules::from_parts(&json, allow_http)
        .map(Some)
        .map_err(|e| Failure::Usage(e.0))
}

fn channel_list(db: &mut Database, args: Args) -> Outcome<Done> {
    let [] = args.positional("channel list")?;
    let rows = db.rows(directory::all_channels())?;
    let mut lines = Vec::new();
    for value in &rows {
        let channel: directory::ChannelRow = row(value)?;
        let visibility = if channel.private != 0 {
            "private"
        } else {
            "public"
        };
        // A delete cut short: `channel delete` again finishes it.
        let state = if channel.deleting_at.is_some() {
            "\tbeing deleted"
        } else {
            ""
        };
        lines.push(format!("{}\t{visibility}{state}", channel.name));
    }
    Ok(Done {
        result: Value::Array(rows),
        text: lines.join("\n"),
    })
}

/// Runs a membership change (`put_member` or `remove_member`) together with what explains a
/// refusal: whether the channel exists and the user's role after the statement. The change
/// carries the last-owner rule itself; when it returns no row, [`directory::membership_refusal`]
/// says why.
fn change_membership(
    db: &mut Database,
    change: Statement,
    channel: &str,
    user: &str,
    user_id: i64,
) -> Outcome<()> {
    let answers = db.run(&[
        change,
        directory::channel(channel),
        directory::role(channel, user_id),
    ])?;
    let [changed, channels, roles] = <[Vec<Value>; 3]>::try_from(answers)
        .map_err(|_| Failure::Failed("wrangler answered for fewer statements than sent".into()))?;
    if !changed.is_empty() {
        return Ok(());
    }
    let role = first::<RoleRow>(&roles)?.and_then(|r| Role::parse(&r.role));
    Err(directory::membership_refusal(channel, user, !channels.is_empty(), role).into())
}

fn member_add(db: &mut Database, mut args: Args) -> Outcome<Done> {
    let role = args.option("--role")?;
    let [channel, user] =
        args.positional("member add <channel> <user> --role owner|contributor|member")?;
    let Some(role) = role.as_deref().and_then(Role::parse) else {
        return usage("--role is owner, contributor or member");
    };
    check_channel(&channel)?;
    let user_id = db.user_id(&user)?;
    change_membership(
        db,
        directory::put_member(&channel, user_id, role),
        &channel,
        &user,
        user_id,
    )?;
    let role = role.as_str();
    Ok(Done {
        result: json!({ "channel": channel, "user": user, "role": role }),
        text: format!("{user} is now {role} of {channel}"),
    })
}

fn member_remove(db: &mut Database, args: Args) -> Outcome<Done> {
    let [channel, user] = args.positional("member remove <channel> <user>")?;
    check_channel(&channel)?;
    let user_id = db.user_id(&user)?;
    change_membership(
        db,
        directory::remove_member(&channel, user_id),
        &channel,
        &user,
        user_id,
    )?;
    Ok(Done {
        result: json!({ "channel": channel, "user": user, "removed": true }),
        text: format!("removed {user} from {channel}"),
    })
}

fn member_list(db: &mut Database, args: Args) -> Outcome<Done> {
    let [channel] = args.positional("member list <channel>")?;
    let rows = db.rows(directory::members(&channel))?;
    let mut lines = Vec::new();
    for value in &rows {
        let member: MemberRow = row(value)?;
        lines.push(format!("{}\t{}", member.user, member.role));
    }
    Ok(Done {
        result: Value::Array(rows),
        text: lines.join("\n"),
    })
}

/// The provider, issuer and subject of an identity named on the command line: an OpenID
/// Connect subject is one of its issuer's (`--issuer`), the others' are the deployment's one
/// GitHub and Access.
fn identity_arguments(
    provider: &str,
    subject: &str,
    issuer: Option<String>,
) -> Outcome<(Provider, String, String)> {
    let Some(provider) = Provider::parse(provider) else {
        return usage("the provider is oidc, github or access");
    };
    let issuer = match (provider, issuer) {
        (Provider::Oidc, Some(issuer)) => issuer,
        (Provider::Oidc, None) => {
            return usage(
                "an oidc identity needs --issuer (the OIDC_ISSUER the server is set up with)",
            )
        }
        (_, Some(_)) => return usage("--issuer is for oidc identities only"),
        (_, None) => String::new(),
    };
    let subject = provider.normalize_subject(subject);
    if subject.is_empty() {
        return usage("the subject is empty");
    }
    Ok((provider, issuer, subject))
}

fn identity_link(db: &mut Database, mut args: Args) -> Outcome<Done> {
    let issuer = args.option("--issuer")?;
    let [provider, subject, user] =
        args.positional("identity link <oidc|github|access> <subject> <user> [--issuer URL]")?;
    let (provider, issuer, subject) = identity_arguments(&provider, &subject, issuer)?;
    let user_id = db.user_id(&user)?;
    let rows = db.rows(directory::create_identity(&NewIdentity {
        provider: provider.as_str(),
        issuer: &issuer,
        subject: &subject,
        user_id,
        label: &subject,
        now: now_ms(),
    }))?;
    if rows.is_empty() {
        let found = db.rows(directory::identity(provider.as_str(), &issuer, &subject))?;
        let owner = first::<IdentityRow>(&found)?.map_or_else(String::new, |row| row.user);
        return Err(Failure::Failed(format!(
            "that identity belongs to {owner} already: unlink it first"
        )));
    }
    let provider = provider.as_str();
    Ok(Done {
        result: json!({ "provider": provider, "issuer": issuer, "subject": subject, "user": user }),
        text: format!("{provider} identity {subject} now signs in as {user}"),
    })
}

fn identity_unlink(db: &mut Database, mut args: Args) -> Outcome<Done> {
    let issuer = args.option("--issuer")?;
    let [provider, subject] =
        args.positional("identity unlink <oidc|github|access> <subject> [--issuer URL]")?;
    let (provider, issuer, subject) = identity_arguments(&provider, &subject, issuer)?;
    let provider = provider.as_str();
    if db
        .rows(directory::delete_identity(provider, &issuer, &subject))?
        .is_empty()
    {
        return usage(format!("no {provider} identity {subject}"));
    }
    Ok(Done {
        result: json!({ "provider": provider, "issuer": issuer, "subject": subject, "unlinked": true }),
        text: format!("unlinked {provider} identity {subject}; its sessions have ended"),
    })
}

fn identity_list(db: &mut Database, args: Args) -> Outcome<Done> {
    let [] = args.positional("identity list")?;
    let rows = db.rows(directory::identities())?;
    let mut lines = Vec::new();
    for value in &rows {
        let identity: IdentityRow = row(value)?;
        let issuer = if identity.issuer.is_empty() {
            String::new()
        } else {
            format!("\t{}", identity.issuer)
        };
        lines.push(format!(
            "{}\t{}\t{}\t{}{issuer}",
            identity.provider, identity.subject, identity.user, identity.label
        ));
    }
    Ok(Done {
        result: Value::Array(rows),
        text: lines.join("\n"),
    })
}

fn publisher_add(db: &mut Database, mut args: Args) -> Outcome<Done> {
    const SYNOPSIS: &str = "publisher add <channel> --issuer github|gitlab|<url> --repository R \
                            --by <user> [--workflow W] [--environment E] [--ref R]";
    let issuer = args.option("--issuer")?;
    let repository = args.option("--repository")?;
    let by = args.option("--by")?;
    let workflow = args.option("--workflow")?;
    let environment = args.option("--environment")?;
    let git_ref = args.option("--ref")?;
    let [channel] = args.positional(SYNOPSIS)?;
    check_channel(&channel)?;
    let (Some(issuer), Some(repository), Some(by)) = (issuer, repository, by) else {
        return usage(format!("usage: {SYNOPSIS}"));
    };
    // The issuers the Worker trusts, from the same variables, set in this environment.
    let settings = Settings::from_vars(|name| std::env::var(name).ok()).map_err(Failure::Usage)?;
    let issuer = settings.named(&issuer).map_err(Failure::Usage)?;
    let conditions = Conditions {
        workflow: workflow.as_deref(),
        environment: environment.as_deref(),
        git_ref: git_ref.as_deref(),
    };
    check_publisher(issuer.provider, &repository, &conditions).map_err(Failure::Usage)?;
    let user_id = db.user_id(&by)?;
    let answers = db.run(&[
        directory::create_publisher(&NewPublisher {
            channel: &channel,
            issuer: &issuer.url,
            repository: &repository,
            workflow: conditions.workflow,
            environment: conditions.environment,
            git_ref: conditions.git_ref,
            created_by: user_id,
            now: now_ms(),
        }),
        directory::channel(&channel),
    ])?;
    let [created, channels] = <[Vec<Value>; 2]>::try_from(answers)
        .map_err(|_| Failure::Failed("wrangler answered for fewer statements than sent".into()))?;
    let Some(IdRow { id }) = first(&created)? else {
        return if channels.is_empty() {
            usage(format!("no channel named '{channel}'"))
        } else {
            Err(Failure::Failed(format!(
                "{channel} has a trusted publisher of that description"
            )))
        };
    };
    Ok(Done {
        result: json!({
            "id": id,
            "channel": channel,
            "issuer": issuer.url,
            "repository": repository,
            "workflow": workflow,
            "environment": environment,
            "ref": git_ref,
            "created_by": by,
        }),
        text: format!(
            "publisher {id}: {repository} at {} may publish to {channel}",
            issuer.url
        ),
    })
}

fn publisher_list(db: &mut Database, args: Args) -> Outcome<Done> {
    let [channel] = args.positional("publisher list <channel>")?;
    let rows = db.rows(directory::publishers(&channel))?;
    let mut lines = Vec::new();
    for value in &rows {
        let p: PublisherRow = row(value)?;
        let conditions = [
            ("workflow", &p.workflow),
            ("environment", &p.environment),
            ("ref", &p.git_ref),
        ]
        .iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| format!("\t{name} {v}")))
        .collect::<String>();
        lines.push(format!(
            "{}\t{}\t{}{conditions}",
            p.id, p.issuer, p.repository
        ));
    }
    Ok(Done {
        result: Value::Array(rows),
        text: lines.join("\n"),
    })
}

fn publisher_remove(db: &mut Database, args: Args) -> Outcome<Done> {
    let [channel, id] = args.positional("publisher remove <channel> <id>")?;
    check_channel(&channel)?;
    let publisher_id = match id.parse::<i64>() {
        Ok(value) if id.bytes().all(|b| b.is_ascii_digit()) => value,
        _ => return usage("a publisher id is a number (see 'publisher list')"),
    };
    if db
        .rows(directory::remove_publisher(&channel, publisher_id))?
        .is_empty()
    {
        return usage(format!(
            "{channel} has no trusted publisher with id {publisher_id}"
        ));
    }
    Ok(Done {
        result: json!({ "channel": channel, "id": publisher_id, "removed": true }),
        text: format!("removed publisher {publisher_id} of {channel}"),
    })
}

/// `check-name <channel>`: the channel name rule, for the commands scripts/admin.mjs sends to
/// the Worker.
fn check_name(args: Args) -> Outcome<Done> {
    let [name] = args.positional("check-name <channel>")?;
    check_channel(&name)?;
    Ok(Done {
        result: Value::Null,
        text: String::new(),
    })
}

/// `solve <spec>... --subdir S... [--virtual-package NAME=VERSION[=BUILD]]... [--index DIR]`:
/// `mirror sync`'s solve, for scripts/admin.mjs. Without `--index` it only checks the request
/// and answers the targets (each subdir with its virtual packages); with it, it solves for each
/// target against `DIR/<subdir>/repodata.json` and `DIR/noarch/repodata.json` (a file that is
/// not there: a subdir the mirror does not have, so no records) and answers the files the
/// solutions need. An unsolvable target exits 1 with the solver's reasons.
fn solve(mut args: Args) -> Outcome<Done> {
    let subdirs = args.options("--subdir")?;
    let overrides = args.options("--virtual-package")?;
    let index = args.option("--index")?.map(PathBuf::from);
    if let Some(unknown) = args.0.iter().find(|a| a.starts_with("--")) {
        return usage(format!("unknown option {unknown}"));
    }
    let request = SyncRequest::parse(&args.0, &subdirs, &overrides).map_err(Failure::Usage)?;
    let targets =
        serde_json::to_value(&request.targets).map_err(|e| Failure::Failed(e.to_string()))?;
    let Some(index) = index else {
        return Ok(Done {
            result: json!({ "targets": targets }),
            text: String::new(),
        });
    };
    let index = std::path::absolute(&index)
        .map_err(|e| Failure::Failed(format!("{}: {e}", index.display())))?;
    let channel = Channel::from_str(
        index.to_string_lossy(),
        &ChannelConfig::default_with_root_dir(index.clone()),
    )
    .map_err(|e| Failure::Failed(format!("{}: {e}", index.display())))?;
    let read = |subdir: &str| -> Outcome<Option<RepoData>> {
        let path = index.join(subdir).join("repodata.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Failure::Failed(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Failure::Failed(format!("{}: {e}", path.display()))),
        }
    };
    let mut solves = Vec::new();
    for target in &request.targets {
        let indexes = [read(&target.subdir)?, read("noarch")?]
            .into_iter()
            .flatten()
            .collect();
        let files = mirror_sync::solve(&request.specs, target, &channel, indexes)
            .map_err(|e| Failure::Failed(e.to_string()))?;
        solves.push(files);
    }
    let files = mirror_sync::union(solves);
    let text = files
        .iter()
        .map(|f| format!("{}/{}", f.subdir, f.filename))
        .collect::<Vec<_>>()
        .join("\n");
    Ok(Done {
        result: json!({ "targets": targets, "files": files }),
        text,
    })
}

type Handler = fn(&mut Database, Args) -> Outcome<Done>;

const COMMANDS: [(&str, Handler); 17] = [
    ("user create", user_create),
    ("user list", user_list),
    ("key create", key_create),
    ("key revoke", key_revoke),
    ("key list", key_list),
    ("channel create", channel_create),
    ("channel visibility", channel_visibility),
    ("channel list", channel_list),
    ("member add", member_add),
    ("member remove", member_remove),
    ("member list", member_list),
    ("identity link", identity_link),
    ("identity unlink", identity_unlink),
    ("identity list", identity_list),
    ("publisher add", publisher_add),
    ("publisher list", publisher_list),
    ("publisher remove", publisher_remove),
];

fn main() -> ExitCode {
    let mut remote = false;
    let mut json = false;
    let mut persist_to = None;
    let mut rest = Vec::new();
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        match arg.as_str() {
            "--remote" => remote = true,
            "--json" => json = true,
            "--persist-to" => match argv.next() {
                Some(dir) => persist_to = Some(dir),
                None => return fail(Failure::Usage("--persist-to needs a value".into())),
            },
            _ => rest.push(arg),
        }
    }
    let words = rest.iter().take(2).cloned().collect::<Vec<_>>().join(" ");
    if matches!(rest.first().map(String::as_str), Some("help" | "--help")) {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let outcome = if rest.first().map(String::as_str) == Some("check-name") {
        check_name(Args(rest.split_off(1)))
    } else if rest.first().map(String::as_str) == Some("solve") {
        solve(Args(rest.split_off(1)))
    } else if let Some((_, handler)) = COMMANDS.iter().find(|(name, _)| *name == words) {
        Database::open(remote, persist_to)
            .and_then(|mut db| handler(&mut db, Args(rest.split_off(2))))
    } else if words == "channel delete"
        || words == "mirror sync"
        || matches!(rest.first().map(String::as_str), Some("import" | "check"))
    {
        Err(Failure::Usage(format!(
            "'{words}' goes through the running Worker: use npm run admin -- {words} ..."
        )))
    } else {
        let what = if words.is_empty() {
            "no command given".to_owned()
        } else {
            format!("unknown command '{words}'")
        };
        eprintln!("error: {what}\n{USAGE}");
        return ExitCode::from(2);
    };
    match outcome {
        Ok(Done { result, text }) => {
            if json {
                println!("{result}");
            } else if !text.is_empty() || result != Value::Null {
                println!("{text}");
            }
            ExitCode::SUCCESS
        }
        Err(failure) => fail(failure),
    }
}

fn fail(failure: Failure) -> ExitCode {
    match failure {
        Failure::Usage(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Failure::Failed(message) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}

#!/usr/bin/env node
// Admin tasks on condaflare's D1 database, through wrangler.
//
//   npm run admin -- [--remote] [--persist-to DIR] [--json] <command>
//
//   user create <name> [--admin]        user list
//   key create <user> [--name N] [--expires-days D] [--read-only] [--channel C]...
//   key revoke <id>                     key list [<user>]
//   channel create <name> --owner <user> [--private]
//   channel visibility <name> public|private
//   channel delete <name> [--url URL]   (through the running Worker; needs CONDAFLARE_API_KEY)
//   channel list
//   import <channel> <dir> [--url URL] [--force]  (uploads every package file under <dir>, e.g. a
//                                        channel laid out by subdir, through the running Worker;
//                                        needs CONDAFLARE_API_KEY)
//   member add <channel> <user> --role owner|member
//   member remove <channel> <user>      member list <channel>
//
// Without --remote it works on the local state that `npm start` serves (.wrangler/state).
// Keys are printed once; only their SHA-256 is stored. Changes made here reach running
// Workers within their cache time (AUTH_CACHE_SECONDS, 30 by default).

import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { createHash, randomBytes } from "node:crypto";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const NAME = /^[a-z0-9][a-z0-9_.-]{0,63}$/;
const RESERVED_CHANNELS = new Set(["api", "t", "health"]);

class UsageError extends Error {}

function parseArgs(argv) {
  const flags = { remote: false, json: false, persistTo: null };
  const rest = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--remote") flags.remote = true;
    else if (arg === "--json") flags.json = true;
    else if (arg === "--persist-to") flags.persistTo = argv[++i];
    else rest.push(arg);
  }
  return { flags, rest };
}

/// Pulls `--name value` (or a bare `--flag`) out of a command's arguments.
function option(args, name, { boolean = false } = {}) {
  const at = args.indexOf(name);
  if (at < 0) return boolean ? false : null;
  if (boolean) {
    args.splice(at, 1);
    return true;
  }
  const value = args[at + 1];
  if (value === undefined) throw new UsageError(`${name} needs a value`);
  args.splice(at, 2);
  return value;
}

function positional(args, count, usage) {
  if (args.length !== count) throw new UsageError(`usage: ${usage}`);
  return args;
}

function checkName(kind, name) {
  if (!NAME.test(name) || name.includes("..")) {
    throw new UsageError(
      `invalid ${kind} name '${name}': use 1 to 64 lowercase letters, digits, '-', '_' or '.', starting with a letter or digit`,
    );
  }
  if (kind === "channel" && RESERVED_CHANNELS.has(name)) {
    throw new UsageError(`the channel name '${name}' is reserved`);
  }
}

const sqlString = (text) => `'${String(text).replaceAll("'", "''")}'`;

/// Runs SQL against D1 through wrangler and returns the rows of the last statement.
function d1(flags, sql) {
  const args = ["wrangler", "d1", "execute", "DB", "--json", "--command", sql];
  if (flags.remote) args.push("--remote");
  else {
    args.push("--local");
    if (flags.persistTo) args.push("--persist-to", flags.persistTo);
  }
  let output;
  try {
    output = execFileSync("npx", args, {
      cwd: ROOT,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false" },
    });
  } catch (error) {
    const detail = `${error.stdout ?? ""}${error.stderr ?? ""}`;
    const constraint = detail.match(/(UNIQUE|FOREIGN KEY|CHECK) constraint failed[^"\n]*/);
    throw new Error(constraint ? constraint[0] : detail.trim() || String(error));
  }
  const results = JSON.parse(output);
  return results[results.length - 1]?.results ?? [];
}

/// Calls the running Worker's API with the key in CONDAFLARE_API_KEY.
async function api(url, method, path, body, headers = {}) {
  const key = process.env.CONDAFLARE_API_KEY;
  if (!key) throw new UsageError("set CONDAFLARE_API_KEY to an owner's or admin's key");
  const response = await fetch(`${url}${path}`, { method, body, headers: { Authorization: `Bearer ${key}`, ...headers } });
  const json = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(json.error ?? `the server answered ${response.status}`);
  return json;
}

const PACKAGE_FILE = /\.(conda|tar\.bz2)$/;

function packageFiles(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return packageFiles(path);
    return entry.isFile() && PACKAGE_FILE.test(entry.name) ? [path] : [];
  });
}

/// One ustar entry: header, data, padding to 512 bytes. Names longer than 100 bytes get a GNU
/// long-name entry first.
function tarEntry(name, data) {
  const header = (entryName, size, type) => {
    const block = Buffer.alloc(512);
    block.write(entryName.slice(0, 100), 0);
    block.write("0000644\0", 100);
    block.write("0000000\0", 108);
    block.write("0000000\0", 116);
    block.write(size.toString(8).padStart(11, "0") + "\0", 124);
    block.write("00000000000\0", 136);
    block.write("        ", 148);
    block.write(type, 156);
    block.write("ustar\0" + "00", 257);
    let sum = 0;
    for (const byte of block) sum += byte;
    block.write(sum.toString(8).padStart(6, "0") + "\0 ", 148);
    return block;
  };
  const pad = (n) => Buffer.alloc((512 - (n % 512)) % 512);
  const parts = [];
  if (Buffer.byteLength(name) > 100) {
    const long = Buffer.from(name + "\0");
    parts.push(header("././@LongLink", long.length, "L"), long, pad(long.length));
  }
  parts.push(header(name, data.length, "0"), data, pad(data.length));
  return Buffer.concat(parts);
}

function userId(flags, name) {
  const rows = d1(flags, `SELECT id FROM users WHERE name = ${sqlString(name)}`);
  if (rows.length === 0) throw new UsageError(`no user named '${name}'`);
  return rows[0].id;
}

function newKey() {
  const key = `cfk_${randomBytes(32).toString("base64url")}`;
  return { key, hash: createHash("sha256").update(key).digest("hex"), prefix: key.slice(0, 12) };
}

const commands = {
  "user create"(flags, args) {
    const admin = option(args, "--admin", { boolean: true });
    const [name] = positional(args, 1, "user create <name> [--admin]");
    checkName("user", name);
    const rows = d1(
      flags,
      `INSERT INTO users (name, is_admin, created_at) VALUES (${sqlString(name)}, ${admin ? 1 : 0}, ${Date.now()}) RETURNING id, name, is_admin`,
    );
    return { result: rows[0], text: `created user ${name}${admin ? " (site admin)" : ""}` };
  },
  "user list"(flags, args) {
    positional(args, 0, "user list");
    const rows = d1(flags, "SELECT id, name, is_admin, created_at FROM users ORDER BY name");
    return { result: rows, text: rows.map((r) => `${r.id}\t${r.name}${r.is_admin ? "\tadmin" : ""}`).join("\n") };
  },
  "key create"(flags, args) {
    const name = option(args, "--name") ?? "default";
    const days = option(args, "--expires-days");
    const readOnly = option(args, "--read-only", { boolean: true });
    const channels = [];
    for (let channel; (channel = option(args, "--channel")) !== null; ) {
      checkName("channel", channel);
      channels.push(channel);
    }
    const [user] = positional(args, 1, "key create <user> [--name N] [--expires-days D] [--read-only] [--channel C]...");
    if (days !== null && !(Number(days) > 0)) throw new UsageError("--expires-days takes a positive number");
    const expires = days === null ? "NULL" : String(Math.round(Date.now() + Number(days) * 86_400_000));
    const scope = channels.length ? sqlString(JSON.stringify(channels)) : "NULL";
    const id = userId(flags, user);
    const { key, hash, prefix } = newKey();
    const rows = d1(
      flags,
      `INSERT INTO api_keys (user_id, name, key_hash, prefix, created_at, expires_at, read_only, channels) VALUES (${id}, ${sqlString(name)}, ${sqlString(hash)}, ${sqlString(prefix)}, ${Date.now()}, ${expires}, ${readOnly ? 1 : 0}, ${scope}) RETURNING id`,
    );
    const limits = [readOnly && "read-only", channels.length && `only ${channels.join(", ")}`].filter(Boolean);
    return {
      result: { id: rows[0].id, user, name, key, read_only: readOnly, channels: channels.length ? channels : null },
      text: `key ${rows[0].id} for ${user}${limits.length ? ` (${limits.join("; ")})` : ""}: ${key}\n(shown once: store it now; only its hash is kept)`,
    };
  },
  "key revoke"(flags, args) {
    const [id] = positional(args, 1, "key revoke <id>");
    if (!/^\d+$/.test(id)) throw new UsageError("a key id is a number (see 'key list')");
    const rows = d1(flags, `UPDATE api_keys SET revoked_at = ${Date.now()} WHERE id = ${id} AND revoked_at IS NULL RETURNING id`);
    if (rows.length === 0) throw new UsageError(`no active key with id ${id}`);
    return { result: { id: Number(id), revoked: true }, text: `revoked key ${id}` };
  },
  "key list"(flags, args) {
    const [user] = args.length ? positional(args, 1, "key list [<user>]") : [null];
    const where = user ? `WHERE u.name = ${sqlString(user)}` : "";
    const rows = d1(
      flags,
      `SELECT k.id, u.name AS user, k.name, k.prefix, k.created_at, k.expires_at, k.revoked_at FROM api_keys k JOIN users u ON u.id = k.user_id ${where} ORDER BY k.id`,
    );
    const state = (r) => (r.revoked_at ? "revoked" : r.expires_at && r.expires_at < Date.now() ? "expired" : "active");
    return { result: rows, text: rows.map((r) => `${r.id}\t${r.user}\t${r.name}\t${r.prefix}…\t${state(r)}`).join("\n") };
  },
  "channel create"(flags, args) {
    const owner = option(args, "--owner");
    const isPrivate = option(args, "--private", { boolean: true });
    const [name] = positional(args, 1, "channel create <name> --owner <user> [--private]");
    checkName("channel", name);
    if (!owner) throw new UsageError("usage: channel create <name> --owner <user> [--private]");
    const id = userId(flags, owner);
    d1(
      flags,
      `INSERT INTO channels (name, private, created_at) VALUES (${sqlString(name)}, ${isPrivate ? 1 : 0}, ${Date.now()}); ` +
        `INSERT INTO memberships (channel, user_id, role) VALUES (${sqlString(name)}, ${id}, 'owner')`,
    );
    return {
      result: { name, private: isPrivate, owner },
      text: `created ${isPrivate ? "private" : "public"} channel ${name}, owned by ${owner}`,
    };
  },
  "channel visibility"(flags, args) {
    const [name, visibility] = positional(args, 2, "channel visibility <name> public|private");
    if (visibility !== "public" && visibility !== "private") throw new UsageError("visibility is public or private");
    const rows = d1(flags, `UPDATE channels SET private = ${visibility === "private" ? 1 : 0} WHERE name = ${sqlString(name)} RETURNING name`);
    if (rows.length === 0) throw new UsageError(`no channel named '${name}'`);
    return { result: { name, private: visibility === "private" }, text: `${name} is now ${visibility}` };
  },
  async "channel delete"(flags, args) {
    // Removing a channel's packages and index is the Worker's work, so this goes through its API.
    const url = option(args, "--url") ?? "http://127.0.0.1:8787";
    const [name] = positional(args, 1, "channel delete <name> [--url URL]");
    checkName("channel", name);
    const body = await api(url, "DELETE", `/api/v1/channels/${name}`);
    return { result: body, text: `deleted channel ${name} (${body.objects_removed} objects)` };
  },
  async import(flags, args) {
    const url = option(args, "--url") ?? "http://127.0.0.1:8787";
    const force = option(args, "--force", { boolean: true });
    const [channel, dir] = positional(args, 2, "import <channel> <dir> [--url URL] [--force]");
    checkName("channel", channel);
    if (!statSync(dir, { throwIfNoEntry: false })?.isDirectory()) throw new UsageError(`${dir} is not a directory`);
    // Requests stay under the server's upload limit (100 MB by default), and short enough to
    // answer well within a client's patience (and a Worker request's CPU budget).
    const limit = 90 * 1024 * 1024;
    const batchPackages = 5000;
    const totals = { created: 0, unchanged: 0, failed: 0, results: [] };
    let batch = [];
    let size = 0;
    const send = async () => {
      if (batch.length === 0) return;
      const body = Buffer.concat([...batch, Buffer.alloc(1024)]);
      const answer = await api(url, "POST", `/api/v1/import/${channel}${force ? "?force=true" : ""}`, body, { "Content-Type": "application/x-tar" });
      for (const key of ["created", "unchanged", "failed"]) totals[key] += answer[key];
      totals.results.push(...answer.results);
      process.stderr.write(`imported ${totals.results.length} packages so far\n`);
      batch = [];
      size = 0;
    };
    for (const path of packageFiles(dir)) {
      const entry = tarEntry(path.split("/").pop(), readFileSync(path));
      if (size + entry.length > limit || batch.length === batchPackages) await send();
      batch.push(entry);
      size += entry.length;
    }
    await send();
    const failures = totals.results.filter((r) => r.status >= 400).map((r) => `  ${r.filename}: ${r.error}`);
    return {
      result: totals,
      text: [`imported into ${channel}: ${totals.created} new, ${totals.unchanged} already there, ${totals.failed} refused`, ...failures].join("\n"),
    };
  },
  "channel list"(flags, args) {
    positional(args, 0, "channel list");
    const rows = d1(flags, "SELECT name, private, created_at FROM channels ORDER BY name");
    return { result: rows, text: rows.map((r) => `${r.name}\t${r.private ? "private" : "public"}`).join("\n") };
  },
  "member add"(flags, args) {
    const role = option(args, "--role");
    const [channel, user] = positional(args, 2, "member add <channel> <user> --role owner|member");
    if (role !== "owner" && role !== "member") throw new UsageError("--role is owner or member");
    const id = userId(flags, user);
    const rows = d1(
      flags,
      `INSERT INTO memberships (channel, user_id, role) SELECT name, ${id}, '${role}' FROM channels WHERE name = ${sqlString(channel)} ` +
        `ON CONFLICT (channel, user_id) DO UPDATE SET role = excluded.role RETURNING channel`,
    );
    if (rows.length === 0) throw new UsageError(`no channel named '${channel}'`);
    return { result: { channel, user, role }, text: `${user} is now ${role} of ${channel}` };
  },
  "member remove"(flags, args) {
    const [channel, user] = positional(args, 2, "member remove <channel> <user>");
    const id = userId(flags, user);
    const rows = d1(flags, `DELETE FROM memberships WHERE channel = ${sqlString(channel)} AND user_id = ${id} RETURNING role`);
    if (rows.length === 0) throw new UsageError(`${user} is not a member of '${channel}'`);
    return { result: { channel, user, removed: true }, text: `removed ${user} from ${channel}` };
  },
  "member list"(flags, args) {
    const [channel] = positional(args, 1, "member list <channel>");
    const rows = d1(
      flags,
      `SELECT u.name AS user, m.role FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.channel = ${sqlString(channel)} ORDER BY m.role, u.name`,
    );
    return { result: rows, text: rows.map((r) => `${r.user}\t${r.role}`).join("\n") };
  },
};

async function main() {
  const { flags, rest } = parseArgs(process.argv.slice(2));
  const command = commands[rest.slice(0, 2).join(" ")] ?? (rest[0] === "import" ? commands.import : undefined);
  if (!command) {
    console.error(`usage: npm run admin -- [--remote] [--persist-to DIR] [--json] <command>\ncommands: ${Object.keys(commands).join(", ")}`);
    process.exit(2);
  }
  try {
    const { result, text } = await command(flags, rest.slice(command === commands.import ? 1 : 2));
    console.log(flags.json ? JSON.stringify(result) : text);
  } catch (error) {
    console.error(`error: ${error.message}`);
    process.exit(error instanceof UsageError ? 2 : 1);
  }
}

main();

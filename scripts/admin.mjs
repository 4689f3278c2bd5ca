#!/usr/bin/env node
// condaflare's admin command, its one entry point: `npm run admin -- [--remote]
// [--persist-to DIR] [--json] <command>`. The commands and their usage are listed once, in
// src/bin/admin.rs (USAGE), which any unknown command prints.
//
// This script runs the commands that need the running Worker, which removes and writes R2
// objects and the index: `channel delete`, `import`, `check` and `mirror sync` (whose solve
// is the native binary's internal `solve`). Every other command goes to
// the native `admin` binary (src/bin/admin.rs), built here on first use and whenever the crate
// changed: it changes users, keys, channels and members in D1 with the Worker's own statements,
// on the local state's D1 file or, with --remote, on the deployed database, so no server needs
// to run.
//
// Keys are printed once; only their SHA-256 is stored. Argument errors exit 2, other failures
// 1, each with `error: ...` on stderr.

import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const TARGET = process.env.CARGO_TARGET_DIR ?? join(ROOT, "target");
const NATIVE = join(TARGET, "debug", "admin");
// Touched after each successful build: cargo leaves the binary alone when nothing it uses
// changed (src/edge/ is wasm-only), so the binary's own time would ask for a build every time.
const BUILT = join(TARGET, "debug", ".admin-built");

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

/// The newest modification time of the files the native binary is built from.
function newestSource(path = join(ROOT, "src")) {
  return readdirSync(path, { withFileTypes: true }).reduce((newest, entry) => {
    const child = join(path, entry.name);
    const time = entry.isDirectory() ? newestSource(child) : statSync(child).mtimeMs;
    return Math.max(newest, time);
  }, 0);
}

/// Builds the native binary (dev profile, like `cargo test`) unless it is newer than every
/// source, and returns its path.
function nativeAdmin() {
  const inputs = ["Cargo.toml", "Cargo.lock", ".cargo/config.toml"].map(
    (file) => statSync(join(ROOT, file), { throwIfNoEntry: false })?.mtimeMs ?? 0,
  );
  const built = statSync(BUILT, { throwIfNoEntry: false })?.mtimeMs ?? 0;
  const fresh = built > 0 && statSync(NATIVE, { throwIfNoEntry: false }) && built >= Math.max(newestSource(), ...inputs);
  if (!fresh) {
    // Stamped with the time the build started, so a source changed meanwhile counts as newer.
    const started = new Date();
    if (!statSync(NATIVE, { throwIfNoEntry: false })) console.error("admin: building the admin command (cargo build --bin admin), once");
    const build = spawnSync("cargo", ["build", "--quiet", "--bin", "admin"], { cwd: ROOT, stdio: ["ignore", 2, 2] });
    if (build.status !== 0) {
      console.error("error: building the admin command failed (cargo build --bin admin)");
      process.exit(1);
    }
    writeFileSync(BUILT, "");
    utimesSync(BUILT, started, started);
  }
  return NATIVE;
}

/// Runs the native binary with these arguments, its output passed through; returns its exit code.
function native(args) {
  const run = spawnSync(nativeAdmin(), args, { cwd: ROOT, stdio: "inherit" });
  if (run.error) throw run.error;
  return run.status ?? 1;
}

/// Runs the native binary with `--json` and these arguments, its errors passed through;
/// answers its exit code and, when it succeeded, the JSON it printed.
function nativeJson(args) {
  const run = spawnSync(nativeAdmin(), ["--json", ...args], { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"], maxBuffer: 1 << 30 });
  if (run.error) throw run.error;
  const status = run.status ?? 1;
  return { status, result: status === 0 ? JSON.parse(run.stdout) : null };
}

/// The channel name rule, from the native code the Worker shares.
function checkChannelName(name) {
  const status = native(["check-name", name]);
  if (status !== 0) process.exit(status);
}

/// The key in CONDAFLARE_API_KEY, as the Authorization header.
function authorization() {
  const key = process.env.CONDAFLARE_API_KEY;
  if (!key) throw new UsageError("set CONDAFLARE_API_KEY to an owner's or admin's key");
  return { Authorization: `Bearer ${key}` };
}

/// An answer that is not 2xx, with its status.
class ServerError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

/// Calls the running Worker's API with the key in CONDAFLARE_API_KEY.
async function api(url, method, path, body, headers = {}) {
  const response = await fetch(`${url}${path}`, { method, body, headers: { ...authorization(), ...headers } });
  const json = await response.json().catch(() => ({}));
  if (!response.ok) throw new ServerError(json.error ?? `the server answered ${response.status}`, response.status);
  return json;
}

/// The package files a mirror keeps, as `<subdir>/<filename>`.
async function keptFiles(url, channel) {
  const kept = new Set();
  let cursor = null;
  do {
    const query = `?limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
    const page = await api(url, "GET", `/api/v1/channels/${channel}/mirror${query}`);
    for (const { subdir, filename } of page.kept) kept.add(`${subdir}/${filename}`);
    cursor = page.next_cursor;
  } while (cursor);
  return kept;
}

/// GETs a package file through the Worker and reads it to the end, checking its SHA-256 and
/// size against the record's; answers the bytes read, or throws what went wrong.
async function fetchChecked(url, channel, file) {
  const response = await fetch(`${url}/${channel}/${file.subdir}/${file.filename}`, { headers: authorization() });
  if (!response.ok) {
    const json = await response.json().catch(() => ({}));
    throw new Error(`the server answered ${response.status}${json.error ? `: ${json.error}` : ""}`);
  }
  const hash = createHash("sha256");
  let size = 0;
  for await (const chunk of response.body) {
    hash.update(chunk);
    size += chunk.length;
  }
  const sha256 = hash.digest("hex");
  if (file.size != null && size !== file.size) throw new Error(`${size} bytes, not the record's ${file.size}`);
  if (sha256 !== file.sha256) throw new Error(`SHA-256 ${sha256}, not the record's ${file.sha256}`);
  return size;
}

/// Runs `work` on each item, at most `limit` at a time.
async function eachLimited(items, limit, work) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await work(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
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

/// The commands that go through the running Worker.
const workerCommands = {
  async "channel delete"(flags, args) {
    // Removing a channel's packages and index is the Worker's work, so this goes through its API.
    const url = option(args, "--url") ?? "http://127.0.0.1:8787";
    const [name] = positional(args, 1, "channel delete <name> [--url URL]");
    checkChannelName(name);
    const body = await api(url, "DELETE", `/api/v1/channels/${name}`);
    return { result: body, text: `deleted channel ${name} (${body.objects_removed} objects)` };
  },
  async import(flags, args) {
    const url = option(args, "--url") ?? "http://127.0.0.1:8787";
    const force = option(args, "--force", { boolean: true });
    const [channel, dir] = positional(args, 2, "import <channel> <dir> [--url URL] [--force]");
    checkChannelName(channel);
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
  async check(flags, args) {
    const url = option(args, "--url") ?? "http://127.0.0.1:8787";
    const repair = option(args, "--repair", { boolean: true });
    const all = option(args, "--all", { boolean: true });
    const query = repair ? "?repair=true" : "";
    if (all) {
      positional(args, 0, "check --all [--repair] [--url URL]");
      // A site admin sees every channel, private ones included.
      const { channels } = await api(url, "GET", "/api/v1/channels");
      const reports = [];
      for (const { name } of channels) reports.push(await api(url, "POST", `/api/v1/channels/${name}/check${query}`));
      const consistent = reports.every((report) => report.consistent);
      const inconsistent = reports.filter((report) => !report.consistent).length;
      return {
        result: { consistent, channels: reports },
        text: [...reports.map(checkText), `${reports.length} channels checked, ${inconsistent} inconsistent`].join("\n"),
        // Scripts and cron jobs can tell a damaged deployment by the exit code alone.
        status: consistent ? 0 : 1,
      };
    }
    const [channel] = positional(args, 1, "check <channel> [--repair] [--url URL]");
    checkChannelName(channel);
    const report = await api(url, "POST", `/api/v1/channels/${channel}/check${query}`);
    return { result: report, text: checkText(report) };
  },
  "mirror sync": mirrorSync,
};

/// Writes the mirror's index (repodata.json of each subdir, as the Worker serves it: filtered by
/// the rules) into `dir`; a subdir the mirror does not have (404) is left out.
async function writeIndex(url, channel, subdirs, dir) {
  for (const subdir of subdirs) {
    const response = await fetch(`${url}/${channel}/${subdir}/repodata.json`, { headers: authorization() });
    if (response.status === 404) continue;
    if (!response.ok) {
      const json = await response.json().catch(() => ({}));
      throw new Error(`${channel}/${subdir}/repodata.json: the server answered ${response.status}${json.error ? `: ${json.error}` : ""}`);
    }
    mkdirSync(join(dir, subdir));
    writeFileSync(join(dir, subdir, "repodata.json"), Buffer.from(await response.arrayBuffer()));
  }
}

async function mirrorSync(flags, args) {
  const url = option(args, "--url") ?? "http://127.0.0.1:8787";
  const [channel, ...request] = args;
  if (!channel || channel.startsWith("--")) {
    throw new UsageError("usage: mirror sync <channel> <spec>... --subdir S... [--virtual-package NAME=VERSION[=BUILD]]... [--url URL]");
  }
  checkChannelName(channel);
  // The specs, platforms and virtual packages are checked before the Worker is asked anything.
  const plan = nativeJson(["solve", ...request]);
  if (plan.status !== 0) process.exit(plan.status);
  const subdirs = [...plan.result.targets.map((target) => target.subdir), "noarch"];
  const details = await api(url, "GET", `/api/v1/channels/${channel}`).catch((error) => {
    throw error.status === 404 ? new UsageError(`no channel named '${channel}' (that this key may read)`) : error;
  });
  if (!details.mirror) throw new UsageError(`'${channel}' is no mirror channel: mirror sync fetches a mirror's files from its upstream`);

  const dir = mkdtempSync(join(tmpdir(), "condaflare-sync-"));
  let solved;
  try {
    await writeIndex(url, channel, subdirs, dir);
    solved = nativeJson(["solve", ...request, "--index", dir]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  if (solved.status !== 0) process.exit(solved.status);

  const kept = await keptFiles(url, channel);
  const files = solved.result.files;
  // A few at a time: each first request is an upstream fetch the Worker streams into R2. A
  // failed file is asked for once more: a streamed body that differs from its record is cut
  // short, and the next request answers the Worker's reason (its 502).
  await eachLimited(files, 4, async (file) => {
    const wasKept = kept.has(`${file.subdir}/${file.filename}`);
    for (let attempt = 1; attempt <= 2; attempt++) {
      try {
        file.bytes = await fetchChecked(url, channel, file);
        file.status = wasKept ? "kept" : "fetched";
        delete file.error;
        return;
      } catch (error) {
        Object.assign(file, { status: "failed", error: error.message });
      }
    }
  });
  const count = (status) => files.filter((file) => file.status === status).length;
  const result = {
    channel,
    targets: solved.result.targets,
    files,
    fetched: count("fetched"),
    kept: count("kept"),
    failed: count("failed"),
    bytes: files.reduce((sum, file) => sum + (file.bytes ?? 0), 0),
  };
  const platforms = result.targets.map((target) => `${target.subdir} (${target.virtual_packages.join(" ")})`);
  const lines = [
    `${channel}, for ${platforms.join(", ")}: ${files.length} files, ${result.fetched} fetched now, ` +
      `${result.kept} already kept, ${result.failed} failed; ${result.bytes} bytes checked`,
    ...files.filter((file) => file.status === "failed").map((file) => `  failed: ${file.subdir}/${file.filename}: ${file.error}`),
  ];
  return { result, text: lines.join("\n"), status: result.failed > 0 ? 1 : 0 };
}

/// A check's report as lines: each kind found with its count and examples, the pending work and
/// what a repair did.
function checkText(report) {
  const lines = [`${report.channel}: ${report.consistent ? "consistent" : "inconsistent"}`];
  for (const [kind, { count, examples }] of Object.entries(report.findings)) {
    lines.push(`  ${kind}: ${count}`, ...examples.map((example) => `    ${example}`));
  }
  const { dirty_names: dirty, stale_subdirs: stale } = report.pending;
  if (dirty > 0 || stale.length > 0) lines.push(`  pending: ${dirty} names to build, stale subdirs: ${stale.join(", ") || "none"}`);
  const repaired = report.repaired;
  if (repaired) {
    lines.push(
      `  repaired: ${repaired.names_marked} names marked, rebuilt: ${repaired.subdirs_rebuilt.join(", ") || "nothing"}, ` +
        `${repaired.objects_deleted} orphan objects and ${repaired.staging_deleted} staging objects deleted`,
    );
  }
  return lines.join("\n");
}

async function main() {
  const argv = process.argv.slice(2);
  const { flags, rest } = parseArgs(argv);
  const single = rest[0] === "import" || rest[0] === "check";
  const name = single ? rest[0] : rest.slice(0, 2).join(" ");
  const command = workerCommands[name];
  // Everything else, including unknown commands and their usage, is the native binary's.
  if (!command) process.exit(native(argv));
  try {
    const { result, text, status = 0 } = await command(flags, rest.slice(single ? 1 : 2));
    console.log(flags.json ? JSON.stringify(result) : text);
    process.exitCode = status;
  } catch (error) {
    console.error(`error: ${error.message}`);
    process.exit(error instanceof UsageError ? 2 : 1);
  }
}

main();

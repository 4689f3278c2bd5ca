"""Starts the real Worker under `wrangler dev` (workerd with local R2, D1 and Durable Objects)
on a free port with its own state directory; shared by the end-to-end tests and the benches."""

import atexit
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
# The checkout whose built Worker (build/, wrangler.toml, migrations/) the server runs: this one,
# or another commit's worktree (built there with `npm run build`) given in CONDAFLARE_WORKER_DIR,
# to run the same tests against older code, e.g. to show that a test fails there.
WORKER_DIR = Path(os.environ.get("CONDAFLARE_WORKER_DIR", ROOT)).resolve()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def store_snapshot(db: Path):
    """A connection to a copy of one of workerd's SQLite files (with its write-ahead log), so
    that reading it takes no lock on the live file: workerd sets no busy timeout, and a reader's
    lock at the moment it commits fails the request with SQLITE_BUSY. A copy taken mid-write may
    be unreadable (sqlite3.DatabaseError): callers that poll try again."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / db.name
        shutil.copyfile(db, copy)
        wal = db.with_name(f"{db.name}-wal")
        if wal.exists():
            shutil.copyfile(wal, copy.with_name(f"{copy.name}-wal"))
        conn = sqlite3.connect(copy)
        try:
            yield conn
        finally:
            conn.close()


@dataclass
class Server:
    url: str
    state: Path
    log_path: Path
    # wrangler dev's process group (workerd runs in it).
    pgid: int

    def admin(self, *args: str, env: dict | None = None) -> dict | list:
        """Runs `npm run admin` (scripts/admin.mjs) against this server's local state."""
        out = subprocess.run(
            ["node", str(ROOT / "scripts" / "admin.mjs"), "--persist-to", str(self.state), "--json", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
        )
        if out.returncode != 0:
            raise AdminError(out.returncode, out.stderr.strip())
        return json.loads(out.stdout)

    def r2_keys(self) -> dict[str, int]:
        """Every object the local R2 bucket holds, with its size (read from workerd's store)."""
        keys: dict[str, int] = {}
        for db in (self.state / "v3" / "r2" / "miniflare-R2BucketObject").glob("*.sqlite"):
            if db.name == "metadata.sqlite":
                continue
            with store_snapshot(db) as conn:
                keys.update(conn.execute("SELECT key, size FROM _mf_objects").fetchall())
        return keys

    def direct_uploads(self) -> set[str]:
        """The keys the channel indexes hold reserved for uploads writing straight to them (read
        from workerd's Durable Object store)."""
        keys: set[str] = set()
        for db in (self.state / "v3" / "do").glob("*/*.sqlite"):
            if db.name == "metadata.sqlite":
                continue
            with store_snapshot(db) as conn:
                if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'direct_uploads'").fetchone():
                    keys.update(key for (key,) in conn.execute("SELECT key FROM direct_uploads"))
        return keys

    def api(self, method: str, path: str, key: str | None = None, timeout: float = 30, **kwargs) -> requests.Response:
        """A call to the management API, with the key as Bearer token."""
        headers = kwargs.pop("headers", {})
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return requests.request(method, f"{self.url}/api/v1/{path}", headers=headers, timeout=timeout, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_address(self) -> tuple[str, int]:
        """The Worker's own socket behind wrangler dev's proxy, where a request gets the
        Worker's answer as at the edge, not the proxy's (which answers `500 Network connection
        lost` for any body cut short). Found among workerd's listening sockets as the one, other
        than the public port, that answers like the Worker."""
        inodes = set()
        for proc in Path("/proc").iterdir():
            try:
                if not proc.name.isdigit() or os.getpgid(int(proc.name)) != self.pgid:
                    continue
                if (proc / "comm").read_text().strip() != "workerd":
                    continue
                for fd in (proc / "fd").iterdir():
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
            except OSError:
                continue
        public = int(self.url.rsplit(":", 1)[1])
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            port = int(fields[1].split(":")[1], 16)
            if fields[3] != "0A" or fields[9] not in inodes or port == public:  # 0A: LISTEN
                continue
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/api/v1/whoami", timeout=5)
            except requests.RequestException:
                continue
            if answer.headers.get("WWW-Authenticate") == 'Bearer realm="condaflare"':
                return ("127.0.0.1", port)
        raise RuntimeError("the Worker's own socket was not found")


class AdminError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


# Per checkout: a state directory that `wrangler d1 migrations apply` made, once per process.
_migrated: dict[Path, Path] = {}


def migrated_state(worker_dir: Path) -> Path:
    """A state directory holding only the D1 database with the checkout's migrations applied,
    made by wrangler on first use and copied for every later server (applying them takes wrangler
    some 6 s each time, copying a few milliseconds: the same files either way). For this
    checkout, `npm test` makes it once for all pytest workers (CONDAFLARE_MIGRATED_STATE)."""
    made = os.environ.get("CONDAFLARE_MIGRATED_STATE")
    if made and worker_dir == ROOT:
        return Path(made)
    if worker_dir not in _migrated:
        template = Path(tempfile.mkdtemp(prefix="condaflare-migrated-"))
        atexit.register(shutil.rmtree, template, ignore_errors=True)
        apply_migrations(worker_dir, template)
        _migrated[worker_dir] = template
    return _migrated[worker_dir]


def apply_migrations(worker_dir: Path, state: Path) -> None:
    subprocess.run(
        ["wrangler", "d1", "migrations", "apply", "DB", "--local", "--persist-to", str(state)],
        cwd=worker_dir,
        check=True,
        capture_output=True,
    )


@contextmanager
def running_server(
    state: Path, variables: dict[str, str] | None = None, worker_dir: Path = WORKER_DIR, secrets: dict[str, str] | None = None
):
    """Applies the migrations to `state`, serves the built Worker (or the one in `worker_dir`)
    on it, and stops it after."""
    server = KillableServer(state, variables, worker_dir, secrets)
    try:
        yield server.start()
    finally:
        server.stop(signal.SIGTERM)


class KillableServer:
    """`wrangler dev` on `state`, which can be killed (the whole process group, as a crash
    would) and started again on the same state and port. `secrets` reach the Worker as secrets
    do (from an env file, as `.dev.vars` would give them: wrangler shows their names, not their
    values)."""

    def __init__(
        self, state: Path, variables: dict[str, str] | None = None, worker_dir: Path = WORKER_DIR, secrets: dict[str, str] | None = None
    ):
        self.state = state
        self.variables = variables or {}
        self.secrets = secrets or {}
        self.worker_dir = worker_dir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        state.mkdir(parents=True, exist_ok=True)
        if not (worker_dir / "migrations").is_dir():
            return
        if (state / "v3" / "d1").exists():
            # A state served before (a restart on it) gets the migrations it lacks.
            apply_migrations(worker_dir, state)
        else:
            shutil.copytree(migrated_state(worker_dir), state, dirs_exist_ok=True)

    def start(self) -> Server:
        log_path = self.state / "wrangler.log"
        var_args = [arg for name, value in self.variables.items() for arg in ("--var", f"{name}:{value}")]
        if self.secrets:
            secrets = self.state / "secrets.env"
            secrets.write_text("".join(f"{name}={json.dumps(value)}\n" for name, value in self.secrets.items()))
            var_args += ["--env-file", str(secrets)]
        # Appended to, so that a restarted server's log follows the killed one's.
        with open(log_path, "a") as log:
            proc = subprocess.Popen(
                [
                    "wrangler", "dev", "--local", "--ip", "127.0.0.1", "--port", str(self.port),
                    "--inspector-port", str(free_port()), "--persist-to", str(self.state),
                    *var_args, "--log-level", "log", "--show-interactive-dev-session=false",
                ],
                cwd=self.worker_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.proc = proc
        url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"wrangler dev exited:\n{log_path.read_text()}")
            try:
                requests.get(f"{url}/", timeout=1)
                break
            # A loaded machine may accept the connection before the Worker answers in time.
            except (requests.ConnectionError, requests.Timeout):
                if time.time() > deadline:
                    self.stop(signal.SIGKILL)
                    raise RuntimeError(f"wrangler dev did not start:\n{log_path.read_text()}")
                time.sleep(0.3)
        return Server(url=url, state=self.state, log_path=log_path, pgid=proc.pid)

    def stop(self, sig: int = signal.SIGKILL) -> None:
        """Sends `sig` to the server's whole process group (SIGKILL: a crash) and waits for it."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

"""Runs the real Worker under `wrangler dev` (workerd with local R2, D1 and Durable Objects) and
gives tests an HTTP client, the admin command and a view of what R2 holds."""

import hashlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
PACKAGES = FIXTURES / "packages"
# A small limit, so the 413 path is reachable with small bodies.
MAX_UPLOAD_BYTES = 2_000_000
# A short cache time, so that the bound on seeing changes made straight in D1 can be tested.
AUTH_CACHE_SECONDS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    state: Path
    log_path: Path

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
            with sqlite3.connect(db) as conn:
                keys.update(conn.execute("SELECT key, size FROM _mf_objects").fetchall())
        return keys

    def api(self, method: str, path: str, key: str | None = None, **kwargs) -> requests.Response:
        """A call to the management API, with the key as Bearer token."""
        headers = kwargs.pop("headers", {})
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return requests.request(method, f"{self.url}/api/v1/{path}", headers=headers, timeout=30, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class AdminError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    state = tmp_path_factory.mktemp("state")
    log_path = state / "wrangler.log"
    subprocess.run(
        ["wrangler", "d1", "migrations", "apply", "DB", "--local", "--persist-to", str(state)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    port = free_port()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [
                "wrangler", "dev", "--local", "--ip", "127.0.0.1", "--port", str(port),
                "--inspector-port", str(free_port()), "--persist-to", str(state),
                "--var", f"MAX_UPLOAD_BYTES:{MAX_UPLOAD_BYTES}",
                "--var", f"AUTH_CACHE_SECONDS:{AUTH_CACHE_SECONDS}",
                "--log-level", "log", "--show-interactive-dev-session=false",
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"wrangler dev exited:\n{log_path.read_text()}")
            try:
                requests.get(f"{url}/", timeout=1)
                break
            except requests.ConnectionError:
                if time.time() > deadline:
                    raise RuntimeError(f"wrangler dev did not start:\n{log_path.read_text()}")
                time.sleep(0.3)
        yield Server(url=url, state=state, log_path=log_path)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@dataclass
class User:
    name: str
    key: str
    key_id: int

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


_counter = iter(range(1_000_000))


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{next(_counter)}"


@pytest.fixture(scope="session")
def make_user(server):
    def make(admin: bool = False) -> User:
        name = unique("user")
        server.admin("user", "create", name, *(["--admin"] if admin else []))
        key = server.admin("key", "create", name, "--name", "tests")
        return User(name=name, key=key["key"], key_id=key["id"])

    return make


@pytest.fixture(scope="session")
def owner(make_user) -> User:
    return make_user()


@pytest.fixture(scope="session")
def outsider(make_user) -> User:
    return make_user()


@pytest.fixture
def channel(server, owner) -> str:
    """A fresh public channel owned by `owner`."""
    name = unique("chan")
    server.admin("channel", "create", name, "--owner", owner.name)
    return name


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upload_raw(server: Server, channel: str, filename: str, data: bytes, headers=None, sha256=None, params=None):
    """The raw-body form of the prefix.dev upload API."""
    h = {
        "X-File-Name": filename,
        "X-File-SHA256": sha256 or sha256_of(data),
        "Content-Type": "application/octet-stream",
    }
    h.update(headers or {})
    return requests.post(f"{server.url}/api/v1/upload/{channel}", data=data, headers=h, params=params, timeout=60)


def upload_multipart(server: Server, channel: str, filename: str, data: bytes, headers=None, sha256=None, attestation=None):
    """The multipart form of the prefix.dev upload API: a `file` part carrying the file headers,
    after an optional `attestation` text part."""
    boundary = "condaflare-test-boundary"
    body = b""
    if attestation is not None:
        body += (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"attestation\"\r\n\r\n".encode()
            + attestation.encode()
            + b"\r\n"
        )
    body += (
        f"--{boundary}\r\n"
        f"Content-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
        f"Content-Type: application/octet-stream\r\n"
        f"X-File-Name: {filename}\r\n"
        f"X-File-SHA256: {sha256 or sha256_of(data)}\r\n\r\n"
    ).encode()
    body += data + f"\r\n--{boundary}--\r\n".encode()
    h = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    h.update(headers or {})
    return requests.post(f"{server.url}/api/v1/upload/{channel}", data=body, headers=h, timeout=60)


def reference_records() -> dict[str, tuple[str, dict]]:
    """filename -> (subdir, record) as conda-index wrote them for the fixture packages."""
    records = {}
    for repodata_path in (FIXTURES / "reference" / "conda-index").glob("*/repodata.json"):
        repodata = json.loads(repodata_path.read_text())
        for key in ("packages", "packages.conda"):
            for filename, record in repodata[key].items():
                records[filename] = (repodata_path.parent.name, record)
    return records

"""Fixtures for the end-to-end tests: the running Worker, users, keys and channels, and the two
upload forms real clients use."""

import hashlib
import io
import json
import os
import shutil
import tarfile
from dataclasses import dataclass

import pytest
import requests
from playwright.sync_api import Browser, sync_playwright

from harness import ROOT, Server, running_server

FIXTURES = ROOT / "tests" / "fixtures"
PACKAGES = FIXTURES / "packages"
# A small limit, so the 413 path is reachable with small bodies.
MAX_UPLOAD_BYTES = 2_000_000
# A short cache time, so that the bound on seeing changes made straight in D1 can be tested.
AUTH_CACHE_SECONDS = 3
# A short shard retention, so that the cleanup of superseded shards can be seen happening.
SHARD_RETENTION_SECONDS = 4
# The smallest part R2 accepts, so that a test channel of a few MB already takes several.
R2_PART_BYTES = 5 * 1024 * 1024
# Less than the default (8 MiB), so that a file of the test server's size whose subdir comes only
# after 1 MiB (info/ or the info component last) goes through a staging object, as a large one
# does in production.
UPLOAD_HOLD_BYTES = 1024 * 1024
# The browser the web app's tests drive (Debian's; Playwright's own download is not used).
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def figure(record_property):
    """Records a figure a test measured (a peak of memory, say), which the run prints at its end
    (pytest_terminal_summary): a test's own output is shown only when it fails."""
    return lambda text: record_property("figure", text)


def pytest_terminal_summary(terminalreporter):
    figures = [
        (report.nodeid, value)
        for report in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", [])
        if report.when == "call"
        for name, value in report.user_properties
        if name == "figure"
    ]
    if figures:
        terminalreporter.section("figures the tests measured")
        for nodeid, text in sorted(figures):
            terminalreporter.write_line(f"{nodeid.split('::', 1)[1]}: {text}")


def pytest_collection_modifyitems(items):
    """Files that say they run long (`RUNS_LONG = True`) come first, so that the workers take
    them first (`--dist loadfile` hands out files in this order) instead of one at the end."""
    items.sort(key=lambda item: not getattr(item.module, "RUNS_LONG", False))


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    variables = {
        "MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
        "AUTH_CACHE_SECONDS": str(AUTH_CACHE_SECONDS),
        "SHARD_RETENTION_SECONDS": str(SHARD_RETENTION_SECONDS),
        "R2_PART_BYTES": str(R2_PART_BYTES),
        "UPLOAD_HOLD_BYTES": str(UPLOAD_HOLD_BYTES),
        # Some tests read which files a client fetched from the request log.
        "LOG_READS": "true",
        # test_mirror.py's upstreams are plain http servers on 127.0.0.1.
        "MIRROR_ALLOW_HTTP": "true",
        # Every read of a mirror's repodata.json asks its upstream, so a stopped one shows at once.
        "MIRROR_REVALIDATE_SECONDS": "0",
        # ... and waits for the refresh (test_mirror.py has a server that refreshes after answering).
        "MIRROR_REFRESH_IN_BACKGROUND": "false",
    }
    # The secrets test_mirror.py's private upstream takes (one right, one wrong).
    secrets = {
        "MIRROR_UPSTREAM_TOKEN": "Bearer upstream-s3cret-value",
        "MIRROR_WRONG_TOKEN": "Bearer not-the-right-one",
    }
    with running_server(tmp_path_factory.mktemp("state"), variables, secrets=secrets) as server:
        yield server


@pytest.fixture(scope="session")
def browser() -> Browser:
    """One chromium for every browser test of the run (the web app's, the sign-in's)."""
    with sync_playwright() as playwright:
        # Chromium's sandbox needs user namespaces, which containers (and root) do not give it.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


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
    """A fresh public channel, created by `owner` through the API."""
    name = unique("chan")
    created = server.api("POST", "channels", owner.key, json={"name": name})
    assert created.status_code == 201, created.text
    return name


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def admin(server, make_user):
    """A site admin, who reads the Worker's R2 counter through the stats of a channel of their
    own."""
    user = make_user(admin=True)
    user.probe = unique("probe")
    server.admin("channel", "create", user.probe, "--owner", user.name)
    return user


def r2_operations(server, admin) -> dict[str, int]:
    """The R2 operations the Worker's isolate has made so far, per kind (of every channel)."""
    stats = server.api("GET", f"channels/{admin.probe}/stats", admin.key)
    assert stats.status_code == 200, stats.text
    return stats.json()["r2_operations"]


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


def import_tar(members: dict[str, bytes], format: int = tarfile.PAX_FORMAT) -> bytes:
    """A tar of the bulk import API: `members` are paths in it (a subdir before a file name, or
    just a file name) and their bytes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=format) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def post_import(server: Server, channel: str, body: bytes, auth: dict[str, str]) -> requests.Response:
    """The bulk import API."""
    return requests.post(
        f"{server.url}/api/v1/import/{channel}",
        data=body,
        headers={**auth, "Content-Type": "application/x-tar"},
        timeout=300,
    )


def reference_records() -> dict[str, tuple[str, dict]]:
    """filename -> (subdir, record) as conda-index wrote them for the fixture packages."""
    records = {}
    for repodata_path in (FIXTURES / "reference" / "conda-index").glob("*/repodata.json"):
        repodata = json.loads(repodata_path.read_text())
        for key in ("packages", "packages.conda"):
            for filename, record in repodata[key].items():
                records[filename] = (repodata_path.parent.name, record)
    return records

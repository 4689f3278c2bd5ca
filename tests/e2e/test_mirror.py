"""Mirror channels: created through the API and the admin command with their rules, shown with
them, refused with bad ones, closed to uploads and deletes; their index (repodata.json, its
.zst, the shard index, shards, run_exports.json) holds a real upstream's records (py-rattler's
index_fs served by http.server on 127.0.0.1, with and without shards) filtered by the rules,
stands in for the upstream once it stops, and is in the channel's index (browse, check)."""

import collections
import concurrent.futures
import functools
import hashlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import zstandard

import pytest
import requests

from conftest import PACKAGES, unique, upload_raw
from harness import AdminError, running_server
from pkgbuild import build_conda
from synthetic_channel import chain, workerd_memory, write_upstream

UPSTREAM = "https://conda.example.org/upstream"


def test_a_mirror_is_created_with_its_rules_and_shows_them(server, owner, outsider):
    name = unique("mirror")
    rules = {"url": UPSTREAM + "/", "allow": ["zlib >=1.2", "flask"], "deny": ["flask <0.11"], "min_age_days": 2}
    created = server.api("POST", "channels", owner.key, json={"name": name, "mirror": rules})
    assert created.status_code == 201, created.text
    shown = {"url": UPSTREAM, "allow": ["zlib >=1.2", "flask"], "deny": ["flask <0.11"], "min_age_days": 2}
    assert created.json()["mirror"] == shown
    details = server.api("GET", f"channels/{name}", owner.key).json()
    assert details["mirror"] == shown
    assert details["your_role"] == "owner"
    # Its owner manages it, but nobody writes to it.
    assert details["you_may"] == {"write": False, "manage": True}
    assert server.api("GET", f"channels/{name}", outsider.key).json()["mirror"] == shown

    # Defaults: everything, at any age.
    other = unique("mirror")
    created = server.api("POST", "channels", owner.key, json={"name": other, "private": True, "mirror": {"url": UPSTREAM}})
    assert created.status_code == 201, created.text
    assert created.json()["mirror"] == {"url": UPSTREAM, "allow": [], "deny": [], "min_age_days": 0}
    assert created.json()["private"] is True

    # A channel that is no mirror says nothing of one.
    plain = unique("plain")
    assert "mirror" not in server.api("POST", "channels", owner.key, json={"name": plain}).json()
    assert "mirror" not in server.api("GET", f"channels/{plain}", owner.key).json()


@pytest.mark.parametrize(
    "rules, fault",
    [
        ({"url": "ftp://conda.example.org/c"}, "not an https URL"),
        ({"url": "https://"}, "needs a host"),
        ({"url": UPSTREAM, "allow": ["zlib >=>1"]}, "'zlib >=>1' in allow"),
        ({"url": UPSTREAM, "deny": [""]}, "in deny"),
        ({"url": UPSTREAM, "min_age_days": -1}, "min_age_days is -1"),
        ({"url": UPSTREAM, "min_age_days": "old"}, "old"),
        ({"allow": ["zlib"]}, "url"),
        ({"url": UPSTREAM, "sync": True}, "sync"),
    ],
)
def test_bad_rules_are_refused_and_nothing_is_created(server, owner, rules, fault):
    name = unique("bad-mirror")
    refused = server.api("POST", "channels", owner.key, json={"name": name, "mirror": rules})
    assert refused.status_code == 400, refused.text
    assert refused.json()["code"] == "bad_request"
    assert fault in refused.json()["error"]
    assert server.api("GET", f"channels/{name}", owner.key).status_code == 404


def test_a_mirror_refuses_uploads_and_deletes(server, owner, outsider, make_user):
    name = unique("mirror")
    assert server.api("POST", "channels", owner.key, json={"name": name, "mirror": {"url": UPSTREAM}}).status_code == 201
    package = PACKAGES / "flask-0.11.1-py_0.tar.bz2"
    data = package.read_bytes()
    upload = upload_raw(server, name, package.name, data, headers={"Authorization": f"Bearer {owner.key}"})
    assert upload.status_code == 409, upload.text
    assert upload.json()["code"] == "mirror_channel"
    assert "mirror" in upload.json()["error"]
    # Artifactory's PUT and the delete API go through the same policy.
    put = requests.put(f"{server.url}/{name}/noarch/{package.name}", data=data, headers={"Authorization": f"Bearer {owner.key}"}, timeout=30)
    assert (put.status_code, put.json()["code"]) == (409, "mirror_channel")
    deleted = server.api("DELETE", f"delete/{name}/noarch/{package.name}", owner.key)
    assert (deleted.status_code, deleted.json()["code"]) == (409, "mirror_channel")
    # A rebuild and a repair rewrite the files from the mirror's own index: allowed.
    admin = make_user(admin=True)
    assert server.api("POST", f"channels/{name}/rebuild", admin.key).status_code == 200
    repaired = requests.post(f"{server.url}/api/v1/channels/{name}/check?repair=true", headers=admin.auth, timeout=30)
    assert repaired.status_code == 200, repaired.text
    # Someone who could not write anyway is refused as before.
    assert upload_raw(server, name, package.name, data, headers={"Authorization": f"Bearer {outsider.key}"}).status_code == 403
    assert not [key for key in server.r2_keys() if key.startswith(f"{name}/")]


def test_the_admin_command_creates_a_mirror(server, owner):
    name = unique("mirror")
    created = server.admin(
        "channel", "create", name, "--owner", owner.name, "--mirror", UPSTREAM,
        "--allow", "zlib", "--allow", "flask >=0.11", "--deny", "zlib ==1.2.8", "--min-age-days", "3",
    )
    shown = {"url": UPSTREAM, "allow": ["zlib", "flask >=0.11"], "deny": ["zlib ==1.2.8"], "min_age_days": 3}
    assert created["mirror"] == shown
    assert server.api("GET", f"channels/{name}", owner.key).json()["mirror"] == shown

    # http only with MIRROR_ALLOW_HTTP, as in the Worker.
    local = unique("mirror")
    with pytest.raises(AdminError) as refused:
        server.admin("channel", "create", local, "--owner", owner.name, "--mirror", "http://127.0.0.1:1/c")
    assert refused.value.code == 2
    assert "MIRROR_ALLOW_HTTP" in refused.value.message
    created = server.admin(
        "channel", "create", local, "--owner", owner.name, "--mirror", "http://127.0.0.1:1/c",
        env={"MIRROR_ALLOW_HTTP": "true"},
    )
    assert created["mirror"]["url"] == "http://127.0.0.1:1/c"

    for bad in (["--mirror", UPSTREAM, "--allow", "zlib >=>1"], ["--mirror", UPSTREAM, "--min-age-days", "-1"], ["--allow", "zlib"]):
        other = unique("mirror")
        with pytest.raises(AdminError) as refused:
            server.admin("channel", "create", other, "--owner", owner.name, *bad)
        assert refused.value.code == 2, bad
        assert server.api("GET", f"channels/{other}", owner.key).status_code == 404


INDEXER = """
import asyncio, sys
import rattler.index
asyncio.run(rattler.index.index_fs(sys.argv[1], write_zst=False, write_shards=sys.argv[2] == "shards", force=True))
print("indexed", flush=True)
"""

UPSTREAM_FILES = {
    "linux-64": ["zlib-1.2.11-h7b6447c_3.conda", "zlib-1.2.11-h7b6447c_3.tar.bz2", "other-package-0.2-0.conda", "test-package-0.1-0.tar.bz2"],
    "noarch": ["empty-0.1.0-h4616a5c_0.conda", "run_exports_versions-1.0-he35c369_0.tar.bz2", "flask-0.11.1-py_0.tar.bz2"],
}


class ChannelHandler(http.server.SimpleHTTPRequestHandler):
    """http.server's file handler with an ETag per file's content, answering If-None-Match; it
    counts the GETs of each path, and answers as the server's settings say: 401 without the
    `authorization` it requires, a redirect for a path in `redirects`, after `delays` seconds
    for a path there."""

    def do_GET(self):
        server = self.server
        with server.lock:
            server.gets[self.path] += 1
            server.authorizations.append(self.headers.get("Authorization"))
        if server.authorization is not None and self.headers.get("Authorization") != server.authorization:
            self.send_error(401)
            return
        if self.path in server.redirects:
            self.send_response(302)
            self.send_header("Location", server.redirects[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        time.sleep(server.delays.get(self.path, 0))
        super().do_GET()

    def log_message(self, *args):
        pass

    def send_head(self):
        self.server.paths.append(self.path)
        path = Path(self.translate_path(self.path))
        self.etag = f'"{hashlib.sha256(path.read_bytes()).hexdigest()}"' if path.is_file() else None
        if self.etag is not None and self.headers.get("If-None-Match") == self.etag:
            self.server.not_modified += 1
            self.send_response(304)
            self.end_headers()
            return None
        return super().send_head()

    def end_headers(self):
        if getattr(self, "etag", None):
            self.send_header("ETag", self.etag)
        super().end_headers()


class Upstream:
    """A real conda channel: fixture packages indexed by py-rattler, served by http.server."""

    def __init__(self, root: Path, shards: bool = False, handler_class=None):
        self.root = root
        self.shards = shards
        handler = functools.partial(handler_class or ChannelHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.not_modified = 0
        self.httpd.paths = []
        self.httpd.lock = threading.Lock()
        self.httpd.gets = collections.Counter()
        self.httpd.authorizations = []
        self.httpd.authorization = None
        self.httpd.redirects = {}
        self.httpd.delays = {}
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/channel"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def repodata(self, subdir: str) -> dict:
        return json.loads((self.root / "channel" / subdir / "repodata.json").read_text())

    def stop(self):
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


def serve_upstream(root: Path, shards: bool) -> Upstream:
    channel = root / "channel"
    for subdir, files in UPSTREAM_FILES.items():
        (channel / subdir).mkdir(parents=True)
        for filename in files:
            shutil.copy(PACKAGES / filename, channel / subdir / filename)
    index(channel, shards)
    return Upstream(root, shards)


@pytest.fixture
def upstream(tmp_path):
    served = serve_upstream(tmp_path, shards=False)
    yield served
    served.stop()


@pytest.fixture
def sharded_upstream(tmp_path):
    """The same channel with a shard index and shards (CEP 16), as index_fs writes them."""
    served = serve_upstream(tmp_path, shards=True)
    assert (tmp_path / "channel" / "linux-64" / "repodata_shards.msgpack.zst").is_file()
    yield served
    served.stop()


def index(channel: Path, shards: bool = False):
    which = "shards" if shards else "plain"
    out = subprocess.run([sys.executable, "-c", INDEXER, str(channel), which], capture_output=True, text=True, timeout=300)
    assert "indexed" in out.stdout, out.stderr[-2000:]


def files_of(repodata: dict) -> set[str]:
    return set(repodata.get("packages", {})) | set(repodata.get("packages.conda", {}))


def create_mirror(server, owner, rules: dict, private: bool = False) -> str:
    name = unique("mirror")
    created = server.api("POST", "channels", owner.key, json={"name": name, "private": private, "mirror": rules})
    assert created.status_code == 201, created.text
    return name


def read_msgpack_zst(data: bytes):
    return msgpack.unpackb(zstandard.ZstdDecompressor().decompressobj().decompress(data), raw=False)


def index_files(server, name: str, subdir: str) -> dict:
    """Every index file of a mirror's subdir, read: repodata.json, its .zst, run_exports.json,
    and the records of every shard the shard index names."""
    base = f"{server.url}/{name}/{subdir}"
    got = {}
    for file in ("repodata.json", "repodata.json.zst", "run_exports.json", "repodata_shards.msgpack.zst"):
        response = requests.get(f"{base}/{file}", timeout=30)
        assert response.status_code == 200, (file, response.text)
        got[file] = response.content
    index = read_msgpack_zst(got["repodata_shards.msgpack.zst"])
    shard_records = {}
    for package, digest in index["shards"].items():
        shard = requests.get(f"{base}/shards/{digest.hex()}.msgpack.zst", timeout=30)
        assert shard.status_code == 200, package
        assert hashlib.sha256(shard.content).digest() == digest
        for section in ("packages", "packages.conda"):
            shard_records.update(read_msgpack_zst(shard.content)[section])
    return {
        "repodata": json.loads(got["repodata.json"]),
        "zst": json.loads(zstandard.ZstdDecompressor().decompressobj().decompress(got["repodata.json.zst"])),
        "run_exports": json.loads(got["run_exports.json"]),
        "shards": shard_records,
    }


def assert_filtered_alike(server, name: str, upstream: Upstream, subdir: str, expected: set[str]):
    """Every index file of the mirror lists exactly `expected`, with the upstream's records."""
    theirs = upstream.repodata(subdir)
    files = index_files(server, name, subdir)
    ours = files["repodata"]
    assert files_of(ours) == expected
    assert files["zst"] == ours
    assert files_of(files["run_exports"]) == expected
    assert set(files["shards"]) == expected
    assert ours["info"]["subdir"] == theirs["info"]["subdir"] == subdir
    for section in ("packages", "packages.conda"):
        for filename, record in ours[section].items():
            assert record == theirs[section][filename], filename
            assert files["shards"][filename]["sha256"].hex() == record["sha256"], filename


@pytest.mark.parametrize("shards", [False, True], ids=["repodata", "shards"])
def test_every_index_file_is_the_upstreams_filtered_by_the_rules(server, owner, tmp_path, shards):
    upstream = serve_upstream(tmp_path, shards)
    try:
        name = create_mirror(server, owner, {"url": upstream.url, "deny": ["zlib"]})
        theirs = upstream.repodata("linux-64")
        expected = {f for f in files_of(theirs) if not f.startswith("zlib-")}
        assert_filtered_alike(server, name, upstream, "linux-64", expected)
        read = [path for path in upstream.httpd.paths if "/linux-64/" in path]
        if shards:
            # The shard index and its shards; never repodata.json.
            assert not [path for path in read if path.endswith("repodata.json")], read
            assert [path for path in read if "/shards/" in path]
        else:
            assert [path for path in read if path.endswith("repodata.json")]
        # The mirror's files are in the channel's index: the browse API lists them (linux-64
        # only: no other subdir was read yet).
        listed = server.api("GET", f"channels/{name}/packages", owner.key).json()
        linux = {record["name"] for section in ("packages", "packages.conda") for record in theirs[section].values()}
        assert {p["name"] for p in listed["packages"]} == linux - {"zlib"}
    finally:
        upstream.stop()


def test_a_record_younger_than_the_minimum_age_or_without_a_timestamp_is_left_out(server, owner, upstream):
    theirs = upstream.repodata("noarch")
    records = {**theirs["packages"], **theirs["packages.conda"]}
    newest = max(r["timestamp"] for r in records.values() if "timestamp" in r)
    assert any("timestamp" not in r for r in records.values())
    # One day more than the newest package's age: it is too young, the older ones are not.
    min_age_days = int((time.time() * 1000 - newest) / 86_400_000) + 1
    name = create_mirror(server, owner, {"url": upstream.url, "min_age_days": min_age_days})
    ours = requests.get(f"{server.url}/{name}/noarch/repodata.json", timeout=30).json()
    expected = {f for f, r in records.items() if "timestamp" in r and r["timestamp"] != newest}
    assert expected
    assert files_of(ours) == expected


def test_a_stopped_upstream_is_stood_in_for_by_the_copy_with_its_age(server, owner, upstream):
    name = create_mirror(server, owner, {"url": upstream.url})
    fresh = requests.get(f"{server.url}/{name}/linux-64/repodata.json", timeout=30)
    assert fresh.status_code == 200
    assert "X-Condaflare-Stale" not in fresh.headers
    # Nothing cached and the upstream has no such subdir: 404.
    missing = requests.get(f"{server.url}/{name}/win-64/repodata.json", timeout=30)
    assert missing.status_code == 404
    assert upstream.url in missing.json()["error"]

    upstream.stop()
    stale = requests.get(f"{server.url}/{name}/linux-64/repodata.json", timeout=30)
    assert stale.status_code == 200
    assert stale.content == fresh.content
    assert int(stale.headers["Age"]) >= 0
    assert "upstream failed" in stale.headers["X-Condaflare-Stale"]
    # Nothing cached: the failure, naming the upstream.
    failed = requests.get(f"{server.url}/{name}/noarch/repodata.json", timeout=30)
    assert failed.status_code == 502, failed.text
    assert (failed.json()["code"], upstream.url in failed.json()["error"]) == ("upstream", True)


def test_a_private_mirror_is_read_as_any_private_channel(server, owner, outsider, upstream):
    mirror = create_mirror(server, owner, {"url": upstream.url}, private=True)
    plain = unique("private")
    assert server.api("POST", "channels", owner.key, json={"name": plain, "private": True}).status_code == 201
    for headers in ({}, {"Authorization": f"Bearer {outsider.key}"}):
        refused = requests.get(f"{server.url}/{mirror}/linux-64/repodata.json", headers=headers, timeout=30)
        as_plain = requests.get(f"{server.url}/{plain}/linux-64/repodata.json", headers=headers, timeout=30)
        assert refused.status_code in (401, 403, 404)
        assert refused.status_code == as_plain.status_code, headers
    allowed = requests.get(f"{server.url}/{mirror}/linux-64/repodata.json", headers={"Authorization": f"Bearer {owner.key}"}, timeout=30)
    assert allowed.status_code == 200
    assert files_of(allowed.json()) == files_of(upstream.repodata("linux-64"))


CLIENT = Path(__file__).with_name("rattler_client.py")


def rattler_install(url: str, prefix: Path, cache: Path, specs: list[str], auth_file: Path | None = None, mode: str = "fetch") -> dict:
    """Solves and installs with py-rattler: `fetch` reads repodata.json, `gateway` the shards."""
    env = dict(os.environ)
    if auth_file is not None:
        env["RATTLER_AUTH_FILE"] = str(auth_file)
    out = subprocess.run(
        [sys.executable, str(CLIENT), mode, url, str(prefix), str(cache), "linux-64", *specs],
        capture_output=True, text=True, timeout=300, env=env,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    assert lines, f"py-rattler printed nothing (exit {out.returncode}):\n{out.stderr[-3000:]}"
    return json.loads(lines[-1])


def test_packages_install_through_the_mirror_and_still_do_once_the_upstream_stops(server, owner, upstream, tmp_path):
    name = create_mirror(server, owner, {"url": upstream.url, "deny": ["test-package"]})
    first = rattler_install(f"{server.url}/{name}", tmp_path / "env1", tmp_path / "cache1", ["other-package", "run_exports_versions"])
    assert "error" not in first, first
    installed = {r["name"]: r for r in first["records"]}
    assert set(installed) == {"other-package", "run_exports_versions"}
    for record in installed.values():
        filename = record["url"].rsplit("/", 1)[1]
        subdir = record["url"].rsplit("/", 2)[1]
        assert record["url"].startswith(f"{server.url}/{name}/")
        served = requests.get(record["url"], timeout=30).content
        assert served == (PACKAGES / filename).read_bytes()
        assert hashlib.sha256(served).hexdigest() == record["sha256"]
        assert f"{name}/{subdir}/{filename}" in server.r2_keys()
    # A denied file is not served, even by URL.
    denied = requests.get(f"{server.url}/{name}/linux-64/test-package-0.1-0.tar.bz2", timeout=30)
    assert denied.status_code == 404

    upstream.stop()
    again = rattler_install(f"{server.url}/{name}", tmp_path / "env2", tmp_path / "cache2", ["other-package", "run_exports_versions"])
    assert "error" not in again, again
    assert {r["sha256"] for r in again["records"]} == {r["sha256"] for r in first["records"]}


def test_a_too_young_package_is_not_served_by_url(server, owner, upstream):
    records = {**upstream.repodata("noarch")["packages"], **upstream.repodata("noarch")["packages.conda"]}
    newest_name, newest = max(((f, r) for f, r in records.items() if "timestamp" in r), key=lambda item: item[1]["timestamp"])
    min_age_days = int((time.time() * 1000 - newest["timestamp"]) / 86_400_000) + 1
    name = create_mirror(server, owner, {"url": upstream.url, "min_age_days": min_age_days})
    assert requests.get(f"{server.url}/{name}/noarch/{newest_name}", timeout=30).status_code == 404
    old_name = next(f for f, r in records.items() if "timestamp" in r and r["timestamp"] < newest["timestamp"])
    served = requests.get(f"{server.url}/{name}/noarch/{old_name}", timeout=30)
    assert served.status_code == 200
    assert served.content == (PACKAGES / old_name).read_bytes()
    assert not [key for key in server.r2_keys() if key == f"{name}/noarch/{newest_name}"]


def test_changed_rules_take_effect_at_the_next_read_and_drop_what_they_leave_out(server, owner, outsider, upstream):
    name = create_mirror(server, owner, {"url": upstream.url})
    records = upstream.repodata("noarch")["packages"]
    denied = next(iter(records))
    package = records[denied]["name"]
    kept = requests.get(f"{server.url}/{name}/noarch/{denied}", timeout=30)
    assert kept.status_code == 200 and kept.content == (PACKAGES / denied).read_bytes()

    # Only owners change them, and bad rules change nothing.
    rules = {"url": upstream.url, "deny": [package]}
    assert server.api("PATCH", f"channels/{name}", outsider.key, json={"mirror": rules}).status_code in (403, 404)
    bad = server.api("PATCH", f"channels/{name}", owner.key, json={"mirror": {"url": upstream.url, "deny": ["zlib >=>1"]}})
    assert bad.status_code == 400 and "'zlib >=>1' in deny" in bad.json()["error"]
    assert server.api("GET", f"channels/{name}", owner.key).json()["mirror"]["deny"] == []

    changed = server.api("PATCH", f"channels/{name}", owner.key, json={"mirror": rules})
    assert changed.status_code == 200, changed.text
    assert changed.json()["mirror"]["deny"] == [package]
    assert changed.json()["private"] is False
    after = requests.get(f"{server.url}/{name}/noarch/repodata.json", timeout=30).json()
    assert all(r["name"] != package for section in ("packages", "packages.conda") for r in after[section].values())
    # The file it kept is no longer served, even by URL, and no longer kept.
    assert requests.get(f"{server.url}/{name}/noarch/{denied}", timeout=30).status_code == 404
    assert f"{name}/noarch/{denied}" not in server.r2_keys()

    # Visibility alone leaves the rules; a channel that is no mirror takes none.
    private = server.api("PATCH", f"channels/{name}", owner.key, json={"private": True})
    assert private.json()["mirror"]["deny"] == [package] and private.json()["private"] is True
    plain = unique("plain")
    server.api("POST", "channels", owner.key, json={"name": plain})
    refused = server.api("PATCH", f"channels/{plain}", owner.key, json={"mirror": rules})
    assert refused.status_code == 400 and "no mirror" in refused.json()["error"]
    assert "mirror" not in server.api("GET", f"channels/{plain}", owner.key).json()
    assert server.api("PATCH", f"channels/{plain}", owner.key, json={}).status_code == 400


def first_get(url: str) -> tuple[int, bytes | None]:
    """A GET read to its end: its status and body, or no body when it was cut short."""
    try:
        answer = requests.get(url, timeout=60)
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError):
        return 200, None
    return answer.status_code, answer.content


def test_an_upstream_file_replaced_under_the_same_name_is_refused_and_not_kept(server, owner, upstream):
    name = create_mirror(server, owner, {"url": upstream.url})
    assert requests.get(f"{server.url}/{name}/linux-64/repodata.json", timeout=30).status_code == 200
    filename = "other-package-0.2-0.conda"
    url = f"{server.url}/{name}/linux-64/{filename}"
    original = (PACKAGES / filename).read_bytes()
    # Another length is refused before any byte is sent, by the upstream's Content-Length.
    (upstream.root / "channel" / "linux-64" / filename).write_bytes(original + b"extra")
    refused = requests.get(url, timeout=30)
    assert refused.status_code == 502, refused.text
    assert upstream.url in refused.json()["error"]
    assert "size" in refused.json()["error"]
    assert f"{name}/linux-64/{filename}" not in server.r2_keys()
    # Other bytes of the same length: the first request, streamed the bytes as they came, ends
    # in an error instead of a clean end; every later one is a 502 and gets none of them.
    replaced = bytes(b ^ 0xFF for b in original)
    (upstream.root / "channel" / "linux-64" / filename).write_bytes(replaced)
    assert first_get(url)[1] is None
    for _ in range(2):
        refused = requests.get(url, timeout=30)
        assert refused.status_code == 502, refused.text
        assert upstream.url in refused.json()["error"]
        assert "SHA-256" in refused.json()["error"]
        assert f"{name}/linux-64/{filename}" not in server.r2_keys()
    # The upstream puts the right bytes back: they are served and kept.
    (upstream.root / "channel" / "linux-64" / filename).write_bytes(original)
    served = requests.get(url, timeout=30)
    assert (served.status_code, served.content) == (200, original)
    assert f"{name}/linux-64/{filename}" in server.r2_keys()


def test_concurrent_first_requests_make_one_upstream_fetch(server, owner, upstream, make_user):
    name = create_mirror(server, owner, {"url": upstream.url})
    filename = "zlib-1.2.11-h7b6447c_3.tar.bz2"
    path = f"/channel/linux-64/{filename}"
    # The upstream answers slowly, so that every request arrives while the first one fetches.
    upstream.httpd.delays[path] = 2
    expected = hashlib.sha256((PACKAGES / filename).read_bytes()).hexdigest()
    start = threading.Barrier(20)

    def get(_):
        start.wait()
        answer = requests.get(f"{server.url}/{name}/linux-64/{filename}", timeout=120)
        return answer.status_code, hashlib.sha256(answer.content).hexdigest()

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(get, range(20)))
    assert answers == [(200, expected)] * 20
    assert upstream.httpd.gets[path] == 1
    assert f"{name}/linux-64/{filename}" in server.r2_keys()
    # The counters: one fetch kept the file, the other 19 requests were hits, and one more is.
    admin = make_user(admin=True)
    before = server.api("GET", f"channels/{name}/stats", admin.key).json()
    assert before["index"]["mirror"]["bytes_cached"] == (PACKAGES / filename).stat().st_size
    assert before["mirror"]["hits"] == 19
    assert requests.get(f"{server.url}/{name}/linux-64/{filename}", timeout=30).status_code == 200
    after = server.api("GET", f"channels/{name}/stats", admin.key).json()
    assert after["mirror"]["hits"] == 20
    assert after["mirror"]["upstream_fetches"] == before["mirror"]["upstream_fetches"]
    assert upstream.httpd.gets[path] == 1
    # Admins only, as the R2 counters.
    assert server.api("GET", f"channels/{name}/stats", owner.key).status_code == 403


def workerd_rss_kb(server) -> int:
    """The resident memory of the workerd process running the Worker (and its objects)."""
    rss = workerd_memory(server.pgid)["VmRSS"]
    assert rss, "no workerd process in the server's process group"
    return rss // 1024


def test_a_100_mb_package_passes_through_the_mirror_with_bounded_memory(server, owner, upstream, make_user):
    """The same file through two mirrors. The first passage of 100 MB through a fresh workerd
    grows its resident memory by some 200 MB whatever the Worker does (a plain upload of the
    same size does the same: the runtime's and local R2's buffers, collected lazily); the second
    shows what a fetch adds once those are in place (40 to 130 MB: the bytes cross the runtime's
    streams twice, to R2 and to the caller, and garbage collection runs when it will), so its
    bound is loose: it fails when the file is held whole on top of that. The bound the Worker's
    design sets is on its own (wasm) memory, read from the channel's stats."""
    filename, data = build_conda("bigpkg", files={"share/bigpkg/blob.bin": os.urandom(100 * 1024 * 1024)})
    (upstream.root / "channel" / "noarch" / filename).write_bytes(data)
    index(upstream.root / "channel")
    expected, size = hashlib.sha256(data).hexdigest(), len(data)
    del data
    admin = make_user(admin=True)
    growths = []
    for _ in range(2):
        name = create_mirror(server, owner, {"url": upstream.url})
        url = f"{server.url}/{name}/noarch/{filename}"
        assert requests.get(f"{server.url}/{name}/noarch/repodata.json", timeout=30).status_code == 200
        before = workerd_rss_kb(server)
        peak = before
        done = threading.Event()

        def sample():
            nonlocal peak
            while not done.is_set():
                peak = max(peak, workerd_rss_kb(server))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            digest, length = hashlib.sha256(), 0
            with requests.get(url, stream=True, timeout=300) as answer:
                assert answer.status_code == 200
                for chunk in answer.iter_content(1 << 20):
                    digest.update(chunk)
                    length += len(chunk)
        finally:
            done.set()
            sampler.join()
        assert (digest.hexdigest(), length) == (expected, size)
        assert server.r2_keys()[f"{name}/noarch/{filename}"] == size
        again = requests.get(url, timeout=300)
        assert hashlib.sha256(again.content).hexdigest() == expected
        stats = server.api("GET", f"channels/{name}/stats", admin.key).json()
        wasm_mb = stats["index"]["wasm_memory_bytes"] / 2**20
        assert stats["index"]["mirror"]["bytes_cached"] >= size
        growths.append((peak - before) / 1024)
        print(
            f"{size / 2**20:.0f} MB package: workerd RSS {before / 1024:.0f} MB before, {peak / 1024:.0f} MB "
            f"at the peak (+{growths[-1]:.0f} MB); the channel object's wasm memory {wasm_mb:.1f} MB"
        )
        assert wasm_mb < 16
    assert growths[1] < 2 * size / 2**20


def test_a_file_the_upstream_rebuilds_under_the_same_name_is_fetched_again_with_its_new_record(server, owner, upstream):
    name = create_mirror(server, owner, {"url": upstream.url})
    filename = "other-package-0.2-0.conda"
    url = f"{server.url}/{name}/linux-64/{filename}"
    assert requests.get(url, timeout=30).content == (PACKAGES / filename).read_bytes()
    # Other bytes under the same name, indexed: the record's sha256 changes with them.
    rebuilt_name, rebuilt = build_conda("other-package", version="0.2", build="0", subdir="linux-64", files={"share/other": b"rebuilt\n"})
    assert rebuilt_name == filename
    (upstream.root / "channel" / "linux-64" / filename).write_bytes(rebuilt)
    index(upstream.root / "channel")
    record = requests.get(f"{server.url}/{name}/linux-64/repodata.json", timeout=30).json()["packages.conda"][filename]
    assert record["sha256"] == hashlib.sha256(rebuilt).hexdigest()
    served = requests.get(url, timeout=30)
    assert (served.status_code, served.content) == (200, rebuilt)


def test_the_copy_is_revalidated_with_the_upstreams_etag(server, owner, upstream):
    """MIRROR_REVALIDATE_SECONDS is 0 in the tests: every read asks the upstream."""
    name = create_mirror(server, owner, {"url": upstream.url})
    url = f"{server.url}/{name}/linux-64/repodata.json"
    first = requests.get(url, timeout=30)
    assert first.status_code == 200
    before = upstream.httpd.not_modified
    second = requests.get(url, timeout=30)
    assert (second.status_code, second.content) == (200, first.content)
    assert upstream.httpd.not_modified > before
    assert "X-Condaflare-Stale" not in second.headers

    # The upstream changes: the next read has the change.
    (upstream.root / "channel" / "linux-64" / "test-package-0.1-0.tar.bz2").unlink()
    index(upstream.root / "channel")
    changed = requests.get(url, timeout=30).json()
    assert files_of(changed) == files_of(upstream.repodata("linux-64"))
    assert "test-package-0.1-0.tar.bz2" not in files_of(changed)
    assert "test-package-0.1-0.tar.bz2" in files_of(first.json())


def test_an_upstream_that_does_not_answer_is_a_timeout_naming_it(server, owner):
    """A real listener that accepts connections and never answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/channel"
        name = create_mirror(server, owner, {"url": url})
        answer = requests.get(f"{server.url}/{name}/noarch/repodata.json", timeout=60)
    assert answer.status_code == 504, answer.text
    assert (answer.json()["code"], url in answer.json()["error"]) == ("upstream_timeout", True)


def test_an_upstream_record_over_the_size_bound_is_refused(upstream, tmp_path):
    """The document is read a record at a time: one record over MIRROR_MAX_RECORD_BYTES is
    refused (nothing is stored), the other subdir is served."""
    path = upstream.root / "channel" / "linux-64" / "repodata.json"
    document = json.loads(path.read_text())
    record = document["packages.conda"]["other-package-0.2-0.conda"]
    record["description"] = "x" * 5000
    path.write_text(json.dumps(document))
    variables = {"MIRROR_ALLOW_HTTP": "true", "MIRROR_MAX_RECORD_BYTES": "4096"}
    with running_server(tmp_path / "state", variables) as bounded:
        bounded.admin("user", "create", "mirrorer")
        bounded.admin("channel", "create", "bounded", "--owner", "mirrorer", "--mirror", upstream.url, env={"MIRROR_ALLOW_HTTP": "true"})
        refused = requests.get(f"{bounded.url}/bounded/linux-64/repodata.json", timeout=30)
        assert refused.status_code == 502, refused.text
        assert "MIRROR_MAX_RECORD_BYTES" in refused.json()["error"]
        assert "other-package-0.2-0.conda" in refused.json()["error"]
        assert upstream.url in refused.json()["error"]
        assert not [key for key in bounded.r2_keys() if key.startswith("bounded/linux-64/")]
        served = requests.get(f"{bounded.url}/bounded/noarch/repodata.json", timeout=30)
        assert served.status_code == 200
        assert files_of(served.json()) == files_of(upstream.repodata("noarch"))


def shard_hashes(upstream: Upstream, subdir: str) -> dict[str, str]:
    index = read_msgpack_zst((upstream.root / "channel" / subdir / "repodata_shards.msgpack.zst").read_bytes())
    return {name: digest.hex() for name, digest in index["shards"].items()}


def test_a_sharded_upstream_is_read_again_only_for_the_shards_that_changed(server, owner, sharded_upstream):
    upstream = sharded_upstream
    name = create_mirror(server, owner, {"url": upstream.url})
    url = f"{server.url}/{name}/linux-64/repodata.json"
    first = requests.get(url, timeout=30)
    assert first.status_code == 200
    assert files_of(first.json()) == files_of(upstream.repodata("linux-64"))
    before = shard_hashes(upstream, "linux-64")
    fetched = {path.rsplit("/", 1)[1].split(".")[0] for path in upstream.httpd.paths if "/linux-64/shards/" in path}
    assert fetched == set(before.values())

    # One package goes and one comes: only the shards of the names that changed are read.
    (upstream.root / "channel" / "linux-64" / "test-package-0.1-0.tar.bz2").unlink()
    shutil.copy(PACKAGES / "other-package-0.1-0.tar.bz2", upstream.root / "channel" / "linux-64")
    index(upstream.root / "channel", shards=True)
    after = shard_hashes(upstream, "linux-64")
    changed = set(after.values()) - set(before.values())
    assert changed and "test-package" not in after
    del upstream.httpd.paths[:]
    second = requests.get(url, timeout=30)
    assert second.status_code == 200
    fetched = {path.rsplit("/", 1)[1].split(".")[0] for path in upstream.httpd.paths if "/linux-64/shards/" in path}
    assert fetched == changed
    assert files_of(second.json()) == files_of(upstream.repodata("linux-64"))
    assert "test-package-0.1-0.tar.bz2" not in files_of(second.json())
    assert "other-package-0.1-0.tar.bz2" in files_of(second.json())
    assert_filtered_alike(server, name, upstream, "linux-64", files_of(upstream.repodata("linux-64")))

    # Unchanged: the shard index answers 304 and nothing else is read.
    del upstream.httpd.paths[:]
    assert requests.get(url, timeout=30).content == second.content
    assert upstream.httpd.paths == ["/channel/linux-64/repodata_shards.msgpack.zst"]


def test_the_consistency_check_counts_a_mirrors_files_not_yet_fetched_as_consistent(server, owner, upstream, make_user):
    name = create_mirror(server, owner, {"url": upstream.url})
    assert requests.get(f"{server.url}/{name}/noarch/repodata.json", timeout=30).status_code == 200
    admin = make_user(admin=True)
    report = server.api("POST", f"channels/{name}/check", admin.key).json()
    assert report["consistent"], report
    # A file fetched is a file like any: its object is checked against its record.
    assert requests.get(f"{server.url}/{name}/noarch/flask-0.11.1-py_0.tar.bz2", timeout=30).status_code == 200
    report = server.api("POST", f"channels/{name}/check", admin.key).json()
    assert report["consistent"], report


class GatedHandler(ChannelHandler):
    """Holds every answer until the server's gate is open."""

    def send_head(self):
        assert self.server.gate.wait(60)
        return super().send_head()


def test_a_due_index_is_answered_at_once_while_the_refresh_runs_after(upstream, tmp_path):
    """With MIRROR_REFRESH_IN_BACKGROUND (the default), only the first read of a subdir waits
    for the upstream: an upstream that does not answer yet holds no later read."""
    upstream.stop()
    served = Upstream(upstream.root, handler_class=GatedHandler)
    gated = served.httpd
    gated.gate = threading.Event()
    gated.gate.set()
    url = served.url
    variables = {"MIRROR_ALLOW_HTTP": "true", "MIRROR_REVALIDATE_SECONDS": "0"}
    try:
        with running_server(tmp_path / "state", variables) as background:
            background.admin("user", "create", "mirrorer")
            background.admin("channel", "create", "later", "--owner", "mirrorer", "--mirror", url, env={"MIRROR_ALLOW_HTTP": "true"})
            repodata = f"{background.url}/later/linux-64/repodata.json"
            first = requests.get(repodata, timeout=30)
            assert first.status_code == 200
            assert "test-package-0.1-0.tar.bz2" in files_of(first.json())

            (upstream.root / "channel" / "linux-64" / "test-package-0.1-0.tar.bz2").unlink()
            index(upstream.root / "channel")
            gated.gate.clear()
            # The upstream holds its answer: the stored index answers.
            held = requests.get(repodata, timeout=30)
            assert (held.status_code, held.content) == (200, first.content)
            gated.gate.set()
            for _ in range(120):
                later = requests.get(repodata, timeout=30)
                if "test-package-0.1-0.tar.bz2" not in files_of(later.json()):
                    break
                time.sleep(0.5)
            assert files_of(later.json()) == files_of(upstream.repodata("linux-64"))
    finally:
        gated.gate.set()
        served.stop()


# A smaller version of `npm run bench -- mirror-scale` (100,000 records), kept short for the suite.
LARGE_RECORDS, LARGE_NAMES = 5_000, 500
ISOLATE_BYTES = 128 * 1024 * 1024


@pytest.mark.parametrize("shards", [False, True], ids=["repodata", "shards"])
def test_a_large_upstream_subdir_is_mirrored_and_solved_against_within_the_isolates_memory(server, owner, make_user, tmp_path, shards):
    write_upstream(tmp_path / "channel", LARGE_RECORDS, LARGE_NAMES, top=3, shards=shards)
    upstream = Upstream(tmp_path, shards)
    try:
        name = create_mirror(server, owner, {"url": upstream.url, "deny": ["scale-00002"]})
        response = requests.get(f"{server.url}/{name}/linux-64/repodata.json", timeout=600)
        assert response.status_code == 200, response.text
        expected = {f for f in files_of(upstream.repodata("linux-64")) if not f.startswith("scale-00002-")}
        assert files_of(response.json()) == expected
        mode = "gateway" if shards else "fetch"
        installed = rattler_install(f"{server.url}/{name}", tmp_path / "env", tmp_path / "cache", ["scale-00003"], mode=mode)
        assert "error" not in installed, installed
        newest = f"1.{LARGE_RECORDS // LARGE_NAMES - 1}"
        assert {(r["name"], r["version"]) for r in installed["records"]} == {(f"scale-{n:05d}", newest) for n in chain(3)}
        for record in installed["records"]:
            served = requests.get(record["url"], timeout=30).content
            assert hashlib.sha256(served).hexdigest() == record["sha256"]
        stats = server.api("GET", f"channels/{name}/stats", make_user(admin=True).key).json()
        assert stats["index"]["subdirs"] == [{"subdir": "linux-64", "packages": len(expected)}]
        peak = stats["index"]["wasm_memory_bytes"]
        print(f"{LARGE_RECORDS} records ({'shards' if shards else 'repodata.json'}): peak wasm memory {peak / 2**20:.0f} MiB")
        assert peak <= ISOLATE_BYTES
    finally:
        upstream.stop()


def test_upstream_redirects_are_followed(server, owner, upstream):
    """MIRROR_ALLOW_HTTP is set in the tests: a redirect to http is followed, as to https."""
    moved = upstream.root / "moved"
    shutil.copytree(upstream.root / "channel", moved)
    filename = "flask-0.11.1-py_0.tar.bz2"
    for file in ("repodata.json", filename):
        upstream.httpd.redirects[f"/channel/noarch/{file}"] = f"/moved/noarch/{file}"
    name = create_mirror(server, owner, {"url": upstream.url})
    listed = requests.get(f"{server.url}/{name}/noarch/repodata.json", timeout=30)
    assert listed.status_code == 200, listed.text
    assert files_of(listed.json()) == files_of(upstream.repodata("noarch"))
    served = requests.get(f"{server.url}/{name}/noarch/{filename}", timeout=30)
    assert (served.status_code, served.content) == (200, (PACKAGES / filename).read_bytes())
    assert upstream.httpd.gets[f"/moved/noarch/{filename}"] == 1

    # A loop of redirects ends after a bounded number of hops.
    upstream.httpd.redirects["/channel/linux-64/repodata.json"] = "/channel/linux-64/repodata.json"
    looped = requests.get(f"{server.url}/{name}/linux-64/repodata.json", timeout=30)
    assert looped.status_code == 502, looped.text
    assert upstream.url in looped.json()["error"]
    assert "redirected more than" in looped.json()["error"]
    assert 2 <= upstream.httpd.gets["/channel/linux-64/repodata.json"] <= 10


# Set as Worker secrets of the test server (conftest.py).
SECRET_VALUE = "Bearer upstream-s3cret-value"
WRONG_VALUE = "Bearer not-the-right-one"


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory):
    """A Worker without MIRROR_ALLOW_HTTP: a redirect to http is refused."""
    variables = {"MIRROR_REVALIDATE_SECONDS": "0"}
    with running_server(tmp_path_factory.mktemp("strict"), variables) as strict:
        strict.admin("user", "create", "mirrorer")
        yield strict


def test_a_redirect_to_http_is_refused_without_mirror_allow_http(strict_server, upstream):
    upstream.httpd.redirects["/channel/noarch/repodata.json"] = f"{upstream.origin}/moved/noarch/repodata.json"
    name = unique("mirror")
    # The admin command takes an http upstream when told to; the Worker then fetches it, but
    # follows no redirect to http.
    strict_server.admin("channel", "create", name, "--owner", "mirrorer", "--mirror", upstream.url, env={"MIRROR_ALLOW_HTTP": "true"})
    refused = requests.get(f"{strict_server.url}/{name}/noarch/repodata.json", timeout=30)
    assert refused.status_code == 502, refused.text
    error = refused.json()["error"]
    assert upstream.url in error and "not https" in error, error
    assert upstream.httpd.gets["/moved/noarch/repodata.json"] == 0
    assert f"{name}/noarch/repodata.json" not in strict_server.r2_keys()


def test_a_private_upstream_gets_the_secret_and_nobody_sees_it(server, owner, upstream):
    upstream.httpd.authorization = SECRET_VALUE
    # One package is moved to another origin, which must not get the credentials.
    other = Upstream(upstream.root)
    try:
        moved = "flask-0.11.1-py_0.tar.bz2"
        upstream.httpd.redirects[f"/channel/noarch/{moved}"] = f"{other.url}/noarch/{moved}"
        name = create_mirror(server, owner, {"url": upstream.url, "credentials": "MIRROR_UPSTREAM_TOKEN"})
        listed = requests.get(f"{server.url}/{name}/noarch/repodata.json", timeout=30)
        assert listed.status_code == 200, listed.text
        assert files_of(listed.json()) == files_of(upstream.repodata("noarch"))
        kept = "run_exports_versions-1.0-he35c369_0.tar.bz2"
        served = requests.get(f"{server.url}/{name}/noarch/{kept}", timeout=30)
        assert (served.status_code, served.content) == (200, (PACKAGES / kept).read_bytes())
        assert set(upstream.httpd.authorizations) == {SECRET_VALUE}
        served = requests.get(f"{server.url}/{name}/noarch/{moved}", timeout=30)
        assert (served.status_code, served.content) == (200, (PACKAGES / moved).read_bytes())
        assert other.httpd.gets[f"/channel/noarch/{moved}"] == 1
        assert other.httpd.authorizations == [None]
        # Shown by name, never by value.
        details = server.api("GET", f"channels/{name}", owner.key)
        assert details.json()["mirror"]["credentials"] == "MIRROR_UPSTREAM_TOKEN"
        assert "s3cret" not in details.text
        # The admin command takes the secret's name too, checked as the API checks it.
        by_admin = unique("mirror")
        allow_http = {"MIRROR_ALLOW_HTTP": "true"}
        created = server.admin("channel", "create", by_admin, "--owner", owner.name, "--mirror", upstream.url, "--credentials", "MIRROR_UPSTREAM_TOKEN", env=allow_http)
        assert created["mirror"]["credentials"] == "MIRROR_UPSTREAM_TOKEN"
        assert requests.get(f"{server.url}/{by_admin}/noarch/repodata.json", timeout=30).status_code == 200
        with pytest.raises(AdminError) as refused:
            server.admin("channel", "create", unique("mirror"), "--owner", owner.name, "--mirror", upstream.url, "--credentials", "Bearer x", env=allow_http)
        assert refused.value.code == 2 and "Worker secret" in refused.value.message
        bad = server.api("POST", "channels", owner.key, json={"name": unique("mirror"), "mirror": {"url": upstream.url, "credentials": "lower"}})
        assert (bad.status_code, bad.json()["code"]) == (400, "bad_request")

        # A wrong secret and an absent one: 502 naming the upstream, never a value.
        for secret in ("MIRROR_WRONG_TOKEN", "MIRROR_ABSENT_TOKEN"):
            wrong = create_mirror(server, owner, {"url": upstream.url, "credentials": secret})
            refused = requests.get(f"{server.url}/{wrong}/noarch/repodata.json", timeout=30)
            assert refused.status_code == 502, refused.text
            assert upstream.url in refused.json()["error"]
            assert "s3cret" not in refused.text and "not-the-right-one" not in refused.text
            assert not [key for key in server.r2_keys() if key.startswith(f"{wrong}/")]
        assert WRONG_VALUE in upstream.httpd.authorizations
        assert "s3cret" not in server.log() and "not-the-right-one" not in server.log()
    finally:
        other.stop()

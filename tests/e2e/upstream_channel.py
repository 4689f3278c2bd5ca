"""A real upstream channel for the mirror tests: fixture packages indexed by py-rattler's
index_fs (with or without shards), served by http.server on 127.0.0.1 with ETags, counters of
what was asked, and the redirects, delays and required credentials a test sets."""

import collections
import functools
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import pytest
import requests
import zstandard

from conftest import PACKAGES, unique

UPSTREAM = "https://conda.example.org/upstream"


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




class GatedHandler(ChannelHandler):
    """Holds every answer until the server's gate is open."""

    def send_head(self):
        assert self.server.gate.wait(60)
        return super().send_head()




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



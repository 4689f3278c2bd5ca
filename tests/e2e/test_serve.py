"""Reading a channel the way conda, mamba and rattler do: repodata and package files with
validators, conditional requests, HEAD and ranges."""

import json
import time
from email.utils import parsedate_to_datetime

import pytest
import requests

from conftest import PACKAGES, upload_raw
from harness import running_server


@pytest.fixture
def filled(server, owner, channel):
    for name in ("zlib-1.2.11-h7b6447c_3.conda", "flask-0.11.1-py_0.tar.bz2"):
        path = PACKAGES / name
        assert upload_raw(server, channel, name, path.read_bytes(), headers=owner.auth).status_code == 201
    return channel


def test_new_channel_has_an_empty_noarch(server, channel):
    url = f"{server.url}/{channel}/noarch/repodata.json"
    response = requests.get(url, headers={"Accept-Encoding": "identity"}, timeout=10)
    assert response.status_code == 200
    assert response.json() == {
        "info": {"subdir": "noarch"},
        "packages": {},
        "packages.conda": {},
        "removed": [],
        "repodata_version": 1,
    }
    etag = response.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    assert requests.get(url, headers={"If-None-Match": etag}, timeout=10).status_code == 304
    head = requests.head(url, headers={"Accept-Encoding": "identity"}, timeout=10)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == str(len(response.content))
    # Other subdirs without packages are absent, which clients read as empty.
    missing = requests.get(f"{server.url}/{channel}/linux-64/repodata.json", timeout=10)
    assert missing.status_code == 404
    assert "error" in missing.json()


def test_unknown_channel_and_odd_paths_are_404_json(server, channel, outsider):
    # A channel that does not exist answers as a private one: 401 to ask for a key, then 404.
    missing = requests.get(f"{server.url}/nochannel/noarch/repodata.json", timeout=10)
    assert (missing.status_code, missing.json()["code"]) == (401, "unauthenticated")
    missing = requests.get(f"{server.url}/nochannel/noarch/repodata.json", headers=outsider.auth, timeout=10)
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    for path in (
        f"/{channel}/noarch/nothere-1.0-0.tar.bz2",
        f"/{channel}/linux-99/repodata.json",
        f"/{channel}/noarch/..%2f..%2fsecret",
        f"/{channel}/noarch/current_repodata.json",
        f"/{channel}/linux-64/repodata_shards.msgpack.zst",
        f"/{channel}/noarch/shards/{'0' * 64}.msgpack.zst",
        "/.staging/x/y",
        f"/{channel}/noarch",
    ):
        response = requests.get(server.url + path, timeout=10)
        assert response.status_code == 404, path
        assert response.headers["Content-Type"] == "application/json"
        assert "error" in response.json()


def test_repodata_headers_and_revalidation(server, filled):
    url = f"{server.url}/{filled}/noarch/repodata.json"
    compressed = requests.get(url, headers={"Accept-Encoding": "gzip"}, timeout=10)
    assert compressed.headers["Content-Encoding"] == "gzip"
    response = requests.get(url, headers={"Accept-Encoding": "identity"}, timeout=10)
    assert response.status_code == 200
    assert response.content == compressed.content
    assert "flask-0.11.1-py_0.tar.bz2" in response.json()["packages"]
    headers = response.headers
    assert headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "public, max-age=30"
    assert headers["Content-Length"] == str(len(response.content))
    assert headers["ETag"].startswith('"') and headers["ETag"].endswith('"')
    last_modified = parsedate_to_datetime(headers["Last-Modified"])

    assert requests.get(url, headers={"If-None-Match": headers["ETag"]}, timeout=10).status_code == 304
    assert requests.get(url, headers={"If-None-Match": '"other"'}, timeout=10).status_code == 200
    not_modified = requests.get(url, headers={"If-Modified-Since": headers["Last-Modified"]}, timeout=10)
    assert not_modified.status_code == 304
    assert not_modified.headers["ETag"] == headers["ETag"]
    earlier = "Mon, 01 Jan 2024 00:00:00 GMT"
    assert parsedate_to_datetime(earlier) < last_modified
    assert requests.get(url, headers={"If-Modified-Since": earlier}, timeout=10).status_code == 200
    # HEAD, as libmamba probes.
    head = requests.head(url, headers={"If-None-Match": headers["ETag"]}, timeout=10)
    assert head.status_code == 304
    head = requests.head(url, headers={"Accept-Encoding": "identity"}, timeout=10)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["ETag"] == headers["ETag"]
    assert head.headers["Content-Length"] == headers["Content-Length"]


def test_package_file_headers_and_ranges(server, filled):
    path = PACKAGES / "zlib-1.2.11-h7b6447c_3.conda"
    data = path.read_bytes()
    url = f"{server.url}/{filled}/linux-64/{path.name}"
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["Content-Length"] == str(len(data))
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Cache-Control"] == "public, max-age=604800"
    assert response.headers["Accept-Ranges"] == "bytes"
    assert requests.get(url, headers={"If-None-Match": response.headers["ETag"]}, timeout=10).status_code == 304

    head = requests.head(url, timeout=10)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == str(len(data))

    part = requests.get(url, headers={"Range": "bytes=100-199"}, timeout=10)
    assert part.status_code == 206
    assert part.content == data[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    assert part.headers["Content-Length"] == "100"
    tail = requests.get(url, headers={"Range": "bytes=-22"}, timeout=10)
    assert tail.status_code == 206 and tail.content == data[-22:]
    beyond = requests.get(url, headers={"Range": f"bytes={len(data)}-"}, timeout=10)
    assert beyond.status_code == 416
    assert beyond.headers["Content-Range"] == f"bytes */{len(data)}"

    tarball = requests.get(f"{server.url}/{filled}/noarch/flask-0.11.1-py_0.tar.bz2", timeout=10)
    assert tarball.headers["Content-Type"] == "application/x-bzip2"


def test_private_channel_reads(server, owner, outsider, make_user):
    from conftest import unique

    name = unique("private")
    server.admin("channel", "create", name, "--owner", owner.name, "--private")
    path = PACKAGES / "flask-0.11.1-py_0.tar.bz2"
    assert upload_raw(server, name, path.name, path.read_bytes(), headers=owner.auth).status_code == 201
    urls = [f"{server.url}/{name}/noarch/repodata.json", f"{server.url}/{name}/noarch/{path.name}"]
    for url in urls:
        anonymous = requests.get(url, timeout=10)
        assert anonymous.status_code == 401
        assert anonymous.headers["WWW-Authenticate"] == 'Bearer realm="condaflare"'
        assert b"flask" not in anonymous.content
        # To a signed-in outsider the channel is not there, as a missing one is not.
        hidden = requests.get(url, headers=outsider.auth, timeout=10)
        assert hidden.status_code == 404
        assert b"flask" not in hidden.content and name.encode() not in hidden.content
        assert requests.head(url, timeout=10).status_code == 401
        allowed = requests.get(url, headers=owner.auth, timeout=10)
        assert allowed.status_code == 200
        # Kept by no shared cache, revalidated on every use, and varying on the credentials:
        # a shared browser serves nothing of it once its user has signed out.
        assert allowed.headers["Cache-Control"] == "private, no-cache"
        assert set(allowed.headers["Vary"].replace(" ", "").split(",")) >= {"Authorization", "Cookie", "X-API-Key"}
    # conda's token-in-path form.
    assert requests.get(f"{server.url}/t/{owner.key}/{name}/noarch/repodata.json", timeout=10).status_code == 200


def test_keys_never_reach_the_log(server, owner, outsider):
    """The Worker's own log lines (JSON, one per line) carry paths without the /t/<key>
    prefix and never a key. (wrangler dev's access log, printed only locally, shows raw URLs.)"""
    requests.get(f"{server.url}/t/{owner.key}/nochannel/noarch/repodata.json", timeout=10)
    upload_raw(server, "nochannel", "x-1-0.conda", b"x", headers={"X-API-Key": outsider.key})
    ours = [line for line in server.log().splitlines() if line.startswith("{")]
    assert any('"path":"/nochannel/noarch/repodata.json"' in line for line in ours)
    for key in (owner.key, outsider.key):
        assert not [line for line in ours if key in line]


def test_successful_reads_are_logged_only_when_asked(tmp_path):
    """With the deployment's default settings (no LOG_READS) a successful read gets no log
    line; an upload, a refusal and a miss each get theirs."""
    with running_server(tmp_path / "state") as server:
        server.admin("user", "create", "reader")
        key = server.admin("key", "create", "reader")["key"]
        server.admin("channel", "create", "quiet", "--owner", "reader")
        path = PACKAGES / "flask-0.11.1-py_0.tar.bz2"
        auth = {"Authorization": f"Bearer {key}"}
        assert upload_raw(server, "quiet", path.name, path.read_bytes(), headers=auth).status_code == 201
        assert requests.get(f"{server.url}/quiet/noarch/repodata.json", timeout=10).status_code == 200
        assert requests.head(f"{server.url}/quiet/noarch/{path.name}", timeout=10).status_code == 200
        assert requests.get(f"{server.url}/quiet/linux-64/repodata.json", timeout=10).status_code == 404
        refused = requests.delete(f"{server.url}/api/v1/delete/quiet/noarch/{path.name}", timeout=10)
        assert refused.status_code == 401

        def lines():
            return [json.loads(line) for line in server.log().splitlines() if line.startswith('{"method"')]

        deadline = time.monotonic() + 20
        while not any(line.get("method") == "DELETE" for line in lines()):
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
        logged = {(line["method"], line["path"], line["status"]) for line in lines()}
        assert ("POST", "/api/v1/upload/quiet", 201) in logged
        assert ("GET", "/quiet/linux-64/repodata.json", 404) in logged
        assert ("DELETE", f"/api/v1/delete/quiet/noarch/{path.name}", 401) in logged
        assert not [entry for entry in logged if entry[2] < 400 and entry[0] in ("GET", "HEAD")], logged

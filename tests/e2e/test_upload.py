"""Uploading over HTTP, as `rattler-build upload prefix`, `pixi upload` and curl do, and what
each kind of bad upload gets back."""

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import pytest
import requests

from conftest import (
    FIXTURES,
    MAX_UPLOAD_BYTES,
    PACKAGES,
    reference_records,
    sha256_of,
    upload_multipart,
    upload_raw,
)
from artifacts import assert_channel_consistent, repodata, wait_for_repodata
from harness import running_server
from pkgbuild import build_tar_bz2


def without_indexed_timestamp(record: dict, not_before_ms: int) -> dict:
    """The record less `indexed_timestamp` (CEP 47), after checking that it is the server's
    time of indexing: milliseconds, not before `not_before_ms` and not in the future."""
    record = dict(record)
    stamp = record.pop("indexed_timestamp")
    assert isinstance(stamp, int) and not_before_ms - 1000 <= stamp <= time.time() * 1000 + 1000, stamp
    return record


@pytest.mark.parametrize("form", ["raw", "multipart"])
def test_every_fixture_is_indexed_like_conda_index(server, owner, channel, form):
    upload = upload_raw if form == "raw" else upload_multipart
    reference = reference_records()
    fixtures = sorted(PACKAGES.iterdir())
    assert len(fixtures) == 25
    started = int(time.time() * 1000)
    for path in fixtures:
        response = upload(server, channel, path.name, path.read_bytes(), headers=owner.auth)
        assert response.status_code == 201, (path.name, response.text)
        subdir, record = reference[path.name]
        assert without_indexed_timestamp(response.json(), started) == record
        assert response.headers["Location"] == f"/{channel}/{subdir}/{path.name}"

    for repodata_path in (FIXTURES / "reference" / "conda-index").glob("*/repodata.json"):
        subdir = repodata_path.parent.name
        served = repodata(server, channel, subdir)
        for section in ("packages", "packages.conda"):
            for filename, record in served[section].items():
                served[section][filename] = without_indexed_timestamp(record, started)
        assert served == json.loads(repodata_path.read_text()), subdir
    assert_channel_consistent(server, channel)


def test_a_conda_whose_zstd_asks_for_a_128_mib_window_is_read_in_little_memory(tmp_path):
    """conda-package-handling streams each component with zstd at level 22 and no content size,
    so the frame asks for a 128 MiB window (as in these fixtures, from Anaconda's channel and
    conda-index's tests): a decoder that allocates it takes an isolate's whole memory for a
    package of kilobytes. Its own server, so that the isolate's wasm memory is its alone."""
    with running_server(tmp_path / "state") as server:
        server.admin("user", "create", "big", "--admin")
        key = server.admin("key", "create", "big")["key"]
        server.admin("channel", "create", "windows", "--owner", "big")
        auth = {"Authorization": f"Bearer {key}"}
        for filename in ("conda-index-pkg-a-1.0-py27h5e241af_0.conda", "zlib-1.2.11-h7b6447c_3.conda"):
            response = upload_raw(server, "windows", filename, (PACKAGES / filename).read_bytes(), headers=auth)
            assert response.status_code == 201, response.text
            assert response.json()["sha256"] == sha256_of((PACKAGES / filename).read_bytes())
        stats = server.api("GET", "channels/windows/stats", key).json()
        assert stats["index"]["wasm_memory_bytes"] < 32 * 1024 * 1024, stats["index"]


def test_multipart_with_attestation_part(server, owner, channel):
    # An attestation part is read and judged (see test_publishers.py): this one is no bundle.
    path = PACKAGES / "flask-0.11.1-py_0.tar.bz2"
    response = upload_multipart(server, channel, path.name, path.read_bytes(), headers=owner.auth, attestation='{"bundle": 1}')
    assert response.status_code == 400, response.text
    assert "flask-0.11.1-py_0.tar.bz2" not in repodata(server, channel, "noarch")["packages"]


def test_retry_is_idempotent_and_other_bytes_conflict(server, owner, channel):
    filename, first = build_tar_bz2("twice", files={"share/twice.txt": b"first"})
    _, second = build_tar_bz2("twice", files={"share/twice.txt": b"second"})
    assert upload_raw(server, channel, filename, first, headers=owner.auth).status_code == 201
    again = upload_raw(server, channel, filename, first, headers=owner.auth)
    assert again.status_code == 200
    assert again.json()["sha256"] == sha256_of(first)

    conflict = upload_raw(server, channel, filename, second, headers=owner.auth)
    assert conflict.status_code == 409
    assert "force=true" in conflict.json()["error"]
    assert repodata(server, channel, "noarch")["packages"][filename]["sha256"] == sha256_of(first)

    forced = upload_raw(server, channel, filename, second, headers=owner.auth, params={"force": "true"})
    assert forced.status_code == 201
    assert repodata(server, channel, "noarch")["packages"][filename]["sha256"] == sha256_of(second)
    assert requests.get(f"{server.url}/{channel}/noarch/{filename}", timeout=10).content == second
    assert_channel_consistent(server, channel)


def test_auth_and_ownership(server, owner, outsider, make_user, channel):
    path = PACKAGES / "fly-2.5.2-0.tar.bz2"
    data = path.read_bytes()
    anonymous = upload_raw(server, channel, path.name, data)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == 'Bearer realm="condaflare"'
    assert "error" in anonymous.json()
    assert upload_raw(server, channel, path.name, data, headers={"Authorization": "Bearer cfk_not-a-key"}).status_code == 401
    forbidden = upload_raw(server, channel, path.name, data, headers=outsider.auth)
    assert forbidden.status_code == 403
    assert "owner" in forbidden.json()["error"]
    assert upload_raw(server, "no-such-channel", path.name, data, headers=owner.auth).status_code == 404

    admin = make_user(admin=True)
    assert upload_raw(server, channel, path.name, data, headers=admin.auth).status_code == 201
    # An owner added with the admin command may upload too; a member may not.
    co_owner, member = make_user(), make_user()
    server.admin("member", "add", channel, co_owner.name, "--role", "owner")
    server.admin("member", "add", channel, member.name, "--role", "member")
    other = PACKAGES / "nano-2.4.1-0.tar.bz2"
    assert upload_raw(server, channel, other.name, other.read_bytes(), headers=member.auth).status_code == 403
    assert upload_raw(server, channel, other.name, other.read_bytes(), headers=co_owner.auth).status_code == 201


def bad_uploads(channel_owner_auth):
    good = (PACKAGES / "test-package-0.1-0.tar.bz2").read_bytes()
    _, huge_index = build_tar_bz2("huge", index_overrides={"description": "x" * 400_000})
    _, renamed = build_tar_bz2("realname")
    return [
        # (description, filename, body, extra headers, expected status, words in the error)
        ("no file name", None, good, {}, 400, "X-File-Name"),
        ("no checksum", "test-package-0.1-0.tar.bz2", good, {"X-File-SHA256": ""}, 400, "X-File-SHA256"),
        ("malformed checksum", "test-package-0.1-0.tar.bz2", good, {"X-File-SHA256": "abc"}, 400, "64 hex"),
        ("wrong checksum", "test-package-0.1-0.tar.bz2", good, {"X-File-SHA256": "0" * 64}, 400, "does not match"),
        ("path in name", "../../etc/passwd-1-0.tar.bz2", good, {}, 400, "invalid package file name"),
        ("not a package name", "notes.txt", good, {}, 400, ".conda or .tar.bz2"),
        ("garbage archive", "garbage-1.0-0.tar.bz2", b"\x00garbage" * 100, {}, 422, "bzip2"),
        ("garbage .conda", "garbage-1.0-0.conda", b"PK\x03\x04" + b"\x00" * 60, {}, 422, "invalid package"),
        ("empty file", "empty-1.0-0.conda", b"", {}, 422, "empty"),
        ("name differs from metadata", "other-1.0-0.tar.bz2", renamed, {}, 422, "realname-1.0-0.tar.bz2"),
        ("huge index.json", "huge-1.0-0.tar.bz2", huge_index, {}, 422, "info/index.json is"),
        ("corrupt .tar.bz2 fixture", "bad_package-1.0-0.tar.bz2", (FIXTURES / "corrupt" / "bad_package.tar.bz2").read_bytes(), {}, 422, "bzip2"),
        ("empty .conda fixture", "another_bad_package-1.0-0.conda", (FIXTURES / "corrupt" / "another_bad_package.conda").read_bytes(), {}, 422, "empty"),
        ("components under a directory", "ca-certificates-2024.7.4-hbcca054_0.conda", (FIXTURES / "corrupt" / "ca-certificates-2024.7.4-hbcca054_0.conda").read_bytes(), {}, 422, "archive root"),
    ]


@pytest.mark.parametrize("case", range(14))
def test_bad_upload_is_refused_and_leaves_nothing(server, owner, channel, case):
    description, filename, body, extra, status, words = bad_uploads(owner.auth)[case]
    headers = {**owner.auth, "Content-Type": "application/octet-stream"}
    if filename is not None:
        headers["X-File-Name"] = filename
    headers["X-File-SHA256"] = sha256_of(body)
    headers.update(extra)
    response = requests.post(f"{server.url}/api/v1/upload/{channel}", data=body, headers=headers, timeout=30)
    assert response.status_code == status, (description, response.text)
    assert response.headers["Content-Type"] == "application/json"
    message = response.json()["error"]
    assert words in message, (description, message)
    assert len(message) < 512
    assert not [k for k in server.r2_keys() if channel in k], description
    assert repodata(server, channel, "noarch")["packages"] == {}


def test_original_corrupt_fixture_names_are_refused(server, owner, channel):
    for path in sorted((FIXTURES / "corrupt").iterdir()):
        response = upload_raw(server, channel, path.name, path.read_bytes(), headers=owner.auth)
        assert response.status_code in (400, 422), (path.name, response.text)
    assert not [k for k in server.r2_keys() if channel in k]


def test_oversized_upload_is_refused_before_the_body(server, owner, channel):
    head = (
        f"POST /api/v1/upload/{channel} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {owner.key}\r\n"
        f"X-File-Name: big-1.0-0.tar.bz2\r\nX-File-SHA256: {'0' * 64}\r\n"
        f"Content-Length: {MAX_UPLOAD_BYTES + 1}\r\n\r\n"
    ).encode()
    url = urlparse(server.url)
    # No body is sent: the Worker can only answer if it does not wait for it. (wrangler dev's
    # proxy holds the answer back until the body is drained, so the Worker's log line is what
    # shows the decision; a deployed Worker answers at once.)
    decided = f'"path":"/api/v1/upload/{channel}","status":413'
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(head)
        deadline = time.time() + 10
        while decided not in server.log() and time.time() < deadline:
            time.sleep(0.1)
    assert decided in server.log()
    small = requests.post(
        f"{server.url}/api/v1/upload/{channel}",
        data=b"\0" * (MAX_UPLOAD_BYTES + 1),
        headers={**owner.auth, "X-File-Name": "big-1.0-0.tar.bz2", "X-File-SHA256": "0" * 64},
        timeout=30,
    )
    assert small.status_code == 413
    assert str(MAX_UPLOAD_BYTES) in small.json()["error"]
    assert not [k for k in server.r2_keys() if channel in k]


def test_upload_without_length_is_refused(server, owner, channel):
    data = (PACKAGES / "fly-2.5.2-0.tar.bz2").read_bytes()
    response = requests.post(
        f"{server.url}/api/v1/upload/{channel}",
        data=iter([data]),  # a generator body is sent chunked, without Content-Length
        headers={**owner.auth, "X-File-Name": "fly-2.5.2-0.tar.bz2", "X-File-SHA256": sha256_of(data)},
        timeout=30,
    )
    assert response.status_code == 411
    assert "Content-Length" in response.json()["error"]


def test_interrupted_upload_leaves_nothing(server, owner, channel):
    data = (PACKAGES / "xtensor-io-0.10.3-hb585cf6_0.tar.bz2").read_bytes()
    head = (
        f"POST /api/v1/upload/{channel} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {owner.key}\r\n"
        f"X-File-Name: xtensor-io-0.10.3-hb585cf6_0.tar.bz2\r\nX-File-SHA256: {sha256_of(data)}\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    ).encode()
    url = urlparse(server.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(head + data[: len(data) // 2])
    # The connection is gone mid-body; give the server a moment to notice, then look.
    time.sleep(2)
    assert requests.get(f"{server.url}/{channel}/linux-64/repodata.json", timeout=10).status_code == 404
    assert not [k for k in server.r2_keys() if channel in k]


def test_concurrent_uploads_all_land(server, owner, channel):
    packages = [(p.name, p.read_bytes()) for p in sorted(PACKAGES.iterdir())]
    packages += [build_tar_bz2(f"burst{i}") for i in range(10)]
    with ThreadPoolExecutor(max_workers=len(packages)) as pool:
        statuses = list(pool.map(lambda p: upload_raw(server, channel, p[0], p[1], headers=owner.auth).status_code, packages))
    assert statuses == [201] * len(packages)
    wait_for_repodata(server, channel, ("noarch", "linux-64", "osx-64", "win-64"))

    seen = {}
    for subdir in ("noarch", "linux-64", "osx-64", "win-64"):
        data = repodata(server, channel, subdir)
        for section in ("packages", "packages.conda"):
            seen.update({f: r["sha256"] for f, r in data[section].items()})
    assert seen == {name: sha256_of(data) for name, data in packages}
    assert_channel_consistent(server, channel)


def test_concurrent_duplicates(server, owner, channel):
    filename, same = build_tar_bz2("dup")
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = sorted(pool.map(lambda _: upload_raw(server, channel, filename, same, headers=owner.auth).status_code, range(8)))
    assert statuses == [200] * 7 + [201]

    variants = [build_tar_bz2("race", files={"x": str(i).encode()}) for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda v: upload_raw(server, channel, v[0], v[1], headers=owner.auth), variants))
    assert sorted(r.status_code for r in results) == [201] + [409] * 7
    winner = next(v for v, r in zip(variants, results) if r.status_code == 201)
    wait_for_repodata(server, channel)
    assert repodata(server, channel, "noarch")["packages"][winner[0]]["sha256"] == sha256_of(winner[1])
    assert_channel_consistent(server, channel)


def test_readers_never_see_a_partial_index(server, owner, channel):
    """DESIGN invariant 4: while uploads land, every read of repodata.json is a whole document
    and never loses a record it showed before."""
    packages = [build_tar_bz2(f"steady{i}") for i in range(12)]
    stop = threading.Event()
    problems = []

    def read_continuously():
        seen: set[str] = set()
        while not stop.is_set():
            response = requests.get(f"{server.url}/{channel}/noarch/repodata.json", timeout=10)
            try:
                now = set(response.json()["packages"])
            except ValueError:
                problems.append(response.text[:100])
                continue
            if not seen <= now:
                problems.append(f"lost {seen - now}")
            seen = now

    reader = threading.Thread(target=read_continuously)
    reader.start()
    with ThreadPoolExecutor(max_workers=6) as pool:
        assert set(pool.map(lambda p: upload_raw(server, channel, p[0], p[1], headers=owner.auth).status_code, packages)) == {201}
    stop.set()
    reader.join()
    assert problems == []
    assert len(repodata(server, channel, "noarch")["packages"]) == 12


def test_delete(server, owner, outsider, channel):
    path = PACKAGES / "zlib-1.2.11-h7b6447c_3.conda"
    assert upload_raw(server, channel, path.name, path.read_bytes(), headers=owner.auth).status_code == 201
    url = f"{server.url}/api/v1/delete/{channel}/linux-64/{path.name}"
    assert requests.delete(url, timeout=10).status_code == 401
    assert requests.delete(url, headers=outsider.auth, timeout=10).status_code == 403
    assert requests.delete(f"{server.url}/api/v1/delete/{channel}/linux-64/nothere-1-0.conda", headers=owner.auth, timeout=10).status_code == 404
    assert requests.delete(f"{server.url}/api/v1/delete/{channel}/linux-99/{path.name}", headers=owner.auth, timeout=10).status_code == 400

    response = requests.delete(url, headers=owner.auth, timeout=10)
    assert response.status_code == 200
    assert response.json() == {"deleted": f"{channel}/linux-64/{path.name}"}
    assert path.name not in repodata(server, channel, "linux-64")["packages.conda"]
    assert requests.get(f"{server.url}/{channel}/linux-64/{path.name}", timeout=10).status_code == 404
    assert f"{channel}/linux-64/{path.name}" not in server.r2_keys()
    assert requests.delete(url, headers=owner.auth, timeout=10).status_code == 404
    # Uploading it again works after a delete.
    assert upload_raw(server, channel, path.name, path.read_bytes(), headers=owner.auth).status_code == 201

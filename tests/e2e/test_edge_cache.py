"""The edge cache of channel files: with the cache warm, every answer is the one a read from R2
gives (status, headers, bytes, for conditional, HEAD and range requests alike), no private file
reaches a caller without the right to it, and a replaced, deleted or rebuilt file is not served
from the cache. Under `wrangler dev` the cache is Miniflare's, which keeps what it is given; the
Worker isolate's R2 counter (in the channel's stats) tells a warm answer from a cold one."""

import time
from email.utils import format_datetime, parsedate_to_datetime

import msgpack
import pytest
import requests

from artifacts import unzstd
from conftest import PACKAGES, r2_operations, unique, upload_raw
from pkgbuild import build_tar_bz2

PACKAGE = PACKAGES / "flask-0.11.1-py_0.tar.bz2"
SECRET_MARKERS = (b"flask", b"werkzeug")
# Headers that differ between any two answers, cached or not.
PER_ANSWER = {"date", "cf-ray", "connection", "keep-alive", "transfer-encoding"}


def r2_reads(server, admin) -> int:
    """The GETs and HEADs the Worker's isolate has sent to R2 so far (of every channel)."""
    counts = r2_operations(server, admin)
    return counts["get"] + counts["head"]


def warm(server, admin, url: str, headers: dict) -> None:
    """Reads `url` until an answer comes without an R2 read (the copy is stored after the first
    answer has been sent)."""
    deadline = time.time() + 10
    while time.time() < deadline:
        before = r2_reads(server, admin)
        assert requests.get(url, headers=headers, timeout=10).status_code == 200
        if r2_reads(server, admin) == before:
            return
        time.sleep(0.2)
    raise AssertionError(f"{url} was never answered from the cache")


def answer(method: str, url: str, headers: dict) -> tuple:
    response = requests.request(method, url, headers={"Accept-Encoding": "identity", **headers}, timeout=10)
    kept = {k.lower(): v for k, v in response.headers.items() if k.lower() not in PER_ANSWER}
    return response.status_code, kept, response.content


def files_of(server, channel: str, auth: dict) -> dict[str, str]:
    """Every kind of cached file of the channel's noarch: name -> URL."""
    base = f"{server.url}/{channel}/noarch"
    # A range of the whole file: read from R2, and not stored in the cache.
    index = requests.get(f"{base}/repodata_shards.msgpack.zst", headers={**auth, "Range": "bytes=0-"}, timeout=10)
    assert index.status_code == 206
    shard = msgpack.unpackb(unzstd(index.content))["shards"]["flask"].hex()
    names = [PACKAGE.name, "repodata.json", "repodata.json.zst", "repodata_shards.msgpack.zst", f"shards/{shard}.msgpack.zst"]
    return {name: f"{base}/{name}" for name in names}


def variants(etag: str, last_modified: str) -> list[tuple[str, dict]]:
    """Every kind of request whose answer depends on the validators or a range."""
    earlier = format_datetime(parsedate_to_datetime(last_modified).replace(year=2000), usegmt=True)
    return [
        ("GET", {"If-None-Match": etag}),
        ("GET", {"If-None-Match": f"W/{etag}"}),
        ("GET", {"If-None-Match": '"other"'}),
        ("GET", {"If-None-Match": f'"other", {etag}'}),
        ("GET", {"If-None-Match": "*"}),
        ("GET", {"If-Modified-Since": last_modified}),
        ("GET", {"If-Modified-Since": earlier}),
        ("GET", {"If-None-Match": '"other"', "If-Modified-Since": last_modified}),
        ("HEAD", {}),
        ("HEAD", {"If-None-Match": etag}),
        ("HEAD", {"If-None-Match": f'"other", {etag}'}),
        ("HEAD", {"If-Modified-Since": last_modified}),
        ("GET", {"Range": "bytes=0-9"}),
        ("GET", {"Range": "bytes=-7"}),
        ("GET", {"Range": "bytes=5-"}),
        ("GET", {"Range": "bytes=99999999-"}),
        ("GET", {"Range": "bytes=0-1,4-5"}),
        ("GET", {"Range": "bytes=0-3", "If-None-Match": etag}),
        # Last: a plain GET is what stores the copy.
        ("GET", {}),
    ]


@pytest.mark.parametrize("visibility", ["public", "private"])
def test_warm_and_cold_answers_are_the_same(server, owner, admin, visibility):
    channel = unique("cache")
    server.admin("channel", "create", channel, "--owner", owner.name, *(["--private"] if visibility == "private" else []))
    assert upload_raw(server, channel, PACKAGE.name, PACKAGE.read_bytes(), headers=owner.auth).status_code == 201
    for name, url in files_of(server, channel, owner.auth).items():
        first = requests.head(url, headers=owner.auth, timeout=10)
        plan = variants(first.headers["ETag"], first.headers["Last-Modified"])
        before = r2_reads(server, admin)
        cold = [answer(method, url, {**owner.auth, **headers}) for method, headers in plan]
        cold_reads = r2_reads(server, admin) - before
        warm(server, admin, url, owner.auth)
        before = r2_reads(server, admin)
        hot = [answer(method, url, {**owner.auth, **headers}) for method, headers in plan]
        hot_reads = r2_reads(server, admin) - before
        for (method, headers), c, h in zip(plan, cold, hot):
            assert c == h, (name, method, headers, c[:2], h[:2])
        ranges = sum(1 for _, headers in plan if "Range" in headers)
        # Warm, only ranges read R2 (a head, then a get when the range is satisfiable); cold,
        # every request does.
        assert hot_reads <= 2 * ranges, (name, hot_reads)
        assert cold_reads >= len(plan), (name, cold_reads)
    # The statuses are the ones HTTP asks for, warm as cold.
    statuses = [status for status, _, _ in hot]
    assert statuses == [304, 304, 200, 200, 200, 304, 200, 200, 200, 304, 304, 304, 206, 206, 206, 416, 200, 304, 200]


@pytest.fixture
def warm_private(server, owner, admin, make_user):
    """A private channel whose files a member has read until the cache holds them all, and the
    member's key."""
    channel = unique("cachepriv")
    server.admin("channel", "create", channel, "--owner", owner.name, "--private")
    member = make_user()
    server.admin("member", "add", channel, member.name, "--role", "member")
    assert upload_raw(server, channel, PACKAGE.name, PACKAGE.read_bytes(), headers=owner.auth).status_code == 201
    files = files_of(server, channel, member.auth)
    for url in files.values():
        warm(server, admin, url, member.auth)
    return channel, files, member


def refused_without_secrets(url: str, headers: dict, status: int) -> None:
    for method in ("GET", "HEAD"):
        response = requests.request(method, url, headers=headers, timeout=10)
        assert response.status_code == status, (method, url, headers, response.status_code)
        assert not any(marker in response.content for marker in SECRET_MARKERS)
        assert "ETag" not in response.headers and "Last-Modified" not in response.headers


def test_a_warm_cache_serves_no_private_file_without_the_right(server, owner, make_user, warm_private):
    channel, files, member = warm_private
    elsewhere = server.admin("key", "create", member.name, "--channel", unique("elsewhere"))
    other_channel = unique("other")
    stranger = make_user()
    server.admin("channel", "create", other_channel, "--owner", stranger.name, "--private")
    callers = {
        "anonymous": ({}, 401),
        "invalid key": ({"Authorization": "Bearer cfk_" + "A" * 43}, 401),
        "outsider": (stranger.auth, 404),
        "key for another channel": ({"Authorization": f"Bearer {elsewhere['key']}"}, 404),
    }
    for name, url in files.items():
        for caller, (headers, status) in callers.items():
            refused_without_secrets(url, headers, status)
            # The cache's validators do not turn a refusal into a 304.
            refused_without_secrets(url, {**headers, "If-None-Match": "*"}, status)
        # The token in the path is checked the same way.
        path = url.removeprefix(server.url)
        refused_without_secrets(f"{server.url}/t/cfk_{'B' * 43}{path}", {}, 401)
        # And the member still reads it, from the cache.
        allowed = requests.get(url, headers=member.auth, timeout=10)
        assert allowed.status_code == 200
        assert allowed.headers["Cache-Control"] == "private, no-cache"


def test_a_revoked_key_reads_nothing_from_a_warm_cache(server, warm_private):
    channel, files, member = warm_private
    reader = server.api("POST", "keys", member.key, json={"name": "reader"})
    assert reader.status_code == 201
    auth = {"Authorization": f"Bearer {reader.json()['key']}"}
    for url in files.values():
        assert requests.get(url, headers=auth, timeout=10).status_code == 200
    assert server.api("DELETE", f"keys/{reader.json()['info']['id']}", member.key).status_code == 200
    for url in files.values():
        refused_without_secrets(url, auth, 401)


def test_a_member_removed_reads_nothing_from_a_warm_cache(server, owner, warm_private):
    channel, files, member = warm_private
    assert server.api("DELETE", f"channels/{channel}/members/{member.name}", owner.key).status_code == 200
    for url in files.values():
        refused_without_secrets(url, member.auth, 404)


def test_a_forced_replacement_is_never_served_from_the_cache(server, owner, admin, channel):
    first_name, first = build_tar_bz2("replaced", files={"share/replaced": b"first"})
    second_name, second = build_tar_bz2("replaced", files={"share/replaced": b"second, longer"})
    assert first_name == second_name and first != second
    assert upload_raw(server, channel, first_name, first, headers=owner.auth).status_code == 201
    url = f"{server.url}/{channel}/noarch/{first_name}"
    repodata = f"{server.url}/{channel}/noarch/repodata.json"
    warm(server, admin, url, {})
    warm(server, admin, repodata, {})
    old_etag = requests.head(url, timeout=10).headers["ETag"]
    replaced = upload_raw(server, channel, second_name, second, headers=owner.auth, params={"force": "true"})
    assert replaced.status_code in (200, 201), replaced.text
    # At once: the upload's answer came after the copies were dropped.
    response = requests.get(url, timeout=10)
    assert response.content == second
    assert response.headers["ETag"] != old_etag
    assert requests.head(url, timeout=10).headers["Content-Length"] == str(len(second))
    assert requests.get(url, headers={"If-None-Match": old_etag}, timeout=10).status_code == 200
    record = requests.get(repodata, timeout=10).json()["packages"][first_name]
    assert record["size"] == len(second)
    # And warm again, the new bytes.
    warm(server, admin, url, {})
    assert requests.get(url, timeout=10).content == second


def test_a_deleted_package_is_never_served_from_the_cache(server, owner, admin, channel):
    assert upload_raw(server, channel, PACKAGE.name, PACKAGE.read_bytes(), headers=owner.auth).status_code == 201
    url = f"{server.url}/{channel}/noarch/{PACKAGE.name}"
    warm(server, admin, url, {})
    deleted = requests.delete(f"{server.url}/api/v1/delete/{channel}/noarch/{PACKAGE.name}", headers=owner.auth, timeout=30)
    assert deleted.status_code == 200
    for method in ("GET", "HEAD"):
        assert requests.request(method, url, timeout=10).status_code == 404
    assert requests.get(url, headers={"Range": "bytes=0-9"}, timeout=10).status_code == 404
    # The index files, warm before, no longer list it.
    assert PACKAGE.name not in requests.get(f"{server.url}/{channel}/noarch/repodata.json", timeout=10).json()["packages"]


def test_index_files_are_rebuilt_past_a_warm_copy(server, owner, admin, channel):
    assert upload_raw(server, channel, PACKAGE.name, PACKAGE.read_bytes(), headers=owner.auth).status_code == 201
    base = f"{server.url}/{channel}/noarch"
    for name in ("repodata.json", "repodata.json.zst", "repodata_shards.msgpack.zst", "run_exports.json"):
        warm(server, admin, f"{base}/{name}", {})
    added, data = build_tar_bz2("added")
    assert upload_raw(server, channel, added, data, headers=owner.auth).status_code == 201
    assert added in requests.get(f"{base}/repodata.json", timeout=10).json()["packages"]
    zst = requests.get(f"{base}/repodata.json.zst", timeout=10).content
    assert added.encode() in unzstd(zst)
    index = msgpack.unpackb(unzstd(requests.get(f"{base}/repodata_shards.msgpack.zst", timeout=10).content))
    assert "added" in index["shards"]
    assert added in requests.get(f"{base}/run_exports.json", timeout=10).json()["packages"]


def test_a_channel_made_again_under_its_name_sees_nothing_of_the_old_one(server, owner, admin, make_user):
    name = unique("again")
    server.admin("channel", "create", name, "--owner", owner.name, "--private")
    assert upload_raw(server, name, PACKAGE.name, PACKAGE.read_bytes(), headers=owner.auth).status_code == 201
    url = f"{server.url}/{name}/noarch/{PACKAGE.name}"
    warm(server, admin, url, owner.auth)
    assert server.api("DELETE", f"channels/{name}", owner.key).status_code == 200
    server.admin("channel", "create", name, "--owner", make_user().name)
    # Public now, and empty: the old private file is not served from the cache to anyone.
    assert requests.get(url, timeout=10).status_code == 404
    assert requests.head(url, timeout=10).status_code == 404

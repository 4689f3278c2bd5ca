"""The modern index: sharded repodata (CEP 16), repodata.json.zst, run_exports.json (CEP 12)
and indexed_timestamp (CEP 47), as the Worker serves them."""

import base64
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import msgpack
import requests

from artifacts import assert_channel_consistent, get, records_from_shards, shard_index, shard_url, unzstd, wait_for_repodata
from conftest import FIXTURES, PACKAGES, R2_PART_BYTES, SHARD_RETENTION_SECONDS, import_tar, post_import, upload_raw
from harness import running_server
from pkgbuild import build_tar_bz2

SUBDIRS = ("noarch", "linux-64", "osx-64", "win-64")


def test_a_new_channel_has_a_valid_empty_noarch(server, channel):
    index = shard_index(server, channel, "noarch")
    assert index["shards"] == {}
    assert index["version"] == 1
    assert index["info"]["subdir"] == "noarch"
    empty = json.loads(unzstd(get(server, f"{channel}/noarch/repodata.json.zst").content))
    assert empty == get(server, f"{channel}/noarch/repodata.json").json()
    run_exports = get(server, f"{channel}/noarch/run_exports.json").json()
    assert run_exports == {"info": {"subdir": "noarch", "version": 1}, "packages": {}, "packages.conda": {}}
    for name in ("repodata.json.zst", "repodata_shards.msgpack.zst", "run_exports.json"):
        assert requests.head(f"{server.url}/{channel}/noarch/{name}", timeout=10).status_code == 200
        # Other subdirs without packages are absent: clients fall back or read them as empty.
        assert requests.head(f"{server.url}/{channel}/linux-64/{name}", timeout=10).status_code == 404
    assert shard_index(server, channel, "linux-64") is None


def test_every_artifact_holds_the_same_records(server, owner, channel):
    for path in sorted(PACKAGES.iterdir()):
        assert upload_raw(server, channel, path.name, path.read_bytes(), headers=owner.auth).status_code == 201
    for subdir in SUBDIRS:
        repodata = get(server, f"{channel}/{subdir}/repodata.json").json()
        assert json.loads(unzstd(get(server, f"{channel}/{subdir}/repodata.json.zst").content)) == repodata
        sharded = records_from_shards(server, channel, subdir)
        assert sharded["packages"] == repodata["packages"]
        assert sharded["packages.conda"] == repodata["packages.conda"]
        names = {r["name"] for section in ("packages", "packages.conda") for r in repodata[section].values()}
        assert set(shard_index(server, channel, subdir)["shards"]) == names
        for section in ("packages", "packages.conda"):
            assert all(isinstance(r["indexed_timestamp"], int) for r in repodata[section].values())

        reference = json.loads((FIXTURES / "reference" / "conda-index" / subdir / "run_exports.json").read_text())
        assert get(server, f"{channel}/{subdir}/run_exports.json").json() == reference, subdir


def test_an_upload_rewrites_only_its_own_shard(server, owner, channel):
    for name in ("alpha", "beta", "gamma"):
        filename, data = build_tar_bz2(name)
        assert upload_raw(server, channel, filename, data, headers=owner.auth).status_code == 201
    before = shard_index(server, channel, "noarch")["shards"]
    index_before = get(server, f"{channel}/noarch/repodata_shards.msgpack.zst")

    filename, data = build_tar_bz2("beta", version="2.0")
    assert upload_raw(server, channel, filename, data, headers=owner.auth).status_code == 201
    after = shard_index(server, channel, "noarch")["shards"]
    index_after = get(server, f"{channel}/noarch/repodata_shards.msgpack.zst")

    assert index_after.content != index_before.content
    assert {n for n in after if after[n] != before[n]} == {"beta"}
    new_beta = msgpack.unpackb(unzstd(get(server, shard_url(channel, "noarch", after["beta"])).content))
    assert set(new_beta["packages"]) == {"beta-1.0-0.tar.bz2", "beta-2.0-0.tar.bz2"}
    # A client holding the old index can still fetch the shard it names.
    old = get(server, shard_url(channel, "noarch", before["beta"]))
    assert old.status_code == 200
    assert set(msgpack.unpackb(unzstd(old.content))["packages"]) == {"beta-1.0-0.tar.bz2"}

    shard = get(server, shard_url(channel, "noarch", after["alpha"]))
    assert shard.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert index_after.headers["Cache-Control"] == "public, max-age=30"
    assert index_after.headers["ETag"] != index_before.headers["ETag"]


def test_a_rebuild_rewrites_every_artifact_from_the_records(server, owner, make_user, channel):
    for path in sorted(PACKAGES.iterdir())[:6]:
        assert upload_raw(server, channel, path.name, path.read_bytes(), headers=owner.auth).status_code == 201
    subdirs = sorted({key.split("/")[1] for key in server.r2_keys() if key.startswith(f"{channel}/")})
    before = {s: get(server, f"{channel}/{s}/repodata.json").json() for s in subdirs}
    builds_before = len(builds_logged(server, channel))

    assert server.api("POST", f"channels/{channel}/rebuild", owner.key).status_code == 403
    admin = make_user(admin=True)
    assert server.api("POST", "channels/no-such-channel/rebuild", admin.key).status_code == 404
    response = server.api("POST", f"channels/{channel}/rebuild", admin.key)
    assert response.status_code == 200, response.text
    assert sorted(response.json()["rebuilt"]) == subdirs
    deadline = time.time() + 10  # the log reaches its file shortly after the answer
    while len(builds_logged(server, channel)) < builds_before + len(subdirs):
        assert time.time() < deadline, "the rebuild did not build every subdir"
        time.sleep(0.2)
    assert {s: get(server, f"{channel}/{s}/repodata.json").json() for s in subdirs} == before
    assert_channel_consistent(server, channel)


def test_superseded_shards_are_cleaned_up_after_retention(server, owner, channel):
    filename, data = build_tar_bz2("fleeting")
    assert upload_raw(server, channel, filename, data, headers=owner.auth).status_code == 201
    first = shard_index(server, channel, "noarch")["shards"]["fleeting"]
    filename, data = build_tar_bz2("fleeting", version="2.0")
    assert upload_raw(server, channel, filename, data, headers=owner.auth).status_code == 201
    assert get(server, shard_url(channel, "noarch", first)).status_code == 200

    deadline = time.time() + SHARD_RETENTION_SECONDS + 10
    while get(server, shard_url(channel, "noarch", first)).status_code == 200:
        assert time.time() < deadline, "superseded shard still there after its retention"
        time.sleep(0.5)
    current = shard_index(server, channel, "noarch")["shards"]["fleeting"]
    assert get(server, shard_url(channel, "noarch", current)).status_code == 200


def test_deleting_the_last_package_of_a_subdir(server, owner, channel):
    path = PACKAGES / "zlib-1.2.11-h62dcd97_3.tar.bz2"
    assert upload_raw(server, channel, path.name, path.read_bytes(), headers=owner.auth).status_code == 201
    assert shard_index(server, channel, "win-64") is not None
    response = requests.delete(f"{server.url}/api/v1/delete/{channel}/win-64/{path.name}", headers=owner.auth, timeout=10)
    assert response.status_code == 200
    assert shard_index(server, channel, "win-64") is None
    assert get(server, f"{channel}/win-64/repodata.json").json()["packages"] == {}


INDEXER = """
import asyncio, sys
import rattler.index
asyncio.run(rattler.index.index_fs(sys.argv[1], write_zst=False, write_shards=False))
print("indexed", flush=True)
"""

# Where the records differ from py-rattler's indexer on purpose: condaflare writes what
# conda-index writes (the reference of issue 2), and rattler-index rewrites some fields.
EVERY_RECORD = {"arch", "platform"}  # conda-index drops them; clients do not read them
PER_RECORD = {
    # no subdir in index.json: rattler writes "unknown" and normalizes the old-style specs
    "nano-2.4.1-0.tar.bz2": {"subdir", "depends", "requires", "preferred_env"},
    # rattler copies info/run_exports.json into .conda records; conda-index serves it in run_exports.json
    "zlib-1.2.11-h7b6447c_3.conda": {"run_exports"},
    "zlib-1.2.11-h1de35cc_3.conda": {"run_exports"},
    # index.json has no depends; rattler writes an empty list
    "empty-0.1.0-h4616a5c_0.conda": {"depends"},
}


def test_records_match_py_rattlers_indexer(server, owner, channel, tmp_path):
    layout = {}
    for subdir in SUBDIRS:
        data = json.loads((FIXTURES / "reference" / "conda-index" / subdir / "repodata.json").read_text())
        for section in ("packages", "packages.conda"):
            layout.update({filename: subdir for filename in data[section]})
    assert len(layout) == 25
    for filename, subdir in layout.items():
        (tmp_path / subdir).mkdir(exist_ok=True)
        (tmp_path / subdir / filename).write_bytes((PACKAGES / filename).read_bytes())
        assert upload_raw(server, channel, filename, (PACKAGES / filename).read_bytes(), headers=owner.auth).status_code == 201
    out = subprocess.run([sys.executable, "-c", INDEXER, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert "indexed" in out.stdout, out.stderr[-2000:]

    compared = 0
    for subdir in SUBDIRS:
        theirs = json.loads((tmp_path / subdir / "repodata.json").read_text())
        ours = get(server, f"{channel}/{subdir}/repodata.json").json()
        for section in ("packages", "packages.conda"):
            assert set(ours[section]) == set(theirs[section])
            for filename, record in ours[section].items():
                other = theirs[section][filename]
                assert "indexed_timestamp" in record and "indexed_timestamp" in other
                differing = {k for k in set(record) | set(other) if record.get(k) != other.get(k)}
                expected = (EVERY_RECORD | PER_RECORD.get(filename, set())) & differing
                assert differing - {"indexed_timestamp"} == expected, (filename, differing)
                compared += 1
    assert compared == 25


def builds_logged(server, channel: str, after_ms: float = 0) -> list[dict]:
    """The monolithic builds of `channel` the Worker logged, from `after_ms` (epoch) on."""
    lines = (json.loads(line) for line in server.log().splitlines() if line.startswith("{") and '"event":"build"' in line)
    return [line for line in lines if line["channel"] == channel and line["time"] > after_ms]


def test_a_burst_is_coalesced_and_repodata_catches_up_within_the_bound(server, owner, channel):
    """Every upload answers once its package is in the shard index and its shard. repodata.json
    holds it at once when the answer says `X-Repodata-Json: current`; when it says `pending`, a
    build was running, and repodata.json holds it after that build and at most one more. A burst
    costs far fewer builds than uploads."""
    # Records of 100 KB make each build take a while, so that uploads meet running builds.
    ballast = [build_tar_bz2(f"ballast{i}", index_overrides={"description": "b" * 100_000}) for i in range(12)]
    for filename, data in ballast:
        assert upload_raw(server, channel, filename, data, headers=owner.auth).headers["X-Repodata-Json"] == "current"
    packages = [build_tar_bz2(f"burst{i}") for i in range(16)]

    def upload_and_look(package):
        filename, data = package
        response = upload_raw(server, channel, filename, data, headers=owner.auth)
        name = filename.rsplit("-", 2)[0]
        digest = shard_index(server, channel, "noarch")["shards"][name]
        shard = msgpack.unpackb(unzstd(get(server, shard_url(channel, "noarch", digest)).content))
        listed = filename in get(server, f"{channel}/noarch/repodata.json").json()["packages"]
        return response, filename in shard["packages"], listed

    started_ms = time.time() * 1000
    with ThreadPoolExecutor(max_workers=len(packages)) as pool:
        results = list(pool.map(upload_and_look, packages))
    answered_ms = time.time() * 1000
    assert [r.status_code for r, _, _ in results] == [201] * len(packages)
    assert all(in_shard for _, in_shard, _ in results)
    freshness = [r.headers["X-Repodata-Json"] for r, _, _ in results]
    assert set(freshness) <= {"current", "pending"}
    assert all(listed for (_, _, listed), said in zip(results, freshness) if said == "current")

    wait_for_repodata(server, channel)
    listed = get(server, f"{channel}/noarch/repodata.json").json()["packages"]
    assert {filename for filename, _ in packages + ballast} == set(listed)
    assert len(builds_logged(server, channel, after_ms=answered_ms)) <= 2
    assert len(builds_logged(server, channel, after_ms=started_ms)) < len(packages)
    assert_channel_consistent(server, channel)


def test_a_subdir_larger_than_several_r2_parts(tmp_path):
    """The monolithic files are streamed to R2 part by part: a subdir whose repodata.json takes
    three parts still reads back whole and agrees with its .zst and its shards, and the
    Durable Object's memory stays under 64 MB. Its own server, so that the memory figure (the
    isolate's, which locally the Worker shares) is not that of other tests. The packages come
    in one bulk import, so the subdir is built once (uploads one by one would build it again
    and again as it grows)."""
    variables = {"R2_PART_BYTES": str(R2_PART_BYTES)}
    with running_server(tmp_path / "state", variables) as server:
        server.admin("user", "create", "big", "--admin")
        key = server.admin("key", "create", "big")["key"]
        server.admin("user", "create", "small")
        small_key = server.admin("key", "create", "small")["key"]
        server.admin("channel", "create", "bulky", "--owner", "big")
        auth = {"Authorization": f"Bearer {key}"}
        packages = [
            build_tar_bz2(f"bulky{i}", index_overrides={"description": base64.b64encode(os.urandom(150_000)).decode()})
            for i in range(60)
        ]
        imported = post_import(server, "bulky", import_tar(dict(packages)), auth)
        assert imported.status_code == 200, imported.text
        assert imported.json()["created"] == len(packages)
        wait_for_repodata(server, "bulky")
        repodata = get(server, "bulky/noarch/repodata.json")
        assert len(repodata.content) > 2 * R2_PART_BYTES
        assert set(repodata.json()["packages"]) == {name for name, _ in packages}
        assert_channel_consistent(server, "bulky")
        builds = builds_logged(server, "bulky")
        assert builds[-1]["repodata_parts"] == 3
        assert builds[-1]["repodata_bytes"] == len(repodata.content)

        # What site admins can read about the index.
        assert server.api("GET", "channels/bulky/stats", small_key).status_code == 403
        stats = server.api("GET", "channels/bulky/stats", key)
        assert stats.status_code == 200
        index = stats.json()["index"]
        assert index["subdirs"] == [{"subdir": "noarch", "packages": 60}]
        assert 0 < index["wasm_memory_bytes"] < 64 * 1024 * 1024, index

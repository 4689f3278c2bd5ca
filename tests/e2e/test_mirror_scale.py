"""A mirror of an upstream subdir of 100,000 records (as `npm run bench -- mirror-scale` makes
them, itself as `npm run bench -- scale` generates its packages), from the upstream's shards
and from its repodata.json: served whole and filtered, solved against and installed from by
py-rattler, with the peak of the isolate's wasm memory printed and held within 128 MiB. Its own
server, so that the figure is the mirror's (locally the Worker and its objects share one
isolate, whose memory only grows)."""

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import requests

from harness import running_server
from synthetic_channel import chain, write_upstream
from upstream_channel import Upstream, files_of, rattler_install

RECORDS, NAMES = 100_000, 10_000
ISOLATE_BYTES = 128 * 1024 * 1024
# The longest file of the suite: handed out first (conftest.py).
RUNS_LONG = True


@pytest.fixture(scope="module")
def scale_server(tmp_path_factory):
    variables = {"MIRROR_ALLOW_HTTP": "true", "MIRROR_REVALIDATE_SECONDS": "0"}
    with running_server(tmp_path_factory.mktemp("scale"), variables) as server:
        server.admin("user", "create", "mirrorer", "--admin")
        server.key = server.admin("key", "create", "mirrorer")["key"]
        yield server


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory):
    """The channel written once, with its shards; the same files without them (hard links)."""
    sharded = tmp_path_factory.mktemp("sharded")
    write_upstream(sharded / "channel", RECORDS, NAMES, top=3, shards=True)
    plain = tmp_path_factory.mktemp("plain")
    ignore = shutil.ignore_patterns("shards", "repodata_shards.msgpack.zst")
    shutil.copytree(sharded / "channel", plain / "channel", copy_function=os.link, ignore=ignore)
    served = {"shards": Upstream(sharded, shards=True), "repodata": Upstream(plain)}
    yield served
    for upstream in served.values():
        upstream.stop()


@pytest.mark.parametrize("source", ["repodata", "shards"])
def test_an_upstream_subdir_of_100000_records_is_mirrored_and_solved_against_within_the_isolates_memory(
    scale_server, upstreams, tmp_path: Path, source, figure
):
    upstream = upstreams[source]
    name = f"scale-{source}"
    created = scale_server.api("POST", "channels", scale_server.key, json={"name": name, "mirror": {"url": upstream.url, "deny": ["scale-00002"]}})
    assert created.status_code == 201, created.text
    response = requests.get(f"{scale_server.url}/{name}/linux-64/repodata.json", timeout=600)
    assert response.status_code == 200, response.text
    expected = {f for f in files_of(upstream.repodata("linux-64")) if not f.startswith("scale-00002-")}
    assert len(expected) == RECORDS - RECORDS // NAMES
    assert files_of(response.json()) == expected
    if source == "shards":
        # The refresh read the shards, not the document.
        assert upstream.httpd.gets["/channel/linux-64/repodata_shards.msgpack.zst"] >= 1
        assert upstream.httpd.gets["/channel/linux-64/repodata.json"] == 0
    mode = "gateway" if source == "shards" else "fetch"
    installed = rattler_install(f"{scale_server.url}/{name}", tmp_path / "env", tmp_path / "cache", ["scale-00003"], mode=mode)
    assert "error" not in installed, installed
    newest = f"1.{RECORDS // NAMES - 1}"
    assert {(r["name"], r["version"]) for r in installed["records"]} == {(f"scale-{n:05d}", newest) for n in chain(3)}
    for record in installed["records"]:
        served = requests.get(record["url"], timeout=30).content
        assert hashlib.sha256(served).hexdigest() == record["sha256"]
    stats = scale_server.api("GET", f"channels/{name}/stats", scale_server.key).json()
    assert stats["index"]["subdirs"] == [{"subdir": "linux-64", "packages": len(expected)}]
    peak = stats["index"]["wasm_memory_bytes"]
    figure(f"{RECORDS} records (from {source}): peak wasm memory {peak / 2**20:.0f} MiB of {ISOLATE_BYTES / 2**20:.0f}")
    assert peak <= ISOLATE_BYTES

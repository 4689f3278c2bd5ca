"""What a mirror takes from its upstream besides the records (upstream_channel.py's py-rattler-indexed
channel under http.server on 127.0.0.1): the upstream's run_exports.json, for the records the
rules admit only, with and without shards, kept on a 304 and never half-read; a subdir the
upstream lacks, remembered as a 404 while the upstream is down and served once it appears; and
the channel list, which shows a mirror with its rules."""

import json
import shutil

import pytest
import requests

from conftest import unique
from upstream_channel import create_mirror, files_of, serve_upstream


def upstream_run_exports(root, subdir: str) -> dict:
    """Writes the upstream's run_exports.json of `subdir`: an entry per file it has, each with
    run exports of its own."""
    directory = root / "channel" / subdir
    files = files_of(json.loads((directory / "repodata.json").read_text()))
    document = {"info": {"subdir": subdir}, "packages": {}, "packages.conda": {}}
    for filename in sorted(files):
        section = "packages.conda" if filename.endswith(".conda") else "packages"
        stem = filename.rsplit("-", 2)[0]
        document[section][filename] = {"run_exports": {"weak": [f"{stem} >=1"], "strong": [f"lib{stem}"]}}
    (directory / "run_exports.json").write_text(json.dumps(document))
    return {**document["packages"], **document["packages.conda"]}


def entries(document: dict) -> dict:
    return {**document.get("packages", {}), **document.get("packages.conda", {})}


def get(server, name: str, path: str) -> requests.Response:
    return requests.get(f"{server.url}/{name}/{path}", timeout=30)


@pytest.mark.parametrize("shards", [False, True], ids=["repodata", "shards"])
def test_run_exports_json_carries_the_upstreams_run_exports_of_admitted_records_only(server, owner, tmp_path, shards):
    upstream = serve_upstream(tmp_path, shards)
    try:
        theirs = upstream_run_exports(tmp_path, "linux-64")
        name = create_mirror(server, owner, {"url": upstream.url, "deny": ["zlib"]})
        ours = get(server, name, "linux-64/run_exports.json")
        assert ours.status_code == 200, ours.text
        admitted = {f for f in theirs if not f.startswith("zlib-")}
        assert admitted and len(admitted) < len(theirs)
        # Each admitted file with the upstream's run exports; a denied one is in no entry.
        assert entries(ours.json()) == {f: theirs[f] for f in admitted}
        assert files_of(get(server, name, "linux-64/repodata.json").json()) == admitted
        # An upstream without a run_exports.json (its noarch): every file, none exported.
        noarch = get(server, name, "noarch/run_exports.json").json()
        assert noarch["info"]["subdir"] == "noarch"
        assert set(entries(noarch)) == files_of(upstream.repodata("noarch"))
        assert all(entry == {"run_exports": {}} for entry in entries(noarch).values())
    finally:
        upstream.stop()


def test_a_failing_run_exports_json_fails_the_refresh_and_a_304_keeps_the_run_exports(server, owner, tmp_path):
    upstream = serve_upstream(tmp_path, shards=False)
    try:
        theirs = upstream_run_exports(tmp_path, "linux-64")
        name = create_mirror(server, owner, {"url": upstream.url})
        first = get(server, name, "linux-64/run_exports.json")
        assert entries(first.json()) == theirs

        # The upstream's repodata.json changes (another ETag, the same records) and its
        # run_exports.json fails: the refresh fails whole, the index stands in, unchanged.
        repodata = tmp_path / "channel" / "linux-64" / "repodata.json"
        repodata.write_text(json.dumps(json.loads(repodata.read_text()), indent=1))
        upstream.httpd.redirects["/channel/linux-64/run_exports.json"] = "ftp://127.0.0.1/run_exports.json"
        stale = get(server, name, "linux-64/repodata.json")
        assert stale.status_code == 200
        assert "upstream failed" in stale.headers["X-Condaflare-Stale"]
        stale_exports = get(server, name, "linux-64/run_exports.json")
        assert "X-Condaflare-Stale" in stale_exports.headers
        assert stale_exports.content == first.content

        # Once it answers, with a 304 to the ETag it was read with: the run exports are kept.
        del upstream.httpd.redirects["/channel/linux-64/run_exports.json"]
        before = upstream.httpd.not_modified
        fresh = get(server, name, "linux-64/repodata.json")
        assert (fresh.status_code, "X-Condaflare-Stale" in fresh.headers) == (200, False)
        assert upstream.httpd.not_modified == before + 1
        assert get(server, name, "linux-64/run_exports.json").content == first.content
    finally:
        upstream.stop()


def test_a_subdir_the_upstream_lacks_stays_a_404_while_it_is_down_and_is_served_once_it_appears(server, owner, tmp_path):
    upstream = serve_upstream(tmp_path, shards=False)
    # This upstream has no noarch, and no osx-arm64 yet.
    shutil.rmtree(tmp_path / "channel" / "noarch")
    try:
        rules = {"url": upstream.url, "deny": ["zlib"]}
        name = create_mirror(server, owner, rules)
        for subdir in ("noarch", "osx-arm64"):
            missing = get(server, name, f"{subdir}/repodata.json")
            assert missing.status_code == 404, missing.text
            assert f"{upstream.url}/{subdir}/repodata.json" in missing.json()["error"]
        assert get(server, name, "linux-64/repodata.json").status_code == 200

        # It appears upstream: the next read after the revalidation interval serves it.
        arm = tmp_path / "channel" / "osx-arm64"
        arm.mkdir()
        (arm / "repodata.json").write_text(json.dumps({"info": {"subdir": "osx-arm64"}, "packages": {}, "packages.conda": {}}))
        appeared = get(server, name, "osx-arm64/repodata.json")
        assert appeared.status_code == 200, appeared.text
        assert appeared.json()["info"]["subdir"] == "osx-arm64"
        # The mirror's state lists the subdirs it holds an index of, not the one missing.
        state = server.api("GET", f"channels/{name}/mirror", owner.key).json()
        assert {s["subdir"] for s in state["subdirs"]} == {"linux-64", "osx-arm64"}

        # The channel list shows it as a mirror, with its rules, as its details do.
        plain = unique("plain")
        assert server.api("POST", "channels", owner.key, json={"name": plain}).status_code == 201
        listed = {c["name"]: c for c in requests.get(f"{server.url}/api/v1/channels", timeout=30).json()["channels"]}
        details = server.api("GET", f"channels/{name}", owner.key).json()
        assert listed[name]["mirror"] == details["mirror"] == {**rules, "allow": [], "min_age_days": 0}
        assert "mirror" not in listed[plain]

        upstream.stop()
        # Down: what it lacked is still a 404 (its files too), what it had stands in.
        for path in ("noarch/repodata.json", "noarch/repodata_shards.msgpack.zst", "noarch/flask-0.11.1-py_0.tar.bz2"):
            missing = get(server, name, path)
            assert missing.status_code == 404, (path, missing.text)
            assert missing.json()["code"] == "not_found"
            assert f"{upstream.url}/noarch/repodata.json" in missing.json()["error"], path
        for subdir in ("linux-64", "osx-arm64"):
            stale = get(server, name, f"{subdir}/repodata.json")
            assert stale.status_code == 200
            assert "upstream failed" in stale.headers["X-Condaflare-Stale"]
        # Other rules for the same upstream: it still lacks the subdir.
        changed = server.api("PATCH", f"channels/{name}", owner.key, json={"mirror": {**rules, "deny": ["test-package"]}})
        assert changed.status_code == 200, changed.text
        missing = get(server, name, "noarch/repodata.json")
        assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    finally:
        upstream.stop()

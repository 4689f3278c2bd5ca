"""Mirror channels: created through the API and the admin command with their rules, shown with
them, refused with bad ones, closed to uploads and deletes; their index (repodata.json, its
.zst, the shard index, shards, run_exports.json) holds a real upstream's records (py-rattler's
index_fs served by http.server on 127.0.0.1, with and without shards) filtered by the rules,
stands in for the upstream once it stops, and is in the channel's index (browse, check)."""

import hashlib
import json
import shutil
import time

import pytest
import requests

from conftest import PACKAGES, unique, upload_raw
from harness import AdminError
from upstream_channel import UPSTREAM, Upstream, create_mirror, files_of, index, index_files, rattler_install, read_msgpack_zst, serve_upstream
from upstream_channel import sharded_upstream, upstream  # noqa: F401 (fixtures)


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


@pytest.mark.parametrize("visibility", ["public", "private"])
def test_packages_install_through_the_mirror_and_still_do_once_the_upstream_stops(server, owner, make_user, upstream, tmp_path, visibility):
    private = visibility == "private"
    name = create_mirror(server, owner, {"url": upstream.url, "deny": ["test-package"]}, private=private)
    headers, auth_file = {}, None
    if private:
        # A member's key, from py-rattler's auth file (keyed by host, as pixi's).
        reader = make_user()
        server.admin("member", "add", name, reader.name, "--role", "member")
        headers = {"Authorization": f"Bearer {reader.key}"}
        auth_file = tmp_path / "auth.json"
        auth_file.write_text(json.dumps({"127.0.0.1": {"BearerToken": reader.key}}))
        refused = rattler_install(f"{server.url}/{name}", tmp_path / "env0", tmp_path / "cache0", ["other-package"])
        assert "error" in refused, refused
    specs = ["other-package", "run_exports_versions"]
    first = rattler_install(f"{server.url}/{name}", tmp_path / "env1", tmp_path / "cache1", specs, auth_file)
    assert "error" not in first, first
    installed = {r["name"]: r for r in first["records"]}
    assert set(installed) == {"other-package", "run_exports_versions"}
    for record in installed.values():
        filename = record["url"].rsplit("/", 1)[1]
        subdir = record["url"].rsplit("/", 2)[1]
        assert record["url"].startswith(f"{server.url}/{name}/")
        served = requests.get(record["url"], headers=headers, timeout=30).content
        assert served == (PACKAGES / filename).read_bytes()
        assert hashlib.sha256(served).hexdigest() == record["sha256"]
        assert f"{name}/{subdir}/{filename}" in server.r2_keys()
    # A denied file is not served, even by URL.
    denied = requests.get(f"{server.url}/{name}/linux-64/test-package-0.1-0.tar.bz2", headers=headers, timeout=30)
    assert denied.status_code == 404

    upstream.stop()
    again = rattler_install(f"{server.url}/{name}", tmp_path / "env2", tmp_path / "cache2", specs, auth_file)
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

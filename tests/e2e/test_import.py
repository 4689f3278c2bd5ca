"""Bulk import: many packages in one request, as a tar, and the admin command that imports a
directory laid out as a channel."""

import json
import shutil
import tarfile

from artifacts import assert_channel_consistent, repodata
from conftest import FIXTURES, PACKAGES, import_tar, post_import, reference_records


def channel_tar(extra: dict[str, bytes] | None = None) -> bytes:
    """Every fixture laid out by subdir, as a channel directory is, plus `extra` members."""
    reference = reference_records()
    members = {f"{reference[p.name][0]}/{p.name}": p.read_bytes() for p in sorted(PACKAGES.iterdir())}
    members["noarch/repodata.json"] = b"{}"  # not a package: skipped
    members.update(extra or {})
    return import_tar(members, format=tarfile.GNU_FORMAT)


def test_import_a_channel_tar(server, owner, outsider, channel):
    bad = (FIXTURES / "corrupt" / "bad_package.tar.bz2").read_bytes()
    long_name = "noarch/" + "x" * 120 + "-1.0-0.tar.bz2"
    body = channel_tar({"noarch/broken-1.0-0.tar.bz2": bad, long_name: bad})
    assert post_import(server, channel, body, outsider.auth).status_code == 403

    response = post_import(server, channel, body, owner.auth)
    assert response.status_code == 200, response.text
    summary = response.json()
    assert (summary["created"], summary["unchanged"], summary["failed"]) == (25, 0, 2)
    refused = {r["filename"]: r for r in summary["results"] if r["status"] >= 400}
    assert set(refused) == {"broken-1.0-0.tar.bz2", "x" * 120 + "-1.0-0.tar.bz2"}
    assert all(r["status"] == 422 and "bzip2" in r["error"] for r in refused.values())

    reference = reference_records()
    for subdir in ("noarch", "linux-64", "osx-64", "win-64"):
        served = repodata(server, channel, subdir)
        for section in ("packages", "packages.conda"):
            for filename, record in served[section].items():
                record.pop("indexed_timestamp")
                assert record == reference[filename][1]
    assert_channel_consistent(server, channel)

    again = post_import(server, channel, body, owner.auth).json()
    assert (again["created"], again["unchanged"], again["failed"]) == (0, 25, 2)


def test_a_truncated_import_keeps_what_arrived_whole(server, owner, channel):
    body = channel_tar()
    cut = body[: len(body) // 2]
    response = post_import(server, channel, cut, owner.auth)
    assert response.status_code == 400
    answer = response.json()
    assert "ends in the middle" in answer["error"]
    stored = [r for r in answer["results"] if r["status"] == 201]
    assert 0 < len(stored) < 25
    assert_channel_consistent(server, channel)
    assert not [k for k in server.r2_keys() if k.startswith(f".staging/{channel}/")]


def test_garbage_is_not_a_tar(server, owner, channel):
    response = post_import(server, channel, b"\x01" * 2048, owner.auth)
    assert response.status_code == 400
    assert "not a tar stream" in response.json()["error"]


def test_admin_command_imports_a_directory(server, make_user, channel, tmp_path):
    admin = make_user(admin=True)
    for path in sorted(PACKAGES.iterdir())[:6]:
        subdir = reference_records()[path.name][0]
        (tmp_path / subdir).mkdir(exist_ok=True)
        shutil.copy(path, tmp_path / subdir / path.name)
    (tmp_path / "noarch" / "repodata.json").write_text(json.dumps({}))
    result = server.admin("import", channel, str(tmp_path), "--url", server.url, env={"CONDAFLARE_API_KEY": admin.key})
    assert (result["created"], result["failed"]) == (6, 0)
    assert_channel_consistent(server, channel)

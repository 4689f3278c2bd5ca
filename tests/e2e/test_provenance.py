"""Who published each file: the user and key name that every path into a channel records beside
the record (upload in both forms, import), replaced by a forced replacement and kept by a retry,
by a rebuild and by the check's repair; shown to the channel's readers by the browse API, and
never served in repodata.json, its .zst, run_exports.json or the shards. (The other upload
protocols: test_publishers.py; the damaged channel's repair: test_check.py; the package page:
test_web.py.)"""

from artifacts import get, shard_index, shard_url, unzstd
from conftest import import_tar, post_import, unique, upload_multipart, upload_raw
from pkgbuild import build_conda, build_tar_bz2

# A key name is free text: it comes back exactly as it was given.
KEY_NAME = 'release <b>bot</b> "ci"'


def named_key(server, user, name: str) -> dict[str, str]:
    """A new key of `user` with that name, as request headers."""
    key = server.admin("key", "create", user.name, "--name", name)["key"]
    return {"Authorization": f"Bearer {key}"}


def publishers(server, channel: str, name: str, key: str | None = None) -> dict[str, dict | None]:
    """filename -> provenance of every file of `name`, as the browse API answers them."""
    answer = server.api("GET", f"channels/{channel}/packages/{name}", key)
    assert answer.status_code == 200, answer.text
    return {record["filename"]: record["provenance"] for record in answer.json()["records"]}


def by(user, key_name: str) -> dict:
    return {"user": user.name, "key": key_name}


def test_an_upload_records_the_user_and_the_key_name(server, owner, channel):
    auth = named_key(server, owner, KEY_NAME)
    raw_name, raw = build_tar_bz2("published", version="1.0")
    form_name, form = build_conda("published", version="2.0")
    assert upload_raw(server, channel, raw_name, raw, headers=auth).status_code == 201
    assert upload_multipart(server, channel, form_name, form, headers=auth).status_code == 201
    assert publishers(server, channel, "published") == {form_name: by(owner, KEY_NAME), raw_name: by(owner, KEY_NAME)}


def test_a_private_channels_publishers_are_shown_to_its_readers_only(server, owner, make_user):
    member, outsider = make_user(), make_user()
    private = unique("private")
    server.admin("channel", "create", private, "--owner", owner.name, "--private")
    server.admin("member", "add", private, member.name, "--role", "member")
    filename, data = build_tar_bz2("secretive")
    assert upload_raw(server, private, filename, data, headers=named_key(server, owner, "vault")).status_code == 201
    assert publishers(server, private, "secretive", member.key) == {filename: by(owner, "vault")}
    for key in (None, outsider.key):
        hidden = server.api("GET", f"channels/{private}/packages/secretive", key)
        assert hidden.status_code == 404
        assert b"vault" not in hidden.content and owner.name.encode() not in hidden.content


def test_an_import_records_the_importing_key(server, owner, channel):
    packages = dict([build_tar_bz2("imported", version=v) for v in ("1.0", "1.1")] + [build_tar_bz2("imported", version="1.0", subdir="linux-64", build="h1_0")])
    answer = post_import(server, channel, import_tar(packages), named_key(server, owner, "migration"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["created"] == 3
    assert publishers(server, channel, "imported") == {filename: by(owner, "migration") for filename in packages}
    # Importing the same bytes again, with another key, changes no file and so no publisher.
    again = post_import(server, channel, import_tar(packages), named_key(server, owner, "second import"))
    assert again.json()["unchanged"] == 3
    assert publishers(server, channel, "imported") == {filename: by(owner, "migration") for filename in packages}


def test_a_forced_replacement_is_its_publishers_and_a_retry_keeps_the_original(server, owner, make_user, channel):
    colleague = make_user()
    server.admin("member", "add", channel, colleague.name, "--role", "owner")
    first = named_key(server, owner, "laptop")
    second = named_key(server, colleague, "workstation")
    filename, original = build_tar_bz2("replaced", files={"share/replaced.txt": b"first"})
    same_name, other = build_tar_bz2("replaced", files={"share/replaced.txt": b"second"})
    assert filename == same_name and original != other
    assert upload_raw(server, channel, filename, original, headers=first).status_code == 201
    assert publishers(server, channel, "replaced") == {filename: by(owner, "laptop")}

    # Other bytes without ?force are refused, and the publisher stays.
    assert upload_raw(server, channel, filename, other, headers=second).status_code == 409
    assert publishers(server, channel, "replaced") == {filename: by(owner, "laptop")}
    replaced = upload_raw(server, channel, filename, other, headers=second, params={"force": "true"})
    assert replaced.status_code == 201, replaced.text
    assert publishers(server, channel, "replaced") == {filename: by(colleague, "workstation")}

    # The same bytes again, forced or not, change nothing: the file stays the colleague's.
    for params in (None, {"force": "true"}):
        retry = upload_raw(server, channel, filename, other, headers=first, params=params)
        assert retry.status_code == 200, retry.text
        assert publishers(server, channel, "replaced") == {filename: by(colleague, "workstation")}


def test_a_rebuild_and_a_repair_keep_every_publisher(server, owner, make_user, channel):
    admin = make_user(admin=True)
    files = [build_tar_bz2("kept", version="1.0"), build_tar_bz2("kept", version="2.0", subdir="linux-64", build="h1_0")]
    auth = named_key(server, owner, "kept key")
    for filename, data in files:
        assert upload_raw(server, channel, filename, data, headers=auth).status_code == 201
    expected = {filename: by(owner, "kept key") for filename, _ in files}
    rebuilt = server.api("POST", f"channels/{channel}/rebuild", admin.key)
    assert rebuilt.status_code == 200, rebuilt.text
    assert sorted(rebuilt.json()["rebuilt"]) == ["linux-64", "noarch"]
    assert publishers(server, channel, "kept") == expected
    repaired = server.api("POST", f"channels/{channel}/check", admin.key, params={"repair": "true"})
    assert repaired.status_code == 200, repaired.text
    assert repaired.json()["consistent"], repaired.json()
    assert publishers(server, channel, "kept") == expected


def test_the_publisher_is_never_served_to_clients(server, owner, make_user, channel):
    publisher_name = unique("publisher")
    server.admin("user", "create", publisher_name)
    server.admin("member", "add", channel, publisher_name, "--role", "owner")
    key_name = unique("secret-key-name")
    key = server.admin("key", "create", publisher_name, "--name", key_name)["key"]
    auth = {"Authorization": f"Bearer {key}"}
    filename, data = build_tar_bz2("unserved")
    assert upload_raw(server, channel, filename, data, headers=auth).status_code == 201
    assert publishers(server, channel, "unserved") == {filename: {"user": publisher_name, "key": key_name}}

    served = {}
    for file in ("repodata.json", "run_exports.json"):
        served[file] = get(server, f"{channel}/noarch/{file}").content
    served["repodata.json.zst"] = unzstd(get(server, f"{channel}/noarch/repodata.json.zst").content)
    index = shard_index(server, channel, "noarch")
    served["shard"] = unzstd(get(server, shard_url(channel, "noarch", index["shards"]["unserved"])).content)
    # The record is there; who published it is not.
    assert filename.encode() in served["repodata.json"] and b"unserved" in served["shard"]
    for file, body in served.items():
        for secret in (publisher_name, key_name, "provenance"):
            assert secret.encode() not in body, (file, secret)
    # Nor is it in what the upload answers: the stored record.
    retry = upload_raw(server, channel, filename, data, headers=auth)
    assert retry.status_code == 200
    assert key_name not in retry.text and "provenance" not in retry.text

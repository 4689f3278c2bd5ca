"""The management API and the matching admin commands."""

import sqlite3
import threading
import time

import pytest
import requests

from conftest import PACKAGES, unique, upload_raw
from harness import AdminError


def test_whoami(server, owner):
    response = server.api("GET", "whoami", owner.key)
    assert response.status_code == 200
    body = response.json()
    assert body["user"] == owner.name
    assert body["is_admin"] is False
    assert body["key"]["id"] == owner.key_id
    assert owner.key not in response.text
    assert server.api("GET", "whoami").status_code == 401


def test_channel_lifecycle(server, owner, outsider):
    name = unique("api-chan")
    created = server.api("POST", "channels", owner.key, json={"name": name})
    assert created.status_code == 201
    assert created.json()["private"] is False
    assert server.api("POST", "channels", owner.key, json={"name": name}).status_code == 409
    assert server.api("GET", f"channels/{name}", owner.key).json()["your_role"] == "owner"
    assert name in [c["name"] for c in server.api("GET", "channels").json()["channels"]]

    # Made private through the API: refused at once, and no longer listed for others.
    patched = server.api("PATCH", f"channels/{name}", owner.key, json={"private": True})
    assert patched.status_code == 200
    assert requests.get(f"{server.url}/{name}/noarch/repodata.json", timeout=10).status_code == 401
    assert name not in [c["name"] for c in server.api("GET", "channels", outsider.key).json()["channels"]]
    # To an outsider the private channel is not there.
    assert server.api("PATCH", f"channels/{name}", outsider.key, json={"private": False}).status_code == 404
    assert server.api("PATCH", f"channels/{name}", owner.key, json={"private": "no"}).status_code == 400
    assert server.api("PATCH", f"channels/{name}", owner.key, json={"private": False}).status_code == 200
    assert requests.get(f"{server.url}/{name}/noarch/repodata.json", timeout=10).status_code == 200


def test_bad_channel_names(server, owner):
    for bad in ("Upper", "../etc", "a/b", "api", ".hidden", "x" * 65, ""):
        response = server.api("POST", "channels", owner.key, json={"name": bad})
        assert response.status_code == 400, bad
        assert "channel name" in response.json()["error"]
    assert server.api("POST", "channels", owner.key, data="{not json").status_code == 400
    assert server.api("POST", "channels", json={"name": unique("anon")}).status_code == 401
    assert server.api("GET", "channels/UPPER/members", owner.key).status_code == 400


def test_members(server, owner, make_user):
    name = unique("members")
    server.api("POST", "channels", owner.key, json={"name": name, "private": True})
    friend = make_user()
    url = f"{server.url}/{name}/noarch/repodata.json"
    assert requests.get(url, headers=friend.auth, timeout=10).status_code == 404

    assert server.api("PUT", f"channels/{name}/members/{friend.name}", owner.key, json={"role": "member"}).status_code == 200
    assert requests.get(url, headers=friend.auth, timeout=10).status_code == 200
    members = server.api("GET", f"channels/{name}/members", owner.key).json()["members"]
    assert {"user": friend.name, "role": "member"} in members
    assert server.api("GET", f"channels/{name}/members", friend.key).status_code == 403

    assert server.api("PUT", f"channels/{name}/members/nobody-here", owner.key, json={"role": "member"}).status_code == 404
    assert server.api("PUT", f"channels/{name}/members/{friend.name}", owner.key, json={"role": "boss"}).status_code == 400
    # The last owner can be neither demoted nor removed.
    assert server.api("PUT", f"channels/{name}/members/{owner.name}", owner.key, json={"role": "member"}).status_code == 409
    assert server.api("DELETE", f"channels/{name}/members/{owner.name}", owner.key).status_code == 409
    assert server.api("PUT", f"channels/{name}/members/{owner.name}", owner.key, json={"role": "contributor"}).status_code == 409

    # A contributor publishes but does not manage.
    assert server.api("PUT", f"channels/{name}/members/{friend.name}", owner.key, json={"role": "contributor"}).status_code == 200
    assert {"user": friend.name, "role": "contributor"} in server.api("GET", f"channels/{name}/members", owner.key).json()["members"]
    assert server.api("GET", f"channels/{name}", friend.key).json()["your_role"] == "contributor"
    package = PACKAGES / "flask-0.11.1-py_0.tar.bz2"
    assert upload_raw(server, name, package.name, package.read_bytes(), headers=friend.auth).status_code == 201
    assert server.api("GET", f"channels/{name}/members", friend.key).status_code == 403
    assert server.api("PATCH", f"channels/{name}", friend.key, json={"private": False}).status_code == 403
    assert server.api("PUT", f"channels/{name}/members/{friend.name}", friend.key, json={"role": "owner"}).status_code == 403

    assert server.api("DELETE", f"channels/{name}/members/{friend.name}", owner.key).status_code == 200
    assert requests.get(url, headers=friend.auth, timeout=10).status_code == 404
    assert server.api("DELETE", f"channels/{name}/members/{friend.name}", owner.key).status_code == 404


def test_a_channel_limited_key_tells_of_no_other_channel(server, make_user):
    """whoami and the key list of a key limited to some channels name none of the user's others."""
    user = make_user()
    shown, other = unique("shown"), unique("secret")
    for channel in (shown, other):
        server.admin("channel", "create", channel, "--owner", user.name, "--private")
    server.api("POST", "keys", user.key, json={"name": "elsewhere", "channels": [other]}).raise_for_status()
    limited = server.api("POST", "keys", user.key, json={"name": "limited", "channels": [shown]}).json()

    whoami = server.api("GET", "whoami", limited["key"])
    assert whoami.json()["channels"] == [{"channel": shown, "role": "owner"}]
    keys = server.api("GET", "keys", limited["key"])
    assert [k["name"] for k in keys.json()["keys"]] == ["limited"]
    for answer in (whoami, keys):
        assert other not in answer.text
        assert answer.headers["Cache-Control"] == "no-store"
    # The key without limits sees all of them.
    assert {m["channel"] for m in server.api("GET", "whoami", user.key).json()["channels"]} == {shown, other}
    assert [k["name"] for k in server.api("GET", "keys", user.key).json()["keys"]] == ["tests", "elsewhere", "limited"]


def test_answers_with_secrets_or_private_data_are_never_cached(server, make_user):
    user = make_user()
    channel = unique("nostore")
    server.admin("channel", "create", channel, "--owner", user.name, "--private")
    created = server.api("POST", "keys", user.key, json={"name": "shown once"})
    assert created.status_code == 201 and created.json()["key"].startswith("cfk-")
    answers = {
        "new key": created,
        "whoami": server.api("GET", "whoami", user.key),
        "keys": server.api("GET", "keys", user.key),
        "channel": server.api("GET", f"channels/{channel}", user.key),
        "members": server.api("GET", f"channels/{channel}/members", user.key),
        "packages": server.api("GET", f"channels/{channel}/packages", user.key),
        "channels": server.api("GET", "channels", user.key),
        "an error": server.api("GET", f"channels/{channel}/packages/none", user.key),
    }
    assert {what: (a.status_code < 500, a.headers.get("Cache-Control")) for what, a in answers.items()} == dict.fromkeys(
        answers, (True, "no-store")
    )


def test_keys(server, make_user):
    user = make_user()
    created = server.api("POST", "keys", user.key, json={"name": "ci", "read_only": True})
    assert created.status_code == 201
    new_key = created.json()["key"]
    assert new_key.startswith("cfk-") and len(new_key) >= 4 + 43
    info = created.json()["info"]
    assert info["read_only"] is True

    listed = server.api("GET", "keys", user.key)
    assert [k["name"] for k in listed.json()["keys"]] == ["tests", "ci"]
    assert new_key not in listed.text and user.key not in listed.text

    # A limited key can neither mint keys nor create channels.
    assert server.api("POST", "keys", new_key, json={"name": "escalate"}).status_code == 403
    assert server.api("POST", "channels", new_key, json={"name": unique("nope")}).status_code == 403
    assert server.api("POST", "keys", user.key, json={"expires_at": 1}).status_code == 400
    assert server.api("POST", "keys", user.key, json={"channels": ["../x"]}).status_code == 400

    other = make_user()
    assert server.api("DELETE", f"keys/{info['id']}", other.key).status_code == 404
    assert server.api("GET", "whoami", new_key).status_code == 200
    assert server.api("DELETE", f"keys/{info['id']}", user.key).status_code == 200
    assert server.api("GET", "whoami", new_key).status_code == 401
    assert server.api("DELETE", f"keys/{info['id']}", user.key).status_code == 404


def test_deleting_a_channel_removes_objects_and_index(server, owner):
    name = unique("doomed")
    server.api("POST", "channels", owner.key, json={"name": name})
    for filename in ("zlib-1.2.11-h7b6447c_3.conda", "flask-0.11.1-py_0.tar.bz2"):
        assert upload_raw(server, name, filename, (PACKAGES / filename).read_bytes(), headers=owner.auth).status_code == 201
    assert [k for k in server.r2_keys() if k.startswith(f"{name}/")]

    deleted = server.api("DELETE", f"channels/{name}", owner.key)
    assert deleted.status_code == 200
    # Per subdir: the package, repodata.json, its .zst, run_exports.json, the shard index, a shard.
    assert deleted.json()["objects_removed"] == 2 * 6
    assert not [k for k in server.r2_keys() if k.startswith(f"{name}/")]
    # Gone: a client is challenged for a key, as for any channel it cannot see; with one, 404.
    assert requests.get(f"{server.url}/{name}/noarch/repodata.json", timeout=10).status_code == 401
    assert requests.get(f"{server.url}/{name}/noarch/repodata.json", headers=owner.auth, timeout=10).status_code == 404
    assert server.api("DELETE", f"channels/{name}", owner.key).status_code == 404

    # A new channel of the same name starts empty.
    server.api("POST", "channels", owner.key, json={"name": name})
    assert requests.get(f"{server.url}/{name}/linux-64/repodata.json", timeout=10).status_code == 404
    fly = "fly-2.5.2-0.tar.bz2"
    assert upload_raw(server, name, fly, (PACKAGES / fly).read_bytes(), headers=owner.auth).status_code == 201
    osx = requests.get(f"{server.url}/{name}/osx-64/repodata.json", timeout=10).json()
    assert list(osx["packages"]) == [fly]


def test_admin_commands_for_visibility_and_deletion(server, make_user):
    admin = make_user(admin=True)
    name = unique("cli")
    server.admin("channel", "create", name, "--owner", admin.name)
    assert server.admin("channel", "visibility", name, "private") == {"name": name, "private": True}
    assert {"name": name, "private": 1} in [{"name": c["name"], "private": c["private"]} for c in server.admin("channel", "list")]
    result = server.admin("channel", "delete", name, "--url", server.url, env={"CONDAFLARE_API_KEY": admin.key})
    assert result["deleted"] == name
    assert name not in [c["name"] for c in server.admin("channel", "list")]
    listed = server.admin("key", "list", admin.name)
    assert [k["name"] for k in listed] == ["tests"]
    assert all("key_hash" not in k for k in listed)


def admin_refusal(server, *args: str) -> AdminError:
    with pytest.raises(AdminError) as refused:
        server.admin(*args)
    return refused.value


def test_admin_command_keeps_a_channel_owner(server):
    """The admin command applies the API's rule: a channel keeps at least one owner."""
    first, second, name = unique("first"), unique("second"), unique("kept")
    for user in (first, second):
        server.admin("user", "create", user)
    server.admin("channel", "create", name, "--owner", first)
    last_owner = f"error: {first} is the last owner of '{name}'; a channel must keep at least one owner"
    for args in (("member", "remove", name, first), ("member", "add", name, first, "--role", "member")):
        refused = admin_refusal(server, *args)
        assert (refused.code, refused.message.splitlines()[-1]) == (1, last_owner), args
    assert server.admin("member", "list", name) == [{"user": first, "role": "owner"}]

    # Someone who is not a member is an argument error, as before.
    refused = admin_refusal(server, "member", "remove", name, second)
    assert (refused.code, refused.message.splitlines()[-1]) == (2, f"error: {second} is not a member of '{name}'")

    # With a second owner, the first may step down, then leave; the second is then the last.
    server.admin("member", "add", name, second, "--role", "owner")
    assert server.admin("member", "add", name, first, "--role", "member") == {"channel": name, "user": first, "role": "member"}
    assert server.admin("member", "remove", name, first) == {"channel": name, "user": first, "removed": True}
    assert admin_refusal(server, "member", "remove", name, second).code == 1
    assert server.admin("member", "list", name) == [{"user": second, "role": "owner"}]


def test_requests_that_meet_the_admin_commands_write_lock_wait_for_it(server, make_user):
    """`npm run admin` writes the local D1 file beside the running server, holding SQLite's
    write lock for the length of its transaction. A request whose D1 statements meet the lock
    (local D1 fails them at once) waits for it and sees the change, reading or writing."""
    user = make_user()  # A key not yet verified: its first use reads D1.
    name = unique("locked")
    (d1,) = [db for db in (server.state / "v3" / "d1" / "miniflare-D1DatabaseObject").glob("*.sqlite") if db.name != "metadata.sqlite"]
    answers = {}

    def call(label, method, path, **kwargs):
        answers[label] = server.api(method, path, user.key, **kwargs)

    lock = sqlite3.connect(d1, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        calls = [
            threading.Thread(target=call, args=("whoami", "GET", "whoami")),
            threading.Thread(target=call, args=("create", "POST", "channels"), kwargs={"json": {"name": name}}),
        ]
        for thread in calls:
            thread.start()
        time.sleep(0.2)
    finally:
        lock.execute("COMMIT")
        lock.close()
    for thread in calls:
        thread.join()
    assert answers["whoami"].status_code == 200, answers["whoami"].text
    assert answers["whoami"].json()["user"] == user.name
    assert answers["create"].status_code == 201, answers["create"].text
    assert [c["name"] for c in server.admin("channel", "list")].count(name) == 1

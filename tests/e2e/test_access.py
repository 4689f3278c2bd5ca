"""The access policy, cell by cell: every kind of caller, on a public and a private channel,
for every kind of request, in every form clients send a key."""

import base64
import hashlib
import time

import msgpack
import pytest
import requests

from artifacts import unzstd
from conftest import AUTH_CACHE_SECONDS, PACKAGES, unique, upload_raw

PACKAGE = PACKAGES / "flask-0.11.1-py_0.tar.bz2"
SECRET_MARKERS = (b"flask", b"werkzeug")

# Expected status per caller: (read, on public) (read, on private), upload, delete, manage.
# A read is GET and HEAD of repodata.json, GET of a package file, the shard index, a shard,
# run_exports.json and repodata.json.zst. Upload re-sends bytes the channel already has (200
# when allowed); delete names a missing file (404 when allowed).
EXPECTED = {
    "anonymous": (200, 401, 401, 401, 401),
    "invalid": (401, 401, 401, 401, 401),
    "expired": (401, 401, 401, 401, 401),
    "revoked": (401, 401, 401, 401, 401),
    "member": (200, 200, 403, 403, 403),
    "owner": (200, 200, 200, 404, 200),
    "read-only key": (200, 200, 403, 403, 403),
    "key for another channel": (200, 403, 403, 403, 403),
    "site admin": (200, 200, 200, 404, 200),
}
FORMS = ["bearer", "token-in-path", "basic", "x-api-key"]


@pytest.fixture(scope="module")
def world(server, make_user):
    owner, member, admin = make_user(), make_user(), make_user(admin=True)
    public, private = unique("pub"), unique("priv")
    server.admin("channel", "create", public, "--owner", owner.name)
    server.admin("channel", "create", private, "--owner", owner.name, "--private")
    for channel in (public, private):
        server.admin("member", "add", channel, member.name, "--role", "member")
        assert upload_raw(server, channel, PACKAGE.name, PACKAGE.read_bytes(), headers=owner.auth).status_code == 201

    read_only = server.admin("key", "create", owner.name, "--read-only", "--channel", public, "--channel", private)
    elsewhere = server.admin("key", "create", owner.name, "--channel", unique("elsewhere"))
    revoked = server.admin("key", "create", owner.name)
    assert server.api("DELETE", f"keys/{revoked['id']}", owner.key).status_code == 200
    expiring = server.api("POST", "keys", owner.key, json={"name": "short", "expires_at": int(time.time() * 1000) + 1500})
    assert expiring.status_code == 201
    time.sleep(2)

    keys = {
        "anonymous": None,
        "invalid": "cfk_" + "A" * 43,
        "expired": expiring.json()["key"],
        "revoked": revoked["key"],
        "member": member.key,
        "owner": owner.key,
        "read-only key": read_only["key"],
        "key for another channel": elsewhere["key"],
        "site admin": admin.key,
    }
    # The shard of flask in each channel, looked up with the owner's key.
    shards = {}
    for channel in (public, private):
        index = requests.get(f"{server.url}/{channel}/noarch/repodata_shards.msgpack.zst", headers=owner.auth, timeout=10)
        assert index.status_code == 200
        shards[channel] = msgpack.unpackb(unzstd(index.content))["shards"]["flask"].hex()
    return {"public": public, "private": private, "keys": keys, "shards": shards}


def send(server, method, path, key, form, **kwargs):
    headers = kwargs.pop("headers", {})
    url = server.url + path
    if key is not None:
        if form == "bearer":
            headers["Authorization"] = f"Bearer {key}"
        elif form == "token-in-path":
            url = f"{server.url}/t/{key}{path}"
        elif form == "basic":
            headers["Authorization"] = "Basic " + base64.b64encode(f"anyone:{key}".encode()).decode()
        else:
            headers["X-API-Key"] = key
    return requests.request(method, url, headers=headers, timeout=30, **kwargs)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("who", list(EXPECTED))
def test_auth_matrix(server, world, who, form):
    key = world["keys"][who]
    read_public, read_private, upload, delete, manage = EXPECTED[who]
    data = PACKAGE.read_bytes()
    wrong = []
    for visibility in ("public", "private"):
        channel = world[visibility]
        read = read_public if visibility == "public" else read_private
        cells = [
            ("GET repodata", "GET", f"/{channel}/noarch/repodata.json", {}, read),
            ("HEAD repodata", "HEAD", f"/{channel}/noarch/repodata.json", {}, read),
            ("GET package", "GET", f"/{channel}/noarch/{PACKAGE.name}", {}, read),
            ("GET shard index", "GET", f"/{channel}/noarch/repodata_shards.msgpack.zst", {}, read),
            ("GET shard", "GET", f"/{channel}/noarch/shards/{world['shards'][channel]}.msgpack.zst", {}, read),
            ("GET run_exports.json", "GET", f"/{channel}/noarch/run_exports.json", {}, read),
            ("GET repodata.json.zst", "GET", f"/{channel}/noarch/repodata.json.zst", {}, read),
            (
                "upload",
                "POST",
                f"/api/v1/upload/{channel}",
                {"data": data, "headers": {"X-File-Name": PACKAGE.name, "X-File-SHA256": hashlib.sha256(data).hexdigest()}},
                upload,
            ),
            ("delete", "DELETE", f"/api/v1/delete/{channel}/noarch/absent-1.0-0.tar.bz2", {}, delete),
            ("manage members", "GET", f"/api/v1/channels/{channel}/members", {}, manage),
        ]
        for label, method, path, kwargs, expected in cells:
            response = send(server, method, path, key, form, **kwargs)
            if response.status_code != expected:
                wrong.append(f"{visibility} {label}: {response.status_code} (expected {expected}) {response.text[:120]}")
            if expected in (401, 403) and visibility == "private":
                leaked = [m for m in SECRET_MARKERS if m in response.content]
                if leaked or data[:64] in response.content:
                    wrong.append(f"{visibility} {label}: private content in a refusal")
            if response.status_code == 401 and response.headers.get("WWW-Authenticate") != 'Bearer realm="condaflare"':
                wrong.append(f"{visibility} {label}: 401 without WWW-Authenticate")
            if key and key in response.text:
                wrong.append(f"{visibility} {label}: the key is echoed")
    assert wrong == []


def test_changes_in_d1_reach_the_worker_within_the_cache_bound(server, make_user):
    """Keys revoked and channels made private with the admin command (straight in D1) take
    effect within AUTH_CACHE_SECONDS; changes through the API take effect at once."""
    user = make_user()
    channel = unique("bound")
    server.admin("channel", "create", channel, "--owner", user.name)
    url = f"{server.url}/{channel}/noarch/repodata.json"
    assert server.api("GET", "whoami", user.key).status_code == 200
    assert requests.get(url, timeout=10).status_code == 200

    server.admin("key", "revoke", str(user.key_id))
    server.admin("channel", "visibility", channel, "private")
    started = time.time()
    while server.api("GET", "whoami", user.key).status_code == 200 or requests.get(url, timeout=10).status_code == 200:
        assert time.time() - started < AUTH_CACHE_SECONDS + 2, "change not seen within the bound"
        time.sleep(0.2)
    assert server.api("GET", "whoami", user.key).status_code == 401
    assert requests.get(url, timeout=10).status_code == 401

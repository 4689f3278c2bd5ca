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

# Expected status per caller and channel: (read, upload, delete, manage). A read is GET and
# HEAD of repodata.json, GET of a package file, the shard index, a shard, run_exports.json and
# repodata.json.zst. Upload re-sends bytes the channel already has (200 when allowed); delete
# names a missing file (404 when allowed). To a signed-in caller who may not read it, a private
# channel is not there (404, as a missing one); an anonymous one is challenged (401).
EXPECTED = {
    "anonymous": {"public": (200, 401, 401, 401), "private": (401, 401, 401, 401)},
    "invalid": {"public": (401, 401, 401, 401), "private": (401, 401, 401, 401)},
    "expired": {"public": (401, 401, 401, 401), "private": (401, 401, 401, 401)},
    "revoked": {"public": (401, 401, 401, 401), "private": (401, 401, 401, 401)},
    "outsider": {"public": (200, 403, 403, 403), "private": (404, 404, 404, 404)},
    "member": {"public": (200, 403, 403, 403), "private": (200, 403, 403, 403)},
    "contributor": {"public": (200, 200, 404, 403), "private": (200, 200, 404, 403)},
    "owner": {"public": (200, 200, 404, 200), "private": (200, 200, 404, 200)},
    "read-only key": {"public": (200, 403, 403, 403), "private": (200, 403, 403, 403)},
    "key for another channel": {"public": (200, 403, 403, 403), "private": (404, 404, 404, 404)},
    "site admin": {"public": (200, 200, 404, 200), "private": (200, 200, 404, 200)},
}
FORMS = ["bearer", "token-in-path", "basic", "x-api-key"]


@pytest.fixture(scope="module")
def world(server, make_user):
    owner, member, contributor, outsider = make_user(), make_user(), make_user(), make_user()
    admin = make_user(admin=True)
    public, private = unique("pub"), unique("priv")
    server.admin("channel", "create", public, "--owner", owner.name)
    server.admin("channel", "create", private, "--owner", owner.name, "--private")
    for channel in (public, private):
        server.admin("member", "add", channel, member.name, "--role", "member")
        server.admin("member", "add", channel, contributor.name, "--role", "contributor")
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
        "outsider": outsider.key,
        "member": member.key,
        "contributor": contributor.key,
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
    data = PACKAGE.read_bytes()
    wrong = []
    for visibility in ("public", "private"):
        channel = world[visibility]
        read, upload, delete, manage = EXPECTED[who][visibility]
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
            if expected in (401, 403, 404) and visibility == "private":
                leaked = [m for m in SECRET_MARKERS if m in response.content]
                if leaked or data[:64] in response.content:
                    wrong.append(f"{visibility} {label}: private content in a refusal")
            if response.status_code == 401 and response.headers.get("WWW-Authenticate") != 'Bearer realm="condaflare"':
                wrong.append(f"{visibility} {label}: 401 without WWW-Authenticate")
            if key and key in response.text:
                wrong.append(f"{visibility} {label}: the key is echoed")
    assert wrong == []


@pytest.mark.parametrize("who", list(EXPECTED))
def test_channel_details_say_what_the_policy_allows(server, world, who):
    """The web app shows upload and management controls by `you_may` in a channel's details:
    it is what the same caller's upload and management requests get (the matrix above)."""
    key = world["keys"][who]
    for visibility in ("public", "private"):
        read, upload, _, manage = EXPECTED[who][visibility]
        answer = send(server, "GET", f"/api/v1/channels/{world[visibility]}", key, "bearer")
        if read != 200:
            assert answer.status_code in (401, 404), (visibility, answer.status_code)
            continue
        assert answer.status_code == 200, (visibility, answer.text)
        assert answer.json()["you_may"] == {"write": upload == 200, "manage": manage == 200}, visibility


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


# The API routes that read a channel, which anonymous callers may use on a public one: to them a
# hidden channel is "not found". Every other route asks an anonymous caller for a key first.
API_READS = ("/api/v1/channels/<c>", "/api/v1/channels/<c>/packages", "/api/v1/channels/<c>/packages/flask", "/api/anaconda/user/<c>", "/api/anaconda/package/<c>/flask", "/api/anaconda/dist/<c>/flask/0.11.1/noarch/flask-0.11.1-py_0.tar.bz2")


def routes_naming(channel: str, shard: str) -> list[tuple[str, str, dict]]:
    """Every route that names a channel, as (method, path, request arguments)."""
    package = PACKAGE.name
    data = PACKAGE.read_bytes()
    file_headers = {"X-File-Name": package, "X-File-SHA256": hashlib.sha256(data).hexdigest()}
    return [
        ("GET", f"/{channel}/noarch/repodata.json", {}),
        ("HEAD", f"/{channel}/noarch/repodata.json", {}),
        ("GET", f"/{channel}/noarch/{package}", {}),
        ("GET", f"/{channel}/noarch/{package}.v0.sigs", {}),
        ("GET", f"/{channel}/noarch/repodata_shards.msgpack.zst", {}),
        ("GET", f"/{channel}/noarch/shards/{shard}.msgpack.zst", {}),
        ("GET", f"/api/v1/channels/{channel}", {}),
        ("PATCH", f"/api/v1/channels/{channel}", {"json": {"private": False}}),
        ("DELETE", f"/api/v1/channels/{channel}", {}),
        ("GET", f"/api/v1/channels/{channel}/members", {}),
        ("PUT", f"/api/v1/channels/{channel}/members/nobody", {"json": {"role": "member"}}),
        ("GET", f"/api/v1/channels/{channel}/packages", {}),
        ("GET", f"/api/v1/channels/{channel}/packages/flask", {}),
        ("GET", f"/api/v1/channels/{channel}/stats", {}),
        ("POST", f"/api/v1/channels/{channel}/rebuild", {}),
        ("POST", f"/api/v1/channels/{channel}/check", {}),
        ("POST", f"/api/v1/upload/{channel}", {"data": data, "headers": file_headers}),
        ("DELETE", f"/api/v1/delete/{channel}/noarch/{package}", {}),
        ("POST", f"/api/v1/reindex/{channel}/noarch", {}),
        ("POST", f"/api/channels/{channel}/upload/{package}", {"data": data}),
        ("PUT", f"/{channel}/noarch/{package}", {"data": data}),
        ("GET", f"/api/anaconda/user/{channel}", {}),
        ("GET", f"/api/anaconda/package/{channel}/flask", {}),
        ("GET", f"/api/anaconda/dist/{channel}/flask/0.11.1/noarch/{package}", {}),
        ("POST", f"/api/anaconda/stage/{channel}/flask/0.11.1/noarch/{package}", {"json": {"sha256": "0" * 64, "channels": ["main"]}}),
    ]


@pytest.mark.parametrize("who", ["anonymous", "outsider", "key for another channel"])
def test_a_private_channel_and_a_missing_one_answer_alike(server, world, who):
    """To whoever may not read it, a private channel is indistinguishable from a channel that
    does not exist, on every route: the same status, the same body, no name in it."""
    key = world["keys"][who]
    missing = unique("missing")
    private = world["private"]
    shard = world["shards"][private]
    wrong = []
    for (method, path, kwargs), (_, missing_path, _) in zip(routes_naming(private, shard), routes_naming(missing, shard)):
        seen = send(server, method, path, key, "bearer", **kwargs)
        unseen = send(server, method, missing_path, key, "bearer", **kwargs)
        label = f"{method} {path.replace(private, '<c>')}"
        if (seen.status_code, seen.content) != (unseen.status_code, unseen.content):
            wrong.append(f"{label}: {seen.status_code} {seen.text[:100]} vs {unseen.status_code} {unseen.text[:100]}")
        if private in seen.text:
            wrong.append(f"{label}: the answer names the channel")
        asks_for_a_key = key is None and not (method == "GET" and path.replace(private, "<c>") in API_READS)
        expected = {401} if asks_for_a_key else {404}
        if seen.status_code not in expected:
            wrong.append(f"{label}: {seen.status_code}, expected {expected}")
    assert wrong == []
    # The refused changes changed nothing.
    assert requests.get(f"{server.url}/api/v1/channels/{private}", headers={"Authorization": f"Bearer {world['keys']['owner']}"}, timeout=10).json()["private"] is True


def test_a_site_admins_limited_key_is_limited_on_admin_routes(server, make_user):
    """stats, check and rebuild go through the one policy: a read-only key inspects but does not
    repair or rebuild, and a key limited to one channel does nothing on another."""
    admin = make_user(admin=True)
    mine, other = unique("adm-a"), unique("adm-b")
    for channel in (mine, other):
        server.admin("channel", "create", channel, "--owner", admin.name, "--private")
    limited = server.admin("key", "create", admin.name, "--read-only", "--channel", mine)["key"]
    elsewhere = server.admin("key", "create", admin.name, "--channel", mine)["key"]
    calls = {
        "stats": ("GET", "stats", None),
        "check": ("POST", "check", None),
        "repair": ("POST", "check", {"repair": "true"}),
        "rebuild": ("POST", "rebuild", None),
    }

    def status(key, channel, call):
        method, action, params = calls[call]
        return server.api(method, f"channels/{channel}/{action}", key, params=params).status_code

    # On the channel it is limited to: reading the index, yes; changing it, no.
    assert {call: status(limited, mine, call) for call in calls} == {"stats": 200, "check": 200, "repair": 403, "rebuild": 403}
    # On another channel it has no business at all, and that channel is not there for it.
    assert {call: status(limited, other, call) for call in calls} == dict.fromkeys(calls, 404)
    assert {call: status(elsewhere, other, call) for call in calls} == dict.fromkeys(calls, 404)
    # The admin's key without limits does all of it; an owner who is no admin, none of it.
    assert {call: status(admin.key, other, call) for call in calls} == dict.fromkeys(calls, 200)
    owner = make_user()
    server.admin("member", "add", other, owner.name, "--role", "owner")
    assert {call: status(owner.key, other, call) for call in calls} == dict.fromkeys(calls, 403)


def test_the_storage_floor_route_is_not_served(server, make_user):
    """The bench's floor runs as a Worker of its own (bench/floor); the server has no such route."""
    admin = make_user(admin=True)
    answer = requests.post(f"{server.url}/api/v1/debug/put", data=b"x" * 1000, headers=admin.auth, timeout=10)
    assert (answer.status_code, answer.json()["code"]) == (404, "not_found")
    assert not [k for k in server.r2_keys() if k.startswith(".bench/")]

"""Browser sessions: signing in with a key gives an HttpOnly cookie that then authenticates like
the key (with its limits, and never beyond its life), sign-out ends it on the server, and a
state-changing request the cookie authenticates must come from the server's own origin."""

import time

import pytest
import requests

from conftest import PACKAGES, unique, upload_raw

PACKAGE = PACKAGES / "flask-0.11.1-py_0.tar.bz2"
COOKIE = "condaflare_session"
CROSS_SITE = {"code": "forbidden", "error": "cross-site request refused"}


def sign_in(server, key, **kwargs) -> requests.Response:
    return requests.post(f"{server.url}/api/v1/session", json={"key": key}, timeout=30, **kwargs)


def session_of(server, key) -> dict[str, str]:
    """The cookie jar of a browser signed in with `key`."""
    response = sign_in(server, key)
    assert response.status_code == 201, response.text
    return {COOKIE: response.cookies[COOKIE]}


def cookie_attributes(response: requests.Response) -> dict[str, str]:
    """The attributes of the Set-Cookie header, by lowercase name ('' for flags)."""
    header = response.headers["Set-Cookie"]
    parts = [part.strip() for part in header.split(";")]
    attributes = {"value": parts[0].split("=", 1)[1]}
    for part in parts[1:]:
        name, _, value = part.partition("=")
        attributes[name.lower()] = value
    return attributes


def get(server, path, cookies=None, **kwargs) -> requests.Response:
    return requests.get(f"{server.url}{path}", cookies=cookies, timeout=30, **kwargs)


def test_session_lifecycle(server, owner):
    response = sign_in(server, owner.key)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["user"] == owner.name
    assert body["is_admin"] is False
    assert body["key"]["name"] == "tests"
    assert body["key"]["read_only"] is False
    assert body["key"]["channels"] is None
    twelve_hours = 12 * 3600 * 1000
    assert abs(body["expires_at"] - (time.time() * 1000 + twelve_hours)) < 60_000

    attributes = cookie_attributes(response)
    assert len(attributes["value"]) == 43
    assert owner.key not in response.headers["Set-Cookie"]
    assert "httponly" in attributes
    assert attributes["samesite"] == "Strict"
    assert attributes["path"] == "/"
    assert 12 * 3600 - 60 <= int(attributes["max-age"]) <= 12 * 3600
    assert "secure" not in attributes  # plain http: a Secure cookie would never be sent back
    assert response.headers["Cache-Control"] == "no-store"
    cookies = {COOKIE: attributes["value"]}

    current = get(server, "/api/v1/session", cookies)
    assert current.status_code == 200, current.text
    assert current.json()["user"] == owner.name
    assert current.json()["expires_at"] == body["expires_at"]
    whoami = get(server, "/api/v1/whoami", cookies)
    assert whoami.status_code == 200
    assert whoami.json()["user"] == owner.name

    # Sign-out ends the session on the server: the old cookie is worthless, even if kept.
    ended = requests.delete(f"{server.url}/api/v1/session", cookies=cookies, headers={"Origin": server.url}, timeout=30)
    assert ended.status_code == 204
    cleared = cookie_attributes(ended)
    assert cleared["value"] == "" and cleared["max-age"] == "0"
    assert get(server, "/api/v1/session", cookies).status_code == 401
    assert get(server, "/api/v1/whoami", cookies).status_code == 401
    # Signing out again is harmless.
    again = requests.delete(f"{server.url}/api/v1/session", cookies=cookies, timeout=30)
    assert again.status_code == 204


@pytest.mark.parametrize(
    "body",
    [{"key": "cfk_" + "A" * 43}, {"key": ""}, {"key": "not a key"}],
)
def test_a_wrong_key_starts_no_session(server, body):
    response = requests.post(f"{server.url}/api/v1/session", json=body, timeout=30)
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_key"
    assert "Set-Cookie" not in response.headers


def test_a_malformed_body_is_a_400(server):
    response = requests.post(f"{server.url}/api/v1/session", data="key=abc", timeout=30)
    assert response.status_code == 400
    assert response.json()["code"] == "bad_request"


def test_no_session_and_forged_cookies(server, owner):
    assert get(server, "/api/v1/session").status_code == 401
    private = unique("priv")
    server.admin("channel", "create", private, "--owner", owner.name, "--private")
    for forged in ["A" * 43, "x", owner.key, "' OR '1'='1"]:
        cookies = {COOKIE: forged}
        answer = get(server, "/api/v1/session", cookies)
        assert answer.status_code == 401
        assert answer.json()["code"] == "unauthenticated"
        assert get(server, "/api/v1/whoami", cookies).status_code == 401
        # A dead cookie counts as none: public reads still work, private ones need signing in.
        assert get(server, "/api/v1/channels", cookies).status_code == 200
        assert get(server, f"/api/v1/channels/{private}", cookies).status_code == 404
        assert get(server, f"/{private}/noarch/repodata.json", cookies).status_code == 401


def test_the_key_wins_over_the_cookie(server, owner, outsider):
    cookies = session_of(server, owner.key)
    with_key = get(server, "/api/v1/whoami", cookies, headers=outsider.auth)
    assert with_key.json()["user"] == outsider.name
    bad_key = get(server, "/api/v1/whoami", cookies, headers={"Authorization": "Bearer cfk_" + "B" * 43})
    assert bad_key.status_code == 401


def test_cookie_changes_need_the_own_origin(server, owner):
    cookies = session_of(server, owner.key)
    for headers in ({}, {"Origin": "https://evil.example"}, {"Origin": "null"}, {"Origin": server.url.replace("127.0.0.1", "localhost")}):
        name = unique("csrf")
        refused = requests.post(f"{server.url}/api/v1/channels", json={"name": name}, cookies=cookies, headers=headers, timeout=30)
        assert refused.status_code == 403, headers
        assert refused.json() == CROSS_SITE
        assert server.api("GET", f"channels/{name}", owner.key).status_code == 404
        # Sign-out is a change too.
        kept = requests.delete(f"{server.url}/api/v1/session", cookies=cookies, headers=headers, timeout=30)
        assert kept.status_code == 403
        assert get(server, "/api/v1/session", cookies).status_code == 200

    name = unique("csrf")
    allowed = requests.post(f"{server.url}/api/v1/channels", json={"name": name}, cookies=cookies, headers={"Origin": server.url}, timeout=30)
    assert allowed.status_code == 201, allowed.text
    # Reads need no Origin.
    assert get(server, f"/api/v1/channels/{name}", cookies).status_code == 200
    # A key is unaffected by Origin, whatever it says.
    other = unique("csrf")
    with_key = server.api("POST", "channels", owner.key, json={"name": other}, headers={"Origin": "https://evil.example"})
    assert with_key.status_code == 201


def test_signing_in_from_another_site_is_refused(server, owner):
    refused = sign_in(server, owner.key, headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403
    assert refused.json() == CROSS_SITE
    assert "Set-Cookie" not in refused.headers
    assert sign_in(server, owner.key, headers={"Origin": server.url}).status_code == 201


def test_a_session_carries_its_keys_limits(server, owner, outsider):
    team, other = unique("team"), unique("other")
    server.admin("channel", "create", team, "--owner", owner.name, "--private")
    server.admin("channel", "create", other, "--owner", owner.name, "--private")
    data = PACKAGE.read_bytes()
    assert upload_raw(server, team, PACKAGE.name, data, headers=owner.auth).status_code == 201

    read_only = server.admin("key", "create", owner.name, "--read-only", "--channel", team)
    response = sign_in(server, read_only["key"])
    assert response.json()["key"]["read_only"] is True
    assert response.json()["key"]["channels"] == [team]
    cookies = {COOKIE: response.cookies[COOKIE]}
    origin = {"Origin": server.url}

    # It reads the private channel it is limited to, files included, as a browser would.
    assert get(server, f"/{team}/noarch/repodata.json", cookies).status_code == 200
    download = get(server, f"/{team}/noarch/{PACKAGE.name}", cookies)
    assert download.status_code == 200 and download.content == data
    # Not the other channel, though its user owns it: for this session it is not there.
    assert get(server, f"/{other}/noarch/repodata.json", cookies).status_code == 404
    # And never writes, from the right origin or not.
    upload = upload_raw(server, team, PACKAGE.name, data, headers={**origin, "Cookie": f"{COOKIE}={cookies[COOKIE]}"})
    assert upload.status_code == 403
    assert upload.json()["code"] == "forbidden"
    deleted = requests.delete(f"{server.url}/api/v1/delete/{team}/noarch/{PACKAGE.name}", cookies=cookies, headers=origin, timeout=30)
    assert deleted.status_code == 403
    assert get(server, f"/{team}/noarch/{PACKAGE.name}", cookies).status_code == 200
    # Nor mints a broader key.
    minted = requests.post(f"{server.url}/api/v1/keys", json={"name": "wider"}, cookies=cookies, headers=origin, timeout=30)
    assert minted.status_code == 403

    # Anonymous, the private channel is not readable: the cookie was what let it in.
    assert get(server, f"/{team}/noarch/repodata.json").status_code == 401
    # An outsider's session reads nothing private.
    assert get(server, f"/{team}/noarch/repodata.json", session_of(server, outsider.key)).status_code == 404


def test_an_owners_session_uploads_from_the_own_origin(server, owner, channel):
    cookies = session_of(server, owner.key)
    data = PACKAGE.read_bytes()
    cookie_header = {"Cookie": f"{COOKIE}={cookies[COOKIE]}"}
    refused = upload_raw(server, channel, PACKAGE.name, data, headers=cookie_header)
    assert refused.status_code == 403 and refused.json() == CROSS_SITE
    assert get(server, f"/{channel}/noarch/{PACKAGE.name}").status_code == 404
    stored = upload_raw(server, channel, PACKAGE.name, data, headers={**cookie_header, "Origin": server.url})
    assert stored.status_code == 201, stored.text


def test_revoking_the_key_ends_its_sessions(server, owner):
    created = server.api("POST", "keys", owner.key, json={"name": "browser"})
    key, key_id = created.json()["key"], created.json()["info"]["id"]
    cookies = session_of(server, key)
    assert get(server, "/api/v1/session", cookies).status_code == 200
    assert server.api("DELETE", f"keys/{key_id}", owner.key).status_code == 200
    assert get(server, "/api/v1/session", cookies).status_code == 401
    assert get(server, "/api/v1/whoami", cookies).status_code == 401
    assert sign_in(server, key).status_code == 401


def test_a_session_never_outlives_its_key(server, owner):
    expires_at = int(time.time() * 1000) + 2500
    created = server.api("POST", "keys", owner.key, json={"name": "short", "expires_at": expires_at})
    response = sign_in(server, created.json()["key"])
    assert response.status_code == 201
    assert response.json()["expires_at"] == expires_at
    assert int(cookie_attributes(response)["max-age"]) <= 3
    cookies = {COOKIE: response.cookies[COOKIE]}
    assert get(server, "/api/v1/session", cookies).status_code == 200
    time.sleep(3)
    # Expired: the browser may still send it; the server refuses it.
    assert get(server, "/api/v1/session", cookies).status_code == 401
    assert get(server, "/api/v1/whoami", cookies).status_code == 401


def test_signing_in_again_ends_the_session_the_browser_held(server, owner, make_user):
    """The sign-in page replaces the browser's session: the cookie it sent is worthless after."""
    first = session_of(server, owner.key)
    assert get(server, "/api/v1/session", first).status_code == 200
    other = make_user()
    replaced = sign_in(server, other.key, cookies=first)
    assert replaced.status_code == 201, replaced.text
    second = {COOKIE: replaced.cookies[COOKIE]}
    assert second != first
    assert get(server, "/api/v1/session", first).status_code == 401
    assert get(server, "/api/v1/whoami", first).status_code == 401
    assert get(server, "/api/v1/session", second).json()["user"] == other.name
    # A sign-in without a cookie ends nobody's session.
    third = session_of(server, owner.key)
    assert get(server, "/api/v1/session", second).status_code == 200
    assert get(server, "/api/v1/session", third).status_code == 200

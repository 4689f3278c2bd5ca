"""The key format: keys made by the API and the admin command survive the token-in-URL form, and
keys of the earlier format (`cfk_` + URL-safe base64) keep working in every header form."""

import base64
import hashlib
import os
import re
import subprocess

import requests

from harness import ROOT

# The token grammar of conda's `/t/` parser, which libmamba's also accepts.
CONDA_TOKEN = re.compile(r"[A-Za-z0-9-]*")


def whoami(server, key: str, form: str) -> requests.Response:
    headers, url = {}, f"{server.url}/api/v1/whoami"
    if form == "bearer":
        headers["Authorization"] = f"Bearer {key}"
    elif form == "basic":
        headers["Authorization"] = "Basic " + base64.b64encode(f"anyone:{key}".encode()).decode()
    elif form == "x-api-key":
        headers["X-API-Key"] = key
    else:
        url = f"{server.url}/t/{key}/api/v1/whoami"
    return requests.get(url, headers=headers, timeout=30)


def test_new_keys_fit_the_token_grammar_and_work_in_every_form(server, make_user):
    user = make_user()
    from_api = server.api("POST", "keys", user.key, json={"name": "laptop"}).json()["key"]
    for key in (user.key, from_api):
        assert key.startswith("cfk-") and len(key) == 47
        assert CONDA_TOKEN.fullmatch(key), key
        for form in ("bearer", "basic", "x-api-key", "token-in-path"):
            answer = whoami(server, key, form)
            assert answer.status_code == 200, (form, answer.text)
            assert answer.json()["user"] == user.name


def give_key_of_the_earlier_format(server, user) -> str:
    """Replaces `user`'s key, straight in D1, by one as the earlier format made them (32 bytes
    of URL-safe base64; this one begins with `_`, where conda and mamba end a `/t/` token)."""
    random_part = b"\xff\xef" + hashlib.sha256(user.name.encode()).digest()[:30]
    old_key = "cfk_" + base64.urlsafe_b64encode(random_part).decode().rstrip("=")
    assert old_key.startswith("cfk__") and len(old_key) == 47
    assert CONDA_TOKEN.match(old_key).group() == "cfk"
    statement = (
        f"UPDATE api_keys SET key_hash = '{hashlib.sha256(old_key.encode()).hexdigest()}', "
        f"prefix = '{old_key[:12]}' WHERE id = {user.key_id}"
    )
    subprocess.run(
        ["wrangler", "d1", "execute", "DB", "--local", "--persist-to", str(server.state), "--command", statement],
        cwd=ROOT,
        check=True,
        capture_output=True,
        env={**os.environ, "WRANGLER_SEND_METRICS": "false", "CLOUDFLARE_CF_FETCH_ENABLED": "false"},
    )
    return old_key


def test_a_key_of_the_earlier_format_keeps_working(server, make_user):
    user = make_user()
    old_key = give_key_of_the_earlier_format(server, user)
    # Sent as is (curl does), even the path form works: the Worker takes the token up to `/`.
    for form in ("bearer", "basic", "x-api-key", "token-in-path"):
        answer = whoami(server, old_key, form)
        assert answer.status_code == 200, (form, answer.text)
        assert answer.json()["user"] == user.name
    # The replaced key is gone: only the hash of the old one is stored now.
    assert whoami(server, user.key, "bearer").status_code == 401
    listed = server.api("GET", "keys", old_key).json()["keys"]
    assert [k["prefix"] for k in listed] == [old_key[:12]]

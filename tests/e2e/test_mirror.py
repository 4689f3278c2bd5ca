"""Mirror channels: created through the API and the admin command with their rules, shown with
them, refused with bad ones, and closed to uploads and deletes."""

import pytest
import requests

from conftest import PACKAGES, unique, upload_raw
from harness import AdminError

UPSTREAM = "https://conda.example.org/upstream"


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


def test_a_mirror_refuses_uploads_and_deletes(server, owner, outsider):
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
    # Someone who could not write anyway is refused as before.
    assert upload_raw(server, name, package.name, data, headers={"Authorization": f"Bearer {outsider.key}"}).status_code == 403
    assert not [key for key in server.r2_keys() if key.startswith(f"{name}/")]


def test_the_admin_command_creates_a_mirror(server, owner):
    name = unique("mirror")
    created = server.admin(
        "channel", "create", name, "--owner", owner.name, "--mirror", UPSTREAM,
        "--allow", "zlib", "--allow", "flask >=0.11", "--deny", "zlib 1.2.8", "--min-age-days", "3",
    )
    shown = {"url": UPSTREAM, "allow": ["zlib", "flask >=0.11"], "deny": ["zlib 1.2.8"], "min_age_days": 3}
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

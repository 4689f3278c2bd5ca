"""The browse API the web app reads: a channel's names with their figures, searched (prefixes
first, then substrings), filtered by subdir and paged with a cursor; every file of a name; the
server's limits; the channel list's figures. Private channels are invisible to those who may
not read them: 404, with nothing of the channel in the body."""

import hashlib
import time

import pytest
import requests

from conftest import MAX_UPLOAD_BYTES, PACKAGES, import_tar, post_import, unique, upload_raw
from pkgbuild import build_tar_bz2

FLASK = PACKAGES / "flask-0.11.1-py_0.tar.bz2"
# name -> versions, with one linux-64 build of "alpha-tools" 2.0 besides its noarch ones.
NAMES = {
    "alpha-tools": ["1.0", "1.10", "1.9"],
    "alphabet": ["0.1"],
    "beta": ["3.0"],
    "pyalpha": ["2.0"],
    "xalphax": ["0.5"],
    "zeta": ["1.0"],
}


def fill(server, channel: str, owner) -> None:
    packages = [build_tar_bz2(name, version=version) for name, versions in NAMES.items() for version in versions]
    packages.append(build_tar_bz2("alpha-tools", version="2.0", subdir="linux-64", build="h1_0"))
    answer = post_import(server, channel, import_tar(dict(packages)), owner.auth)
    assert answer.status_code == 200, answer.text
    assert answer.json()["created"] == len(packages)
    assert upload_raw(server, channel, FLASK.name, FLASK.read_bytes(), headers=owner.auth).status_code == 201


@pytest.fixture(scope="module")
def world(server, make_user):
    owner, member, outsider = make_user(), make_user(), make_user()
    public, private = unique("browse"), unique("hidden")
    server.admin("channel", "create", public, "--owner", owner.name)
    server.admin("channel", "create", private, "--owner", owner.name, "--private")
    server.admin("member", "add", private, member.name, "--role", "member")
    fill(server, public, owner)
    assert upload_raw(server, private, FLASK.name, FLASK.read_bytes(), headers=owner.auth).status_code == 201
    return {"owner": owner, "member": member, "outsider": outsider, "public": public, "private": private}


def packages(server, channel, key=None, **params) -> requests.Response:
    return server.api("GET", f"channels/{channel}/packages", key, params=params)


def names_of(page: dict) -> list[str]:
    return [package["name"] for package in page["packages"]]


def test_names_with_their_figures(server, world):
    page = packages(server, world["public"]).json()
    assert names_of(page) == ["alpha-tools", "alphabet", "beta", "flask", "pyalpha", "xalphax", "zeta"]
    assert page["total"] == 7
    assert page["next_cursor"] is None
    tools = page["packages"][0]
    # conda's order: 2.0 > 1.10 > 1.9 > 1.0.
    assert tools["latest_version"] == "2.0"
    assert tools["builds"] == 4
    assert tools["subdirs"] == ["linux-64", "noarch"]
    assert tools["summary"] is None
    flask = page["packages"][3]
    assert flask["summary"] == "A microframework based on Werkzeug, Jinja2 and good intentions"
    assert flask["builds"] == 1
    assert flask["last_upload"] >= max(p["last_upload"] for p in page["packages"])


def test_search_prefix_first_then_substring(server, world):
    page = packages(server, world["public"], q="alpha").json()
    assert names_of(page) == ["alpha-tools", "alphabet", "pyalpha", "xalphax"]
    assert page["total"] == 4
    # Case does not matter; a search nothing matches is an empty page.
    assert names_of(packages(server, world["public"], q="ALPHA").json()) == names_of(page)
    empty = packages(server, world["public"], q="nothing-like-it").json()
    assert empty == {"packages": [], "total": 0, "next_cursor": None}


def test_paging_is_stable_across_groups(server, world):
    seen, cursor, pages = [], None, 0
    while True:
        params = {"q": "alpha", "limit": 1}
        if cursor:
            params["cursor"] = cursor
        page = packages(server, world["public"], **params).json()
        assert page["total"] == 4
        seen += names_of(page)
        cursor, pages = page["next_cursor"], pages + 1
        if cursor is None:
            break
    assert seen == ["alpha-tools", "alphabet", "pyalpha", "xalphax"]
    assert pages == 4

    first = packages(server, world["public"], limit=3).json()
    assert names_of(first) == ["alpha-tools", "alphabet", "beta"]
    # A name added before the next page is fetched does not shift it.
    owner = world["owner"]
    filename, data = build_tar_bz2("aaa-early")
    assert upload_raw(server, world["public"], filename, data, headers=owner.auth).status_code == 201
    second = packages(server, world["public"], limit=3, cursor=first["next_cursor"]).json()
    assert names_of(second) == ["flask", "pyalpha", "xalphax"]
    assert second["total"] == 8
    assert requests.delete(f"{server.url}/api/v1/delete/{world['public']}/noarch/{filename}", headers=owner.auth, timeout=30).status_code == 200


def test_subdir_filter(server, world):
    page = packages(server, world["public"], subdir="linux-64").json()
    assert names_of(page) == ["alpha-tools"]
    assert page["packages"][0]["builds"] == 1
    assert page["packages"][0]["subdirs"] == ["linux-64"]
    assert page["total"] == 1
    assert packages(server, world["public"], subdir="win-64").json()["packages"] == []


@pytest.mark.parametrize(
    "params",
    [{"limit": "0"}, {"limit": "201"}, {"limit": "x"}, {"subdir": "nowhere"}, {"cursor": "not-a-cursor!"}, {"q": "a" * 201}],
)
def test_bad_parameters_are_400(server, world, params):
    answer = packages(server, world["public"], **params)
    assert answer.status_code == 400
    assert answer.json()["code"] in ("bad_request", "invalid_name")


def test_every_file_of_a_name(server, world):
    answer = server.api("GET", f"channels/{world['public']}/packages/alpha-tools")
    assert answer.status_code == 200
    body = answer.json()
    assert body["name"] == "alpha-tools"
    assert [r["version"] for r in body["records"]] == ["2.0", "1.10", "1.9", "1.0"]
    newest = body["records"][0]
    assert newest["subdir"] == "linux-64"
    assert newest["filename"] == "alpha-tools-2.0-h1_0.tar.bz2"
    assert newest["build"] == "h1_0" and newest["build_number"] == 0
    assert newest["license"] == "BSD-3-Clause"
    assert newest["url"] == f"/{world['public']}/linux-64/alpha-tools-2.0-h1_0.tar.bz2"
    download = requests.get(server.url + newest["url"], timeout=30)
    assert download.status_code == 200
    assert len(download.content) == newest["size"]
    assert hashlib.sha256(download.content).hexdigest() == newest["sha256"]
    assert hashlib.md5(download.content).hexdigest() == newest["md5"]

    flask = server.api("GET", f"channels/{world['public']}/packages/flask").json()["records"][0]
    assert flask["home"] == "http://flask.pocoo.org/"
    assert flask["summary"].startswith("A microframework")
    assert "werkzeug" in " ".join(flask["depends"])
    assert flask["indexed_at"] > 0

    missing = server.api("GET", f"channels/{world['public']}/packages/no-such-name")
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"


def test_private_channels_are_invisible(server, world):
    private = world["private"]
    secret = private.encode()
    for key in (None, world["outsider"].key):
        for path in (f"channels/{private}/packages", f"channels/{private}/packages/flask"):
            answer = server.api("GET", path, key)
            assert answer.status_code == 404
            assert answer.json()["code"] == "not_found"
            assert secret not in answer.content and b"flask" not in answer.content
    # The same answer as for a channel that does not exist.
    missing = server.api("GET", f"channels/{unique('none')}/packages", world["outsider"].key)
    hidden = server.api("GET", f"channels/{private}/packages", world["outsider"].key)
    assert missing.json() == hidden.json()
    # A bad key is still a 401, whether the channel exists or not.
    for channel in (private, unique("none")):
        assert server.api("GET", f"channels/{channel}/packages", "cfk_" + "A" * 43).status_code == 401
    # Members read it.
    for key in (world["member"].key, world["owner"].key):
        assert names_of(packages(server, private, key).json()) == ["flask"]
        assert server.api("GET", f"channels/{private}/packages/flask", key).status_code == 200


def test_server_limits(server):
    # No identity sign-in is configured on the shared server (test_signin.py's servers have them).
    assert server.api("GET", "server").json() == {"max_upload_bytes": MAX_UPLOAD_BYTES, "sign_in": []}


def test_channel_list_figures(server, world, make_user):
    owner = world["owner"]
    listed = {c["name"]: c for c in server.api("GET", "channels", owner.key).json()["channels"]}
    public = listed[world["public"]]
    assert public["role"] == "owner"
    assert public["package_count"] == 10
    assert public["last_upload"] > 0
    assert listed[world["private"]]["package_count"] == 1
    assert listed[world["private"]]["private"] is True

    anonymous = {c["name"]: c for c in server.api("GET", "channels").json()["channels"]}
    assert anonymous[world["public"]]["role"] is None
    assert world["private"] not in anonymous
    member = {c["name"]: c for c in server.api("GET", "channels", world["member"].key).json()["channels"]}
    assert member[world["private"]]["role"] == "member"

    # A new channel has none; a delete brings the count down.
    fresh = unique("fresh")
    server.admin("channel", "create", fresh, "--owner", owner.name)
    listed = {c["name"]: c for c in server.api("GET", "channels").json()["channels"]}
    assert (listed[fresh]["package_count"], listed[fresh]["last_upload"]) == (0, None)
    assert upload_raw(server, fresh, FLASK.name, FLASK.read_bytes(), headers=owner.auth).status_code == 201
    assert {c["name"]: c for c in server.api("GET", "channels").json()["channels"]}[fresh]["package_count"] == 1
    deleted = requests.delete(f"{server.url}/api/v1/delete/{fresh}/noarch/{FLASK.name}", headers=owner.auth, timeout=30)
    assert deleted.status_code == 200
    assert {c["name"]: c for c in server.api("GET", "channels").json()["channels"]}[fresh]["package_count"] == 0


HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def page(server, path, cookies=None, headers=None) -> requests.Response:
    return requests.get(f"{server.url}{path}", headers={**HTML, **(headers or {})}, cookies=cookies, timeout=30)


def test_pages_are_the_shell_with_security_headers(server, world):
    shell = requests.get(f"{server.url}/-/shell.html", timeout=30)
    assert shell.status_code == 200 and b"/-/app.js" in shell.content
    public = world["public"]
    for path in ["/", "/-/signin", "/-/keys", f"/{public}", f"/{public}/packages/flask", f"/{public}/upload", f"/{public}/members", f"/{public}/settings"]:
        answer = page(server, path)
        assert answer.status_code == 200, path
        assert answer.content == shell.content, path
        assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers[name] == value, (path, name)


def test_clients_without_html_get_what_they_got_before(server, world):
    public = world["public"]
    for path in ["/", f"/{public}", f"/{public}/packages/flask", f"/{public}/upload"]:
        answer = requests.get(f"{server.url}{path}", headers={"Accept": "application/json"}, timeout=30)
        assert answer.status_code == 404, path
        assert answer.json()["code"] == "not_found"
        assert "Content-Security-Policy" not in answer.headers
    # A package link opened in a browser downloads the package.
    download = page(server, f"/{public}/noarch/{FLASK.name}")
    assert download.status_code == 200 and download.content == FLASK.read_bytes()
    repodata = page(server, f"/{public}/noarch/repodata.json")
    assert repodata.status_code == 200 and "flask" in str(repodata.json()["packages"])
    # A conda URL with its key, opened in a browser, is not a page either.
    with_token = page(server, f"/t/{world['owner'].key}/{public}")
    assert with_token.status_code == 404 and with_token.json()["code"] == "not_found"


def test_hidden_channel_pages_are_404_without_names(server, world):
    private = world["private"]
    shell = requests.get(f"{server.url}/-/shell.html", timeout=30).content
    outsider_session = {"condaflare_session": requests.post(f"{server.url}/api/v1/session", json={"key": world["outsider"].key}, timeout=30).cookies["condaflare_session"]}
    member_session = {"condaflare_session": requests.post(f"{server.url}/api/v1/session", json={"key": world["member"].key}, timeout=30).cookies["condaflare_session"]}
    for path in [f"/{private}", f"/{private}/packages/flask", f"/{private}/settings", f"/{unique('none')}"]:
        for cookies in (None, outsider_session, {"condaflare_session": "A" * 43}):
            answer = page(server, path, cookies)
            assert answer.status_code == 404, (path, cookies)
            assert answer.content == shell
            assert private.encode() not in answer.content and b"flask" not in answer.content
            assert answer.headers["X-Frame-Options"] == "DENY"
    for path in [f"/{private}", f"/{private}/packages/flask"]:
        assert page(server, path, member_session).status_code == 200


def test_static_files_do_not_run_the_worker(server):
    marker = unique("marker")
    app = requests.get(f"{server.url}/-/app.js", params={"m": marker}, timeout=30)
    assert app.status_code == 200
    assert app.headers["X-Content-Type-Options"] == "nosniff"
    assert "script-src 'self'" in app.headers["Content-Security-Policy"]
    assert page(server, "/", headers={"X-Marker": marker}).status_code == 200
    requests.get(f"{server.url}/api/v1/server", params={"m": marker}, timeout=30)
    # The Worker logs every request it answers (without the query): the API call is there,
    # the static file is not.
    deadline = time.time() + 10
    while '"path":"/api/v1/server"' not in server.log() and time.time() < deadline:
        time.sleep(0.2)
    assert '"path":"/api/v1/server"' in server.log()
    assert '"path":"/-/app.js"' not in server.log()


def test_a_missing_static_file_is_a_404_page_and_page_urls_stay_the_workers(server):
    # Paths under /-/ with a dot are the static files' (no Worker runs for them); the rest, page
    # URLs such as /-/keys included, go straight to the Worker.
    missing = requests.get(f"{server.url}/-/pages/{unique('gone')}.js", timeout=30)
    assert missing.status_code == 404
    assert "Not found: the web app has no such file." in missing.text
    assert missing.headers["X-Content-Type-Options"] == "nosniff"
    assert page(server, "/-/keys").content == requests.get(f"{server.url}/-/shell.html", timeout=30).content
    no_page = requests.get(f"{server.url}/-/{unique('nope')}", headers={"Accept": "application/json"}, timeout=30)
    assert no_page.status_code == 404 and no_page.json()["code"] == "not_found"
    # The not-found page is a file of the assets' root, which no URL reaches as a file.
    direct = requests.get(f"{server.url}/404.html", headers={"Accept": "application/json"}, timeout=30)
    assert direct.status_code == 404 and direct.json()["code"] == "not_found"

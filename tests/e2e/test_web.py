"""The web app in a real browser: Debian's chromium driven by Playwright, against the real Worker.

With CONDAFLARE_SCREENSHOTS=<directory> (`npm run screenshots`), the tests also save the
channel, package and upload pages as PNG files there (docs/screenshots/, shown in docs/web-app.md)."""

import base64
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, Page, expect

from conftest import FIXTURES, PACKAGES, import_tar, post_import, reference_records, sha256_of, unique, upload_raw
from pkgbuild import build_tar_bz2

SCREENSHOTS = os.environ.get("CONDAFLARE_SCREENSHOTS")
# Everything a page loads to run (scripts and style sheets) stays under this, uncompressed.
PAGE_WEIGHT_LIMIT = 100_000

# Package metadata an attacker controls, each of which must show as the literal text.
SCRIPT = "<script>alert(1)</script>"
IMG = '<img src=x onerror="window.__injected=1;alert(2)">'
RTL = "evil\u202egnp.exe"


@dataclass
class Tab:
    """A page of its own browser context (own cookies), with what it reported on the side."""

    page: Page
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def assert_clean(self):
        assert self.dialogs == [], f"a dialog opened: {self.dialogs}"
        assert self.errors == [], f"the page reported errors: {self.errors}"


@pytest.fixture
def tab(browser: Browser, server):
    context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 860})
    page = context.new_page()
    tab = Tab(page)

    def on_dialog(dialog):
        tab.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda error: tab.errors.append(f"uncaught: {error}"))

    # CSP violations and failed module loads are console errors. A refused API call (the 401 of
    # GET /api/v1/session when signed out, a 404 the page shows) is logged as "Failed to load
    # resource": that is the page working, not failing.
    def on_console(message):
        if message.type == "error" and "Failed to load resource" not in message.text:
            tab.errors.append(message.text)

    page.on("console", on_console)
    yield tab
    context.close()


def screenshot(tab: Tab, name: str):
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        tab.page.screenshot(path=str(Path(SCREENSHOTS) / name))


def sign_in(tab: Tab, key: str, user: str):
    page = tab.page
    page.goto("/-/signin")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#nav .user")).to_contain_text(user)


def drop_files(page: Page, selector: str, files: list[tuple[str, bytes]]):
    """A real drop event carrying File objects with these names and bytes."""
    transfer = page.evaluate_handle(
        """(files) => {
            const transfer = new DataTransfer();
            for (const {name, data} of files) {
                const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
                transfer.items.add(new File([bytes], name, {type: 'application/octet-stream'}));
            }
            return transfer;
        }""",
        [{"name": name, "data": base64.b64encode(data).decode()} for name, data in files],
    )
    page.locator(selector).dispatch_event("drop", {"dataTransfer": transfer})


def repodata_files(server, channel: str, subdir: str, key: str | None = None) -> set[str]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = requests.get(f"{server.url}/{channel}/{subdir}/repodata.json", headers=headers, timeout=30)
    assert response.status_code == 200
    repodata = response.json()
    return set(repodata.get("packages", {})) | set(repodata.get("packages.conda", {}))


def upload_fixture(server, channel: str, owner, filename: str) -> bytes:
    data = (PACKAGES / filename).read_bytes()
    response = upload_raw(server, channel, filename, data, headers=owner.auth)
    assert response.status_code == 201, response.text
    return data


def test_static_files_carry_the_security_headers(server):
    for asset in ("/-/app.js", "/-/app.css", "/-/shell.html", "/-/pages/channel.js"):
        response = requests.get(server.url + asset, timeout=10)
        assert response.status_code == 200, asset
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]


def test_sign_in_create_channel_and_drop_packages(server, tab, make_user):
    page = tab.page
    user = make_user()
    page.goto("/-/signin")
    page.get_by_label("API key").fill("cfk_" + "x" * 43)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signin .message")).to_contain_text("not valid")
    # After signing in, only a path of this site is followed.
    page.goto("/-/signin?next=" + "/%5Cevil.example/x")
    page.get_by_label("API key").fill(user.key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#nav .user")).to_contain_text(user.name)
    expect(page).to_have_url(f"{server.url}/")
    assert page.request.get("/api/v1/session").json()["user"] == user.name

    name = unique("web")
    page.goto("/")
    page.get_by_label("channel name").fill(name)
    page.get_by_role("button", name="Create channel").click()
    expect(page).to_have_url(f"{server.url}/{name}")
    expect(page.get_by_text("This channel has no packages yet.")).to_be_visible()
    assert server.api("GET", f"channels/{name}", user.key).json()["your_role"] == "owner"

    page.get_by_role("link", name="+ Add").click()
    expect(page).to_have_url(f"{server.url}/{name}/upload")
    # A .conda whose parts are not at the zip's root: its name passes, its content does not.
    corrupt_name = "ca-certificates-2024.7.4-hbcca054_0.conda"
    corrupt = (FIXTURES / "corrupt" / corrupt_name).read_bytes()
    valid = ["dummy-package-1.0-0.tar.bz2", "zlib-1.2.11-h7b6447c_3.conda"]
    drop_files(
        page,
        "#dropzone",
        [(f, (PACKAGES / f).read_bytes()) for f in valid] + [(corrupt_name, corrupt)],
    )
    expect(page.locator("#uploads .upload.stored")).to_have_count(2)
    expect(page.locator("#uploads .upload.failed")).to_have_count(1)
    # The error shown is the server's own sentence for these bytes.
    refused = upload_raw(server, name, corrupt_name, corrupt, headers=user.auth)
    assert refused.status_code == 422
    failed = page.locator("#uploads .upload.failed")
    expect(failed).to_contain_text(corrupt_name)
    expect(failed.locator(".status")).to_have_text("refused (422)")
    expect(failed.locator(".error-text")).to_have_text(refused.json()["error"])
    for filename in valid:
        row = page.locator("#uploads .upload.stored", has_text=filename)
        expect(row.locator(".hash")).to_have_text(sha256_of((PACKAGES / filename).read_bytes()))
    screenshot(tab, "upload.png")

    # The same bytes again: the server's 200, shown as such.
    drop_files(page, "#dropzone", [(valid[0], (PACKAGES / valid[0]).read_bytes())])
    again = page.locator("#uploads .upload.unchanged")
    expect(again).to_have_count(1)
    expect(again.locator(".status")).to_have_text("already there")

    assert repodata_files(server, name, "osx-64") == {"dummy-package-1.0-0.tar.bz2"}
    assert repodata_files(server, name, "linux-64") == {"zlib-1.2.11-h7b6447c_3.conda"}
    tab.assert_clean()


def test_upload_checks_in_the_browser_before_sending(server, tab, owner, channel):
    page = tab.page
    sign_in(tab, owner.key, owner.name)
    page.goto(f"/{channel}/upload")
    too_large = b"\0" * (int(page.request.get("/api/v1/server").json()["max_upload_bytes"]) + 1)
    drop_files(page, "#dropzone", [("notes.txt", b"hello"), ("big-1.0-0.tar.bz2", too_large)])
    failed = page.locator("#uploads .upload.failed")
    expect(failed).to_have_count(2)
    expect(failed.nth(0)).to_contain_text("must end in .conda or .tar.bz2")
    expect(failed.nth(1)).to_contain_text("Too large")
    assert f"/api/v1/upload/{channel}" not in server.log()
    tab.assert_clean()


def test_search_and_open_the_package_page(server, tab, owner, channel):
    page = tab.page
    records = reference_records()
    names = [
        "dummy-package-1.0-0.tar.bz2",
        "dummy-package-2.0-0.tar.bz2",
        "other-package-0.2-0.tar.bz2",
        "test-package-0.1-0.tar.bz2",
        "zlib-1.2.11-h7b6447c_3.conda",
        "zlib-1.2.11-h62dcd97_3.tar.bz2",
        "flask-0.11.1-py_0.tar.bz2",
    ]
    data = {filename: upload_fixture(server, channel, owner, filename) for filename in names}
    sign_in(tab, owner.key, owner.name)

    page.goto(f"/{channel}")
    rows = page.locator("#packages tbody tr")
    expect(rows).to_have_count(5)
    expect(page.locator(".count")).to_have_text("5 packages")
    expect(page.locator(".install")).to_contain_text(f"micromamba install -c {server.url}/{channel}")
    screenshot(tab, "channel.png")

    # A package with about.json: summary, license, homepage (an http link), one file per subdir.
    page.get_by_role("link", name="zlib").click()
    expect(page.locator(".overview .summary")).to_have_text("Massively spiffy yet delicately unobtrusive compression library")
    expect(page.locator(".overview").get_by_role("link", name="http://zlib.net/")).to_have_attribute("href", "http://zlib.net/")
    expect(page.locator("section.subdir h2")).to_have_count(2)
    assert sorted(page.locator("section.subdir h2").all_text_contents()) == ["linux-64", "win-64"]
    expect(page.locator("article.file", has_text="zlib-1.2.11-h7b6447c_3.conda")).to_contain_text("libgcc-ng >=7.3.0")
    screenshot(tab, "package.png")
    page.go_back()

    # A subdir chip filters, and the address says so.
    page.get_by_role("group", name="subdirs").get_by_role("button", name="noarch").click()
    expect(page).to_have_url(f"{server.url}/{channel}?subdir=noarch")
    expect(rows.locator("td.name-cell a")).to_have_text(["flask"])
    page.get_by_role("group", name="subdirs").get_by_role("button", name="all subdirs").click()
    expect(rows).to_have_count(5)

    page.get_by_label("search packages").fill("package")
    expect(rows).to_have_count(3)
    expect(rows.locator("td.name-cell a")).to_have_text(["dummy-package", "other-package", "test-package"])
    page.get_by_label("search packages").fill("dumm")
    expect(rows).to_have_count(1)
    expect(page).to_have_url(f"{server.url}/{channel}?q=dumm")
    expect(rows.first).to_contain_text("2.0")

    # The address keeps the search: a reload shows the same.
    page.reload()
    expect(page.get_by_label("search packages")).to_have_value("dumm")
    expect(rows).to_have_count(1)

    page.get_by_role("link", name="dummy-package").click()
    expect(page).to_have_url(f"{server.url}/{channel}/packages/dummy-package")
    files = page.locator("article.file")
    expect(files).to_have_count(2)
    expect(files.nth(0).locator(".version")).to_have_text("2.0")
    expect(files.nth(1).locator(".version")).to_have_text("1.0")
    newest = "dummy-package-2.0-0.tar.bz2"
    subdir = records[newest][0]
    expect(files.nth(0).locator(".hash")).to_have_text(sha256_of(data[newest]))
    expect(files.nth(0)).to_contain_text("python 2.7.*")
    download = files.nth(0).get_by_role("link", name="Download")
    expect(download).to_have_attribute("href", f"/{channel}/{subdir}/{newest}")
    assert page.request.get(download.get_attribute("href")).body() == data[newest]

    # An owner deletes a file, after confirming.
    oldest = files.nth(1)
    oldest.get_by_role("button", name="Delete").click()
    expect(oldest).to_contain_text("Delete dummy-package-1.0-0.tar.bz2 for everyone?")
    oldest.get_by_role("button", name="Yes, delete").click()
    expect(files).to_have_count(1)
    assert "dummy-package-1.0-0.tar.bz2" not in repodata_files(server, channel, subdir)
    tab.assert_clean()


def test_the_package_page_shows_who_published_each_file(server, tab, owner, channel):
    page = tab.page
    # A key's name is free text: this one must show as text.
    key = server.admin("key", "create", owner.name, "--name", IMG)["key"]
    files = [build_tar_bz2("published", version=v) for v in ("2.0", "1.0")]
    for filename, data in files:
        assert upload_raw(server, channel, filename, data, headers={"Authorization": f"Bearer {key}"}).status_code == 201

    # Readers see it, signed in or not.
    page.goto(f"/{channel}/packages/published")
    articles = page.locator("article.file")
    expect(articles).to_have_count(2)
    for at in range(2):
        expect(articles.nth(at).locator(".publisher")).to_have_text(f"{owner.name} with key {IMG}")
    assert page.locator(".ci-run").count() == 0
    assert page.locator("main img").count() == 0
    assert page.evaluate("window.__injected") is None

    # A file published from CI shows its run, every claim as text; a file stored before
    # publishers were kept shows "unknown". (The answer is rewritten on its way to the page.)
    run = {
        "publisher": 1,
        "issuer": "https://token.actions.githubusercontent.com",
        "repository": f"org/{SCRIPT}",
        "workflow": IMG,
        "run_id": "987654321",
        "git_ref": "refs/tags/v2.0",
        "commit": "0123456789abcdef0123456789abcdef01234567",
        "environment": RTL,
    }

    def rewrite(route):
        answer = route.fetch()
        body = answer.json()
        body["records"][0]["provenance"] = {"user": "ci-bot", "key": "minted", "workflow": run}
        body["records"][1]["provenance"] = None
        route.fulfill(response=answer, json=body)

    page.route(f"**/api/v1/channels/{channel}/packages/published", rewrite)
    page.reload()
    expect(articles).to_have_count(2)
    newest, oldest = articles.nth(0), articles.nth(1)
    expect(newest.locator(".publisher")).to_have_text("ci-bot with key minted")
    ci = newest.locator(".ci-run")
    for label, claim in (("repository", "repository"), ("workflow", "workflow"), ("run", "run_id"), ("ref", "git_ref"), ("commit", "commit"), ("environment", "environment"), ("issuer", "issuer")):
        expect(ci.locator(f"li.{label}")).to_have_text(f"{label} {run[claim]}")
    expect(oldest).to_contain_text("Published by")
    expect(oldest.locator(".publisher")).to_have_count(0)
    expect(oldest.locator("dd", has_text="unknown")).to_have_count(1)
    assert page.locator("main script, main img").count() == 0
    assert page.evaluate("window.__injected") is None
    tab.assert_clean()


def test_add_change_and_remove_a_member(server, tab, owner, make_user, channel):
    page = tab.page
    other = make_user()
    sign_in(tab, owner.key, owner.name)
    page.goto(f"/{channel}/members")
    expect(page.locator(f"#members tr[data-user='{owner.name}']")).to_be_visible()

    page.get_by_label("user name").fill(other.name)
    page.locator("#add-member").get_by_role("button", name="Add").click()
    row = page.locator(f"#members tr[data-user='{other.name}']")
    expect(row).to_be_visible()
    members = {m["user"]: m["role"] for m in server.api("GET", f"channels/{channel}/members", owner.key).json()["members"]}
    assert members[other.name] == "member"

    for role in ("contributor", "owner"):
        row.get_by_label(f"role of {other.name}").select_option(role)
        expect(page.locator(".message")).to_contain_text(f"{other.name} is now {role}")
        members = {m["user"]: m["role"] for m in server.api("GET", f"channels/{channel}/members", owner.key).json()["members"]}
        assert members[other.name] == role

    row = page.locator(f"#members tr[data-user='{other.name}']")
    row.get_by_role("button", name="Remove").click()
    row.get_by_role("button", name="Yes, remove").click()
    expect(page.locator(f"#members tr[data-user='{other.name}']")).to_have_count(0)
    members = {m["user"] for m in server.api("GET", f"channels/{channel}/members", owner.key).json()["members"]}
    assert members == {owner.name}

    # The last owner cannot be removed: the server's sentence shows.
    row = page.locator(f"#members tr[data-user='{owner.name}']")
    row.get_by_role("button", name="Remove").click()
    row.get_by_role("button", name="Yes, remove").click()
    expect(row.locator(".error-text")).to_be_visible()
    assert {m["user"] for m in server.api("GET", f"channels/{channel}/members", owner.key).json()["members"]} == {owner.name}
    tab.assert_clean()


def test_a_contributor_adds_and_deletes_packages_but_does_not_manage(server, tab, owner, make_user, channel):
    contributor, member = make_user(), make_user()
    server.admin("member", "add", channel, contributor.name, "--role", "contributor")
    server.admin("member", "add", channel, member.name, "--role", "member")
    filename, data = build_tar_bz2("contributed")
    assert upload_raw(server, channel, filename, data, headers=owner.auth).status_code == 201
    page = tab.page
    tabs = page.get_by_role("navigation", name="channel")

    sign_in(tab, contributor.key, contributor.name)
    page.goto(f"/{channel}/packages/contributed")
    expect(page.locator("article.file")).to_have_count(1)
    expect(tabs.get_by_role("link")).to_have_text(["Packages", "+ Add"])
    page.locator("article.file").get_by_role("button", name="Delete").click()
    page.locator("article.file").get_by_role("button", name="Yes, delete").click()
    expect(page.locator("article.file")).to_have_count(0)
    assert filename not in repodata_files(server, channel, "noarch")
    page.goto(f"/{channel}/upload")
    expect(page.locator("#file-picker")).to_be_attached()
    page.goto(f"/{channel}/members")
    expect(page.get_by_text("Only the channel’s owners see and change its members.")).to_be_visible()

    assert upload_raw(server, channel, filename, data, headers=owner.auth).status_code == 201
    page.get_by_role("button", name="Sign out").click()
    sign_in(tab, member.key, member.name)
    page.goto(f"/{channel}/packages/contributed")
    expect(page.locator("article.file")).to_have_count(1)
    expect(tabs.get_by_role("link")).to_have_text(["Packages"])
    expect(page.locator("article.file").get_by_role("button", name="Delete")).to_have_count(0)
    page.goto(f"/{channel}/upload")
    expect(page.get_by_text("Only the channel’s owners and contributors add packages.")).to_be_visible()
    tab.assert_clean()


def test_a_new_read_only_key_is_shown_once(server, tab, make_user, channel):
    page = tab.page
    user = make_user()
    sign_in(tab, user.key, user.name)
    page.goto("/-/keys")
    page.get_by_label("key name").fill("ci-readonly")
    page.get_by_label("read-only").check()
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#new-key .secret")
    expect(secret).to_have_text(re.compile(r"^cfk-[A-Za-z0-9]{43}$"))
    key = secret.text_content()
    # The copy button puts exactly the key on the clipboard.
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.locator("#new-key").get_by_role("button", name="Copy").click()
    # (The button writes asynchronously: read until it has, for at most 10 s.)
    for _ in range(100):
        if page.evaluate("navigator.clipboard.readText()") == key:
            break
        page.wait_for_timeout(100)
    assert page.evaluate("navigator.clipboard.readText()") == key
    row = page.locator("#keys tbody tr", has_text="ci-readonly")
    expect(row).to_contain_text("read-only")

    whoami = server.api("GET", "whoami", key).json()
    assert whoami["user"] == user.name and whoami["key"]["read_only"] is True
    # Read-only: the new key may not create a channel.
    assert server.api("POST", "channels", key, json={"name": unique("ro")}).status_code == 403

    page.reload()
    expect(page.locator("#keys tbody tr", has_text="ci-readonly")).to_have_count(1)
    assert key not in page.content()
    expect(page.locator("#new-key .secret")).to_have_count(0)

    # Revoked from the page: the key stops working.
    row = page.locator("#keys tbody tr", has_text="ci-readonly")
    row.get_by_role("button", name="Revoke").click()
    row.get_by_role("button", name="Yes, revoke").click()
    expect(page.locator("#keys tbody tr", has_text="ci-readonly")).to_contain_text("revoked")
    assert server.api("GET", "whoami", key).status_code == 401
    tab.assert_clean()


def test_signing_out_hides_a_private_channel(server, tab, owner):
    page = tab.page
    private = unique("secret")
    server.admin("channel", "create", private, "--owner", owner.name, "--private")
    upload_fixture(server, private, owner, "other-package-0.2-0.tar.bz2")

    sign_in(tab, owner.key, owner.name)
    page.goto("/")
    listed = page.locator("#channel-list tbody tr", has_text=private)
    expect(listed.locator("td")).to_have_text([private, "private", "owner", "1", re.compile(r"just now|ago")])
    page.goto(f"/{private}")
    expect(page.locator("#packages")).to_contain_text("other-package")
    # How to install from a private channel: each client's way of carrying the key.
    install = page.locator(".install")
    host = server.url.removeprefix("http://")
    expect(install).to_contain_text(f'"{host}": {{')
    expect(install).to_contain_text('"type": "BearerToken"')
    install.get_by_role("tab", name="pixi").click()
    expect(install).to_contain_text("pixi auth login 127.0.0.1 --token <api key>")
    install.get_by_role("tab", name="conda").click()
    expect(install).to_contain_text(f"conda install -c {server.url}/t/<api key>/{private} other-package")

    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#nav").get_by_role("link", name="Sign in")).to_be_visible()
    assert page.request.get("/api/v1/session").status == 401
    page.goto("/")
    expect(page.locator("#channel-list, .state.empty").first).to_be_visible()
    assert private not in page.content()

    for url in (f"/{private}", f"/{private}/packages/other-package"):
        response = page.goto(url)
        assert response.status == 404
        expect(page.get_by_text("Not found")).to_be_visible()
        assert private not in page.locator("main").inner_text()
        assert "other-package" not in page.locator("main").inner_text()

    # "Sign in?" from there leads back to the channel once signed in.
    page.get_by_role("link", name="Sign in?").click()
    page.get_by_label("API key").fill(owner.key)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{server.url}/{private}/packages/other-package")
    expect(page.locator("article.file")).to_contain_text("other-package-0.2-0.tar.bz2")
    tab.assert_clean()


def test_paging_through_a_channel(server, tab, owner, channel):
    page = tab.page
    names = [f"page-{i:03}" for i in range(57)]
    imported = post_import(server, channel, import_tar(dict(build_tar_bz2(name) for name in names)), owner.auth)
    assert imported.status_code == 200 and imported.json()["created"] == len(names), imported.text

    page.goto(f"/{channel}")
    links = page.locator("#packages td.name-cell a")
    expect(links).to_have_count(50)
    expect(page.locator(".count")).to_have_text("57 packages")
    expect(links).to_have_text(names[:50])
    page.get_by_role("button", name="Next page").click()
    expect(links).to_have_text(names[50:])
    assert "cursor=" in page.url
    expect(page.get_by_role("button", name="Next page")).to_have_count(0)
    # The page is in the address: a reload shows it again, and back returns to the first.
    page.reload()
    expect(links).to_have_text(names[50:])
    page.go_back()
    expect(links).to_have_count(50)
    page.go_forward()
    page.get_by_role("button", name="First page").click()
    expect(links).to_have_text(names[:50])
    tab.assert_clean()


def test_channel_settings_visibility_and_delete(server, tab, owner):
    page = tab.page
    name = unique("settings")
    server.admin("channel", "create", name, "--owner", owner.name)
    sign_in(tab, owner.key, owner.name)
    page.goto(f"/{name}/settings")
    page.get_by_label("Private").check()
    page.get_by_role("button", name="Save visibility").click()
    expect(page.locator("#visibility .message")).to_contain_text("now private")
    expect(page.locator(".channel-head .badge").first).to_have_text("private")
    assert server.api("GET", f"channels/{name}", owner.key).json()["private"] is True

    delete = page.get_by_role("button", name="Delete this channel")
    expect(delete).to_be_disabled()
    page.get_by_label("type the channel name to confirm").fill(name[:-1])
    expect(delete).to_be_disabled()
    page.get_by_label("type the channel name to confirm").fill(name)
    delete.click()
    expect(page).to_have_url(f"{server.url}/")
    assert server.api("GET", f"channels/{name}", owner.key).status_code == 404
    tab.assert_clean()



def test_trusted_publishers_on_the_settings_page(server, tab, owner, make_user, channel):
    page = tab.page
    sign_in(tab, owner.key, owner.name)
    page.goto(f"/{channel}/settings")
    card = page.locator("#trusted-publishers")
    expect(card).to_contain_text("No trusted publishers.")
    hostile = "<img src=x onerror=alert(1)>"
    card.get_by_label("issuer").select_option("github")
    card.get_by_label("repository").fill("acme/widgets")
    card.get_by_label("workflow").fill("release.yml")
    card.get_by_label("environment").fill(hostile)
    card.get_by_role("button", name="Add publisher").click()
    expect(card.locator(".message")).to_contain_text("Publisher added.")
    [publisher] = server.api("GET", f"channels/{channel}/publishers", owner.key).json()["publishers"]
    assert (publisher["repository"], publisher["workflow"], publisher["environment"], publisher["ref"]) == (
        "acme/widgets", "release.yml", hostile, None
    )
    row = card.locator(f"tr[data-publisher='{publisher['id']}']")
    expect(row).to_contain_text("acme/widgets")
    expect(row.locator("td").nth(3)).to_have_text(hostile)
    expect(card.locator("img")).to_have_count(0)

    # A refusal shows the server's sentence, and adds nothing.
    card.get_by_label("repository").fill("not-a-repository")
    card.get_by_role("button", name="Add publisher").click()
    expect(card.locator(".message")).to_contain_text("repository is owner/name")
    assert len(server.api("GET", f"channels/{channel}/publishers", owner.key).json()["publishers"]) == 1

    row.get_by_role("button", name="Remove").click()
    row.get_by_role("button", name="Yes, remove").click()
    expect(card).to_contain_text("No trusted publishers.")
    assert server.api("GET", f"channels/{channel}/publishers", owner.key).json()["publishers"] == []

    # A contributor does not get the settings page.
    contributor = make_user()
    server.admin("member", "add", channel, contributor.name, "--role", "contributor")
    sign_in(tab, contributor.key, contributor.name)
    page.goto(f"/{channel}/settings")
    expect(page.locator("#trusted-publishers")).to_have_count(0)
    tab.assert_clean()

def hostile_package() -> tuple[str, bytes, dict]:
    """A package whose every free-text field is an attack; its name looks like a file path as
    far as names allow (no '/' or '..' pass the server's name rules)."""
    about = {
        "summary": f"{SCRIPT} {IMG} {RTL}",
        "home": "javascript:alert(3)",
        "license": IMG,
        # The server keeps an about.json of at most 512 KiB (a larger one is dropped whole),
        # so this is the longest description a page can be given.
        "description": SCRIPT + "A" * 480_000 + "THE-END",
    }
    filename, data = build_tar_bz2(
        "index.html",
        index_overrides={"license": SCRIPT},
        info_files={"info/about.json": json.dumps(about).encode()},
    )
    return filename, data, about


def test_hostile_package_renders_as_text(server, tab, owner, channel):
    page = tab.page
    filename, data, about = hostile_package()
    stored = upload_raw(server, channel, filename, data, headers=owner.auth)
    assert stored.status_code == 201, stored.text

    page.goto(f"/{channel}")
    row = page.locator("#packages tbody tr", has_text="index.html")
    expect(row).to_be_visible()
    expect(row.locator(".summary")).to_have_text(about["summary"])

    row.get_by_role("link", name="index.html").click()
    expect(page).to_have_url(f"{server.url}/{channel}/packages/index.html")
    overview = page.locator(".overview")
    expect(overview.locator(".summary")).to_have_text(about["summary"])
    # The homepage is not a javascript: link, only its text.
    expect(overview).to_contain_text("javascript:alert(3)")
    assert page.locator("a[href^='javascript']").count() == 0
    # The description is cut short and grows with "show more", still as text.
    description = overview.locator(".description .long")
    expect(description).to_contain_text(SCRIPT)
    assert "THE-END" not in description.inner_text()
    # (By class, not by role: an accessible-name search reads the whole 480 KB text each time.)
    more = description.locator("button.more")
    expect(more).to_have_text(re.compile(r"^show more \([\d,]+ characters left\)$"))
    while more.count():
        more.click()
    expect(description).to_have_text(about["description"])
    # It stays inside its box and the page does not grow sideways.
    box = description.bounding_box()
    assert box["height"] < 800
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

    # No element came from the metadata: no script, image or frame in the page's content, and
    # the right-to-left override stays isolated in a <bdi>.
    assert page.locator("main script, main img, main iframe, main object").count() == 0
    assert page.evaluate("window.__injected") is None
    isolated = page.evaluate(
        """(marker) => {
            const walker = document.createTreeWalker(document.querySelector('main'), NodeFilter.SHOW_TEXT);
            const found = [];
            while (walker.nextNode()) {
                if (walker.currentNode.data.includes(marker)) found.push(!!walker.currentNode.parentElement.closest('bdi'));
            }
            return found;
        }""",
        "\u202e",
    )
    assert isolated and all(isolated)
    expect(page.locator(".file").first).to_contain_text(SCRIPT)  # the license of index.json

    # On a phone's width too, neither page grows sideways.
    page.set_viewport_size({"width": 390, "height": 800})
    for url in (f"/{channel}", f"/{channel}/packages/index.html"):
        page.goto(url)
        expect(page.locator("#packages, .overview").first).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, url
    tab.assert_clean()


def test_a_page_loads_under_the_weight_limit(server, tab, owner, channel):
    page = tab.page
    upload_fixture(server, channel, owner, "other-package-0.2-0.tar.bz2")
    sign_in(tab, owner.key, owner.name)
    for url in (f"/{channel}", f"/{channel}/packages/other-package", f"/{channel}/upload", "/-/keys"):
        page.goto(url)
        page.wait_for_load_state("networkidle")
        # Every script and style sheet the page loaded (modules imported by modules included),
        # counted by the bytes the server sends for it.
        loaded = page.evaluate(
            """() => performance.getEntriesByType('resource').map((e) => e.name)
                .filter((name) => /\\.(js|css)$/.test(new URL(name).pathname))"""
        )
        paths = {u.removeprefix(server.url) for u in loaded}
        assert {"/-/app.js", "/-/app.css", "/-/dom.js"} <= paths, paths
        weight = sum(len(requests.get(server.url + p, timeout=10).content) for p in paths)
        assert weight < PAGE_WEIGHT_LIMIT, (url, weight, paths)
    tab.assert_clean()

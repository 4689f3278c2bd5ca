"""A mirror channel's state: `GET /api/v1/channels/<c>/mirror` (its rules, each subdir's
freshness, the package files it keeps, paged) under the channel's read policy, and the channel
page that shows it, in Debian's chromium, against a real upstream on 127.0.0.1 (test_mirror.py's
py-rattler-indexed channel under http.server)."""

import re
import time

import requests
from playwright.sync_api import expect

from conftest import PACKAGES, unique
from test_web import screenshot, sign_in, tab  # noqa: F401 (a fixture)
from upstream_channel import UPSTREAM, create_mirror, files_of, upstream  # noqa: F401 (a fixture)

# The value of the secret MIRROR_UPSTREAM_TOKEN the test server has (conftest.py).
SECRET_VALUE = "upstream-s3cret-value"


def state_of(server, channel: str, key: str | None = None, **params) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.get(f"{server.url}/api/v1/channels/{channel}/mirror", params=params, headers=headers, timeout=30)


def now_ms() -> int:
    return int(time.time() * 1000)


def get_file(server, channel: str, subdir: str, filename: str) -> bytes:
    response = requests.get(f"{server.url}/{channel}/{subdir}/{filename}", timeout=60)
    assert response.status_code == 200, response.text
    return response.content


def test_the_mirror_api_shows_rules_freshness_and_the_kept_files(server, owner, upstream):  # noqa: F811
    rules = {"url": upstream.url, "allow": ["zlib", "other-package", "run_exports_versions"], "deny": ["test-package"], "min_age_days": 1, "credentials": "MIRROR_UPSTREAM_TOKEN"}
    name = create_mirror(server, owner, rules)
    shown = server.api("GET", f"channels/{name}", owner.key).json()["mirror"]

    empty = state_of(server, name)
    assert empty.status_code == 200, empty.text
    assert empty.headers["Cache-Control"] == "no-store"
    state = empty.json()
    assert {k: state[k] for k in shown} == shown
    assert state["credentials"] == "MIRROR_UPSTREAM_TOKEN"
    assert SECRET_VALUE not in empty.text
    # The test server revalidates on every read (conftest.py).
    assert (state["channel"], state["revalidate_seconds"]) == (name, 0)
    assert (state["subdirs"], state["kept"], state["next_cursor"]) == ([], [], None)

    before = now_ms()
    assert requests.get(f"{server.url}/{name}/linux-64/repodata.json", timeout=30).status_code == 200
    fetched = [
        ("linux-64", "zlib-1.2.11-h7b6447c_3.conda"),
        ("linux-64", "other-package-0.2-0.conda"),
        ("noarch", "run_exports_versions-1.0-he35c369_0.tar.bz2"),
    ]
    for subdir, filename in fetched:
        assert get_file(server, name, subdir, filename) == (PACKAGES / filename).read_bytes()
    after = now_ms()

    state = state_of(server, name).json()
    # Every subdir whose repodata.json was read (a package's first request reads it too).
    assert [s["subdir"] for s in state["subdirs"]] == ["linux-64", "noarch"]
    for s in state["subdirs"]:
        assert before - 1000 <= s["fetched_at"] <= after + 1000, s
        assert s["age_seconds"] >= 0
        assert s["stale"] is False
    # The kept files, in key order, each with its size; the index copies are none of them.
    expected = sorted(fetched)
    assert [(f["subdir"], f["filename"]) for f in state["kept"]] == expected
    for f in state["kept"]:
        assert f["size"] == (PACKAGES / f["filename"]).stat().st_size
        assert before - 1000 <= f["kept_at"] <= after + 1000, f
    assert state["next_cursor"] is None

    # One file a page: the same files, each once, and no cursor after the last.
    walked, cursor, pages = [], "", 0
    while True:
        page = state_of(server, name, limit=1, cursor=cursor).json()
        walked += [(f["subdir"], f["filename"]) for f in page["kept"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert cursor == "/".join(walked[-1])
    assert walked == expected
    assert pages <= len(expected) + 1

    # The upstream stops: a read is answered by the stale copy and its fetch time stays.
    stopped = {s["subdir"]: s["fetched_at"] for s in state["subdirs"]}
    upstream.stop()
    stale = requests.get(f"{server.url}/{name}/linux-64/repodata.json", timeout=30)
    assert "X-Condaflare-Stale" in stale.headers
    later = state_of(server, name).json()
    assert {s["subdir"]: s["fetched_at"] for s in later["subdirs"]} == stopped
    assert {s["subdir"]: s["stale"] for s in later["subdirs"]}["linux-64"] is True
    assert [(f["subdir"], f["filename"]) for f in later["kept"]] == expected


def test_bad_paging_is_refused(server, owner):
    name = create_mirror(server, owner, {"url": UPSTREAM})
    for params, fault in (
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"cursor": "linux-64/repodata.json"}, "cursor"),
        ({"cursor": "../../other/x-1-0.conda"}, "cursor"),
    ):
        refused = state_of(server, name, **params)
        assert refused.status_code == 400, params
        assert refused.json()["code"] == "bad_request"
        assert fault in refused.json()["error"]


def test_the_mirror_api_is_read_as_the_channel_is(server, owner, outsider, make_user):
    private = create_mirror(server, owner, {"url": UPSTREAM}, private=True)
    member = make_user()
    assert server.api("PUT", f"channels/{private}/members/{member.name}", owner.key, json={"role": "member"}).status_code == 200
    for key in (None, outsider.key):
        channel = requests.get(f"{server.url}/api/v1/channels/{private}", headers={"Authorization": f"Bearer {key}"} if key else {}, timeout=30)
        refused = state_of(server, private, key)
        assert (refused.status_code, refused.json()) == (channel.status_code, channel.json()), key
        assert refused.status_code == 404
    for key in (owner.key, member.key):
        allowed = state_of(server, private, key)
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["url"] == UPSTREAM

    public = create_mirror(server, owner, {"url": UPSTREAM})
    for key in (None, outsider.key):
        assert state_of(server, public, key).json()["url"] == UPSTREAM

    # A channel that is no mirror has no mirror state, even to its owner.
    plain = unique("plain")
    assert server.api("POST", "channels", owner.key, json={"name": plain}).status_code == 201
    missing = state_of(server, plain, owner.key)
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"
    assert "no mirror" in missing.json()["error"]
    assert state_of(server, unique("nowhere"), owner.key).status_code == 404


# Rules a mirror's creator writes, which the page must show as the literal text. Channel file
# names cannot carry markup (the name rules), but an upstream URL's path and a spec can.
HOSTILE_PATH = "<img/src=x/onerror=window.__injected=1>"
HOSTILE_SPEC = 'zlib[license="<script>window.__injected=2</script>"]'


def size_text(n: int) -> str:
    """What the page's bytes() writes for n."""
    value, unit = float(n), 0
    while value >= 1024 and unit < 3:
        value, unit = value / 1024, unit + 1
    return f"{n} B" if unit == 0 else f"{value:.1f} {['B', 'KB', 'MB', 'GB'][unit]}"


def test_a_mirrors_channel_page_shows_its_rules_freshness_and_kept_files(server, tab, owner, upstream):  # noqa: F811
    # The upstream's channel under a path that is markup: the Worker's fetch escapes it, and
    # http.server finds the directory.
    hostile = upstream.root.joinpath(*HOSTILE_PATH.split("/"))
    hostile.parent.mkdir(parents=True)
    hostile.symlink_to(upstream.root / "channel", target_is_directory=True)
    url = upstream.origin + "/" + HOSTILE_PATH
    name = create_mirror(server, owner, {"url": url, "allow": ["zlib", "other-package"], "deny": [HOSTILE_SPEC], "min_age_days": 30})
    shown = server.api("GET", f"channels/{name}", owner.key).json()["mirror"]

    page = tab.page
    sign_in(tab, owner.key, owner.name)
    page.goto(f"/{name}")
    card = page.locator("#mirror")
    expect(card.locator("h2")).to_have_text(f"Mirror of {url}")
    expect(page.locator(".channel-head .badge.mirror")).to_have_text("mirror")
    expect(card.locator(".allow li")).to_have_text(["zlib", "other-package"])
    expect(card.locator(".deny li")).to_have_text(shown["deny"])
    expect(card.locator(".min-age")).to_have_text("30 days after its build")
    expect(card).to_contain_text("No index fetched yet")
    expect(card).to_contain_text("Nothing kept yet: packages are fetched on first install.")
    # Its owner manages it, and nobody uploads to it.
    tabs = page.locator(".channel-head .tabs")
    expect(tabs.get_by_role("link", name="Settings")).to_be_visible()
    expect(tabs.get_by_role("link", name="+ Add")).to_have_count(0)

    filename = "zlib-1.2.11-h7b6447c_3.conda"
    assert get_file(server, name, "linux-64", filename) == (PACKAGES / filename).read_bytes()
    page.reload()
    fresh = card.locator("#mirror-fresh tbody tr")
    expect(fresh).to_have_count(1)
    expect(fresh.locator("td").nth(0)).to_have_text("linux-64")
    expect(fresh.locator("td").nth(1)).to_have_text(re.compile(r"^fetched \d+ s ago$"))
    kept = card.locator("#mirror-kept tbody tr")
    expect(kept).to_have_count(1)
    expect(kept.locator("td")).to_have_text([filename, "linux-64", size_text((PACKAGES / filename).stat().st_size), "just now"])
    expect(card.locator(".count")).to_have_text("1 file")
    screenshot(tab, "mirror.png")

    # The markup stayed text: nothing ran, no element came of it.
    assert page.evaluate("window.__injected") is None
    assert card.locator("img, script").count() == 0
    expect(card.locator("h2 code")).to_have_text(url)
    tab.assert_clean()

    # The upload page says why there is none.
    page.goto(f"/{name}/upload")
    expect(page.get_by_text("A mirror takes no uploads")).to_be_visible()
    expect(page.locator("#dropzone")).to_have_count(0)
    tab.assert_clean()

    # The channel list badges it with what it mirrors, as text.
    page.goto("/")
    row = page.locator("#channel-list tbody tr", has=page.get_by_role("link", name=name, exact=True))
    expect(row.locator(".badge.mirror")).to_have_text(f"mirror of {url}")
    screenshot(tab, "channels-mirror.png")
    assert page.evaluate("window.__injected") is None
    assert row.locator("img, script").count() == 0
    tab.assert_clean()


def linux_files(server, name: str, key: str) -> set[str]:
    response = requests.get(f"{server.url}/{name}/linux-64/repodata.json", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert response.status_code == 200, response.text
    return files_of(response.json())


def test_a_mirror_is_created_in_the_web_app_and_its_rules_changed_on_its_settings_page(server, tab, make_user, upstream):  # noqa: F811
    user = make_user()
    page = tab.page
    sign_in(tab, user.key, user.name)
    form = page.locator("#create-channel")
    message = form.locator(".message")

    # Rules the server refuses: its sentence is shown and no channel is made.
    name = unique("webmirror")
    for rules, bad in (({"url": "ftp://conda.example.org/forge"}, "url"), ({"url": upstream.url, "deny": ["zlib[version="]}, "deny")):
        refused = server.api("POST", "channels", user.key, json={"name": name, "mirror": {"allow": [], "deny": [], "min_age_days": 0, **rules}})
        assert refused.status_code == 400, refused.text
        page.goto("/")
        page.get_by_label("channel name").fill(name)
        form.locator("summary").click()
        page.get_by_label("Upstream channel URL").fill(rules["url"])
        page.get_by_label("Deny", exact=True).fill("\n".join(rules.get("deny", [])))
        page.get_by_role("button", name="Create channel").click()
        expect(message).to_have_text(refused.json()["error"])
        assert server.api("GET", f"channels/{name}", user.key).status_code == 404, bad

    page.goto("/")
    page.get_by_label("channel name").fill(name)
    page.get_by_label("private (members only)").check()
    form.locator("summary").click()
    page.get_by_label("Upstream channel URL").fill(upstream.url)
    page.get_by_label("Allow only (empty: every package)").fill("zlib\n  other-package  \n\n")
    page.get_by_label("Deny", exact=True).fill("other-package")
    page.get_by_label("Minimum age (days since its build)").fill("0")
    page.get_by_role("button", name="Create channel").click()
    expect(page).to_have_url(f"{server.url}/{name}")
    expect(page.locator("#mirror h2")).to_have_text(f"Mirror of {upstream.url}")
    expect(page.locator("#mirror .allow li")).to_have_text(["zlib", "other-package"])
    expect(page.locator("#mirror .deny li")).to_have_text(["other-package"])
    shown = server.api("GET", f"channels/{name}", user.key).json()
    assert (shown["private"], shown["your_role"]) == (True, "owner")
    assert shown["mirror"] == {"url": upstream.url, "allow": ["zlib", "other-package"], "deny": ["other-package"], "min_age_days": 0}
    assert requests.get(f"{server.url}/{name}/linux-64/repodata.json", timeout=30).status_code in (401, 403, 404)
    zlib = {"zlib-1.2.11-h7b6447c_3.conda", "zlib-1.2.11-h7b6447c_3.tar.bz2"}
    assert linux_files(server, name, user.key) == zlib

    # The settings page of a mirror changes its rules (and has no trusted publishers: it takes
    # no uploads), prefilled with the ones it has.
    page.goto(f"/{name}/settings")
    rules = page.locator("#mirror-rules")
    expect(page.get_by_label("Upstream channel URL")).to_have_value(upstream.url)
    expect(page.get_by_label("Allow only (empty: every package)")).to_have_value("zlib\nother-package")
    expect(page.locator("#publishers")).to_have_count(0)
    screenshot(tab, "mirror-settings.png")
    before = server.api("GET", f"channels/{name}", user.key).json()["mirror"]
    page.get_by_label("Deny", exact=True).fill("zlib[version=")
    page.get_by_role("button", name="Save rules").click()
    expect(rules.locator(".message")).to_contain_text("'zlib[version=' in deny is not a match spec")
    assert server.api("GET", f"channels/{name}", user.key).json()["mirror"] == before

    page.get_by_label("Deny", exact=True).fill("")
    page.get_by_role("button", name="Save rules").click()
    expect(rules.locator(".message")).to_have_text("The rules are saved.")
    assert server.api("GET", f"channels/{name}", user.key).json()["mirror"]["deny"] == []
    assert linux_files(server, name, user.key) == zlib | {"other-package-0.2-0.conda"}
    page.goto(f"/{name}")
    expect(page.locator("#mirror .deny")).to_have_text("none")
    tab.assert_clean()

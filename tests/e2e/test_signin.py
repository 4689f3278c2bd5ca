"""Signing in with an identity: an OpenID Connect provider (oidc-provider-mock, a real one, with
PKCE checked in front of it), GitHub (a fake of its OAuth endpoints and `GET /user`) and
Cloudflare Access (assertions signed with the team key the harness holds, its certs served on
127.0.0.1). Each in the browser and over HTTP, with its hostile cases: every refusal must leave
no session and no user behind."""

import time
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from playwright.sync_api import expect

from conftest import AUTH_CACHE_SECONDS, unique
from harness import AdminError, running_server
from identity_providers import access_team, fake_github, oidc_provider

# The OpenID Connect provider's library announces its own deprecations on every request.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

COOKIE = "condaflare_session"
ATTEMPT_COOKIE = "condaflare_signin"
OIDC_CLIENT_ID = "condaflare-test"
GITHUB_CLIENT_ID = "Iv1.condaflare"
GITHUB_SECRET = "github-client-secret"
ACCESS_AUD = "4714c1358e65fe4b408ad6d432a5f878f08194bdb4752441fd56faefa9b2b6f2"
ACCESS_TEAM = "condaflare-test.cloudflareaccess.com"
# Named site admins: one identity of each provider.
GITHUB_ADMIN = 900001
OIDC_ADMIN = "admin-subject"
ACCESS_ADMIN = "Boss@Example.com"


@pytest.fixture(scope="module")
def providers():
    with oidc_provider() as oidc, fake_github(GITHUB_CLIENT_ID, GITHUB_SECRET) as github, access_team(ACCESS_TEAM, ACCESS_AUD) as access:
        yield oidc, github, access


@pytest.fixture(scope="module")
def oidc(providers):
    return providers[0]


@pytest.fixture(scope="module")
def github(providers):
    return providers[1]


@pytest.fixture(scope="module")
def access(providers):
    return providers[2]


@pytest.fixture(scope="module")
def site(tmp_path_factory, providers):
    oidc, github, access = providers
    variables = {
        "AUTH_CACHE_SECONDS": str(AUTH_CACHE_SECONDS),
        "OIDC_ISSUER": oidc.url,
        "OIDC_CLIENT_ID": OIDC_CLIENT_ID,
        "OIDC_CLIENT_SECRET": "oidc-client-secret",
        "OIDC_LABEL": "Test IdP",
        "GITHUB_CLIENT_ID": GITHUB_CLIENT_ID,
        "GITHUB_CLIENT_SECRET": GITHUB_SECRET,
        "GITHUB_URL": github.url,
        "GITHUB_API_URL": github.api_url,
        "ACCESS_TEAM_DOMAIN": ACCESS_TEAM,
        "ACCESS_AUD": ACCESS_AUD,
        "ACCESS_CERTS_URL": access.certs_url,
        "ADMIN_IDENTITIES": f"github:{GITHUB_ADMIN},oidc:{OIDC_ADMIN},access:{ACCESS_ADMIN}",
    }
    with running_server(tmp_path_factory.mktemp("signin-state"), variables) as server:
        yield server


@pytest.fixture
def site_tab(browser, site):
    context = browser.new_context(base_url=site.url)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert errors == []


def users(site) -> set[str]:
    return {user["name"] for user in site.admin("user", "list")}


def identities(site) -> set[tuple[str, str, str]]:
    return {(i["provider"], i["subject"], i["user"]) for i in site.admin("identity", "list")}


def session_of(site, browser_session: requests.Session) -> requests.Response:
    return browser_session.get(f"{site.url}/api/v1/session", timeout=30)


def refused_with(response: requests.Response, code: str):
    assert response.status_code == 303, response.text
    assert response.headers["Location"] == f"/-/signin?error={code}"
    assert COOKIE not in response.headers.get("Set-Cookie", "")


def with_query(url: str, **changes) -> str:
    parts = urlparse(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunparse(parts._replace(query=urlencode(query)))


# OpenID Connect

def oidc_start(site, browser_session: requests.Session, next_path: str | None = None) -> str:
    """The provider's authorization URL a sign-in starts with (the attempt cookie set)."""
    params = {"next": next_path} if next_path else {}
    started = browser_session.get(f"{site.url}/api/v1/signin/oidc", params=params, allow_redirects=False, timeout=30)
    assert started.status_code == 303, started.text
    assert ATTEMPT_COOKIE in started.headers["Set-Cookie"]
    return started.headers["Location"]


def oidc_authorize(authorization_url: str, sub: str) -> str:
    """The callback URL the provider sends the browser to once `sub` signed in there."""
    answer = requests.post(authorization_url, data={"sub": sub}, allow_redirects=False, timeout=30)
    assert answer.status_code == 302, answer.text
    return answer.headers["Location"]


def oidc_callback(site, browser_session: requests.Session, callback_url: str) -> requests.Response:
    assert callback_url.startswith(f"{site.url}/api/v1/signin/oidc/callback?")
    return browser_session.get(callback_url, allow_redirects=False, timeout=30)


def test_the_authorization_request_uses_pkce_state_and_nonce(site, oidc):
    url = urlparse(oidc_start(site, requests.Session()))
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert f"{url.scheme}://{url.netloc}" == oidc.url
    assert query["response_type"] == "code"
    assert query["client_id"] == OIDC_CLIENT_ID
    assert query["redirect_uri"] == f"{site.url}/api/v1/signin/oidc/callback"
    assert query["code_challenge_method"] == "S256"
    assert len(query["code_challenge"]) == 43
    assert len(query["state"]) == 43 and len(query["nonce"]) == 43
    assert set(query["scope"].split()) == {"openid", "profile", "email"}
    # Each attempt has its own.
    again = parse_qs(urlparse(oidc_start(site, requests.Session())).query)
    assert again["state"][0] != query["state"] and again["nonce"][0] != query["nonce"]


def test_oidc_sign_in_in_the_browser(site, oidc, site_tab):
    sub = unique("sub")
    name = unique("ann")
    oidc.set_user(sub, {"preferred_username": name, "email": f"{name}@example.com"})
    page = site_tab
    page.goto("/-/signin?next=/-/keys")
    page.get_by_role("link", name="Sign in with Test IdP").click()
    page.locator("input[name=sub]").fill(sub)
    page.get_by_role("button", name="Authorize").click()
    expect(page.locator("#nav .user")).to_contain_text(name)
    expect(page).to_have_url(f"{site.url}/-/keys")
    session = page.request.get("/api/v1/session").json()
    assert session["user"] == name
    assert session["is_admin"] is False
    assert session["key"]["read_only"] is False and session["key"]["channels"] is None
    assert abs(session["expires_at"] - (time.time() * 1000 + 12 * 3600 * 1000)) < 60_000
    # A member of nothing, whose key listing does not show the session's own key.
    assert page.request.get("/api/v1/whoami").json()["channels"] == []
    assert page.request.get("/api/v1/keys").json()["keys"] == []
    assert ("oidc", sub, name) in identities(site)
    cookie = next(c for c in page.context.cookies() if c["name"] == COOKIE)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"

    # Signing out ends it; signing in again finds the same user.
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#nav")).to_contain_text("Sign in")
    assert page.request.get("/api/v1/session").status == 401
    before = users(site)
    page.goto("/-/signin")
    page.get_by_role("link", name="Sign in with Test IdP").click()
    page.locator("input[name=sub]").fill(sub)
    page.get_by_role("button", name="Authorize").click()
    expect(page.locator("#nav .user")).to_contain_text(name)
    assert users(site) == before


def test_an_identity_sign_in_replaces_the_browsers_session(site, oidc, site_tab):
    """As key sign-in does: the session the browser held ends, though the provider's callback
    (a navigation from another site) does not carry the Strict cookie. The browser uses the
    server as `localhost`, so that the provider on 127.0.0.1 is another site (ports do not
    make one)."""
    name = unique("keyed")
    site.admin("user", "create", name)
    key = site.admin("key", "create", name)["key"]
    page = site_tab
    local = site.url.replace("127.0.0.1", "localhost")
    page.goto(f"{local}/-/signin")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.locator("#nav .user")).to_contain_text(name)
    held = next(c["value"] for c in page.context.cookies() if c["name"] == COOKIE)
    sub = unique("sub")
    other = unique("other")
    oidc.set_user(sub, {"preferred_username": other})
    page.goto(f"{local}/-/signin")
    page.get_by_role("link", name="Sign in with Test IdP").click()
    page.locator("input[name=sub]").fill(sub)
    page.get_by_role("button", name="Authorize").click()
    expect(page.locator("#nav .user")).to_contain_text(other)
    assert requests.get(f"{site.url}/api/v1/session", cookies={COOKIE: held}, timeout=30).status_code == 401
    now = next(c["value"] for c in page.context.cookies() if c["name"] == COOKIE)
    assert requests.get(f"{site.url}/api/v1/session", cookies={COOKIE: now}, timeout=30).json()["user"] == other


def test_a_taken_user_name_is_made_unique(site, oidc):
    name = unique("taken")
    site.admin("user", "create", name)
    sub = unique("sub")
    oidc.set_user(sub, {"preferred_username": name})
    browser_session = requests.Session()
    answer = oidc_callback(site, browser_session, oidc_authorize(oidc_start(site, browser_session), sub))
    assert answer.status_code == 303 and answer.headers["Location"] == "/"
    assert session_of(site, browser_session).json()["user"] == f"{name}-2"
    # The existing user was not signed in to, nor given the identity.
    assert ("oidc", sub, f"{name}-2") in identities(site)


def test_an_oidc_callback_with_another_state_or_from_another_browser_is_refused(site, oidc):
    sub = unique("sub")
    oidc.set_user(sub, {"preferred_username": unique("state")})
    before_users, before_identities = users(site), identities(site)
    mine = requests.Session()
    callback = oidc_authorize(oidc_start(site, mine), sub)

    refused_with(oidc_callback(site, mine, with_query(callback, state="A" * 43)), "state")
    refused_with(oidc_callback(site, mine, with_query(callback, state="")), "state")
    # The callback of this browser's attempt, opened in another browser (one with no attempt,
    # or with one of its own): login CSRF.
    other = requests.Session()
    refused_with(oidc_callback(site, other, callback), "state")
    oidc_start(site, other)
    refused_with(oidc_callback(site, other, callback), "state")
    assert session_of(site, other).status_code == 401
    assert session_of(site, mine).status_code == 401
    assert users(site) == before_users and identities(site) == before_identities

    # None of that spent this browser's attempt.
    signed_in = oidc_callback(site, mine, callback)
    assert signed_in.status_code == 303 and signed_in.headers["Location"] == "/"
    assert session_of(site, mine).status_code == 200


def test_a_replayed_oidc_callback_or_code_is_refused(site, oidc):
    sub = unique("sub")
    oidc.set_user(sub, {"preferred_username": unique("replay")})
    browser_session = requests.Session()
    authorization = oidc_start(site, browser_session)
    state = parse_qs(urlparse(authorization).query)["state"][0]
    callback = oidc_authorize(authorization, sub)
    assert oidc_callback(site, browser_session, callback).status_code == 303
    first = session_of(site, browser_session).json()

    # The same callback again, with its attempt cookie put back: the attempt was taken.
    replay = requests.Session()
    replay.cookies.set(ATTEMPT_COOKIE, state, path="/api/v1/signin")
    refused_with(oidc_callback(site, replay, callback), "state")
    assert session_of(site, replay).status_code == 401
    # The used code under a fresh attempt of that browser: the provider refuses it.
    replay.cookies.clear()
    fresh = oidc_start(site, replay)
    fresh_state = parse_qs(urlparse(fresh).query)["state"][0]
    refused_with(oidc_callback(site, replay, with_query(callback, state=fresh_state)), "exchange")
    assert session_of(site, replay).status_code == 401
    # The session the first callback started is unaffected.
    assert session_of(site, browser_session).json() == first


@pytest.mark.parametrize(
    "claims",
    [
        {"nonce": "not-the-attempts-nonce"},
        {"iss": "http://127.0.0.1:9"},
        {"aud": "another-client"},
        {"exp": int(time.time()) - 3600},
    ],
    ids=["wrong-nonce", "foreign-issuer", "wrong-audience", "expired"],
)
def test_an_id_token_that_does_not_verify_is_refused(site, oidc, claims):
    sub = unique("sub")
    name = unique("forged")
    oidc.set_user(sub, {"preferred_username": name, **claims})
    browser_session = requests.Session()
    refused_with(oidc_callback(site, browser_session, oidc_authorize(oidc_start(site, browser_session), sub)), "token")
    assert session_of(site, browser_session).status_code == 401
    assert name not in users(site)
    assert all(i[1] != sub for i in identities(site))


def test_a_code_without_the_attempts_verifier_is_refused(site, oidc):
    """The provider issues the code for the attempt's PKCE challenge; a code obtained for
    another challenge (an attacker's own authorization request) does not exchange."""
    sub = unique("sub")
    oidc.set_user(sub, {"preferred_username": unique("pkce")})
    browser_session = requests.Session()
    authorization = oidc_start(site, browser_session)
    forged = with_query(authorization, code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
    refused_with(oidc_callback(site, browser_session, oidc_authorize(forged, sub)), "exchange")
    assert session_of(site, browser_session).status_code == 401


def test_a_denied_oidc_sign_in_is_shown(site, oidc, site_tab):
    page = site_tab
    page.goto("/-/signin")
    page.get_by_role("link", name="Sign in with Test IdP").click()
    page.get_by_role("button", name="Deny").click()
    expect(page).to_have_url(f"{site.url}/-/signin?error=denied")
    expect(page.locator("#signin .message")).to_contain_text("The provider did not sign you in")
    assert page.request.get("/api/v1/session").status == 401


def test_a_refused_callback_lands_on_the_sign_in_page_with_a_sentence(site, oidc, site_tab):
    sub = unique("sub")
    oidc.set_user(sub, {"preferred_username": unique("page"), "nonce": "forged"})
    page = site_tab
    page.goto("/-/signin")
    page.get_by_role("link", name="Sign in with Test IdP").click()
    page.locator("input[name=sub]").fill(sub)
    page.get_by_role("button", name="Authorize").click()
    expect(page).to_have_url(f"{site.url}/-/signin?error=token")
    expect(page.locator("#signin .message")).to_contain_text("identity token did not verify")
    expect(page.locator("#nav")).to_contain_text("Sign in")
    # A foreign callback: the page says so.
    page.goto(f"/api/v1/signin/oidc/callback?code=x&state={'B' * 43}")
    expect(page).to_have_url(f"{site.url}/-/signin?error=state")
    expect(page.locator("#signin .message")).to_contain_text("not started in this browser")


def test_an_oidc_identity_named_in_the_configuration_is_a_site_admin(site, oidc):
    oidc.set_user(OIDC_ADMIN, {"preferred_username": unique("boss")})
    browser_session = requests.Session()
    assert oidc_callback(site, browser_session, oidc_authorize(oidc_start(site, browser_session), OIDC_ADMIN)).status_code == 303
    session = session_of(site, browser_session).json()
    assert session["is_admin"] is True
    # As a site admin, it inspects a channel it is no member of.
    owner = unique("owner")
    site.admin("user", "create", owner)
    channel = unique("chan")
    site.admin("channel", "create", channel, "--owner", owner, "--private")
    assert browser_session.get(f"{site.url}/api/v1/channels/{channel}/stats", timeout=30).status_code == 200
    # Its user is not an admin otherwise: the admin command says so.
    listed = {u["name"]: u["is_admin"] for u in site.admin("user", "list")}
    assert listed[session["user"]] == 0


# GitHub

def github_sign_in(site, browser_session: requests.Session, next_path: str | None = None) -> requests.Response:
    params = {"next": next_path} if next_path else {}
    started = browser_session.get(f"{site.url}/api/v1/signin/github", params=params, allow_redirects=False, timeout=30)
    assert started.status_code == 303
    authorize = requests.get(started.headers["Location"], allow_redirects=False, timeout=30)
    assert authorize.status_code == 302
    return browser_session.get(authorize.headers["Location"], allow_redirects=False, timeout=30)


def test_github_sign_in_in_the_browser(site, github, site_tab):
    login = unique("Octo")
    github.user = {"id": 900002 + int(time.time()) % 1000, "login": login}
    page = site_tab
    page.goto("/-/signin")
    page.get_by_role("link", name="Sign in with GitHub").click()
    expect(page.locator("#nav .user")).to_contain_text(login.lower())
    expect(page).to_have_url(f"{site.url}/")
    session = page.request.get("/api/v1/session").json()
    assert session["user"] == login.lower() and session["is_admin"] is False
    assert ("github", str(github.user["id"]), login.lower()) in identities(site)
    # The Worker called GitHub's API as GitHub asks: with a User-Agent, the secret only in
    # the token request.
    assert github.user_agents[-1] == "condaflare"
    assert github.token_requests[-1]["client_secret"] == GITHUB_SECRET
    assert github.token_requests[-1]["redirect_uri"] == f"{site.url}/api/v1/signin/github/callback"


def test_a_linked_github_identity_signs_in_as_its_user_until_unlinked(site, github):
    name = unique("linked")
    site.admin("user", "create", name)
    team = unique("team")
    site.admin("channel", "create", team, "--owner", name, "--private")
    github_id = 910000 + int(time.time()) % 1000
    site.admin("identity", "link", "github", str(github_id), name)
    github.user = {"id": github_id, "login": unique("someone-else")}
    browser_session = requests.Session()
    answer = github_sign_in(site, browser_session, next_path=f"/{team}")
    assert answer.status_code == 303 and answer.headers["Location"] == f"/{team}"
    assert session_of(site, browser_session).json()["user"] == name
    # With the user's full rights: its private channel, and creating channels.
    assert browser_session.get(f"{site.url}/{team}/noarch/repodata.json", timeout=30).status_code == 200
    created = browser_session.post(f"{site.url}/api/v1/channels", json={"name": unique("made")}, headers={"Origin": site.url}, timeout=30)
    assert created.status_code == 201, created.text
    # The same rules as any session: a change needs this site's Origin.
    refused = browser_session.post(f"{site.url}/api/v1/channels", json={"name": unique("csrf")}, timeout=30)
    assert refused.status_code == 403
    # The identity cannot be linked twice.
    someone = unique("someone")
    site.admin("user", "create", someone)
    with pytest.raises(AdminError, match="belongs to"):
        site.admin("identity", "link", "github", str(github_id), someone)

    # Unlinking ends its sessions, everywhere within the cache time.
    site.admin("identity", "unlink", "github", str(github_id))
    time.sleep(AUTH_CACHE_SECONDS + 0.5)
    assert session_of(site, browser_session).status_code == 401
    assert browser_session.get(f"{site.url}/{team}/noarch/repodata.json", timeout=30).status_code == 401


def test_hostile_github_callbacks_are_refused(site, github):
    login = unique("hostile")
    github.user = {"id": 920000 + int(time.time()) % 1000, "login": login}
    before_users = users(site)
    mine = requests.Session()
    started = mine.get(f"{site.url}/api/v1/signin/github", allow_redirects=False, timeout=30)
    callback = requests.get(started.headers["Location"], allow_redirects=False, timeout=30).headers["Location"]

    refused_with(mine.get(with_query(callback, state="C" * 43), allow_redirects=False, timeout=30), "state")
    refused_with(requests.get(callback, allow_redirects=False, timeout=30), "state")
    refused_with(mine.get(with_query(callback, error="access_denied"), allow_redirects=False, timeout=30), "denied")
    assert session_of(site, mine).status_code == 401
    assert users(site) == before_users

    # None of those spent this browser's attempt, which now signs in.
    state = parse_qs(urlparse(callback).query)["state"][0]
    answer = mine.get(callback, allow_redirects=False, timeout=30)
    assert answer.status_code == 303 and answer.headers["Location"] == "/"
    assert session_of(site, mine).json()["user"] == login.lower()
    # Replayed: the attempt is gone, and so is the code.
    replay = requests.Session()
    replay.cookies.set(ATTEMPT_COOKIE, state, path="/api/v1/signin")
    refused_with(replay.get(callback, allow_redirects=False, timeout=30), "state")
    replay.cookies.clear()
    fresh = replay.get(f"{site.url}/api/v1/signin/github", allow_redirects=False, timeout=30)
    fresh_state = parse_qs(urlparse(fresh.headers["Location"]).query)["state"][0]
    refused_with(replay.get(with_query(callback, state=fresh_state), allow_redirects=False, timeout=30), "exchange")
    assert session_of(site, replay).status_code == 401
    assert users(site) == before_users | {login.lower()}


def test_a_github_identity_named_in_the_configuration_is_a_site_admin(site, github):
    github.user = {"id": GITHUB_ADMIN, "login": unique("gh-admin")}
    browser_session = requests.Session()
    assert github_sign_in(site, browser_session).status_code == 303
    assert session_of(site, browser_session).json()["is_admin"] is True
    github.user = {"id": GITHUB_ADMIN + 1, "login": unique("gh-not-admin")}
    other = requests.Session()
    assert github_sign_in(site, other).status_code == 303
    assert session_of(site, other).json()["is_admin"] is False


# Cloudflare Access

def access_sign_in(site, assertion: str | None, **headers) -> requests.Response:
    if assertion is not None:
        headers["Cf-Access-Jwt-Assertion"] = assertion
    return requests.post(f"{site.url}/api/v1/signin/access", headers=headers, timeout=30)


def test_access_sign_in_in_the_browser(site, access, browser):
    email = f"{unique('carol')}@example.com"
    # Access adds its assertion to every request that reaches the Worker.
    context = browser.new_context(base_url=site.url, extra_http_headers={"Cf-Access-Jwt-Assertion": access.assertion(email)})
    page = context.new_page()
    page.goto("/-/signin?next=/-/keys")
    page.get_by_role("button", name="Sign in with Cloudflare Access").click()
    name = email.split("@")[0]
    expect(page.locator("#nav .user")).to_contain_text(name)
    expect(page).to_have_url(f"{site.url}/-/keys")
    assert page.request.get("/api/v1/session").json()["user"] == name
    context.close()


def test_access_matches_users_by_email_and_names_admins(site, access):
    email = f"{unique('dave')}@Example.com"
    signed_in = access_sign_in(site, access.assertion(email))
    assert signed_in.status_code == 201, signed_in.text
    body = signed_in.json()
    assert body["user"] == email.split("@")[0].lower() and body["is_admin"] is False
    assert "HttpOnly" in signed_in.headers["Set-Cookie"] and "SameSite=Strict" in signed_in.headers["Set-Cookie"]
    again = access_sign_in(site, access.assertion(email.lower()))
    assert again.json()["user"] == body["user"]
    assert ("access", email.lower(), body["user"]) in identities(site)

    boss = access_sign_in(site, access.assertion(ACCESS_ADMIN.lower()))
    assert boss.status_code == 201 and boss.json()["is_admin"] is True


def test_a_bad_access_assertion_is_refused(site, access):
    email = f"{unique('eve')}@example.com"
    good = access.assertion(email)
    header, payload, signature = good.split(".")
    tampered_payload = payload[:-4] + ("AAAA" if payload[-4:] != "AAAA" else "BBBB")
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    before = users(site)
    for assertion, sentence in [
        (f"{header}.{tampered_payload}.{signature}", "signature"),
        (f"{header}.{payload}.{signature[:-4]}AAAA", "signature"),
        (access.assertion(email, exp=int(time.time()) - 600), "expired"),
        (access.assertion(email, aud=["another-application"]), "aud"),
        (access.assertion(email, iss="https://other-team.cloudflareaccess.com"), "iss"),
        (access.assertion(email, key=other_key), "signature"),
        (access.assertion(email, kid="unknown-key"), "key"),
        ("not a token", ""),
    ]:
        refused = access_sign_in(site, assertion)
        assert refused.status_code == 401, (sentence, refused.text)
        assert sentence.lower() in refused.json()["error"].lower(), refused.text
        assert "Set-Cookie" not in refused.headers
    missing = access_sign_in(site, None)
    assert missing.status_code == 401 and "Access" in missing.json()["error"]
    # From another site's page, even with a good assertion.
    cross = access_sign_in(site, good, Origin="https://evil.example")
    assert cross.status_code == 403 and "Set-Cookie" not in cross.headers
    assert users(site) == before
    assert all(i[1] != email for i in identities(site))


def test_methods_are_offered_only_when_configured(site, server):
    offered = requests.get(f"{site.url}/api/v1/server", timeout=30).json()["sign_in"]
    assert offered == [
        {"method": "oidc", "label": "Test IdP"},
        {"method": "github", "label": "GitHub"},
        {"method": "access", "label": "Cloudflare Access"},
    ]
    # The default server configures none.
    assert requests.get(f"{server.url}/api/v1/server", timeout=30).json()["sign_in"] == []
    for method in ("oidc", "github"):
        refused_with(requests.get(f"{server.url}/api/v1/signin/{method}", allow_redirects=False, timeout=30), "disabled")
        refused_with(requests.get(f"{server.url}/api/v1/signin/{method}/callback?code=x&state=y", allow_redirects=False, timeout=30), "disabled")
    assert requests.post(f"{server.url}/api/v1/signin/access", headers={"Cf-Access-Jwt-Assertion": "x"}, timeout=30).status_code == 404


def test_no_secret_or_token_reaches_the_log(site, github, access):
    """After every sign-in above: the client secrets, GitHub's access tokens and any JWT (an
    id_token, an Access assertion) are never written to the Worker's log."""
    assert access_sign_in(site, access.assertion(f"{unique('log')}@example.com")).status_code == 201
    log = site.log()
    assert "sign-in refused" in log or "session start" in log
    for secret in ["oidc-client-secret", GITHUB_SECRET, "eyJ", *github.tokens]:
        assert secret not in log, secret

"""Trusted publishing with the real client: py-rattler-build's prefix.dev upload with no key, in
an environment that looks like GitHub Actions to it, its token request answered by an issuer the
harness runs (oidc_issuer.py), which the Worker trusts in place of GitHub's. The upload lands;
every token or key that should not publish is refused with the client's error and nothing
stored. Also the publishers' API, the admin command, and what a minted key may do."""

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from artifacts import repodata
from conftest import AUTH_CACHE_SECONDS, PACKAGES, User, sha256_of, unique
from harness import AdminError, running_server
from oidc_issuer import Issuer
from pkgbuild import build_tar_bz2
from playwright.sync_api import expect
from test_web import tab  # noqa: F401 (a page of the web app, for the package page)

# Short, so that a test can see a minted key expire; long enough for one client's uploads.
MINTED_KEY_SECONDS = 10
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def issuer():
    with Issuer() as issuer:
        yield issuer


@pytest.fixture(scope="module")
def gitlab():
    """An issuer in place of GitLab's."""
    with Issuer() as issuer:
        yield issuer


@pytest.fixture(scope="module")
def server(tmp_path_factory, issuer, gitlab):
    variables = {
        "AUTH_CACHE_SECONDS": str(AUTH_CACHE_SECONDS),
        "GITHUB_OIDC_ISSUER": issuer.url,
        "GITLAB_OIDC_ISSUER": gitlab.url,
        "MINTED_KEY_SECONDS": str(MINTED_KEY_SECONDS),
    }
    with running_server(tmp_path_factory.mktemp("state"), variables) as server:
        yield server


def user(server, admin: bool = False) -> User:
    name = unique("user")
    server.admin("user", "create", name, *(["--admin"] if admin else []))
    key = server.admin("key", "create", name, "--name", "tests")
    return User(name=name, key=key["key"], key_id=key["id"])


@pytest.fixture(scope="module")
def owner(server) -> User:
    return user(server)


def new_channel(server, owner: User, private: bool = False) -> str:
    name = unique("chan")
    server.admin("channel", "create", name, "--owner", owner.name, *(["--private"] if private else []))
    return name


@pytest.fixture
def channel(server, owner) -> str:
    return new_channel(server, owner)


def repository() -> str:
    """A repository of its own for each test: a token matches publishers on every channel."""
    return f"acme/{unique('widgets')}"


def register(server, owner: User, channel: str, repository: str, **conditions) -> dict:
    answer = server.api(
        "POST", f"channels/{channel}/publishers", owner.key, json={"issuer": "github", "repository": repository, **conditions}
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


def package_file(tmp_path, name: str) -> Path:
    filename, data = build_tar_bz2(name, files={f"share/{name}.txt": b"content"})
    path = tmp_path / filename
    path.write_bytes(data)
    return path


def github_env(issuer: Issuer, request_token: str) -> dict:
    """The variables GitHub Actions sets for a job with `permissions: id-token: write`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "ACTIONS_", "GITLAB_", "CI"))}
    return {
        **env,
        "GITHUB_ACTIONS": "true",
        "ACTIONS_ID_TOKEN_REQUEST_URL": f"{issuer.url}/token?api-version=2.0",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": request_token,
    }


def client_upload(server, channel: str, path: Path, env: dict | None = None, key: str | None = None) -> dict:
    """The real client's upload, in its own process with `env`: {"uploaded": true} or
    {"error": "..."}."""
    out = subprocess.run(
        [sys.executable, str(HERE / "prefix_upload.py"), server.url, channel, str(path), *([key] if key else [])],
        capture_output=True,
        text=True,
        env=env or os.environ.copy(),
        timeout=120,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no answer from the client: {out.stdout}\n{out.stderr}"
    return json.loads(lines[-1])


def publish(server, issuer, channel: str, path: Path, claims: dict, signing: str = "rsa") -> dict:
    return client_upload(server, channel, path, github_env(issuer, issuer.prepare(claims, signing)))


def mint(server, token: str) -> requests.Response:
    return requests.post(f"{server.url}/api/oidc/mint_token", json={"token": token}, timeout=30)


def minted_key(server, issuer, repository: str) -> str:
    claims = {"aud": "127.0.0.1", **issuer.github_claims(repository)}
    answer = mint(server, issuer.sign(claims))
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/plain")
    assert answer.headers["Cache-Control"] == "no-store"
    return answer.text


def stored(server, channel: str) -> list[str]:
    return sorted(k for k in server.r2_keys() if k.startswith((f"{channel}/", f".staging/{channel}/")))


def assert_nothing_stored(server, channel: str) -> None:
    assert stored(server, channel) == []
    index = repodata(server, channel, "noarch")
    assert index["packages"] == {} and index["packages.conda"] == {}


def test_a_job_publishes_with_no_secret(server, issuer, owner, channel, tmp_path):
    repo = repository()
    publisher = register(server, owner, channel, repo, workflow="release.yml")
    assert (publisher["provider"], publisher["issuer"], publisher["repository"]) == ("github", issuer.url, repo)
    assert (publisher["workflow"], publisher["environment"], publisher["ref"]) == ("release.yml", None, None)
    assert publisher["created_by"] == owner.name
    path = package_file(tmp_path, "published")
    request_token = issuer.prepare(issuer.github_claims(repo))
    assert client_upload(server, channel, path, github_env(issuer, request_token)) == {"uploaded": True}

    # The client asked for a token for the server's own host name.
    token = issuer.prepared[request_token].tokens[0]
    assert json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["aud"] == "127.0.0.1"
    record = repodata(server, channel, "noarch")["packages"][path.name]
    assert record["sha256"] == sha256_of(path.read_bytes())
    served = requests.get(f"{server.url}/{channel}/noarch/{path.name}", timeout=30)
    assert served.status_code == 200 and served.content == path.read_bytes()
    # The key belongs to the owner who registered the publisher, and expires soon.
    keys = server.api("GET", "keys", owner.key).json()["keys"]
    minted = [k for k in keys if k["name"] == f"trusted publisher {repo}"]
    assert len(minted) == 1
    assert minted[0]["expires_at"] - minted[0]["created_at"] == MINTED_KEY_SECONDS * 1000


def test_an_ec_signed_token_publishes_too(server, issuer, owner, channel, tmp_path):
    repo = repository()
    register(server, owner, channel, repo)
    path = package_file(tmp_path, "ecsigned")
    assert publish(server, issuer, channel, path, issuer.github_claims(repo), signing="ec") == {"uploaded": True}
    assert path.name in repodata(server, channel, "noarch")["packages"]


def refusals():
    now = int(time.time())
    # (case, claims over the matching ones, signing, the exchange's status and sentence)
    return [
        ("wrong audience", {"aud": "elsewhere.example.com"}, "rsa", 401, "audience (elsewhere.example.com) is not one"),
        ("expired", {"exp": now - 600, "iat": now - 900, "nbf": now - 900}, "rsa", 401, "the token expired"),
        ("wrong repository", {"repository": "acme/other-repository"}, "rsa", 403, "repository 'acme/other-repository'"),
        (
            "wrong workflow",
            {"job_workflow_ref": "{repo}/.github/workflows/deploy.yml@refs/heads/main"},
            "rsa",
            403,
            "workflow 'deploy.yml' does not match",
        ),
        ("unknown kid", {}, "unknown-kid", 401, "no key with the id 'rsa-unknown'"),
        ("bad signature", {}, "forged", 401, "signature does not verify"),
        ("alg none", {}, "none", 401, "alg none"),
        ("no jti", {"jti": None}, "rsa", 401, "'jti'"),
        ("another issuer", {"iss": "https://token.actions.githubusercontent.com"}, "rsa", 401, "is not one this server trusts"),
    ]


# What py-rattler-build 0.73 says when the exchange refuses its token: it falls back to looking
# for a key, and reports none (the server's sentence is in the exchange's answer, checked too).
CLIENT_REFUSED = "no prefix.dev API key provided and none found in keychain"


def mint_statuses(server) -> list[int]:
    """The statuses the Worker logged for token exchanges, in order."""
    statuses = []
    for line in server.log().splitlines():
        if line.startswith("{") and '"path":"/api/oidc/mint_token"' in line:
            statuses.append(json.loads(line)["status"])
    return statuses


@pytest.mark.parametrize("case, changes, signing, status, sentence", refusals(), ids=[r[0] for r in refusals()])
def test_a_token_that_should_not_publish_is_refused(server, issuer, owner, channel, tmp_path, case, changes, signing, status, sentence):
    repo = repository()
    register(server, owner, channel, repo, workflow="release.yml")
    path = package_file(tmp_path, "refused")
    claims = {**issuer.github_claims(repo), **{k: v.format(repo=repo) if isinstance(v, str) else v for k, v in changes.items()}}
    exchanges = len(mint_statuses(server))
    answer = publish(server, issuer, channel, path, claims, signing)
    assert CLIENT_REFUSED in answer.get("error", ""), answer
    assert mint_statuses(server)[exchanges:] == [status]
    assert_nothing_stored(server, channel)
    # The exchange's answer, to a token made the same way.
    direct = mint(server, issuer.sign({"aud": "127.0.0.1", **claims}, signing))
    assert direct.status_code == status, direct.text
    assert sentence in direct.json()["error"], direct.text
    assert direct.headers["Content-Type"] == "application/json"
    # Never which publishers exist: no channel, no registered workflow is named.
    assert channel not in direct.text and "release.yml" not in direct.text


def test_a_replayed_token_is_refused(server, issuer, owner, channel, tmp_path):
    repo = repository()
    register(server, owner, channel, repo)
    request_token = issuer.prepare(issuer.github_claims(repo), reuse=True)
    first = package_file(tmp_path, "first")
    assert client_upload(server, channel, first, github_env(issuer, request_token)) == {"uploaded": True}
    (tmp_path / "second").mkdir()
    second = package_file(tmp_path / "second", "second")
    answer = client_upload(server, channel, second, github_env(issuer, request_token))
    assert CLIENT_REFUSED in answer.get("error", ""), answer
    assert mint_statuses(server)[-1] == 401
    assert list(repodata(server, channel, "noarch")["packages"]) == [first.name]
    direct = mint(server, issuer.prepared[request_token].tokens[0])
    assert (direct.status_code, direct.json()["error"]) == (401, "this token was already used")


def test_a_token_for_another_channel_does_not_publish_here(server, issuer, owner, channel, tmp_path):
    repo = repository()
    other = new_channel(server, owner)
    register(server, owner, other, repo)
    path = package_file(tmp_path, "elsewhere")
    answer = publish(server, issuer, channel, path, issuer.github_claims(repo))
    assert "only on the channels of its publishers" in answer.get("error", ""), answer
    assert_nothing_stored(server, channel)
    assert_nothing_stored(server, other)


def test_a_minted_key_uploads_to_its_channel_only(server, issuer, owner, channel, tmp_path):
    repo = repository()
    register(server, owner, channel, repo)
    second = new_channel(server, owner)
    private = new_channel(server, owner, private=True)
    key = minted_key(server, issuer, repo)
    path = package_file(tmp_path, "minted")
    assert client_upload(server, channel, path, key=key) == {"uploaded": True}
    answer = client_upload(server, second, path, key=key)
    assert "only on the channels of its publishers" in answer.get("error", ""), answer
    assert_nothing_stored(server, second)
    # A private channel of the same owner does not even exist for it.
    hidden = requests.post(
        f"{server.url}/api/v1/upload/{private}",
        data=path.read_bytes(),
        headers={"Authorization": f"Bearer {key}", "X-File-Name": path.name, "X-File-SHA256": sha256_of(path.read_bytes())},
        timeout=30,
    )
    assert hidden.status_code == 404
    # It reads its channel, and uploads only: no delete, no replacement, no managing, no keys.
    auth = {"Authorization": f"Bearer {key}"}
    assert requests.get(f"{server.url}/{channel}/noarch/{path.name}", headers=auth, timeout=30).status_code == 200
    for method, url, body in [
        ("DELETE", f"delete/{channel}/noarch/{path.name}", None),
        ("GET", f"channels/{channel}/members", None),
        ("GET", f"channels/{channel}/publishers", None),
        ("PATCH", f"channels/{channel}", {"private": True}),
    ]:
        refused = server.api(method, url, key, json=body)
        assert refused.status_code == 403, (method, url, refused.text)
    forced = requests.post(
        f"{server.url}/api/v1/upload/{channel}?force=true",
        data=path.read_bytes(),
        headers={**auth, "X-File-Name": path.name, "X-File-SHA256": sha256_of(path.read_bytes())},
        timeout=30,
    )
    assert forced.status_code == 403, forced.text
    assert server.api("POST", "keys", key, json={"name": "more"}).status_code == 403
    assert server.api("POST", "channels", key, json={"name": unique("mine")}).status_code == 403
    whoami = server.api("GET", "whoami", key).json()
    assert whoami["user"] == owner.name
    assert whoami["key"]["channels"] == [channel]
    assert whoami["key"]["workflow"]["repository"] == repo
    assert whoami["key"]["workflow"]["workflow"] == "release.yml"
    assert whoami["key"]["workflow"]["run_id"] == "4242"
    assert whoami["key"]["workflow"]["git_ref"] == "refs/heads/main"
    assert repodata(server, channel, "noarch")["packages"][path.name]


def test_a_minted_key_stops_working_when_it_expires(server, issuer, owner, channel, tmp_path):
    repo = repository()
    register(server, owner, channel, repo)
    key = minted_key(server, issuer, repo)
    time.sleep(MINTED_KEY_SECONDS + 1)
    path = package_file(tmp_path, "late")
    answer = client_upload(server, channel, path, key=key)
    assert "error" in answer, answer
    assert server.api("GET", "whoami", key).status_code == 401
    assert_nothing_stored(server, channel)


def test_owners_register_and_remove_publishers(server, issuer, owner, channel):
    member, contributor, outsider = user(server), user(server), user(server)
    server.admin("member", "add", channel, member.name, "--role", "member")
    server.admin("member", "add", channel, contributor.name, "--role", "contributor")
    body = {"issuer": "github", "repository": repository()}
    url = f"channels/{channel}/publishers"
    assert server.api("POST", url, json=body).status_code == 401
    assert server.api("GET", url).status_code == 401
    for who in (member, contributor, outsider):
        assert server.api("POST", url, who.key, json=body).status_code == 403
        assert server.api("GET", url, who.key).status_code == 403
    private = new_channel(server, owner, private=True)
    assert server.api("POST", f"channels/{private}/publishers", outsider.key, json=body).status_code == 404
    assert server.api("GET", url, owner.key).json() == {"publishers": []}

    for bad, sentence in [
        ({**body, "issuer": "bitbucket"}, "issuer is 'github' or 'gitlab'"),
        ({**body, "repository": "just-a-name"}, "repository is owner/name"),
        ({**body, "workflow": ".github/workflows/x.yml"}, "workflow is a file name"),
        ({**body, "ref": "main"}, "ref is a full git ref"),
        ({"repository": "a/b"}, "invalid JSON body"),
    ]:
        refused = server.api("POST", url, owner.key, json=bad)
        assert refused.status_code == 400 and sentence in refused.json()["error"], (bad, refused.text)
    created = register(server, owner, channel, body["repository"], environment="release", ref="refs/tags/v*")
    assert server.api("POST", url, owner.key, json={**body, "environment": "release", "ref": "refs/tags/v*"}).status_code == 409
    listed = server.api("GET", url, owner.key).json()["publishers"]
    assert listed == [created]
    assert (created["environment"], created["ref"]) == ("release", "refs/tags/v*")

    assert server.api("DELETE", f"{url}/{created['id']}", member.key).status_code == 403
    assert server.api("DELETE", f"channels/{private}/publishers/{created['id']}", owner.key).status_code == 404
    assert server.api("DELETE", f"{url}/x", owner.key).status_code == 400
    removed = server.api("DELETE", f"{url}/{created['id']}", owner.key)
    assert removed.status_code == 200 and removed.json() == {"id": created["id"], "removed": True}
    assert server.api("DELETE", f"{url}/{created['id']}", owner.key).status_code == 404
    assert server.api("GET", url, owner.key).json() == {"publishers": []}
    # A site admin manages any channel's publishers.
    admin = user(server, admin=True)
    assert server.api("POST", url, admin.key, json=body).status_code == 201


def test_removing_a_publisher_kills_its_live_keys(server, issuer, owner, channel, tmp_path):
    repo = repository()
    publisher = register(server, owner, channel, repo)
    key = minted_key(server, issuer, repo)
    assert server.api("GET", "whoami", key).status_code == 200
    assert server.api("DELETE", f"channels/{channel}/publishers/{publisher['id']}", owner.key).status_code == 200
    path = package_file(tmp_path, "orphan")
    answer = client_upload(server, channel, path, key=key)
    assert "error" in answer, answer
    assert server.api("GET", "whoami", key).status_code == 401
    assert_nothing_stored(server, channel)
    # And a new token finds no publisher.
    refused = mint(server, issuer.sign({"aud": "127.0.0.1", **issuer.github_claims(repo)}))
    assert refused.status_code == 403 and "repository" in refused.json()["error"]


def test_a_ref_and_an_environment_narrow_a_publisher(server, issuer, owner, channel, tmp_path):
    repo = repository()
    register(server, owner, channel, repo, environment="release", ref="refs/tags/v*")
    on_main = {**issuer.github_claims(repo), "environment": "release"}
    refused = mint(server, issuer.sign({"aud": "127.0.0.1", **on_main}))
    assert refused.status_code == 403
    assert "git ref 'refs/heads/main' does not match" in refused.json()["error"]
    no_environment = issuer.github_claims(repo, ref="refs/tags/v1.0")
    refused = mint(server, issuer.sign({"aud": "127.0.0.1", **no_environment}))
    assert "names no environment" in refused.json()["error"]
    tagged = {**issuer.github_claims(repo, ref="refs/tags/v1.0"), "environment": "Release"}
    path = package_file(tmp_path, "tagged")
    assert publish(server, issuer, channel, path, tagged) == {"uploaded": True}


def test_the_exchange_refuses_what_is_not_a_token(server):
    url = f"{server.url}/api/oidc/mint_token"
    not_json = requests.post(url, data="{", headers={"Content-Type": "application/json"}, timeout=30)
    assert not_json.status_code == 400 and not_json.json()["code"] == "bad_request"
    garbage = requests.post(url, json={"token": "not.a.jwt"}, timeout=30)
    assert garbage.status_code == 401 and "not a signed JWT" in garbage.json()["error"]
    assert requests.get(url, timeout=30).status_code == 404


def test_the_admin_command_registers_lists_and_removes_publishers(server, issuer, owner, channel, tmp_path):
    repo = repository()
    env = {"GITHUB_OIDC_ISSUER": issuer.url}
    created = server.admin(
        "publisher", "add", channel, "--issuer", "github", "--repository", repo, "--by", owner.name,
        "--workflow", "release.yml", env=env,
    )
    assert (created["issuer"], created["repository"], created["workflow"]) == (issuer.url, repo, "release.yml")
    listed = server.admin("publisher", "list", channel)
    assert [(p["id"], p["repository"], p["created_by"]) for p in listed] == [(created["id"], repo, owner.name)]
    path = package_file(tmp_path, "admitted")
    assert publish(server, issuer, channel, path, issuer.github_claims(repo)) == {"uploaded": True}

    for args, code, sentence in [
        (["--issuer", "github", "--repository", repo, "--by", owner.name, "--workflow", "release.yml"], 1, "has a trusted publisher"),
        (["--issuer", "bitbucket", "--repository", repo, "--by", owner.name], 2, "issuer is"),
        (["--issuer", "github", "--repository", "x", "--by", owner.name], 2, "repository is owner/name"),
        (["--issuer", "github", "--repository", repo], 2, "usage"),
    ]:
        with pytest.raises(AdminError) as refused:
            server.admin("publisher", "add", channel, *args, env=env)
        assert refused.value.code == code and sentence in refused.value.message, refused.value.message
    with pytest.raises(AdminError) as missing:
        server.admin("publisher", "add", unique("missing"), "--issuer", "github", "--repository", repo, "--by", owner.name, env=env)
    assert missing.value.code == 2 and "no channel named" in missing.value.message

    assert server.admin("publisher", "remove", channel, str(created["id"])) == {"channel": channel, "id": created["id"], "removed": True}
    with pytest.raises(AdminError) as again:
        server.admin("publisher", "remove", channel, str(created["id"]))
    assert again.value.code == 2
    assert server.admin("publisher", "list", channel) == []


def test_a_minted_key_acts_for_its_publisher_not_as_its_user(server, issuer, tmp_path):
    """A site admin who is no member of the channel registers the publisher: the key uploads
    there by virtue of the publisher, and is no site admin anywhere."""
    admin = user(server, admin=True)
    channel = new_channel(server, user(server))
    repo = repository()
    register(server, admin, channel, repo)
    key = minted_key(server, issuer, repo)
    path = package_file(tmp_path, "admitted")
    assert client_upload(server, channel, path, key=key) == {"uploaded": True}
    whoami = server.api("GET", "whoami", key).json()
    assert (whoami["user"], whoami["is_admin"]) == (admin.name, False)
    assert whoami["key"]["publishers"] == [{"channel": channel, "publisher": server.api("GET", f"channels/{channel}/publishers", admin.key).json()["publishers"][0]["id"]}]
    for method, url in [("GET", f"channels/{channel}/stats"), ("POST", f"channels/{channel}/check"), ("POST", f"channels/{channel}/rebuild")]:
        assert server.api(method, url, key).status_code == 403, url


def test_a_gitlab_job_publishes_with_its_id_token(server, gitlab, owner, channel, tmp_path):
    project = f"acme/{unique('group')}/widgets"
    answer = server.api(
        "POST", f"channels/{channel}/publishers", owner.key,
        json={"issuer": "gitlab", "repository": project, "workflow": ".gitlab-ci.yml", "ref": "refs/heads/main"},
    )
    assert answer.status_code == 201, answer.text
    assert (answer.json()["provider"], answer.json()["issuer"]) == ("gitlab", gitlab.url)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "ACTIONS_", "GITLAB_", "CI"))}
    # GitLab hands the job the token of the `id_tokens:` entry named for the audience.
    token = gitlab.sign({"aud": "127.0.0.1", **gitlab.gitlab_claims(project)})
    path = package_file(tmp_path, "gitlabbed")
    uploaded = client_upload(server, channel, path, {**env, "GITLAB_CI": "true", "127_0_0_1_ID_TOKEN": token})
    assert uploaded == {"uploaded": True}
    assert path.name in repodata(server, channel, "noarch")["packages"]
    # The run as GitLab's claims name it.
    replay = mint(server, token)
    assert (replay.status_code, replay.json()["error"]) == (401, "this token was already used")
    key = mint(server, gitlab.sign({"aud": "127.0.0.1", **gitlab.gitlab_claims(project)})).text
    run = server.api("GET", "whoami", key).json()["key"]["workflow"]
    assert (run["repository"], run["workflow"], run["git_ref"], run["run_id"]) == (project, ".gitlab-ci.yml", "refs/heads/main", "777")
    # Another branch is refused, naming it.
    other = mint(server, gitlab.sign({"aud": "127.0.0.1", **gitlab.gitlab_claims(project, ref="dev")}))
    assert other.status_code == 403 and "git ref 'refs/heads/dev'" in other.json()["error"]


def provenance(server, channel: str, name: str) -> dict:
    [record] = server.api("GET", f"channels/{channel}/packages/{name}").json()["records"]
    return record["provenance"]


def test_the_browse_api_and_the_package_page_show_the_run(server, issuer, owner, channel, tmp_path, tab):
    repo = repository()
    publisher = register(server, owner, channel, repo, workflow="release.yml")
    path = package_file(tmp_path, "provenanced")
    claims = {**issuer.github_claims(repo, ref="refs/tags/v1.0"), "environment": "release"}
    assert publish(server, issuer, channel, path, claims) == {"uploaded": True}
    run = {
        "publisher": publisher["id"],
        "issuer": issuer.url,
        "repository": repo,
        "workflow": "release.yml",
        "run_id": "4242",
        "git_ref": "refs/tags/v1.0",
        "commit": claims["sha"],
        "environment": "release",
    }
    assert provenance(server, channel, "provenanced") == {"user": owner.name, "key": f"trusted publisher {repo}", "workflow": run}

    page = tab.page
    page.goto(f"/{channel}/packages/provenanced")
    article = page.locator("article.file")
    expect(article.locator(".publisher")).to_have_text(f"{owner.name} with key trusted publisher {repo}")
    ci = article.locator(".ci-run")
    for label, claim in (("repository", "repository"), ("workflow", "workflow"), ("run", "run_id"), ("ref", "git_ref"), ("commit", "commit"), ("environment", "environment"), ("issuer", "issuer")):
        expect(ci.locator(f"li.{label}")).to_have_text(f"{label} {run[claim]}")
    tab.assert_clean()


def test_one_token_publishes_to_every_channel_whose_publisher_accepts_it(server, issuer, owner, tmp_path):
    repo = repository()
    alpha, beta, gamma = new_channel(server, owner), new_channel(server, owner), new_channel(server, owner)
    first = register(server, owner, alpha, repo)
    second = register(server, owner, beta, repo)
    register(server, owner, gamma, repo, workflow="other.yml")
    key = minted_key(server, issuer, repo)
    assert sorted(server.api("GET", "whoami", key).json()["key"]["channels"]) == sorted([alpha, beta])
    path = package_file(tmp_path, "everywhere")
    for channel, publisher in ((alpha, first), (beta, second)):
        assert client_upload(server, channel, path, key=key) == {"uploaded": True}
        assert provenance(server, channel, "everywhere")["workflow"]["publisher"] == publisher["id"]
    assert "only on the channels of its publishers" in client_upload(server, gamma, path, key=key).get("error", "")
    assert_nothing_stored(server, gamma)

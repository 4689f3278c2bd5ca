"""micromamba 1.5.12, the real client, creates environments from condaflare: from a public
channel, and from a private one with each way it carries a key (the three entry types of its auth
file and the key in the URL). It reads repodata.json, not shards, so it covers the path py-rattler
does not.

The binary is not on any package registry; it lives in `../shared/clients` next to the clone
(`CONDAFLARE_CLIENTS` names another folder). Without it these tests are skipped."""

import base64
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
import requests

from conftest import unique, upload_raw
from harness import ROOT
from pkgbuild import build_conda, build_tar_bz2
from test_keys import give_key_of_the_earlier_format

CLIENTS = Path(os.environ.get("CONDAFLARE_CLIENTS", ROOT.parent / "shared" / "clients"))
MICROMAMBA = CLIENTS / "micromamba" / "run"

if not MICROMAMBA.is_file():
    pytest.skip(
        f"micromamba not found at {MICROMAMBA}; set CONDAFLARE_CLIENTS to the folder holding "
        "micromamba/run to run these tests",
        allow_module_level=True,
    )


def publish(server, owner, channel: str) -> dict[str, tuple[str, bytes]]:
    """Uploads an app (.conda) that depends on a library (.tar.bz2), each with one file whose
    content is unique to this channel; returns, by file name, the path and bytes each installs."""
    contents = {
        "cf-lib-1.2-0.tar.bz2": (f"share/{channel}/lib.txt", f"library of {channel}\n".encode()),
        "cf-app-3.4-0.conda": (f"share/{channel}/app.txt", f"app of {channel}\n".encode()),
    }
    lib = build_tar_bz2("cf-lib", version="1.2", files=dict([contents["cf-lib-1.2-0.tar.bz2"]]))
    app = build_conda("cf-app", version="3.4", depends=["cf-lib >=1.2"], files=dict([contents["cf-app-3.4-0.conda"]]))
    for filename, data in (lib, app):
        assert upload_raw(server, channel, filename, data, headers=owner.auth).status_code == 201
    return contents


def micromamba_create(tmp_path: Path, channel_url: str, auth: dict | None = None) -> tuple[subprocess.CompletedProcess, Path]:
    """`micromamba create` of `cf-app` from `channel_url` alone, with a fresh root prefix (so no
    cache) and a home holding `auth` as ~/.mamba/auth/authentication.json."""
    home, root, prefix = tmp_path / "home", tmp_path / "root", tmp_path / "env"
    (home / ".mamba" / "auth").mkdir(parents=True)
    if auth is not None:
        (home / ".mamba" / "auth" / "authentication.json").write_text(json.dumps(auth))
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "MAMBA_ROOT_PREFIX": str(root),
    }
    command = [str(MICROMAMBA), "create", "-y", "--no-rc", "-p", str(prefix), "-c", channel_url, "--override-channels", "cf-app"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    return done, prefix


def assert_installed(server, owner, channel: str, done, prefix: Path, contents: dict[str, tuple[str, bytes]]) -> None:
    """Each package's file is in the prefix with its bytes, and conda-meta holds its record,
    with the checksums the channel serves (read with the owner's key) and the file it installed."""
    assert done.returncode == 0, done.stdout + done.stderr
    answer = requests.get(f"{server.url}/{channel}/noarch/repodata.json", headers=owner.auth, timeout=30)
    assert answer.status_code == 200, answer.text
    served = answer.json()
    for filename, (path, data) in contents.items():
        assert (prefix / path).read_bytes() == data, path
        section = "packages.conda" if filename.endswith(".conda") else "packages"
        stem = filename.removesuffix(".conda").removesuffix(".tar.bz2")
        record = json.loads((prefix / "conda-meta" / f"{stem}.json").read_text())
        assert f"{record['name']}-{record['version']}-{record['build']}" == stem
        assert record["md5"] == served[section][filename]["md5"]
        assert record["sha256"] == served[section][filename]["sha256"]
        assert record["files"] == [path]


def host_of(server) -> str:
    return server.url.removeprefix("http://")


def auth_forms(host: str, key: str) -> dict[str, tuple[str, dict | None]]:
    """Each way micromamba carries a key: (path before the channel name, auth file)."""
    return {
        "BearerToken": ("", {host: {"type": "BearerToken", "token": key}}),
        "BasicHTTPAuthentication": (
            "",
            {host: {"type": "BasicHTTPAuthentication", "user": "anyone", "password": base64.b64encode(key.encode()).decode()}},
        ),
        "CondaToken": ("", {host: {"type": "CondaToken", "token": key}}),
        "/t/<key>/": (f"t/{key}/", None),
    }


@pytest.fixture
def private_channel(server, owner) -> str:
    name = unique("mm")
    server.admin("channel", "create", name, "--owner", owner.name, "--private")
    return name


def test_public_channel(server, owner, channel, tmp_path):
    contents = publish(server, owner, channel)
    done, prefix = micromamba_create(tmp_path, f"{server.url}/{channel}")
    assert_installed(server, owner, channel, done, prefix, contents)


@pytest.mark.parametrize("form", ["BearerToken", "BasicHTTPAuthentication", "CondaToken", "/t/<key>/"])
def test_private_channel(server, owner, make_user, private_channel, tmp_path, form):
    contents = publish(server, owner, private_channel)
    # A reader with a key issued now, in the format every client can carry.
    reader = make_user()
    assert reader.key.startswith("cfk-")
    server.admin("member", "add", private_channel, reader.name, "--role", "member")
    path, auth = auth_forms(host_of(server), reader.key)[form]
    done, prefix = micromamba_create(tmp_path, f"{server.url}/{path}{private_channel}", auth)
    assert_installed(server, owner, private_channel, done, prefix, contents)


@pytest.mark.parametrize("form", ["BearerToken", "BasicHTTPAuthentication", "CondaToken", "/t/<key>/", "no key"])
def test_private_channel_refuses_a_wrong_key(server, owner, private_channel, tmp_path, form):
    publish(server, owner, private_channel)
    wrong = "cfk-" + hashlib.sha256(private_channel.encode()).hexdigest()[:43]
    path, auth = auth_forms(host_of(server), wrong).get(form, ("", None))
    done, prefix = micromamba_create(tmp_path, f"{server.url}/{path}{private_channel}", auth)
    assert done.returncode != 0, done.stdout
    assert not (prefix / "conda-meta").exists()


def test_a_key_of_the_earlier_format_works_in_the_auth_file_not_in_the_url(server, owner, make_user, private_channel, tmp_path):
    """Why keys changed format: mamba ends a `/t/` token at its first `_`."""
    contents = publish(server, owner, private_channel)
    reader = make_user()
    server.admin("member", "add", private_channel, reader.name, "--role", "member")
    old_key = give_key_of_the_earlier_format(server, reader)
    forms = auth_forms(host_of(server), old_key)

    path, auth = forms["BearerToken"]
    done, prefix = micromamba_create(tmp_path / "bearer", f"{server.url}/{path}{private_channel}", auth)
    assert_installed(server, owner, private_channel, done, prefix, contents)

    path, auth = forms["/t/<key>/"]
    done, prefix = micromamba_create(tmp_path / "url", f"{server.url}/{path}{private_channel}", auth)
    assert done.returncode != 0
    assert f"Failed to parse URL \"{server.url}_" in done.stdout + done.stderr, done.stdout + done.stderr
    assert not (prefix / "conda-meta").exists()

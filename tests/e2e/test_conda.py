"""conda 26.7.1, the real client, creates environments from condaflare with its classic solver:
from a public channel, and from a private one with each way it carries a key (`/t/<key>/` in the
channel URL, and the key as the password in it, which conda sends as Basic); with no key or a
wrong one it installs nothing. It reads `current_repodata.json` and `repodata.json.zst`, not
shards.

conda runs from its source in `../shared/clients/conda` next to the clone (`CONDAFLARE_CLIENTS`
names another folder), in a virtualenv its first call makes. Without it, or without micromamba,
whose tests' helpers these share, these tests are skipped."""

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from test_micromamba import CLIENTS, assert_installed, host_of, publish
from test_micromamba import private_channel  # a fixture, which the tests name

CONDA = CLIENTS / "conda" / "run"
# Where `run` keeps conda's dependencies; named outright, since the calls give conda another home.
VENV = os.environ.get("CONDA_CLIENT_VENV", str(Path.home() / ".cache" / "condaflare-clients" / "conda-venv"))

if not CONDA.is_file():
    pytest.skip(
        f"conda not found at {CONDA}; set CONDAFLARE_CLIENTS to the folder holding conda/run to "
        "run these tests",
        allow_module_level=True,
    )


@pytest.fixture(scope="module", autouse=True)
def conda_version() -> None:
    """Makes conda's virtualenv (its first call), in the caller's environment so that pip finds
    its configuration, and checks that the client is the one these tests are about."""
    done = subprocess.run([str(CONDA), "--version"], env={**os.environ, "CONDA_CLIENT_VENV": VENV}, capture_output=True, text=True, timeout=600)
    assert done.stdout.strip() == "conda 26.7.1", done.stdout + done.stderr


def conda_create(tmp_path: Path, channel_url: str) -> tuple[subprocess.CompletedProcess, Path]:
    """`conda create` of `cf-app` from `channel_url` alone, with a fresh package cache (so no
    cached repodata) and a home and `CONDARC` holding no configuration."""
    home, pkgs, prefix, condarc = tmp_path / "home", tmp_path / "pkgs", tmp_path / "env", tmp_path / "condarc"
    home.mkdir()
    condarc.write_text("")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "CONDARC": str(condarc),
        "CONDA_PKGS_DIRS": str(pkgs),
        "CONDA_CLIENT_VENV": VENV,
    }
    command = [str(CONDA), "create", "-y", "-q", "-p", str(prefix), "--override-channels", "-c", channel_url, "cf-app"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    return done, prefix


def key_forms(server, channel: str, key: str) -> dict[str, str]:
    """Each way conda carries a key: the URL of `channel` holding it."""
    return {
        "/t/<key>/": f"{server.url}/t/{key}/{channel}",
        "user:<key>@": f"http://anyone:{key}@{host_of(server)}/{channel}",
    }


def test_public_channel(server, owner, channel, tmp_path):
    contents = publish(server, owner, channel)
    done, prefix = conda_create(tmp_path, f"{server.url}/{channel}")
    assert_installed(server, owner, channel, done, prefix, contents)


@pytest.mark.parametrize("form", ["/t/<key>/", "user:<key>@"])
def test_private_channel(server, owner, make_user, private_channel, tmp_path, form):
    contents = publish(server, owner, private_channel)
    reader = make_user()
    server.admin("member", "add", private_channel, reader.name, "--role", "member")
    done, prefix = conda_create(tmp_path, key_forms(server, private_channel, reader.key)[form])
    assert_installed(server, owner, private_channel, done, prefix, contents)


@pytest.mark.parametrize("form", ["/t/<key>/", "user:<key>@", "no key"])
def test_private_channel_refuses_a_wrong_key(server, owner, private_channel, tmp_path, form):
    publish(server, owner, private_channel)
    wrong = "cfk-" + hashlib.sha256(private_channel.encode()).hexdigest()[:43]
    url = key_forms(server, private_channel, wrong).get(form, f"{server.url}/{private_channel}")
    done, prefix = conda_create(tmp_path, url)
    assert done.returncode != 0, done.stdout
    assert "CondaHTTPError: HTTP 401 Unauthorized" in done.stdout + done.stderr, done.stdout + done.stderr
    assert not (prefix / "conda-meta").exists()

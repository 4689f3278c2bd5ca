"""quetz (https://github.com/mamba-org/quetz) run locally as a baseline peer for the benches.

`running_quetz(workdir)` creates a quetz deployment in workdir (config.toml, SQLite database,
packages on the local filesystem under workdir/channels), serves it with uvicorn on a free
127.0.0.1 port, and yields a `Quetz` with an API key of a server owner. quetz lives in its own
venv (bench/quetz-venv.sh), so it runs as a subprocess of whatever Python imports this module.

How the key is had, all through quetz's own routes: `quetz create --dev` adds the dummy users
alice..dave (and three demo channels, unused here), config.toml's [users] admins makes alice a
server owner, GET /api/dummylogin/alice logs in as her, and POST /api/api-keys with no roles
returns a key with her permissions.

Serving: one uvicorn worker process by default (`workers=` to change), no reload, no job
supervisor (nothing here uses quetz's jobs). Packages and repodata.json are streamed by quetz
itself from /get/<channel>/<subdir>/<file> (no nginx redirect).
"""

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
from harness import free_port  # noqa: E402

QUETZ_VENV_SCRIPT = Path(__file__).resolve().parent / "quetz-venv.sh"


def quetz_venv() -> Path:
    """The quetz venv, built on first use (instant afterwards)."""
    out = subprocess.run(["bash", QUETZ_VENV_SCRIPT], check=True, stdout=subprocess.PIPE, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


class Quetz:
    def __init__(self, url: str, api_key: str, log: Path):
        self.url = url
        self.api_key = api_key
        self.log = log
        self.session = requests.Session()
        self.session.headers["X-API-Key"] = api_key

    def create_channel(self, name: str, private: bool = False) -> None:
        r = self.session.post(f"{self.url}/api/channels", json={"name": name, "private": private})
        r.raise_for_status()

    def file_url(self, channel: str, subdir: str, filename: str) -> str:
        """Where quetz serves a package file or an index (repodata.json, .json.gz, .json.bz2)."""
        return f"{self.url}/get/{channel}/{subdir}/{filename}"

    def delete(self, channel: str, subdir: str, filename: str) -> None:
        package = filename.rsplit("-", 2)[0]
        r = self.session.delete(f"{self.url}/api/channels/{channel}/packages/{package}/versions/{subdir}/{filename}")
        r.raise_for_status()

    def upload(self, channel: str, path: Path, timeout: float = 120) -> requests.Response:
        """Uploads as `rattler-build upload quetz` does (raw body, sha256 in the query) and
        returns once repodata.json lists the file. quetz reindexes the whole channel in a
        BackgroundTask, but in 0.10.4 the 201 reaches the client only after that task ends
        (repodata.json is written a few ms before the 201 arrives; none missing in 400 uploads),
        so the poll below normally passes at once and stays only as a guard. The POST's own time,
        indexing included, is response.elapsed."""
        data = path.read_bytes()
        r = self.session.post(
            f"{self.url}/api/channels/{channel}/upload/{path.name}",
            params={"sha256": hashlib.sha256(data).hexdigest(), "force": "false"},
            data=data,
        )
        if r.status_code != 201:
            return r
        # The subdir quetz filed it under, from its database (written before the 201).
        package = path.name.rsplit("-", 2)[0]
        versions = self.session.get(
            f"{self.url}/api/channels/{channel}/packages/{package}/versions"
        )
        versions.raise_for_status()
        subdir = next(v["platform"] for v in versions.json() if v["filename"] == path.name)
        deadline = time.monotonic() + timeout
        while True:
            repodata = self.session.get(self.file_url(channel, subdir, "repodata.json"))
            if repodata.ok:
                index = repodata.json()
                if path.name in {**index.get("packages", {}), **index.get("packages.conda", {})}:
                    return r
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path.name} not in {channel}/{subdir} repodata in {timeout}s")
            time.sleep(0.02)


@contextlib.contextmanager
def running_quetz(workdir: Path, workers: int = 1):
    """Runs quetz from an empty (or missing) workdir; stops it, and all it forked, at exit."""
    venv = quetz_venv()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if any(workdir.iterdir()):
        raise ValueError(f"{workdir} is not empty: quetz creates a deployment only in an empty one")
    # https_only = false: the login cookie must work over plain http on loopback.
    (workdir / "config.toml").write_text(
        f"""
[sqlalchemy]
database_url = "sqlite:///{workdir}/quetz.sqlite"

[session]
secret = "{os.urandom(32).hex()}"
https_only = false

[logging]
level = "WARNING"

[users]
admins = ["dummy:alice"]
"""
    )
    # Output captured, not logged: `quetz create` refuses a folder holding more than config.toml.
    created = subprocess.run(
        [venv / "bin/quetz", "create", workdir, "--dev"], capture_output=True, text=True,
        # It logs to ./quetz.log: beside the deployment, not in the caller's directory.
        cwd=workdir.parent,
    )
    if created.returncode != 0:
        raise RuntimeError(f"quetz create failed:\n{created.stdout}{created.stderr}")
    log_path = workdir / "quetz.log"
    with open(log_path, "ab") as log:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        # uvicorn directly rather than `quetz start`, which does the same but takes no --workers.
        # cwd matters: the local package store is ./channels. A session of its own, so that
        # stopping it stops every process it forked.
        proc = subprocess.Popen(
            [venv / "bin/uvicorn", "quetz.main:app", "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(workers), "--log-level", "warning", "--no-access-log"],
            cwd=workdir,
            env={**os.environ, "QUETZ_CONFIG_FILE": str(workdir / "config.toml")},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"quetz exited with {proc.returncode}; see {log_path}")
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{url}/health/ready", timeout=2).ok:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"quetz did not answer on {url}; see {log_path}")
            time.sleep(0.1)

        login = requests.Session()
        login.get(f"{url}/api/dummylogin/alice", allow_redirects=False).raise_for_status()
        key = login.post(f"{url}/api/api-keys", json={"description": "bench", "roles": []})
        key.raise_for_status()
        yield Quetz(url, key.json()["key"], log_path)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        # Whatever of the group outlived the SIGTERM (a worker stuck in a request) goes now.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

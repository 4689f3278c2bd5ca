"""The whole server killed (`kill -9` of its process group) at the moments that used to lose or
orphan something, then started again on the same state: nothing acknowledged is lost, no
package object is left without its record, and no staging object is left behind."""

import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from artifacts import INDEX_FILES, get, records_from_shards
from conftest import upload_raw
from harness import KillableServer
from pkgbuild import build_tar_bz2

CHANNEL = "crashy"
# Short enough that the sweep after a restart deletes what the killed upload left.
STAGING_GRACE_SECONDS = 2


@pytest.fixture
def crashable(tmp_path):
    server = KillableServer(tmp_path / "state", {"STAGING_GRACE_SECONDS": str(STAGING_GRACE_SECONDS)})
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def large_package() -> tuple[str, bytes]:
    """Over 1 MiB, so it goes through a staging object, and large enough to take a while."""
    filename, data = build_tar_bz2("large", files={"blob": os.urandom(12 * 1024 * 1024)})
    assert len(data) > 12 * 1024 * 1024
    return filename, data


def open_channel(server) -> dict[str, str]:
    server.admin("user", "create", "crasher")
    key = server.admin("key", "create", "crasher")["key"]
    server.admin("channel", "create", CHANNEL, "--owner", "crasher")
    return {"Authorization": f"Bearer {key}"}


def in_background(server, filename, data, auth) -> threading.Thread:
    """Uploads in a thread whose answer, if any, nobody waits for (the server is killed)."""
    def upload():
        try:
            upload_raw(server, CHANNEL, filename, data, headers=auth)
        except requests.RequestException:
            pass

    thread = threading.Thread(target=upload, daemon=True)
    thread.start()
    return thread


def kill_when(crashable, server, appears, timeout: float = 60) -> None:
    """Kills the server as soon as an R2 key for which `appears` holds is stored."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if any(appears(key) for key in server.r2_keys()):
                break
        except sqlite3.OperationalError:  # the store is being written
            pass
        assert time.monotonic() < deadline, "the key never appeared"
        time.sleep(0.002)
    crashable.stop()


def eventually(check, timeout: float = 40, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, message
        time.sleep(0.5)


def listed(server, subdir: str = "noarch") -> tuple[set[str], set[str]]:
    """The files repodata.json lists and those the shards list."""
    response = get(server, f"{CHANNEL}/{subdir}/repodata.json")
    repodata = set(response.json()["packages"]) if response.status_code == 200 else set()
    return repodata, set(records_from_shards(server, CHANNEL, subdir)["packages"])


def package_objects(server) -> set[str]:
    return {
        key.split("/", 2)[2] for key in server.r2_keys()
        if key.startswith(f"{CHANNEL}/noarch/") and key.split("/", 2)[2] not in INDEX_FILES and "/shards/" not in key
    }


def test_acknowledged_and_retried_uploads_survive_a_kill_during_a_burst(crashable):
    """A burst of uploads, the server killed in the middle; after a restart, the clients retry
    what was not acknowledged and one more upload comes: every package is in its shard and in
    repodata.json, which agree. Whether the kill lands inside a shard build varies from run to
    run, so this catches a lost mark only in some runs."""
    server = crashable.start()
    auth = open_channel(server)
    # Records of 100 KB make builds take a while, so that the kill finds some under way.
    packages = [build_tar_bz2(f"burst{i}", index_overrides={"description": "b" * 100_000}) for i in range(50)]
    acknowledged: list[str] = []

    def upload(package):
        filename, data = package
        try:
            response = upload_raw(server, CHANNEL, filename, data, headers=auth)
        except requests.RequestException:
            return
        if response.status_code in (200, 201):
            acknowledged.append(filename)

    pool = ThreadPoolExecutor(max_workers=len(packages))
    for package in packages:
        pool.submit(upload, package)
    deadline = time.monotonic() + 60
    # Killed a few answers into the burst, when builds are under way.
    while len(acknowledged) < 5:
        assert time.monotonic() < deadline, "no upload was acknowledged"
        time.sleep(0.002)
    crashable.stop()
    pool.shutdown(wait=True)
    assert len(acknowledged) < len(packages), "the burst ended before the kill"

    server = crashable.start()
    # What a client does with an upload that got no answer: it sends it again.
    for filename, data in packages:
        if filename not in acknowledged:
            assert upload_raw(server, CHANNEL, filename, data, headers=auth).status_code in (200, 201)
    filename, data = build_tar_bz2("after")
    assert upload_raw(server, CHANNEL, filename, data, headers=auth).status_code == 201

    everything = {filename for filename, _ in packages} | {filename}
    state = {}

    def complete():
        state["repodata"], state["shards"] = listed(server)
        return state["repodata"] == state["shards"] == everything

    eventually(complete, message=f"missing from repodata.json: {everything - state.get('repodata', set())}, "
               f"from the shards: {everything - state.get('shards', set())}")


def test_no_object_is_left_without_its_record_after_a_kill_during_a_commit(crashable, large_package):
    """Killed the moment a large package's object is in place, before or while its record is
    stored: after a restart and the alarm, the object is listed or gone."""
    server = crashable.start()
    auth = open_channel(server)
    filename, data = large_package
    in_background(server, filename, data, auth)
    kill_when(crashable, server, lambda key: key == f"{CHANNEL}/noarch/{filename}")

    server = crashable.start()
    other, other_data = build_tar_bz2("other")
    assert upload_raw(server, CHANNEL, other, other_data, headers=auth).status_code == 201

    def agree():
        repodata, shards = listed(server)
        return package_objects(server) == repodata == shards

    eventually(agree, message=f"objects {package_objects(server)} against records {listed(server)}")


def test_a_staging_object_left_by_a_kill_is_swept_after_a_restart(crashable, large_package):
    """Killed right after a large body was stored in staging: after a restart, the channel's
    index deletes the staging object once its grace has passed."""
    server = crashable.start()
    auth = open_channel(server)
    filename, data = large_package
    in_background(server, filename, data, auth)
    kill_when(crashable, server, lambda key: key.startswith(f".staging/{CHANNEL}/"))
    assert [key for key in server.r2_keys() if key.startswith(".staging/")]

    server = crashable.start()
    other, other_data = build_tar_bz2("other")
    assert upload_raw(server, CHANNEL, other, other_data, headers=auth).status_code == 201
    eventually(
        lambda: not [key for key in server.r2_keys() if key.startswith(".staging/")],
        message="the staging object is still there",
    )

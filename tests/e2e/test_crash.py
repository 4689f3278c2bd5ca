"""The whole server killed (`kill -9` of its process group) at the moments that used to lose or
orphan something, then started again on the same state: nothing acknowledged is lost, no
package object is left without its record, and no staging object is left behind. A large file
whose subdir is known early is written once, straight to its key, which the channel index
reserves for the upload: killed before the commit, the reservation and whatever it wrote are
swept once the staging grace has passed."""

import os
import random
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from artifacts import INDEX_FILES, get, records_from_shards, wait_for_repodata
from conftest import upload_raw
from harness import KillableServer, store_snapshot
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
    """Over 1 MiB, so it is not sent inline, and large enough to take a while: info/ first, so
    it is written straight to its key."""
    filename, data = build_tar_bz2("large", files={"blob": os.urandom(12 * 1024 * 1024)})
    assert len(data) > 12 * 1024 * 1024
    return filename, data


@pytest.fixture(scope="module")
def large_staged_package() -> tuple[str, bytes]:
    """The same with info/ last, past the 8 MiB held while the subdir is looked for: it goes
    through a staging object."""
    filename, data = build_tar_bz2("largelate", info_last=True, files={"blob": os.urandom(12 * 1024 * 1024)})
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


def kill_once(crashable, seen, timeout: float, never: str):
    """Kills the server as soon as `seen()` (which reads workerd's store) returns something
    true; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if found := seen():
                break
        except sqlite3.DatabaseError:  # a copy of the store taken while it was written
            pass
        assert time.monotonic() < deadline, never
        time.sleep(0.002)
    crashable.stop()
    return found


def kill_when(crashable, server, holds, timeout: float = 60) -> dict[str, int]:
    """Kills the server as soon as `holds` is true of the R2 keys stored; returns those keys."""
    return kill_once(crashable, lambda: [keys] if holds(keys := server.r2_keys()) else None, timeout, "the keys never appeared")[0]


def eventually(check, timeout: float = 40, message=lambda: "") -> None:
    """Waits for `check` to hold; `message` says, when it never does, what was last seen."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, message()
        time.sleep(0.5)


def listed(server, subdir: str = "noarch") -> tuple[set[str], set[str]]:
    """The files repodata.json lists and those the shards list."""
    response = get(server, f"{CHANNEL}/{subdir}/repodata.json")
    repodata = set(response.json()["packages"]) if response.status_code == 200 else set()
    return repodata, set(records_from_shards(server, CHANNEL, subdir)["packages"])


def package_objects_in(keys) -> set[str]:
    return {
        key.split("/", 2)[2] for key in keys
        if key.startswith(f"{CHANNEL}/noarch/") and key.split("/", 2)[2] not in INDEX_FILES and "/shards/" not in key
    }


def package_objects(server) -> set[str]:
    return package_objects_in(server.r2_keys())


def shard_keys(keys) -> list[str]:
    return [key for key in keys if key.startswith(f"{CHANNEL}/noarch/shards/")]


def report(capsys, line: str) -> None:
    """Prints past pytest's capture, so that `npm test` shows what a crash test did."""
    with capsys.disabled():
        print(line, flush=True)


def test_acknowledged_and_retried_uploads_survive_a_kill_during_a_burst(crashable, capsys):
    """A burst of 50 uploads of distinct names, the server killed half a shard's build time
    after a shard is stored while at least 5 stored packages have none yet: a shard build is
    then under way with names claimed and not yet written (the window in which a build that
    claims its names before writing them loses them). After a restart, the clients retry what
    was not acknowledged and one more upload comes: every package is in its shard and in
    repodata.json, which agree."""
    server = crashable.start()
    auth = open_channel(server)
    # Records of 150 KB of text that compresses poorly make each shard slow to build (zstd 19),
    # so that uploads pile up while one is built and the next build has many names to write.
    text = random.Random(0)
    packages = [
        build_tar_bz2(f"burst{i}", index_overrides={
            "description": "".join(text.choices("abcdefghijklmnopqrstuvwxyz ", k=150_000))})
        for i in range(50)
    ]
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
    futures = [pool.submit(upload, package) for package in packages]
    seen = {"shards": 0, "at": time.monotonic(), "kill_at": None}

    def mid_build(keys) -> bool:
        now = time.monotonic()
        shards, waiting = len(shard_keys(keys)), len(package_objects_in(keys)) - len(shard_keys(keys))
        if seen["kill_at"] is None and shards > seen["shards"]:
            if waiting >= 5:
                # Half a shard's time after it was stored: inside the next shard of the same
                # build, or, if it was the build's last, inside the next build, which claims the
                # waiting names at once.
                seen["kill_at"] = now + min(now - seen["at"], 1.0) / 2
            seen["shards"], seen["at"] = shards, now
        # Should the burst end without such a moment (every build keeping up), the kill comes
        # after it, and the test checks the restart alone.
        return (seen["kill_at"] is not None and now >= seen["kill_at"]) or all(f.done() for f in futures)

    keys = kill_when(crashable, server, mid_build)
    pool.shutdown(wait=True)
    report(capsys, f"\nburst: killed with {len(shard_keys(keys))} shards and {len(package_objects_in(keys))} "
                   f"package objects stored; {len(acknowledged)} of {len(packages)} uploads acknowledged")

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

    eventually(complete, message=lambda: f"missing from repodata.json: {sorted(everything - state['repodata'])}, "
               f"from the shards: {sorted(everything - state['shards'])}")


def test_no_object_is_left_without_its_record_after_a_kill_during_a_commit(crashable, large_package):
    """Killed the moment a large package's object is in place, before or while its record is
    stored: after a restart and the alarm, the object is listed or gone."""
    server = crashable.start()
    auth = open_channel(server)
    filename, data = large_package
    in_background(server, filename, data, auth)
    kill_when(crashable, server, lambda keys: f"{CHANNEL}/noarch/{filename}" in keys)

    server = crashable.start()
    other, other_data = build_tar_bz2("other")
    assert upload_raw(server, CHANNEL, other, other_data, headers=auth).status_code == 201

    def agree():
        repodata, shards = listed(server)
        return package_objects(server) == repodata == shards

    eventually(agree, message=lambda: f"objects {package_objects(server)} against records {listed(server)}")


def test_a_staging_object_left_by_a_kill_is_swept_after_a_restart(crashable, large_staged_package):
    """Killed right after a large body was stored in staging: after a restart, the channel's
    index deletes the staging object once its grace has passed."""
    server = crashable.start()
    auth = open_channel(server)
    filename, data = large_staged_package
    in_background(server, filename, data, auth)
    kill_when(crashable, server, lambda keys: any(key.startswith(f".staging/{CHANNEL}/") for key in keys))
    assert [key for key in server.r2_keys() if key.startswith(".staging/")]

    server = crashable.start()
    other, other_data = build_tar_bz2("other")
    assert upload_raw(server, CHANNEL, other, other_data, headers=auth).status_code == 201
    eventually(
        lambda: not [key for key in server.r2_keys() if key.startswith(".staging/")],
        message=lambda: "the staging object is still there",
    )


def test_a_direct_upload_killed_before_its_commit_is_joined_by_its_retry_and_swept(crashable, large_package):
    """Killed while a large file is written straight to its reserved key: after a restart
    nothing lists it and the check finds the channel consistent; the same bytes sent again
    share the key and are stored at once; once the grace has passed the sweep ends the dead
    upload's reservation and keeps the object its retry stored."""
    server = crashable.start()
    auth = open_channel(server)
    filename, data = large_package
    key = f"{CHANNEL}/noarch/{filename}"
    in_background(server, filename, data, auth)
    kill_once(crashable, lambda: key in server.direct_uploads(), 60, "the key was never reserved")

    server = crashable.start()
    server.admin("user", "create", "root", "--admin")
    admin_key = server.admin("key", "create", "root")["key"]
    assert key in server.direct_uploads()
    assert get(server, f"{CHANNEL}/noarch/{filename}").status_code in (200, 404)
    assert filename not in listed(server)[1]
    found = check_report(server, admin_key)
    assert found["consistent"], found
    # Other bytes under the name wait for the sweep; the same bytes join the reservation.
    impostor_name, impostor = build_tar_bz2("large", files={"blob": b"other bytes"})
    assert impostor_name == filename
    refused = upload_raw(server, CHANNEL, filename, impostor, headers=auth)
    assert refused.status_code == 409, refused.text
    assert upload_raw(server, CHANNEL, filename, data, headers=auth).status_code == 201
    assert get(server, f"{CHANNEL}/noarch/{filename}").content == data
    eventually(lambda: all(filename in files for files in listed(server)))
    eventually(lambda: key not in server.direct_uploads(), message=lambda: f"reserved {server.direct_uploads()}")
    assert get(server, f"{CHANNEL}/noarch/{filename}").content == data
    found = check_report(server, admin_key)
    assert found["consistent"], found


# The rounds `npm test` runs; `CRASH_ROUNDS` raises them (`npm run crash` runs 20).
CRASH_ROUNDS = int(os.environ.get("CRASH_ROUNDS", "4"))
# Set to replay a failed run: its seed is printed.
CRASH_SEED = int(os.environ.get("CRASH_SEED", str(random.SystemRandom().randrange(1 << 32))))
# A few names, so that uploads, deletes and builds of one round share shards.
ROUND_NAMES = ("rone", "rtwo", "rthree", "rfour", "rfive")
UPLOADS_PER_ROUND = 10
DELETES_PER_ROUND = 3


def check_report(server, admin_key: str) -> dict:
    response = server.api("POST", f"channels/{CHANNEL}/check", admin_key)
    assert response.status_code == 200, response.text
    return response.json()


def channel_row(server) -> tuple | None:
    """The channel's row in the local D1 (its `deleting_at` when the column exists), read from
    workerd's store."""
    for db in (server.state / "v3" / "d1" / "miniflare-D1DatabaseObject").glob("*.sqlite"):
        if db.name == "metadata.sqlite":
            continue
        with store_snapshot(db) as conn:
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'channels'").fetchone():
                continue
            columns = [row[1] for row in conn.execute("PRAGMA table_info(channels)")]
            deleting = "deleting_at" if "deleting_at" in columns else "NULL"
            return conn.execute(f"SELECT name, {deleting} FROM channels WHERE name = ?", (CHANNEL,)).fetchone()
    raise AssertionError("no D1 database in the state")


def test_a_channel_delete_cut_short_is_finished_by_the_next_and_keeps_its_name(crashable):
    """The server killed the moment a channel delete has changed the channel's row in D1: after
    the restart the channel serves nothing, its name cannot be taken while its objects remain,
    and deleting it again removes every object and then the name."""
    server = crashable.start()
    auth = open_channel(server)
    for i in range(20):
        filename, data = build_tar_bz2(f"doomed{i}")
        assert upload_raw(server, CHANNEL, filename, data, headers=auth).status_code == 201
    assert package_objects(server)

    def delete():
        try:
            requests.delete(f"{server.url}/api/v1/channels/{CHANNEL}", headers=auth, timeout=60)
        except requests.RequestException:
            pass

    threading.Thread(target=delete, daemon=True).start()
    kill_once(crashable, lambda: (row := channel_row(server)) is None or row[1] is not None, 60, "the delete never reached D1")

    server = crashable.start()
    objects = [key for key in server.r2_keys() if key.startswith(f"{CHANNEL}/")]
    if channel_row(server) is None:
        # The delete got all the way before the kill: then nothing of the channel may remain.
        assert objects == []
        return
    # Out of service: nothing served, to anyone; the name taken; the API says not found.
    assert get(server, f"{CHANNEL}/noarch/repodata.json", headers=auth).status_code == 404
    assert server.api("GET", f"channels/{CHANNEL}", auth["Authorization"].split()[1]).status_code == 404
    assert CHANNEL not in [c["name"] for c in requests.get(f"{server.url}/api/v1/channels", headers=auth, timeout=30).json()["channels"]]
    taken = requests.post(f"{server.url}/api/v1/channels", json={"name": CHANNEL}, headers=auth, timeout=30)
    assert taken.status_code == 409, taken.text
    # Deleting again finishes it: every object, then the name.
    again = requests.delete(f"{server.url}/api/v1/channels/{CHANNEL}", headers=auth, timeout=60)
    assert again.status_code == 200, again.text
    assert [key for key in server.r2_keys() if CHANNEL in key] == []
    assert channel_row(server) is None
    fresh = requests.post(f"{server.url}/api/v1/channels", json={"name": CHANNEL}, headers=auth, timeout=30)
    assert fresh.status_code == 201, fresh.text
    assert get(server, f"{CHANNEL}/linux-64/repodata.json", headers=auth).status_code == 404


def test_rounds_of_uploads_deletes_and_rebuilds_killed_at_random_moments(crashable, capsys):
    """Round after round, uploads, deletes and a rebuild run together against one channel and
    the server is killed (`kill -9` of its process group) at a random moment: after a random
    number of answers, or a random time into the round. After each restart, every acknowledged
    upload not deleted since is in its shard, every acknowledged delete is gone, the check finds
    no record without its object, one `check --repair` leaves nothing to report, and
    repodata.json catches up with the shards."""
    rng = random.Random(CRASH_SEED)
    report(capsys, f"\ncrash rounds: {CRASH_ROUNDS}, seed {CRASH_SEED} (CRASH_SEED={CRASH_SEED} replays it)")
    server = crashable.start()
    auth = open_channel(server)
    server.admin("user", "create", "root", "--admin")
    admin_key = server.admin("key", "create", "root")["key"]
    admin_env = {"CONDAFLARE_API_KEY": admin_key}

    round_seconds = 1.5  # how long a round's work took, last time all of it was answered
    present: set[str] = set()  # acknowledged uploads not deleted since
    deleted: set[str] = set()  # acknowledged deletes
    summaries: list[str] = []
    failures: list[str] = []

    for round_number in range(CRASH_ROUNDS):
        # Records of 30 KB make each build take a while, so that kills land inside them.
        uploads = [
            build_tar_bz2(rng.choice(ROUND_NAMES), version=f"{round_number}.{i}",
                          index_overrides={"description": "r" * 30_000})
            for i in range(UPLOADS_PER_ROUND)
        ]
        deletes = rng.sample(sorted(present), min(DELETES_PER_ROUND, len(present)))
        # Until its answer comes, a delete may or may not have happened.
        present -= set(deletes)
        answers: dict[str, int | str] = {}
        answered_at: list[float] = []  # seconds into the round
        lock = threading.Lock()

        def record(what, status):
            with lock:
                answers[what] = status
                if status != "none":
                    answered_at.append(time.monotonic() - started)

        def upload(filename, data):
            try:
                status = upload_raw(server, CHANNEL, filename, data, headers=auth).status_code
            except requests.RequestException:
                status = "none"
            record(f"upload {filename}", status)

        def delete(filename):
            try:
                status = server.api("DELETE", f"delete/{CHANNEL}/noarch/{filename}", headers=auth).status_code
            except requests.RequestException:
                status = "none"
            record(f"delete {filename}", status)

        def rebuild():
            try:
                status = server.api("POST", f"channels/{CHANNEL}/rebuild", admin_key).status_code
            except requests.RequestException:
                status = "none"
            record("rebuild", status)

        work = [(upload, package) for package in uploads] + [(delete, (f,)) for f in deletes] + [(rebuild, ())]
        rng.shuffle(work)
        total = len(work)
        # Killed just after the k-th answer, while the others are in flight, or at a random time.
        if rng.random() < 0.6:
            after_answers, after_seconds = rng.randint(1, total - 1), rng.uniform(0, 0.05)
            moment = f"{after_seconds * 1000:.0f} ms after answer {after_answers} of {total}"
        else:
            # Within the time a round takes when nothing kills it.
            after_answers, after_seconds = 0, rng.uniform(0.02, 1.0) * round_seconds
            moment = f"{after_seconds:.2f} s in"
        pool = ThreadPoolExecutor(max_workers=total)
        started = time.monotonic()
        for function, args in work:
            pool.submit(function, *args)
        if after_answers:
            deadline = started + 60
            while len(answers) < after_answers and time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(after_seconds)
        else:
            time.sleep(max(0.0, started + after_seconds - time.monotonic()))
        crashable.stop()
        pool.shutdown(wait=True)
        if len(answered_at) == total:
            round_seconds = max(answered_at)

        acknowledged = {key.split(" ", 1)[1] for key, status in answers.items()
                        if key.startswith("upload ") and status in (200, 201)}
        gone = {key.split(" ", 1)[1] for key, status in answers.items() if key.startswith("delete ") and status == 200}
        unexpected = {key: status for key, status in answers.items() if status not in (200, 201, "none")}
        if unexpected:
            failures.append(f"round {round_number}: unexpected answers {unexpected}")
        present |= acknowledged
        deleted |= gone

        server = crashable.start()
        # At once, before the restarted object's alarm has finished what the killed one left.
        found = check_report(server, admin_key)
        kinds = {kind: finding["count"] for kind, finding in found["findings"].items()}
        if kinds.get("record_without_object"):
            failures.append(f"round {round_number}: records without objects: {found['findings']['record_without_object']}")
        # The alarm builds whatever the killed object had marked.
        state = {}

        def settled():
            state["shards"] = set(records_from_shards(server, CHANNEL, "noarch")["packages"])
            return present <= state["shards"] and not deleted & state["shards"]

        deadline = time.monotonic() + 30
        while not settled() and time.monotonic() < deadline:
            time.sleep(0.5)
        if not present <= state["shards"]:
            failures.append(f"round {round_number}: acknowledged uploads missing from their shards: "
                            f"{sorted(present - state['shards'])}")
        if deleted & state["shards"]:
            failures.append(f"round {round_number}: acknowledged deletes still in shards: {sorted(deleted & state['shards'])}")

        repaired = server.admin("check", CHANNEL, "--repair", "--url", server.url, env=admin_env)
        after = check_report(server, admin_key)
        if not after["consistent"]:
            failures.append(f"round {round_number}: after one repair the check still finds {after['findings']}")
        objects = package_objects(server)
        if not present <= objects or deleted & objects:
            failures.append(f"round {round_number}: objects missing {sorted(present - objects)}, "
                            f"left {sorted(deleted & objects)}")

        try:
            wait_for_repodata(server, CHANNEL, timeout=30)
        except AssertionError as error:
            failures.append(f"round {round_number}: {error}")
        in_repodata = listed(server)[0]
        if not present <= in_repodata or deleted & in_repodata:
            failures.append(f"round {round_number}: repodata.json misses {sorted(present - in_repodata)}, "
                            f"still lists {sorted(deleted & in_repodata)}")

        summary = (
            f"round {round_number}: killed {moment}; {len(answered_at)} of {total} answered "
            f"(from {min(answered_at, default=0):.2f} to {max(answered_at, default=0):.2f} s) "
            f"({len(acknowledged)} uploads, {len(gone)} deletes, rebuild {answers.get('rebuild', 'none')}); "
            f"check before repair: {kinds or 'nothing'}, pending {found['pending']}; "
            f"repair: {repaired['repaired']}"
        )
        report(capsys, summary)
        summaries.append(summary)

    found_before = {}
    for summary in summaries:
        found_before[summary.split(":")[0]] = summary.split("check before repair: ")[1].split(";")[0]
    report(capsys, f"{CRASH_ROUNDS} rounds, seed {CRASH_SEED}: {len(present)} packages present, "
                   f"{len(deleted)} deleted; found before repair: {found_before}")
    assert not failures, "\n".join([f"seed {CRASH_SEED}", *failures, *summaries])

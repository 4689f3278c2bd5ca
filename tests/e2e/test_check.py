"""The consistency check (`POST /api/v1/channels/<c>/check`, `npm run admin -- check`): a healthy
channel reports nothing; damage written straight into the local R2 store is reported by kind,
`repair` fixes what a rebuild or a delete can, and a second check reports nothing."""

import hashlib
import os
import secrets
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from artifacts import get
from conftest import upload_raw
from harness import ROOT, AdminError, running_server
from pkgbuild import build_tar_bz2


def r2_store(state: Path) -> tuple[Path, Path]:
    """The local bucket's object table and its blob directory, as workerd keeps them."""
    r2 = state / "v3" / "r2"
    (db,) = [p for p in (r2 / "miniflare-R2BucketObject").glob("*.sqlite") if p.name != "metadata.sqlite"]
    (blobs,) = [p / "blobs" for p in r2.iterdir() if (p / "blobs").is_dir()]
    return db, blobs


def r2_put(state: Path, key: str, data: bytes, uploaded_ms: int | None = None) -> None:
    """Writes an object into the stopped server's store, as if R2 held it since `uploaded_ms`."""
    db, blobs = r2_store(state)
    blob_id = secrets.token_hex(32) + f"{int(time.time() * 1000):016x}"
    (blobs / blob_id).write_bytes(data)
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT OR REPLACE INTO _mf_objects "
            "(key, blob_id, version, size, etag, uploaded, checksums, http_metadata, custom_metadata) "
            "VALUES (?, ?, ?, ?, ?, ?, '{}', '{}', '{}')",
            (key, blob_id, secrets.token_hex(16), len(data), hashlib.md5(data).hexdigest(),
             uploaded_ms or int(time.time() * 1000)),
        )


def r2_delete(state: Path, key: str) -> None:
    db, _ = r2_store(state)
    with sqlite3.connect(db) as conn:
        assert conn.execute("DELETE FROM _mf_objects WHERE key = ?", (key,)).rowcount == 1


def alarms_set(state: Path) -> list[int]:
    """The alarm times the channel indexes have set, read from workerd's Durable Object store
    (key 1 of `_cf_METADATA`: the alarm, NULL when none is set)."""
    times = []
    for db in (state / "v3" / "do").glob("*/*.sqlite"):
        if db.name == "metadata.sqlite":
            continue
        with sqlite3.connect(db) as conn:
            times += [at for (at,) in conn.execute("SELECT value FROM _cf_METADATA WHERE key = 1") if at is not None]
    return times


def check(server, key: str, **params) -> dict:
    response = server.api("POST", f"channels/{CHANNEL}/check", key, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def counts(report: dict) -> dict[str, int]:
    return {kind: finding["count"] for kind, finding in report["findings"].items()}


CHANNEL = "checked"


def test_check_reports_damage_and_repair_fixes_it(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    packages = {name: build_tar_bz2(name, subdir=subdir) for name, subdir in
                (("alpha", "noarch"), ("beta", "noarch"), ("gamma", "linux-64"))}
    with running_server(state) as server:
        server.admin("user", "create", "root", "--admin")
        admin = server.admin("key", "create", "root")["key"]
        server.admin("user", "create", "someone")
        someone = server.admin("key", "create", "someone", "--name", "uploads")["key"]
        server.admin("channel", "create", CHANNEL, "--owner", "someone")
        for filename, data in packages.values():
            auth = {"Authorization": f"Bearer {someone}"}
            assert upload_raw(server, CHANNEL, filename, data, headers=auth).status_code == 201

        healthy = check(server, admin)
        assert healthy["consistent"] and healthy["findings"] == {}, healthy
        assert healthy["channel"] == CHANNEL
        assert "repaired" not in healthy
        # Site admins only; an unknown channel is a 404, a bad `repair` a 400, all JSON with a code.
        refused = server.api("POST", f"channels/{CHANNEL}/check", someone)
        assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
        missing = server.api("POST", "channels/no-such-channel/check", admin)
        assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
        bad = server.api("POST", f"channels/{CHANNEL}/check", admin, params={"repair": "soon"})
        assert (bad.status_code, bad.json()["code"]) == (400, "bad_request")
        keys = server.r2_keys()
        # The alarm the uploads set has run (its staging sweep with it), so none runs during
        # the checks below and deletes the stale staging object before they report it.
        deadline = time.monotonic() + 60
        while alarms_set(state):
            assert time.monotonic() < deadline, f"alarms still set: {alarms_set(state)}"
            time.sleep(0.2)

    # Damage, written while the server is stopped so that nothing it caches hides it.
    now = int(time.time() * 1000)
    orphan = f"{CHANNEL}/noarch/orphan-1.0-0.tar.bz2"
    r2_put(state, orphan, b"no record names me")
    # Older than STAGING_GRACE_SECONDS (wrangler.toml: one day), which the check and the sweep
    # both read.
    r2_put(state, f".staging/{CHANNEL}/old-upload", b"x" * 100, uploaded_ms=now - 2 * 24 * 3600 * 1000)
    r2_put(state, f".staging/{CHANNEL}/fresh-upload", b"y" * 100)
    shard = sorted(k for k in keys if k.startswith(f"{CHANNEL}/noarch/shards/"))[0]
    r2_delete(state, shard)
    r2_put(state, f"{CHANNEL}/linux-64/repodata.json", b'{"packages":{}}')
    beta = f"{CHANNEL}/noarch/{packages['beta'][0]}"
    r2_delete(state, beta)

    with running_server(state) as server:
        env = {"CONDAFLARE_API_KEY": admin}
        found = server.admin("check", CHANNEL, "--url", server.url, env=env)
        assert not found["consistent"]
        assert counts(found) == {
            "record_without_object": 1,
            "object_without_record": 1,
            "shard_missing": 1,
            "repodata_mismatch": 1,
            "stale_staging": 1,
        }, found
        assert found["findings"]["object_without_record"]["examples"] == [orphan]
        assert found["findings"]["record_without_object"]["examples"] == [f"noarch/{packages['beta'][0]}: no object"]
        assert found["findings"]["repodata_mismatch"]["examples"] == ["linux-64/repodata.json: differs"]
        assert found["findings"]["stale_staging"]["examples"] == [f".staging/{CHANNEL}/old-upload"]
        # `check --all` checks every channel and exits 1 when any is inconsistent.
        with pytest.raises(AdminError) as failed:
            server.admin("check", "--all", "--url", server.url, env=env)
        assert failed.value.code == 1
        # The API answers the same; without --json the command prints each kind and its count.
        assert counts(check(server, admin)) == counts(found)
        text = subprocess.run(
            ["node", str(ROOT / "scripts" / "admin.mjs"), "check", CHANNEL, "--url", server.url],
            cwd=ROOT, capture_output=True, text=True, env={**os.environ, **env}, check=True,
        ).stdout
        assert text.startswith(f"{CHANNEL}: inconsistent"), text
        for kind, count in counts(found).items():
            assert f"  {kind}: {count}\n" in text, text
        assert f"    {orphan}\n" in text

        repaired = check(server, admin, repair="true")
        assert repaired["repaired"]["objects_deleted"] == 1
        assert repaired["repaired"]["staging_deleted"] == 1
        assert set(repaired["repaired"]["subdirs_rebuilt"]) == {"noarch", "linux-64"}
        keys = server.r2_keys()
        assert orphan not in keys and shard in keys
        assert f".staging/{CHANNEL}/old-upload" not in keys
        assert f".staging/{CHANNEL}/fresh-upload" in keys
        linux = get(server, f"{CHANNEL}/linux-64/repodata.json").json()
        assert list(linux["packages"]) == [packages["gamma"][0]]
        # The rebuilt subdirs' records keep who published them, the record without its
        # object too.
        for name, (filename, _) in packages.items():
            answer = server.api("GET", f"channels/{CHANNEL}/packages/{name}").json()
            assert [(r["filename"], r["provenance"]) for r in answer["records"]] == [
                (filename, {"user": "someone", "key": "uploads"})
            ]

        # A record without its object is not rebuilt away: it is reported until it is deleted.
        after = check(server, admin)
        assert counts(after) == {"record_without_object": 1}, after
        deleted = server.api("DELETE", f"delete/{CHANNEL}/noarch/{packages['beta'][0]}", someone)
        assert deleted.status_code == 200, deleted.text
        clean = server.admin("check", CHANNEL, "--repair", "--url", server.url, env=env)
        assert clean["consistent"] and clean["findings"] == {}, clean

        assert clean["pending"] == {"dirty_names": 0, "stale_subdirs": []}
        everything = server.admin("check", "--all", "--url", server.url, env=env)
        assert everything["consistent"]
        assert [report["channel"] for report in everything["channels"]] == [CHANNEL]
        assert clean["repaired"] == {"names_marked": 0, "subdirs_rebuilt": [], "objects_deleted": 0, "staging_deleted": 0}

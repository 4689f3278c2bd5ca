"""Reads a channel's index files the way clients do: repodata.json, repodata.json.zst, the
shard index and its shards (CEP 16)."""

import hashlib
import json
import time

import msgpack
import requests
import zstandard

INDEX_FILES = ("repodata.json", "repodata.json.zst", "run_exports.json", "repodata_shards.msgpack.zst")


def unzstd(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def get(server, path: str, **kwargs) -> requests.Response:
    return requests.get(f"{server.url}/{path}", timeout=30, **kwargs)


def shard_index(server, channel: str, subdir: str) -> dict | None:
    """The decoded shard index, or None when the server answers 404."""
    response = get(server, f"{channel}/{subdir}/repodata_shards.msgpack.zst")
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return msgpack.unpackb(unzstd(response.content))


def shard_url(channel: str, subdir: str, digest: bytes) -> str:
    return f"{channel}/{subdir}/shards/{digest.hex()}.msgpack.zst"


def records_from_shards(server, channel: str, subdir: str) -> dict[str, dict[str, dict]]:
    """{"packages": {...}, "packages.conda": {...}} gathered from every shard the index names,
    with md5/sha256 turned back into hex; each shard checked against its address."""
    index = shard_index(server, channel, subdir)
    gathered = {"packages": {}, "packages.conda": {}}
    if index is None:
        return gathered
    assert index["info"]["shards_base_url"] == "./shards/"
    assert index["info"]["subdir"] == subdir
    for name, digest in index["shards"].items():
        response = get(server, shard_url(channel, subdir, digest))
        assert response.status_code == 200, name
        assert hashlib.sha256(response.content).digest() == digest, f"shard of {name} is not its hash"
        shard = msgpack.unpackb(unzstd(response.content))
        assert shard["removed"] == []
        for section in ("packages", "packages.conda"):
            for filename, record in shard[section].items():
                assert record["name"] == name
                assert isinstance(record["sha256"], bytes) and isinstance(record["md5"], bytes)
                gathered[section][filename] = {**record, "sha256": record["sha256"].hex(), "md5": record["md5"].hex()}
    return gathered


def repodata(server, channel, subdir):
    response = requests.get(f"{server.url}/{channel}/{subdir}/repodata.json", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for_repodata(server, channel: str, subdirs=("noarch",), timeout: float = 60) -> None:
    """Waits until each subdir's repodata.json holds what its shards hold: after an upload that
    answered `X-Repodata-Json: pending`, the build that catches up is already scheduled."""
    deadline = time.monotonic() + timeout
    for subdir in subdirs:
        while True:
            response = get(server, f"{channel}/{subdir}/repodata.json")
            data = response.json() if response.status_code == 200 else {"packages": {}, "packages.conda": {}}
            sharded = records_from_shards(server, channel, subdir)
            if all(sharded[s] == data[s] for s in ("packages", "packages.conda")):
                break
            assert time.monotonic() < deadline, f"{channel}/{subdir}/repodata.json did not catch up with its shards"
            time.sleep(0.2)


def assert_channel_consistent(server, channel):
    """DESIGN invariant 1: every record, in repodata.json, repodata.json.zst and the shards,
    points at an object with exactly its sha256, md5 and size; every package object has a
    record; and no staging object is left over (invariant 2)."""
    keys = server.r2_keys()
    listed = set()
    subdirs = {key.split("/")[1] for key in keys if key.startswith(f"{channel}/")} | {"noarch"}
    wait_for_repodata(server, channel, subdirs)
    keys = server.r2_keys()
    for subdir in subdirs:
        data = repodata(server, channel, subdir)
        compressed = get(server, f"{channel}/{subdir}/repodata.json.zst")
        assert compressed.status_code == 200
        assert json.loads(unzstd(compressed.content)) == data, f"{subdir}: .zst differs"
        sharded = records_from_shards(server, channel, subdir)
        for section in ("packages", "packages.conda"):
            assert sharded[section] == data[section], f"{subdir}: shards differ"
            for filename, record in data[section].items():
                body = requests.get(f"{server.url}/{channel}/{subdir}/{filename}", timeout=30).content
                assert len(body) == record["size"], filename
                assert hashlib.sha256(body).hexdigest() == record["sha256"], filename
                assert hashlib.md5(body).hexdigest() == record["md5"], filename
                listed.add(f"{channel}/{subdir}/{filename}")
    package_objects = {
        k for k in keys
        if k.startswith(f"{channel}/") and k.split("/", 2)[2] not in INDEX_FILES and "/shards/" not in k
        and not k.endswith(".v0.sigs")
    }
    assert package_objects == listed, "objects without records, or records without objects"
    attestations = {k.removesuffix(".v0.sigs") for k in keys if k.startswith(f"{channel}/") and k.endswith(".v0.sigs")}
    assert attestations <= listed, "attestations without their package"
    assert not [k for k in keys if k.startswith(f".staging/{channel}/")], "staging objects left behind"

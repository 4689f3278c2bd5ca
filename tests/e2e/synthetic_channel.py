"""A large upstream channel for mirror tests and benches: one subdir of `records` records as
bench/scale.py generates its packages (`names` names with builds 1.0, 1.1, …; `scale-<i>`
depends on `scale-<i // 2>`), written as an index only (repodata.json, and with `shards` a
CEP 16 shard index and shards as rattler writes them), plus real package files for the
names a solve of `scale-<top>` installs. Other records name files that do not exist: a
mirror fetches a package only when asked for it.

Also the memory figures of a running server's workerd process."""

import hashlib
import json
import os
from pathlib import Path

import msgpack
import zstandard

from pkgbuild import build_tar_bz2

SUBDIR = "linux-64"


def chain(top: int) -> list[int]:
    """The names an environment of `scale-<top>` holds."""
    names = [top]
    while names[-1]:
        names.append(names[-1] // 2)
    return names


def package_args(name: int, build: int) -> dict:
    return {
        "version": f"1.{build}",
        "build": f"h{build:04x}_0",
        "subdir": SUBDIR,
        "depends": [f"scale-{name // 2:05d} >=1.0"] if name else [],
        "files": {f"share/scale/scale-{name:05d}": f"{name}.{build}\n".encode()},
        "index_overrides": {"arch": "x86_64", "platform": "linux"},
    }


def record_of(name: int, build: int, data: bytes | None) -> tuple[str, dict]:
    args = package_args(name, build)
    filename = f"scale-{name:05d}-{args['version']}-{args['build']}.tar.bz2"
    content = data if data is not None else filename.encode()
    return filename, {
        "arch": "x86_64",
        "build": args["build"],
        "build_number": 0,
        "depends": args["depends"],
        "md5": hashlib.md5(content).hexdigest(),
        "name": f"scale-{name:05d}",
        "platform": "linux",
        "sha256": hashlib.sha256(content).hexdigest(),
        "size": len(content) if data is not None else 1000 + build,
        "subdir": SUBDIR,
        "timestamp": 1_700_000_000_000 + build,
        "version": args["version"],
    }


def write_upstream(channel: Path, records: int, names: int, top: int, shards: bool) -> int:
    """Writes the channel; answers the bytes of its repodata.json."""
    subdir = channel / SUBDIR
    subdir.mkdir(parents=True)
    (channel / "noarch").mkdir()
    (channel / "noarch" / "repodata.json").write_text(json.dumps({"info": {"subdir": "noarch"}, "packages": {}, "packages.conda": {}}))
    real = set(chain(top))
    packages: dict[str, dict] = {}
    by_name: dict[str, dict[str, dict]] = {}
    for index in range(records):
        name, build = index % names, index // names
        data = None
        if name in real:
            filename, data = build_tar_bz2(f"scale-{name:05d}", **package_args(name, build))
            (subdir / filename).write_bytes(data)
        filename, record = record_of(name, build, data)
        packages[filename] = record
        by_name.setdefault(record["name"], {})[filename] = record
    document = json.dumps({"info": {"subdir": SUBDIR}, "packages": packages, "packages.conda": {}, "repodata_version": 1}, separators=(",", ":"))
    (subdir / "repodata.json").write_text(document)
    if shards:
        write_shards(subdir, by_name)
    return len(document)


def write_shards(subdir: Path, by_name: dict[str, dict[str, dict]]) -> None:
    compress = zstandard.ZstdCompressor(level=3).compress
    (subdir / "shards").mkdir()
    index = {}
    for name, records in by_name.items():
        binary = {
            filename: {**record, "md5": bytes.fromhex(record["md5"]), "sha256": bytes.fromhex(record["sha256"])}
            for filename, record in records.items()
        }
        shard = compress(msgpack.packb({"packages": binary, "packages.conda": {}, "removed": []}))
        digest = hashlib.sha256(shard).digest()
        (subdir / "shards" / f"{digest.hex()}.msgpack.zst").write_bytes(shard)
        index[name] = digest
    info = {"base_url": "./", "shards_base_url": "./shards/", "subdir": SUBDIR, "created_at": "2026-01-01T00:00:00Z"}
    document = msgpack.packb({"info": info, "shards": index, "version": 1})
    (subdir / "repodata_shards.msgpack.zst").write_bytes(compress(document))


def workerd_memory(pgid: int) -> dict[str, int]:
    """VmHWM (peak resident) and VmRSS in bytes of the largest workerd process of the server's
    process group: the one running the Worker (wrangler also runs a small proxy)."""
    largest = {"VmHWM": 0, "VmRSS": 0}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            if os.getpgid(int(entry)) != pgid or "(workerd)" not in stat:
                continue
            status = {}
            for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in largest:
                    status[key] = int(value.split()[0]) * 1024
        except (OSError, ProcessLookupError):
            continue
        if status.get("VmHWM", 0) > largest["VmHWM"]:
            largest = {**largest, **status}
    return largest

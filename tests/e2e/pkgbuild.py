"""Builds small, real .tar.bz2 conda packages for tests: info/ metadata first, then files."""

import bz2
import hashlib
import io
import json
import tarfile


def build_tar_bz2(
    name: str,
    version: str = "1.0",
    build: str = "0",
    subdir: str = "noarch",
    depends: list[str] | None = None,
    files: dict[str, bytes] | None = None,
    index_overrides: dict | None = None,
    info_files: dict[str, bytes] | None = None,
) -> tuple[str, bytes]:
    """Returns (filename, bytes) of a package whose index.json says what the arguments say;
    `info_files` adds more of info/ (such as `info/about.json`)."""
    files = files or {}
    index = {
        "name": name,
        "version": version,
        "build": build,
        "build_number": int(build.rsplit("_", 1)[-1]) if build.rsplit("_", 1)[-1].isdigit() else 0,
        "depends": depends or [],
        "license": "BSD-3-Clause",
        "subdir": subdir,
        "timestamp": 1700000000000,
    }
    if subdir == "noarch":
        index["noarch"] = "generic"
    index.update(index_overrides or {})
    paths = {
        "paths": [
            {
                "_path": path,
                "path_type": "hardlink",
                "sha256": hashlib.sha256(data).hexdigest(),
                "size_in_bytes": len(data),
            }
            for path, data in sorted(files.items())
        ],
        "paths_version": 1,
    }
    entries = [
        ("info/index.json", json.dumps(index).encode()),
        ("info/paths.json", json.dumps(paths).encode()),
        ("info/files", "".join(f"{p}\n" for p in sorted(files)).encode()),
        *sorted((info_files or {}).items()),
        *sorted(files.items()),
    ]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for path, data in entries:
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mtime = 1700000000
            tar.addfile(info, io.BytesIO(data))
    return f"{name}-{version}-{build}.tar.bz2", bz2.compress(raw.getvalue())

"""Builds small, real conda packages for tests: .tar.bz2 (info/ metadata first, then files) and
.conda (metadata.json and the info and pkg components, each a tar.zst)."""

import bz2
import hashlib
import io
import json
import tarfile
import zipfile

import zstandard


def build_tar_bz2(name: str, info_last: bool = False, **spec) -> tuple[str, bytes]:
    """Returns (filename, bytes) of a package whose index.json says what the arguments say
    (those of `package_entries`); its info/ entries come first, as conda-build writes them,
    unless `info_last`."""
    stem, entries = package_entries(name, **spec)
    if info_last:
        entries = sorted(entries, key=lambda entry: entry[0].startswith("info/"))
    return f"{stem}.tar.bz2", bz2.compress(tar_of(entries))


def build_conda(name: str, component_stem: str | None = None, info_first: bool = False, **spec) -> tuple[str, bytes]:
    """Returns (filename, bytes) of a .conda package (`spec`: the arguments of
    `package_entries`); its components are named for `component_stem` (by default, as they
    must be, for the file's own stem). The info component comes after the pkg component, as
    conda-package-handling writes it, unless `info_first` (as some producers do)."""
    stem, entries = package_entries(name, **spec)
    info = [(path, data) for path, data in entries if path.startswith("info/")]
    payload = [(path, data) for path, data in entries if not path.startswith("info/")]
    compress = zstandard.ZstdCompressor().compress
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("metadata.json", json.dumps({"conda_pkg_format_version": 2}))
        components = [
            (f"pkg-{component_stem or stem}.tar.zst", compress(tar_of(payload))),
            (f"info-{component_stem or stem}.tar.zst", compress(tar_of(info))),
        ]
        for member, data in reversed(components) if info_first else components:
            archive.writestr(member, data)
    return f"{stem}.conda", raw.getvalue()


def package_entries(
    name: str,
    version: str = "1.0",
    build: str = "0",
    subdir: str = "noarch",
    depends: list[str] | None = None,
    files: dict[str, bytes] | None = None,
    index_overrides: dict | None = None,
    info_files: dict[str, bytes] | None = None,
) -> tuple[str, list[tuple[str, bytes]]]:
    """The file stem (`<name>-<version>-<build>`) and the paths and bytes of a package:
    info/index.json, paths.json and files, then `info_files` (more of info/, such as
    `info/about.json`), then `files`."""
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
    return f"{name}-{version}-{build}", [
        ("info/index.json", json.dumps(index).encode()),
        ("info/paths.json", json.dumps(paths).encode()),
        ("info/files", "".join(f"{p}\n" for p in sorted(files)).encode()),
        *sorted((info_files or {}).items()),
        *sorted(files.items()),
    ]


def tar_of(entries: list[tuple[str, bytes]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for path, data in entries:
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mtime = 1700000000
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()

"""What the Worker weighs and what that costs at start-up.

1. Size: the upload `wrangler deploy --dry-run` bundles (what the edge receives; the free plan
   allows 3 MB gzipped), and build/index_bg.wasm raw and gzipped (-9), per section.
2. Profile: the code section's bytes per crate, from the function names in the name section of
   the linked module before wasm-bindgen (build/ ships without names; generic code is counted in the crate whose function it instantiates, as the name
   says, e.g. `core::ptr::drop_in_place<…>` in core; C functions of zstd and bzip2 by prefix).
3. Start-up: how long V8 (node's, the engine workerd embeds) takes to compile the module
   (`new WebAssembly.Module`, what a fresh isolate does before the first request), and the time
   from starting `wrangler dev` to its first answer, for condaflare and for the runtime's
   ceiling (bench/trivial/, no wasm): the difference is what the Worker adds to a cold start.
   Medians of BENCH_ROUNDS."""

import gzip
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from baselines import ROUNDS, TRIVIAL_WORKER, load  # noqa: E402
from harness import ROOT, KillableServer  # noqa: E402

WASM = ROOT / "build" / "index_bg.wasm"
LINKED = ROOT / "target" / "wasm32-unknown-unknown" / "release" / "condaflare.wasm"
TOP_CRATES = 15
SECTIONS = {0: "custom", 1: "type", 2: "import", 3: "function", 4: "table", 5: "memory", 6: "global",
            7: "export", 8: "start", 9: "element", 10: "code", 11: "data", 12: "data count", 13: "tag"}
C_PREFIXES = {"zstd (C)": ("ZSTD", "HUF_", "FSE_", "HIST_", "ZDICT", "COVER", "POOL_", "ZSTDMT"), "bzip2 (C)": ("BZ2_",)}


def leb128(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def sections(data: bytes) -> list[tuple[str, int, int]]:
    """(name, start, size) of each section; custom sections by their own name."""
    found, at = [], 8
    while at < len(data):
        kind = data[at]
        size, at = leb128(data, at + 1)
        name = SECTIONS.get(kind, str(kind))
        if kind == 0:
            length, start = leb128(data, at)
            name = data[start:start + length].decode()
        found.append((name, at, size))
        at += size
    return found


def imported_functions(data: bytes, start: int) -> int:
    count, at = leb128(data, start)
    functions = 0
    for _ in range(count):
        for _ in range(2):  # module and field names
            length, at = leb128(data, at)
            at += length
        kind = data[at]
        at += 1
        if kind == 0:  # function: type index
            _, at = leb128(data, at)
            functions += 1
        elif kind == 1:  # table: reftype, limits
            at += 1
            flags, at = leb128(data, at)
            _, at = leb128(data, at)
            if flags & 1:
                _, at = leb128(data, at)
        elif kind == 2:  # memory: limits
            flags, at = leb128(data, at)
            _, at = leb128(data, at)
            if flags & 1:
                _, at = leb128(data, at)
        elif kind == 3:  # global: valtype, mutability
            at += 2
        elif kind == 4:  # tag: attribute, type index
            at += 1
            _, at = leb128(data, at)
    return functions


def function_names(data: bytes, start: int, size: int) -> dict[int, str]:
    """The function-name subsection (id 1) of the name section."""
    length, at = leb128(data, start)
    at += length
    end = start + size
    names: dict[int, str] = {}
    while at < end:
        sub, at = leb128(data, at)
        sub_size, at = leb128(data, at)
        if sub == 1:
            count, pos = leb128(data, at)
            for _ in range(count):
                index, pos = leb128(data, pos)
                length, pos = leb128(data, pos)
                names[index] = data[pos:pos + length].decode(errors="replace")
                pos += length
        at += sub_size
    return names


def crate_of(name: str) -> str:
    for crate, prefixes in C_PREFIXES.items():
        if name.startswith(prefixes):
            return crate
    mangled = re.match(r"_ZN(\d+)", name)
    if mangled:  # Rust's legacy mangling: _ZN, then each path segment prefixed by its length
        start = mangled.end()
        segment = name[start:start + int(mangled.group(1))]
        # An impl's first segment is `_<` (`_$LT$`) and the type's path, `..` between segments.
        return re.sub(r"^_?(\$LT\$|\$RF\$|\$u20\$|mut|dyn)*", "", segment).split("..", 1)[0] or "other"
    path = re.sub(r"^[<&*\s]*(?:mut |dyn |const )?", "", name)
    return path.split("::", 1)[0] if "::" in path else "other (C, runtime, unnamed)"


def code_by_crate(data: bytes) -> Counter:
    found = {name: (start, size) for name, start, size in sections(data)}
    if "name" not in found:
        return Counter()
    first = imported_functions(data, found["import"][0]) if "import" in found else 0
    names = function_names(data, *found["name"])
    start, _ = found["code"]
    count, at = leb128(data, start)
    by_crate: Counter = Counter()
    for i in range(count):
        body, body_at = leb128(data, at)
        by_crate[crate_of(names.get(first + i, ""))] += body_at - at + body
        at = body_at + body
    return by_crate


def deploy_size() -> str:
    with tempfile.TemporaryDirectory() as out:
        run = subprocess.run(["wrangler", "deploy", "--dry-run", "--outdir", out], cwd=ROOT, capture_output=True, text=True)
    match = re.search(r"Total Upload: ([\d.]+ KiB) / gzip: ([\d.]+ KiB)", run.stdout + run.stderr)
    return f"{match.group(1)}, gzip {match.group(2)}" if match else "(wrangler deploy --dry-run printed no size)"


def compile_ms(path: Path) -> float:
    script = (
        "const b = require('fs').readFileSync(process.argv[1]); const t = performance.now();"
        "new WebAssembly.Module(b); console.log(performance.now() - t);"
    )
    return float(subprocess.run(["node", "-e", script, str(path)], capture_output=True, text=True, check=True).stdout)


def first_answer_s(worker_dir: Path, state: Path) -> float:
    """From starting `wrangler dev` (after the migrations) to its first answer."""
    server = KillableServer(state, worker_dir=worker_dir)
    started = time.perf_counter()
    try:
        server.start()
        return time.perf_counter() - started
    finally:
        server.stop(signal.SIGTERM)


def main():
    data = WASM.read_bytes()
    print(f"{load()}; medians of {ROUNDS}")
    print(f"wrangler deploy --dry-run: {deploy_size()}")
    print(f"{WASM.relative_to(ROOT)}: {len(data) / 1e6:.2f} MB, gzip -9 {len(gzip.compress(data, 9)) / 1e6:.2f} MB")
    for name, _, size in sections(data):
        if size > 10_000:
            print(f"  section {name:18} {size / 1e6:6.2f} MB")
    by_crate = code_by_crate(LINKED.read_bytes()) if LINKED.exists() else Counter()
    total = sum(by_crate.values())
    if total:
        print(f"code section of {LINKED.relative_to(ROOT)} by crate (top {TOP_CRATES} of {len(by_crate)}):")
        for crate, size in by_crate.most_common(TOP_CRATES):
            print(f"  {crate:32} {size / 1e3:8.0f} KB {100 * size / total:5.1f}%")
    else:
        print(f"no names in {LINKED.relative_to(ROOT)}: build the Worker to see the code by crate")

    compiles = [compile_ms(WASM) for _ in range(ROUNDS)]
    print(f"V8 compile of the module (node {subprocess.run(['node', '--version'], capture_output=True, text=True).stdout.strip()}): {statistics.median(compiles):.0f} ms")
    with tempfile.TemporaryDirectory() as tmp:
        ours, ceiling = [], []
        for round_ in range(ROUNDS):
            ours.append(first_answer_s(ROOT, Path(tmp) / f"ours-{round_}"))
            ceiling.append(first_answer_s(TRIVIAL_WORKER, Path(tmp) / f"ceiling-{round_}"))
    ours_s, ceiling_s = statistics.median(ours), statistics.median(ceiling)
    print(f"wrangler dev, start to first answer: condaflare {ours_s:.2f} s, the runtime's ceiling {ceiling_s:.2f} s, "
          f"difference {ours_s - ceiling_s:.2f} s")


if __name__ == "__main__":
    main()

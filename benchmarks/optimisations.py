"""Before/after timings of each hot-path optimisation, one process, interleaved repetitions.

``python benchmarks/optimisations.py [--file PATH] [--repetitions 3]``: prints a Markdown table
(pasted into RESULTS.md). The "before" variants are the code the optimisations replaced, kept here
and in tests/physics/test_fast_path.py as references.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
DEFAULT_FILE = HERE / "data" / "zlib" / "MC" / "mc_345060.ggH125_ZZ4lep.4lep.root"


def best_of(fn: Callable[[], Any], repetitions: int) -> list[float]:
    times = []
    for _ in range(repetitions):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def _rss_child(variant: str, path: str) -> None:
    """Read ``path`` in 500k-entry chunks with uproot's defaults or atlaspipe's open options."""
    import uproot

    from atlaspipe.physics.selection import required_branches

    uproot.compression._decompress_ZLIB.library = "isal"
    options: dict[str, Any] = {} if variant == "before" else {
        "array_cache": None, "handler": uproot.source.file.MultithreadedFileSource}
    tree = uproot.open(path, **options)["mini"]
    for start in range(0, tree.num_entries, 500_000):
        tree.arrays(required_branches("2020", True), entry_start=start, entry_stop=start + 500_000)
    # VmHWM, not ru_maxrss: the latter survives fork+exec and would report the parent's peak.
    peak = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    print(json.dumps(int(peak.split()[1]) / 1024))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE)
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()

    import uproot

    from atlaspipe.physics.selection import SelectionOptions, analyse, required_branches
    from tests.physics.test_fast_path import reference_analyse_2020

    branches = required_branches("2020", True)
    tree = uproot.open(args.file, array_cache=None)["mini"]
    n = tree.num_entries
    rows: list[tuple[str, str, str, str]] = []

    def read(step: int) -> list[Any]:
        return [tree.arrays(branches, entry_start=s, entry_stop=s + step) for s in range(0, n, step)]

    def use(library: str) -> None:
        uproot.compression._decompress_ZLIB.library = library

    timings: dict[str, list[float]] = {}
    for _ in range(args.repetitions):
        for name, library, step in (("zlib 500k", "zlib", 500_000), ("isal 500k", "isal", 500_000),
                                    ("isal 200k", "isal", 200_000)):
            use(library)
            timings.setdefault(name, []).extend(best_of(lambda step=step: read(step), 1))
    use("isal")
    chunks = read(500_000)
    options = SelectionOptions()
    for _ in range(args.repetitions):
        timings.setdefault("analysis before", []).extend(
            best_of(lambda: [reference_analyse_2020(c, True, options) for c in chunks], 1))
        timings.setdefault("analysis after", []).extend(
            best_of(lambda: [analyse(c, "2020", True, 1e-3, options) for c in chunks], 1))

    def rate(key: str) -> str:
        return f"{n / statistics.median(timings[key]) / 1e6:.2f} M ev/s ({statistics.median(timings[key]):.2f} s)"

    rows.append(("ISA-L instead of zlib for ZLIB baskets (read only)", rate("zlib 500k"), rate("isal 500k"),
                 "reading.use_fast_zlib, active in workers and `atlaspipe run`"))
    rows.append(("cluster-aligned 500k chunks instead of 200k (read only; clusters are 500k entries)",
                 rate("isal 200k"), rate("isal 500k"), "planning cuts at cluster starts; DEFAULT_CHUNK_SIZE"))
    rows.append(("selection + m4l + Z candidates: flat-buffer gathers, one set of Cartesian momenta",
                 rate("analysis before"), rate("analysis after"),
                 "same selection and histograms, masses within 1e-12 (tests/physics/test_fast_path.py)"))
    rss = {}
    for variant in ("before", "after"):
        done = subprocess.run([sys.executable, __file__, "_rss", variant, str(args.file)], capture_output=True,
                              text=True, check=True, cwd=REPO)
        rss[variant] = float(done.stdout.strip().splitlines()[-1])
    rows.append(("open files without uproot's 100 MB array cache, read with pread instead of mmap",
                 f"peak RSS {rss['before']:.0f} MB", f"peak RSS {rss['after']:.0f} MB",
                 "reading.open_file; same speed"))
    print(f"File {args.file.name}, {n:,} entries, {args.repetitions} repetitions, medians:\n")
    print("| optimisation | before | after | note |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "_rss":
        _rss_child(sys.argv[2], sys.argv[3])
        sys.exit(0)
    sys.exit(main())

"""Write the benchmark dataset: 2020-schema files made by ``atlaspipe generate``.

Recipe (the default): 10.2 million MC events over 8 MC files plus the 4 pseudo-data periods
(12 files), ZLIB level 1 as in the public files, seed 9, under ``benchmarks/data/zlib/``; with
``--compression lz4`` the same events LZ4-compressed under ``benchmarks/data/lz4/``.

The MC split follows the public 2020 4lep skim, where the ZZ*→4ℓ continuum and gluon-fusion
Higgs files hold most entries and the Z+jets and tt̄ files few (the 4-lepton skim removes most
of them). The generator's natural split would instead put most events into Z+jets, whose
catalog sum of weights is large.

Equivalent CLI for a single sample: ``atlaspipe generate --release 2020 --output DIR
--samples llll --events N --seed 9 --compression zlib``; this script only fixes the per-sample
counts, which the CLI cannot.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE / "data"
SEED = 9
FULL_EVENTS = 10_200_000
QUICK_EVENTS = 120_000

FRACTIONS: dict[str, float] = {
    "llll": 0.50,
    "ggH125_ZZ4lep": 0.25,
    "VBFH125_ZZ4lep": 0.12,
    "WH125_ZZ4lep": 0.04,
    "ZH125_ZZ4lep": 0.04,
    "Zee": 0.02,
    "Zmumu": 0.02,
    "ttbar_lep": 0.01,
}
"""Share of the MC events per sample; llll and ggH hold 75 %."""


def counts(total: int) -> dict[str, int]:
    """Events per MC sample for ``total`` MC events."""
    return {name: max(200, round(total * share)) for name, share in FRACTIONS.items()}


def dataset_dir(compression: str, quick: bool = False, root: Path = DATA_DIR) -> Path:
    """Where the dataset of this compression (and size) lives."""
    return root / (f"quick-{compression}" if quick else compression)


def _complete(folder: Path) -> bool:
    marker = folder / "DONE"
    return marker.is_file()


def make(compression: str = "zlib", quick: bool = False, root: Path = DATA_DIR, force: bool = False,
         events: int | None = None) -> Path:
    """Generate the dataset unless a complete copy is there; returns its folder."""
    from atlaspipe.generate.events import generate_release

    target = dataset_dir(compression, quick, root)
    if _complete(target) and not force:
        return target
    total = events or (QUICK_EVENTS if quick else FULL_EVENTS)
    scratch = target.with_name(target.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    started = time.perf_counter()
    say = print if not quick else (lambda _line: None)
    report = generate_release("2020", scratch, seed=SEED, compression=compression,
                              events_per_sample_override=counts(total), progress=say)
    (scratch / "DONE").write_text(
        f"seed={SEED} compression={compression} events={report.total_events} files={len(report.files)} "
        f"seconds={time.perf_counter() - started:.0f}\n", "utf-8")
    shutil.rmtree(target, ignore_errors=True)
    scratch.rename(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compression", choices=("zlib", "lz4"), default="zlib")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EVENTS:,} events instead")
    parser.add_argument("--output", type=Path, default=DATA_DIR, help="root folder (default benchmarks/data)")
    parser.add_argument("--force", action="store_true", help="regenerate even if complete")
    args = parser.parse_args(argv)
    free = shutil.disk_usage(args.output if args.output.exists() else args.output.parent).free
    if free < 4e9:
        print(f"only {free / 1e9:.1f} GB free; the full dataset needs about 1.5 GB per compression",
              file=sys.stderr)
        return 1
    folder = make(args.compression, args.quick, args.output, args.force)
    size = sum(p.stat().st_size for p in folder.rglob("*.root"))
    print(f"{folder}: {len(list(folder.rglob('*.root')))} files, {size / 1e9:.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

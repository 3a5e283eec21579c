"""``atlaspipe generate``: write MC and pseudo-data in the real ROOT schemas."""

from __future__ import annotations

import argparse
from pathlib import Path

from atlaspipe.errors import ConfigError
from atlaspipe.generate.embedded import generate_embedded, shipped_dir
from atlaspipe.generate.events import COMPRESSIONS, DEFAULT_EVENTS, DEFAULT_SEED, generate_release


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``atlaspipe generate``."""
    parser.add_argument("--embedded", action="store_true",
                        help="regenerate the embedded demo sample shipped in the package (fixed seed and counts)")
    parser.add_argument("--release", choices=("2020", "2025e"), help="release whose schema to write")
    parser.add_argument("--output", type=Path, help="folder to write the files into")
    parser.add_argument("--events", type=int, default=None,
                        help=f"total MC events, split over samples (default {DEFAULT_EVENTS:,})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    parser.add_argument("--samples", nargs="+", default=None, metavar="NAME",
                        help="samples, group ids, 'data' or 'mc' to write (default: all)")
    parser.add_argument("--compression", choices=sorted(COMPRESSIONS), default="zlib",
                        help="ZLIB level 1 (default) or LZ4 level 1")
    parser.add_argument("--no-data", action="store_true", help="do not write pseudo-data")


def main(args: argparse.Namespace) -> int:
    """Run ``atlaspipe generate``."""
    if args.embedded:
        report = generate_embedded(shipped_dir())
        size = sum(path.stat().st_size for path in report.files)
        print(f"wrote {len(report.files)} files, {report.total_events:,} events, {size / 1e6:.2f} MB "
              f"into {shipped_dir()}")
        return 0
    if args.release is None or args.output is None:
        raise ConfigError("--release and --output are required (or --embedded)")
    generate_release(args.release, args.output, events=args.events, seed=args.seed,
                     samples=args.samples, compression=args.compression,
                     with_data=not args.no_data, progress=print)
    return 0

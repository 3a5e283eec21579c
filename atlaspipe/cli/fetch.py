"""``atlaspipe fetch``: download release samples into the local cache."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from atlaspipe.errors import ConfigError
from atlaspipe.io.fetch import NetworkOptions, fetch_samples, refresh_catalog
from atlaspipe.io.sources import cache_dir
from atlaspipe.physics.catalog import RELEASES


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``atlaspipe fetch``."""
    parser.add_argument("--release", choices=RELEASES, default="2020", help="the release to fetch (default 2020)")
    parser.add_argument("--samples", nargs="*", default=None, metavar="NAME",
                        help="sample names, group ids, 'data' or 'mc' (default: all)")
    parser.add_argument("--base-url", default=None,
                        help="fetch from this mirror (URL or folder) instead of the public server")
    parser.add_argument("--cache", type=Path, default=None,
                        help="cache folder (default: $ATLASPIPE_CACHE_DIR or ~/.cache/atlaspipe)")
    parser.add_argument("--protocol", choices=("https", "root"), default="https",
                        help="download over HTTPS or XRootD (root://, needs atlaspipe[xrootd]; default https)")
    parser.add_argument("--jobs", type=int, default=4, help="parallel downloads (default 4)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds without data before a transfer counts as stalled")
    parser.add_argument("--retries", type=int, default=4, help="retries of transient faults")
    parser.add_argument("--verify", action="store_true",
                        help="re-check checksums of files already in the cache")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--refresh-catalog", action="store_true",
                        help="2025e: write a refreshed metadata snapshot (atlasopenmagic) "
                        "into the cache")


def main(args: argparse.Namespace) -> int:
    """Run ``atlaspipe fetch``; 0 if every file is in the cache, 1 if any failed."""
    if args.refresh_catalog:
        print(f"refreshed catalog snapshot: {refresh_catalog(args.release, args.cache)}")
    if args.timeout <= 0 or args.retries < 0:
        raise ConfigError("--timeout must be positive and --retries non-negative")
    options = NetworkOptions(read_timeout=args.timeout, connect_timeout=min(10.0, args.timeout),
                             retries=args.retries)
    report = fetch_samples(args.release, args.samples, base_url=args.base_url,
                           protocol=args.protocol, cache=args.cache, jobs=args.jobs,
                           progress=not args.quiet and sys.stderr.isatty(), options=options,
                           verify=args.verify)
    for failure in report.failed:
        print(f"failed: {failure.sample} {failure.url}: {failure.reason}", file=sys.stderr)
    print(report.summary())
    print(f"cache: {cache_dir(args.cache) / args.release}")
    return 0 if report.ok else 1

"""``atlaspipe cpu-report``: compare the CPU data of several deployments."""

from __future__ import annotations

import argparse
from pathlib import Path

from atlaspipe.cpu.report import DEFAULT_FOLDER, compare, format_report, plot_comparison


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``atlaspipe cpu-report``."""
    parser.add_argument("--output", type=Path, default=DEFAULT_FOLDER,
                        help="folder holding cpu_data_<env>.csv and summary_<env>.json files; the report is "
                             f"written there too (default: {DEFAULT_FOLDER})")
    parser.add_argument("--baseline", help="environment the others are compared with (default: the first by name)")


def main(args: argparse.Namespace) -> int:
    """Run ``atlaspipe cpu-report``."""
    folder: Path = args.output
    envs, baseline = compare(folder, args.baseline)
    text = format_report(envs, baseline, folder)
    (folder / "cpu_comparison_results.txt").write_text(text + "\n", "utf-8")
    plot_comparison(folder / "cpu_comparison.png", envs)
    print(text)
    print(f"wrote {folder / 'cpu_comparison_results.txt'} and {folder / 'cpu_comparison.png'}")
    return 0

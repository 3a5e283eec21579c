"""The cost of the read checks (issue 13) against a chunk's whole processing time.

    atlaspipe generate --release 2020 --output /tmp/gen --events 89200000 --samples llll --no-data --seed 9
    .venv/bin/python benchmarks/measure_read_checks.py /tmp/gen/MC/mc_363490.llll.4lep.root

For each chunk of the file (default chunk size): the time of ``process_chunk`` (read, checks,
selection, histogram), of the lepton-count check on the chunk's arrays, of reading the extra
``lep_n`` branch it compares against, and of the non-finite scan. Best of ``--repeat`` runs each.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import awkward as ak

from atlaspipe.config import analysis_config
from atlaspipe.io.reading import check_lepton_counts, forget_open_files, open_tree, read_chunk, use_fast_zlib
from atlaspipe.physics.selection import JAGGED_BRANCHES, required_branches
from atlaspipe.pipeline.planning import plan_run, resolve_inputs
from atlaspipe.pipeline.processing import _non_finite_branches, non_finite_events, process_chunk


def best(repeat: int, action: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("file", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    use_fast_zlib()
    release, files = resolve_inputs(None, [str(args.file)])
    plan = plan_run("measure", analysis_config(release=release), files)
    branches = required_branches("2020", is_mc=True)
    jagged = [b for b in branches if b in JAGGED_BRANCHES]
    shares = []
    totals = [0.0, 0.0, 0.0]
    for chunk in plan.chunks:
        whole = best(args.repeat, lambda c=chunk: process_chunk(c, plan.config, "measure"))
        events, _ = read_chunk(chunk, branches)
        ttree = open_tree(chunk.source, chunk.tree)
        counts = ttree.arrays(["lep_n"], entry_start=chunk.entry_start, entry_stop=chunk.entry_stop)
        events_with_n = ak.zip({**{f: events[f] for f in events.fields}, "lep_n": counts["lep_n"]}, depth_limit=1)
        check = best(args.repeat, lambda e=events_with_n, c=chunk: check_lepton_counts(c.source, c.entry_start, e,
                                                                                         jagged))
        read_n = best(args.repeat, lambda t=ttree, c=chunk: t.arrays(["lep_n"], entry_start=c.entry_start,
                                                                    entry_stop=c.entry_stop))
        finite = best(args.repeat, lambda e=events, c=chunk: non_finite_events(
            c, e, _non_finite_branches(branches, True), "exclude"))
        share = (check + read_n) / whole
        shares.append(share)
        totals[0] += whole
        totals[1] += check + read_n
        totals[2] += finite
        print(f"chunk {chunk.chunk_id} [{chunk.entry_start}, {chunk.entry_stop}): process_chunk {whole * 1e3:.1f} ms, "
              f"count check {check * 1e3:.2f} ms + lep_n read {read_n * 1e3:.2f} ms = {share:.2%}; "
              f"non-finite scan {finite * 1e3:.2f} ms = {finite / whole:.2%}")
        forget_open_files()
    print(f"{len(plan.chunks)} chunks of up to {plan.config.chunk_size:,} entries: count check + lep_n read = "
          f"{totals[1] / totals[0]:.2%} of the processing time (per chunk: mean {statistics.mean(shares):.2%}, "
          f"max {max(shares):.2%}); non-finite scan {totals[2] / totals[0]:.2%}")


if __name__ == "__main__":
    main()

"""The atlaspipe 2020 selection as a coffea processor, run on FuturesExecutor for the comparison.

Runs in its own virtualenv (``benchmarks/.venv-coffea``, made by compare.py) so coffea never
becomes an atlaspipe dependency; hence it imports nothing from atlaspipe. Usage (compare.py does
this): ``python coffea_processor.py JOB.json OUT.json`` where JOB.json names the files, their
dataset, whether they are MC, the bin edges, chunk size and worker count.

Physics as atlaspipe and the HZZ notebook: the first four leptons, charge sum 0, type sum 44/48/52,
m4l from vector's (pt, eta, phi, E) sum in float64, weight mcWeight × the four scale factors.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import awkward as ak
import hist
import numpy as np
import uproot
import vector
from coffea import processor
from coffea.nanoevents import BaseSchema

# The same ZLIB decompressor as atlaspipe and the other contenders; forked pool workers inherit it.
uproot.compression._decompress_ZLIB.library = "isal"

WEIGHTS = ("mcWeight", "scaleFactor_PILEUP", "scaleFactor_ELE", "scaleFactor_MUON", "scaleFactor_LepTRIGGER")
CHANNEL_OF_SUM = {44: 0, 52: 1, 48: 2}


class HZZProcessor(processor.ProcessorABC):  # type: ignore[misc]
    """Histogram m4l per channel, weighted, per dataset."""

    def __init__(self, edges: list[float], is_mc: dict[str, bool]) -> None:
        self.edges = edges
        self.is_mc = is_mc

    def process(self, events: Any) -> dict[str, Any]:
        dataset = events.metadata["dataset"]
        four = events[ak.num(events.lep_pt, axis=1) >= 4]
        charge = ak.sum(four.lep_charge[:, :4], axis=1)
        type_sum = ak.sum(ak.values_astype(four.lep_type[:, :4], np.int64), axis=1)
        passed = four[(charge == 0) & ((type_sum == 44) | (type_sum == 48) | (type_sum == 52))]
        lead = {name: ak.values_astype(passed[field][:, :4], np.float64)
                for name, field in (("pt", "lep_pt"), ("eta", "lep_eta"), ("phi", "lep_phi"), ("E", "lep_E"))}
        p4 = vector.zip(lead)
        mass = np.asarray((p4[:, 0] + p4[:, 1] + p4[:, 2] + p4[:, 3]).mass) * 1e-3
        weight = np.ones(len(passed), dtype=np.float64)
        if self.is_mc[dataset]:
            for name in WEIGHTS:
                weight *= np.asarray(passed[name], dtype=np.float64)
        sums = np.asarray(ak.sum(ak.values_astype(passed.lep_type[:, :4], np.int64), axis=1))
        channel = np.select([sums == s for s in CHANNEL_OF_SUM], list(CHANNEL_OF_SUM.values()), -1)
        histogram = hist.Hist(hist.axis.Variable(self.edges, name="m4l"),
                              hist.axis.IntCategory([0, 1, 2], name="channel"), storage=hist.storage.Weight())
        histogram.fill(m4l=mass, channel=channel, weight=weight)
        return {dataset: {"hist": histogram, "read": len(events), "selected": len(passed)}}

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator


def main(job_path: str, out_path: str) -> int:
    job = json.loads(Path(job_path).read_text("utf-8"))
    fileset: dict[str, dict[str, Any]] = {}
    for entry in job["files"]:
        fileset.setdefault(entry["sample"], {"files": {}})["files"][entry["path"]] = "mini"
    is_mc = {entry["sample"]: entry["is_mc"] for entry in job["files"]}
    started = time.perf_counter()
    runner = processor.Runner(executor=processor.FuturesExecutor(workers=job["workers"], status=False),
                              schema=BaseSchema, chunksize=job["chunk_size"], savemetrics=False)
    output = runner(fileset, processor_instance=HZZProcessor(job["edges"], is_mc), treename="mini")
    seconds = time.perf_counter() - started
    samples = {}
    for name, entry in output.items():
        view = entry["hist"].view(flow=True)
        samples[name] = {
            "sumw": np.ascontiguousarray(view.value[:, :3].T).tolist(),
            "sumw2": np.ascontiguousarray(view.variance[:, :3].T).tolist(),
            "read": int(entry["read"]), "selected": int(entry["selected"]),
        }
    # The same last step as every contender: the main plot (benchmarks/mainplot.py).
    from mainplot import draw

    draw(samples, job, Path(out_path).with_suffix(".m4l.png"))
    peak_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    Path(out_path).write_text(json.dumps({"seconds": seconds, "samples": samples, "peak_rss_mb": peak_children,
                                          "coffea": __import__("coffea").__version__}), "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))

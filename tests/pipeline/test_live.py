"""``live.json`` of an in-process run (``atlaspipe run``'s executor) ends where the final plot does."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from atlaspipe.generate.embedded import embedded_sample_dir
from atlaspipe.model import Aggregate, LiveHistogram, RunPlan, RunRequest, RunResults, RunState, RunStatus
from atlaspipe.pipeline.inprocess import InProcessExecutor
from atlaspipe.pipeline.stages import AnalysisStages
from atlaspipe.results.document import build_results
from atlaspipe.results.plotting import plot_inputs


class ResultsOnly(AnalysisStages):
    """The analysis stages without plots, fit or files: the live histogram is written before them."""

    def __init__(self) -> None:
        super().__init__()
        self.results: RunResults | None = None

    def finalize(self, aggregate: Aggregate, plan: RunPlan, request: RunRequest, status: RunStatus,  # noqa: ARG002
                 workers: tuple[str, ...]) -> RunResults | None:  # noqa: ARG002 - the Stages interface
        self.results = build_results(aggregate, plan)
        return self.results


def test_the_live_histogram_of_a_whole_run_is_the_final_plots(tmp_path: Path) -> None:
    stages = ResultsOnly()
    request = RunRequest(run_id="20261201-000000-live01", inputs=(str(embedded_sample_dir()),),
                         output_dir=str(tmp_path), created="2026-12-01T00:00:00+00:00")
    status = InProcessExecutor(stages=stages).run(request)
    assert status.state is RunState.SUCCEEDED and stages.results is not None
    live = LiveHistogram.read(request.run_dir / "live.json")
    final = plot_inputs(stages.results)
    assert (live.chunks_done, live.chunks_total) == (status.chunks_total, status.chunks_total)
    assert live.bin_edges == stages.results.bin_edges
    # Summed in landing order, scaled per sample: equal to the merged results up to rounding.
    assert [g.id for g in live.groups] == [e.group.id for e in final.entries]
    for group, entry in zip(live.groups, final.entries, strict=True):
        np.testing.assert_allclose(group.values, entry.values, rtol=1e-12, atol=0, err_msg=group.id)
    assert live.data is not None and np.array_equal(live.data, final.data) and sum(live.data) > 0

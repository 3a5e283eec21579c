"""The analysis stage functions behind the lifecycle: plan a request, merge chunk results, write outputs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from atlaspipe.model import Aggregate, ChunkResult, RunPlan, RunRequest, RunResults, RunStatus

if TYPE_CHECKING:
    from atlaspipe.results.outputs import Rendered


class AnalysisStages:
    """The H→ZZ*→4ℓ stages. ``fence_inputs`` keeps a submitted run's local paths inside the input
    roots: its worker reads files on behalf of whoever submitted it. ``rendered`` holds the pieces
    of the outputs that parallel tasks already rendered, so ``finalize`` only writes the documents."""

    def __init__(self, fence_inputs: bool = False, rendered: Rendered | None = None) -> None:
        self.fence_inputs = fence_inputs
        self.rendered = rendered

    def plan(self, request: RunRequest) -> RunPlan:
        from atlaspipe.io.checksums import hash_in_background
        from atlaspipe.pipeline.planning import plan_run, resolve_inputs_skipping

        roots = None
        if self.fence_inputs:
            from atlaspipe.io.input_roots import check_submitted_inputs, input_roots

            check_submitted_inputs(request.input_locations)
            roots = input_roots()
        release, files, skipped = resolve_inputs_skipping(request.release, request.inputs, request.samples,
                                                          request.base_url, request.fetch, request.fileset)
        config = request.config.resolve(release)
        plan = plan_run(request.run_id, config, files, allow_partial=request.allow_partial, roots=roots,
                        skipped=skipped)
        # The manifest's checksums, beside the chunks rather than after the last plot.
        hash_in_background(f.source for f in plan.files if not f.error)
        return plan

    def aggregate(self, plan: RunPlan, results: dict[int, ChunkResult]) -> Aggregate:
        from atlaspipe.pipeline.processing import aggregate

        return aggregate(plan, results)

    @staticmethod
    def pieces() -> tuple[str, ...]:
        """The parts of a run's outputs that can be rendered in parallel, before ``finalize``."""
        from atlaspipe.physics.channels import CHANNELS
        from atlaspipe.results.outputs import piece_names

        return piece_names(CHANNELS)

    @staticmethod
    def render(piece: str, aggregate: Aggregate, plan: RunPlan, request: RunRequest) -> dict[str, Any]:
        from atlaspipe.results.outputs import render_piece

        return render_piece(piece, aggregate, plan, request)

    def finalize(self, aggregate: Aggregate, plan: RunPlan, request: RunRequest, status: RunStatus,
                 workers: tuple[str, ...]) -> RunResults | None:
        from atlaspipe.results.outputs import write_outputs

        return write_outputs(aggregate, plan, request, status, workers, self.rendered)

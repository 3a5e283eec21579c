"""``live.json``: the m4l histogram of a running run, from the sums of the chunks stored so far.

Grouped and scaled as the final stacked plot is (``plotting.plot_inputs``): each MC sample scaled
to the run's luminosity and added to its group, samples of a group the run does not stack drawn
as "Other", signal on top; data summed unweighted. It costs the same however many chunks the run
has: the store keeps the running sums, this only scales and groups them.
"""

from __future__ import annotations

from collections.abc import Mapping

from atlaspipe.model import LiveGroup, LiveHistogram, RunPlan, RunStatus
from atlaspipe.physics.catalog import load_release
from atlaspipe.results.plotting import OTHER_GROUP


def live_histogram(plan: RunPlan, sums: Mapping[str, Mapping[int, float]], status: RunStatus,
                   eta_seconds: float | None, updated: str) -> LiveHistogram:
    """``live.json`` from per-sample sums of in-range m4l bins (unscaled, all channels) of the chunks
    stored so far; ``plan`` may come without its chunks."""
    config = plan.config
    release = load_release(config.release)
    luminosity, _ = release.run_luminosity([f.sample for f in plan.files], config.luminosity_fb,
                                           [config.sample(d.name) for d in config.samples])
    nbins = config.bins
    planned = [config.sample(name) for name in dict.fromkeys(f.sample for f in plan.files)]
    stacked = release.stacked_groups(config.stacked_groups)
    known = {g.id for g in stacked}
    # Plain-text names: the page draws them as they are (``label`` is matplotlib mathtext).
    groups = [(g.id, g.text, g.color, g.kind) for g in stacked]
    if any(not s.is_data and (s.group or "") not in known for s in planned):
        groups.append((OTHER_GROUP.id, OTHER_GROUP.text, OTHER_GROUP.color, OTHER_GROUP.kind))
    values = {gid: [0.0] * nbins for gid, *_ in groups}
    data: list[float] | None = None
    for sample in planned:
        bins = sums.get(sample.name, {})
        if sample.is_data:
            data = data or [0.0] * nbins
            target, scale = data, 1.0
        else:
            target = values[sample.group if sample.group in known else OTHER_GROUP.id]
            scale = release.normalisation(sample, luminosity)
        for index, value in bins.items():
            target[index] += value * scale
    with_samples = {s.group if s.group in known else OTHER_GROUP.id for s in planned if not s.is_data}
    drawn = [LiveGroup(id=gid, label=label, color=color, kind=kind, values=tuple(values[gid]))
             for gid, label, color, kind in groups if gid in with_samples]
    drawn.sort(key=lambda g: g.kind == "signal")
    return LiveHistogram(
        run_id=plan.run_id, generation=status.generation, bin_edges=tuple(config.bin_edges()), groups=tuple(drawn),
        data=None if data is None else tuple(data), chunks_done=status.chunks_done, chunks_total=status.chunks_total,
        events_read=status.events_read, events_total=status.events_total, eta_seconds=eta_seconds, updated=updated,
    )

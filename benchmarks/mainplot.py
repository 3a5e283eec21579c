"""The main m4l plot every contender of compare.py ends with, so each is timed to its last output.

Plain numpy, matplotlib and mplhep (no atlaspipe: coffea's virtualenv imports it too): the MC
samples stacked, the data as points, ATLAS style, saved as PNG like atlaspipe's ``m4l.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def draw(samples: dict[str, dict[str, Any]], job: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.style
    import mplhep
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    edges = np.asarray(job["edges"], dtype=np.float64)
    is_mc = {f["sample"]: f["is_mc"] for f in job["files"]}

    def total(name: str) -> Any:
        # sumw is [channel][bin with flow]; drop the under- and overflow bins.
        return np.asarray(samples[name]["sumw"], dtype=np.float64).sum(axis=0)[1:-1]

    with matplotlib.style.context(mplhep.style.ATLAS):
        fig = Figure(figsize=(8.0, 6.5))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        bottom = np.zeros(edges.size - 1)
        for name in sorted(n for n in samples if is_mc.get(n)):
            values = total(name)
            ax.stairs(bottom + values, edges, baseline=bottom, fill=True, label=name, linewidth=0)
            bottom = bottom + values
        data = sum((total(n) for n in samples if not is_mc.get(n)), np.zeros(edges.size - 1))
        centres = 0.5 * (edges[:-1] + edges[1:])
        filled = data > 0
        ax.errorbar(centres[filled], data[filled], yerr=np.sqrt(data[filled]), fmt="o", color="black",
                    markersize=5, capsize=0, label="Data")
        ax.set_xlim(edges[0], edges[-1])
        ax.set_xlabel(r"$m_{4\ell}$ [GeV]")
        ax.set_ylabel("Events / bin")
        ax.legend(loc="upper right", frameon=False, fontsize="small")
        mplhep.atlas.label(text="Open Data", ax=ax, data=True, lumi="10", com=13, loc=4, fontsize="medium")
        fig.subplots_adjust(left=0.13, right=0.97, top=0.97, bottom=0.11)
        fig.savefig(path, format="png", dpi=110)

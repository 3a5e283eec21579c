"""The finalize pieces rendered by parallel tasks: gathered in any order, and a failed piece fails the run."""

from __future__ import annotations

from typing import Any, cast

import pytest

from atlaspipe.errors import AtlaspipeError
from atlaspipe.model import FitResult, Significance
from atlaspipe.pipeline.celery.app import create_app
from atlaspipe.pipeline.celery.canvas import RENDER_TASK, finishing
from atlaspipe.results.outputs import FIT_PIECE, HISTOGRAMS_PIECE, Rendered, piece_names, write_outputs


def test_pieces_are_the_fit_the_histogram_files_and_every_figure_longest_first() -> None:
    assert piece_names(("4e", "4mu", "2e2mu")) == (FIT_PIECE, "controls", HISTOGRAMS_PIECE, "m4l", "m4l_4e", "m4l_4mu",
                                                   "m4l_2e2mu", "m4l_ratio", "controls_channels")
    graph = finishing(create_app("memory://", "cache+memory://"), "r1")
    assert [(t.name, tuple(t.args)) for t in graph.tasks] == [(RENDER_TASK, ("r1", p)) for p in piece_names(
        ("4e", "4mu", "2e2mu"))]
    assert graph.body.name == "atlaspipe.finalize_run" and tuple(graph.body.args) == ("r1",)


def test_rendered_pieces_are_gathered_in_any_order() -> None:
    significance = Significance(window_gev=(115.0, 130.0), n_sig_plus_bg=3.0, n_bg=2.0, n_sig=1.0, n_data=3.0,
                                notebook=1.2, asimov=0.7)
    fit = FitResult(mu=1.1, background_norm_uncertainty=0.1, staterror=True, mu_upper=20.0, method="pyhf")
    pieces = [
        {"piece": "m4l_ratio", "started": 12.0, "outputs": {"m4l_ratio_png": "m4l_ratio.png"}},
        {"piece": FIT_PIECE, "started": 10.5, "significance": significance.to_jsonable(), "fit": fit.to_jsonable(),
         "outputs": {"fit_pulls_png": "fit_pulls.png"}},
        {"piece": "m4l", "started": 11.0, "outputs": {"m4l_png": "m4l.png", "m4l_pdf": "m4l.pdf"}},
    ]
    rendered = Rendered.from_pieces(pieces)
    assert rendered.statistics == (significance, fit)
    assert rendered.files == {"m4l_ratio": {"m4l_ratio_png": "m4l_ratio.png"},
                                "m4l": {"m4l_png": "m4l.png", "m4l_pdf": "m4l.pdf"},
                                FIT_PIECE: {"fit_pulls_png": "fit_pulls.png"}}
    assert rendered.started == 10.5 and rendered.error is None


def test_a_failed_piece_fails_finalize_with_its_reason_before_anything_is_written() -> None:
    pieces = [{"piece": "m4l", "started": 1.0, "outputs": {"m4l_png": "m4l.png"}},
              {"piece": "m4l_4e", "started": 1.0, "error": "No space left on device: /out/r1/m4l_4e.pdf"}]
    rendered = Rendered.from_pieces(pieces)
    nothing = cast(Any, None)
    with pytest.raises(AtlaspipeError, match=r"^No space left on device: /out/r1/m4l_4e\.pdf$"):
        write_outputs(nothing, nothing, nothing, nothing, (), rendered)

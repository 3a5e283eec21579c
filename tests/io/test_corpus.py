"""The bad-input corpus (tests/corpus.py), case by case, through the load and process stages in this
process: each case gives its named error, its skip reason or its counted exclusion."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from atlaspipe.api import make_request
from atlaspipe.errors import AtlaspipeError
from atlaspipe.model import Aggregate, RunPlan
from atlaspipe.pipeline.processing import aggregate, process_chunk
from atlaspipe.pipeline.stages import AnalysisStages
from tests import corpus

PASSWD_LINE = re.compile(r"\w+:[x*!]?:\d+:\d+:")


def _plan(case: corpus.Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, allow_partial: bool,
          fence: bool = True, **settings: object) -> tuple[Path, RunPlan]:
    from atlaspipe.config import analysis_settings

    allowed = corpus.build(tmp_path, (case,))
    (allowed / "good").mkdir()
    shutil.copyfile(corpus.DATA, allowed / "good" / "data_A.4lep.root")
    monkeypatch.setenv("ATLASPIPE_INPUT_ROOTS", str(allowed))
    request = make_request([allowed], output=tmp_path / "out", allow_partial=allow_partial,
                           settings=analysis_settings(**settings))
    return case.path(tmp_path), AnalysisStages(fence_inputs=fence).plan(request)


def _run(plan: RunPlan) -> Aggregate:
    return aggregate(plan, {c.chunk_id: process_chunk(c, plan.config, "test") for c in plan.chunks})


@pytest.mark.parametrize("case", corpus.CASES, ids=[c.name for c in corpus.CASES])
def test_corpus_case_in_process(case: corpus.Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if case.name == "wrong-name":
        with pytest.raises(AtlaspipeError, match=case.reason) as refused:
            _plan(case, tmp_path, monkeypatch, allow_partial=True)
        assert str(case.path(tmp_path)) in str(refused.value)
        return
    path, plan = _plan(case, tmp_path, monkeypatch, allow_partial=True)
    result = _run(plan)
    good = result.samples["data_A"]
    assert good.events_read == 34 and good.events_non_finite == 0 and not good.chunks_failed
    if case.outcome == "skipped":
        assert [s.source for s in plan.skipped if s.source == str(path)] == [str(path)]
        assert all(s.reason == case.reason for s in plan.skipped), plan.skipped
        assert not result.failures
    elif case.outcome == "excluded":
        (sample,) = {c.sample for c in plan.chunks if c.source == str(path)}
        assert result.samples[sample].events_non_finite == case.excluded
        assert not result.failures
    else:
        (failure,) = result.failures
        assert failure.source == str(path)
        assert (failure.chunk_id is None) == case.planning
        assert re.search(case.reason, failure.reason), failure.reason
        line = failure.describe()
        assert line.count(str(path)) == 1, line
        assert f"{failure.entry_start}-{failure.entry_stop}" not in line, line
        assert not PASSWD_LINE.search(line) and "SECRET-PAGE" not in line, line


@pytest.mark.parametrize("case", [c for c in corpus.CASES if c.outcome == "error" and c.name != "wrong-name"],
                         ids=lambda c: c.name)
def test_corpus_error_without_allow_partial(case: corpus.Case, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --allow-partial, a planning error stops the run naming the file; a chunk error fails
    that chunk with the same reason."""
    if case.planning:
        with pytest.raises(AtlaspipeError) as refused:
            _plan(case, tmp_path, monkeypatch, allow_partial=False)
        text = str(refused.value)
        assert str(case.path(tmp_path)) in text and re.search(case.reason, text), text
        return
    path, plan = _plan(case, tmp_path, monkeypatch, allow_partial=False)
    failures = [r.error for c in plan.chunks if c.source == str(path)
                if (r := process_chunk(c, plan.config, "test")).error]
    assert failures and re.search(case.reason, failures[0]), failures


def test_non_finite_as_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    case = corpus.CASE_BY_NAME["nan-kinematics"]
    path, plan = _plan(case, tmp_path, monkeypatch, allow_partial=True, non_finite="error")
    (failure,) = _run(plan).failures
    assert failure.source == str(path)
    assert failure.reason.startswith(f"branch 'lep_pt': entry {corpus.NAN_EVENTS[0]} holds a non-finite value")


def test_unfenced_link_to_a_text_file_does_not_echo_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``atlaspipe run`` reads what its user can: the link is opened, refused as not ROOT, and the
    message says what the file looks like without quoting it."""
    case = corpus.CASE_BY_NAME["link-to-passwd"]
    path, plan = _plan(case, tmp_path, monkeypatch, allow_partial=True, fence=False)
    (failure,) = _run(plan).failures
    assert failure.source == str(path)
    assert failure.reason == "not a readable ROOT file (it is plain text)"


def test_nonexistent_input_is_not_found_not_outside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from atlaspipe.io.input_roots import check_submitted_inputs

    monkeypatch.setenv("ATLASPIPE_INPUT_ROOTS", str(tmp_path / "allowed"))
    with pytest.raises(AtlaspipeError, match="file not found"):
        check_submitted_inputs(["/no/such/data_A.4lep.root"])
    (tmp_path / "dangling.root").symlink_to(tmp_path / "nothing")
    with pytest.raises(AtlaspipeError, match="symbolic link to a missing file"):
        check_submitted_inputs([str(tmp_path / "dangling.root")])


def test_non_finite_counts_merge_across_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cut into many chunks, the excluded events add up to the same count, and the histograms to
    the same sums (up to the order of the floating-point additions), as in one chunk."""
    case = corpus.CASE_BY_NAME["nan-weights"]
    _, whole = _plan(case, tmp_path / "one", monkeypatch, allow_partial=False, chunk_size=100_000)
    _, cut = _plan(case, tmp_path / "many", monkeypatch, allow_partial=False, chunk_size=300)
    assert len(cut.chunks) > len(whole.chunks) + 4
    one, many = _run(whole).samples["ggH125_ZZ4lep"], _run(cut).samples["ggH125_ZZ4lep"]
    assert one.events_non_finite == many.events_non_finite == case.excluded
    assert one.events_selected == many.events_selected
    np.testing.assert_allclose(many.histograms["m4l"].sumw, one.histograms["m4l"].sumw, rtol=1e-12)

"""``atlaspipe.submit`` with a fileset on real workers: files under arbitrary names, followed through the
handle, give the in-process numbers bit for bit and the same ``hist.Hist`` objects."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import atlaspipe
from atlaspipe.generate.embedded import embedded_sample_dir
from atlaspipe.physics.catalog import load_release
from tests.conftest import BACKEND_URL, BROKER_URL, WorkerPool
from tests.runs import histograms, reference_results

pytestmark = pytest.mark.integration


def test_submitted_fileset_run_returns_the_in_process_histograms(stage_workers: WorkerPool) -> None:
    inputs = stage_workers.tmp / "inputs"
    inputs.mkdir()
    release = load_release("2020")
    fileset: dict[str, list[str]] = {}
    for index, path in enumerate(sorted(embedded_sample_dir().rglob("*.root"))):
        sample = release.recognise(str(path))
        assert sample is not None
        target = inputs / f"part-{index}.root"
        shutil.copyfile(path, target)
        fileset[sample.name] = [str(target)]

    handle = atlaspipe.submit(fileset=fileset, output=stage_workers.tmp / "outputs", broker_url=BROKER_URL,
                              backend_url=BACKEND_URL)
    outcome = handle.wait()
    assert outcome.ok, outcome.status.message
    assert outcome.results is not None
    assert {f.source for f in outcome.results.inputs} == {str(p) for p in inputs.glob("*.root")}

    local = reference_results([embedded_sample_dir()])
    assert histograms(outcome.results) == histograms(local)
    for name, sample in local.samples.items():
        got = outcome.histograms[name]["4mu"].view(flow=True)
        want = sample.channels["4mu"].to_hist(local.bin_edges).view(flow=True)
        assert np.array_equal(got.value, want.value) and np.array_equal(got.variance, want.variance), name
    assert outcome.fit is not None and outcome.fit.converged
    assert outcome.outputs["workspace_json"].is_file() and outcome.outputs["histograms_root"].is_file()

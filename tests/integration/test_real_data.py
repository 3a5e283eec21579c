"""The real ATLAS Open Data files in ../shared give the published event counts."""

from __future__ import annotations

import pytest

from atlaspipe.model import RunResults
from tests.conftest import require_shared
from tests.runs import reference_results

pytestmark = pytest.mark.shared

DATA_2020 = "atlas-opendata/2020/4lep/Data"
FILE_2025E = ("atlas-opendata/2025e-13tev-beta/exactly4lep/"
              "ODEO_FEB2025_v0_exactly4lep_data15_periodD.exactly4lep.root")


def run_local(inputs: list[str], release: str | None = None, chunk_size: int = 100_000) -> RunResults:
    return reference_results(inputs, chunk_size, release)


def test_2020_data_counts_per_period() -> None:
    folder = require_shared(DATA_2020)
    results = run_local([str(folder)])
    per_period = {name: s.events_selected for name, s in results.data.samples.items()}
    assert per_period == {"data_A": 27, "data_B": 86, "data_C": 146, "data_D": 248}
    assert results.data.events_selected == 507
    assert results.data.events_in_range == 371
    assert results.data.events_read == 39 + 156 + 237 + 400
    # ATLAS data, not generated; the notebook's 0.5 + 1.9 + 2.9 + 4.7 fb⁻¹.
    assert results.data.kind == "real"
    assert results.luminosity_fb == pytest.approx(10.0)


def test_2020_data_counts_do_not_depend_on_chunking() -> None:
    folder = require_shared(DATA_2020)
    whole = run_local([str(folder)])
    split = run_local([str(folder)], chunk_size=7)
    assert split.data.m4l == whole.data.m4l


def test_2025e_data_file_full_selection() -> None:
    path = require_shared(FILE_2025E)
    results = run_local([str(path)])
    assert results.release == "2025e"
    assert results.data.events_read == 3424
    assert results.data.events_selected == 2
    assert results.data.kind == "real"
    # The notebook's period-D luminosity, not the release's 36.6 fb⁻¹.
    assert results.luminosity_fb == pytest.approx(0.105)

"""The run model: JSON round trips, schema versions, and the shipped schemas and contracts in step with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atlaspipe.errors import SchemaError
from atlaspipe.model import (
    CONTRACT_BEGIN,
    CONTRACT_END,
    SCHEMAS,
    Chunk,
    ChunkResult,
    Counts,
    Failure,
    Histogram,
    RunState,
    RunStatus,
    contract_markdown,
    schema_text,
)

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_the_shipped_json_schema_is_the_models(kind: str) -> None:
    shipped = (DOCS / "schemas" / f"{kind}.schema.json").read_text()
    assert shipped == schema_text(kind), f"docs/schemas/{kind}.schema.json is stale: run scripts/update-contracts.sh"


def test_contracts_md_lists_the_models_fields() -> None:
    text = (DOCS / "CONTRACTS.md").read_text()
    generated = text.split(CONTRACT_BEGIN, 1)[1].split(CONTRACT_END, 1)[0].strip()
    assert generated == contract_markdown().strip(), "docs/CONTRACTS.md is stale: run scripts/update-contracts.sh"


def test_a_chunk_result_round_trips_bit_for_bit() -> None:
    awkward_floats = (0.1 + 0.2, 1e-300, 123456.78901234567, 2.0**-1074)
    counts = Counts(sumw=(awkward_floats,), sumw2=(awkward_floats,))
    result = ChunkResult(chunk_id=3, sample="ggH125_ZZ4lep", worker="w", histograms={"m4l": counts})
    assert ChunkResult.from_json(result.to_json()) == result
    failed = ChunkResult.failed(Chunk(chunk_id=1, release="2020", sample="s", source="f.root", tree="mini",
                                      entry_start=0, entry_stop=5, file_entries=9), "bad basket", "w")
    assert not failed.ok and ChunkResult.from_json(failed.to_json()) == failed


def test_a_document_of_another_version_is_one_clear_error() -> None:
    status = RunStatus(run_id="r", state=RunState.RUNNING, executor="celery", started="s", updated="u")
    raw = json.loads(status.to_json())
    raw["schema_version"] = 9
    with pytest.raises(SchemaError, match=r"^status.json: not a valid RunStatus: schema_version: Input should be 1$"):
        RunStatus.from_json(json.dumps(raw), "status.json")
    with pytest.raises(SchemaError, match="surprise: Extra inputs are not permitted"):
        RunStatus.from_jsonable({**json.loads(status.to_json()), "surprise": 1})


def test_documents_are_frozen() -> None:
    status = RunStatus(run_id="r", state=RunState.RUNNING, executor="celery", started="s", updated="u")
    with pytest.raises(ValueError, match="frozen"):
        status.state = RunState.FAILED  # type: ignore[misc]


def test_a_failure_line_names_its_file_and_range_once() -> None:
    chunk = Chunk(chunk_id=0, release="2020", sample="data_A", source="F", tree="mini", entry_start=0,
                  entry_stop=30, file_entries=30)
    line = Failure.of_chunk(chunk, "branch 'lep_E': 3 values").describe()
    assert line == "chunk 0 F [0, 30): branch 'lep_E': 3 values"


def test_a_histogram_becomes_a_hist_with_its_flow_bins() -> None:
    histogram = Histogram.from_flow([1.0, 2.0, 3.0, 4.0], [1.0, 4.0, 9.0, 16.0])
    converted = histogram.to_hist([80.0, 85.0, 90.0])
    assert converted.values().tolist() == [2.0, 3.0]
    assert converted.view(flow=True).value.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert converted.variances().tolist() == [4.0, 9.0]
    assert (histogram.total, histogram.uncertainty) == (5.0, 13.0**0.5)


def test_an_invalid_chunk_range_is_refused() -> None:
    from atlaspipe.errors import ConfigError

    with pytest.raises(ConfigError, match=r"invalid entry range \[5, 4\)"):
        Chunk(chunk_id=0, release="2020", sample="s", source="f", tree="t", entry_start=5, entry_stop=4, file_entries=9)

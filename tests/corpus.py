"""A corpus of bad inputs, one file per kind, generated into a folder, with what each must give.

Every case is built from the embedded 2020 sample by damaging one thing, so the expected outcome
(the named error, the reason it is skipped, or how many events are left out) follows from how the
file was made, never from running the analysis. ``python -m tests.corpus FOLDER`` writes it for a
manual look; the tests build it into their tmp folder.

Layout: ``FOLDER/allowed/<case>/<file>`` is what a run reads (one subfolder per case, so names
can repeat), ``FOLDER/outside/`` holds the target of the link that leaves the allowed folder.
"""

from __future__ import annotations

import gzip
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import awkward as ak
import numpy as np
import uproot

from atlaspipe.generate.embedded import embedded_sample_dir
from atlaspipe.physics.selection import LEPTON_BRANCHES_2020, WEIGHT_BRANCHES_2020

DATA = embedded_sample_dir() / "Data" / "data_A.4lep.root"
GGH = embedded_sample_dir() / "MC" / "mc_345060.ggH125_ZZ4lep.4lep.root"

Outcome = Literal["error", "excluded", "skipped"]


@dataclass(frozen=True)
class Case:
    """One corpus file and what a run must make of it.

    ``error``: the file (or its chunk) fails with a reason matching ``reason`` (a regex);
    ``excluded``: it is read and ``excluded`` of its events are left out for non-finite values;
    ``skipped``: folder expansion passes it over with ``reason``.
    ``planning``: the error comes when planning opens the file, not when a chunk reads it.
    ``fenced``: the error needs the input-roots fence (a submitted run); an unfenced run reads it.
    """

    name: str
    file_name: str
    make: Callable[[Path, Path], None]
    outcome: Outcome
    reason: str = ""
    excluded: int = 0
    planning: bool = False
    fenced: bool = False

    def path(self, folder: Path) -> Path:
        return folder / "allowed" / self.name / self.file_name


def _columns(source: Path, weights: bool) -> dict[str, ak.Array]:
    events = uproot.open(source)["mini"].arrays(library="ak")
    names = list(LEPTON_BRANCHES_2020) + (list(WEIGHT_BRANCHES_2020) if weights else [])
    return {name: events[name] for name in names}


def _write(path: Path, columns: dict[str, ak.Array], counter: Callable[[str], str]) -> None:
    """A ``mini`` tree of ``columns``; jagged branches get the counter ``counter(name)``."""
    types = {name: (f"var * {ak.flatten(a).type.content}" if a.ndim > 1 else str(a.type.content))
             for name, a in columns.items()}
    with uproot.recreate(path) as handle:
        handle.mktree("mini", types, counter_name=counter)
        handle["mini"].extend(columns)


def _drop_last(values: ak.Array, event: int) -> ak.Array:
    counts = np.asarray(ak.num(values, axis=1))
    keep = np.ones(int(counts.sum()), dtype=bool)
    keep[int(counts[: event + 1].sum()) - 1] = False
    counts[event] -= 1
    return ak.unflatten(ak.flatten(values)[keep], counts)


def _set_flat(values: ak.Array, event: int, lepton: int, value: float) -> ak.Array:
    counts = np.asarray(ak.num(values, axis=1))
    flat = np.asarray(ak.flatten(values)).copy()
    flat[int(counts[:event].sum()) + lepton] = value
    return ak.unflatten(flat, counts)


UNEQUAL_EVENT = 20
"""The event of data_A whose ``lep_E`` loses its last lepton."""


def unequal_lengths(path: Path, _outside: Path) -> None:
    """Each lepton branch has its own counter, and ``lep_E`` is one lepton short in one event."""
    columns = _columns(DATA, weights=False)
    columns["lep_E"] = _drop_last(columns["lep_E"], UNEQUAL_EVENT)
    _write(path, columns, lambda name: f"n_{name}")


LEP_N_EVENT = 11


def lep_n_disagrees(path: Path, _outside: Path) -> None:
    """The lepton branches agree with each other, but ``lep_n`` says one more in one event."""
    columns = _columns(DATA, weights=False)
    lep_n = np.asarray(ak.num(columns["lep_pt"], axis=1), dtype=np.int32)
    lep_n[LEP_N_EVENT] += 1
    _write(path, {**columns, "lep_n": ak.Array(lep_n)}, lambda _: "nlep")


NAN_EVENTS = (0, 5, 9)
"""data_A events given a NaN lep_pt (the first two) or an infinite lep_E (the third)."""


def nan_kinematics(path: Path, _outside: Path) -> None:
    columns = _columns(DATA, weights=False)
    columns["lep_pt"] = _set_flat(columns["lep_pt"], NAN_EVENTS[0], 0, np.nan)
    columns["lep_pt"] = _set_flat(columns["lep_pt"], NAN_EVENTS[1], 2, np.nan)
    columns["lep_E"] = _set_flat(columns["lep_E"], NAN_EVENTS[2], 3, np.inf)
    _write(path, columns, lambda _: "lep_n")


NAN_WEIGHT_EVENTS = (3, 100, 101, 2000)


def nan_weights(path: Path, _outside: Path) -> None:
    columns = _columns(GGH, weights=True)
    weight = np.asarray(columns["mcWeight"]).copy()
    weight[list(NAN_WEIGHT_EVENTS[:3])] = np.nan
    columns["mcWeight"] = ak.Array(weight)
    factor = np.asarray(columns["scaleFactor_MUON"]).copy()
    factor[NAN_WEIGHT_EVENTS[3]] = -np.inf
    columns["scaleFactor_MUON"] = ak.Array(factor)
    _write(path, columns, lambda _: "lep_n")


def link_to_passwd(path: Path, _outside: Path) -> None:
    path.symlink_to("/etc/passwd")


def link_outside(path: Path, outside: Path) -> None:
    target = outside / "data_A.4lep.root"
    target.write_bytes(DATA.read_bytes())
    path.symlink_to(target)


def link_loop(path: Path, _outside: Path) -> None:
    other = path.with_name("loop.root")
    other.symlink_to(path)
    path.symlink_to(other)


def wrong_name(path: Path, _outside: Path) -> None:
    path.write_bytes(DATA.read_bytes())


def truncated(path: Path, _outside: Path) -> None:
    data = DATA.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def random_bytes(path: Path, _outside: Path) -> None:
    path.write_bytes(random.Random(5).randbytes(50_000))


def empty(path: Path, _outside: Path) -> None:
    path.write_bytes(b"")


def gzip_named_root(path: Path, _outside: Path) -> None:
    path.write_bytes(gzip.compress(DATA.read_bytes()))


def html_named_root(path: Path, _outside: Path) -> None:
    path.write_text("<!DOCTYPE html><html><body>SECRET-PAGE 404 Not Found</body></html>\n")


def missing_tree(path: Path, _outside: Path) -> None:
    with uproot.recreate(path) as handle:
        handle.mktree("other", {"x": np.int32})
        handle["other"].extend({"x": np.arange(5, dtype=np.int32)})


def missing_branch(path: Path, _outside: Path) -> None:
    columns = _columns(DATA, weights=False)
    del columns["lep_phi"]
    _write(path, columns, lambda _: "lep_n")


def scalar_where_jagged(path: Path, _outside: Path) -> None:
    columns = _columns(DATA, weights=False)
    columns["lep_pt"] = ak.Array(np.ones(len(columns["lep_eta"]), dtype=np.float32))
    _write(path, columns, lambda _: "lep_n")


CASES: tuple[Case, ...] = (
    Case("unequal-lengths", "data_B.4lep.root", unequal_lengths, "error",
         rf"branch 'lep_E': entry {UNEQUAL_EVENT} has \d+ values but lep_pt has \d+"),
    Case("lep_n-disagrees", "data_C.4lep.root", lep_n_disagrees, "error",
         rf"branch 'lep_pt': entry {LEP_N_EVENT} has \d+ values but lep_n is \d+"),
    Case("nan-kinematics", "data_D.4lep.root", nan_kinematics, "excluded", excluded=len(NAN_EVENTS)),
    Case("nan-weights", "mc_345060.ggH125_ZZ4lep.4lep.root", nan_weights, "excluded",
         excluded=len(NAN_WEIGHT_EVENTS)),
    Case("link-to-passwd", "data_B.4lep.root", link_to_passwd, "error",
         "outside the allowed input folders", planning=True, fenced=True),
    Case("link-outside-roots", "data_C.4lep.root", link_outside, "error",
         "outside the allowed input folders", planning=True, fenced=True),
    Case("symlink-loop", "data_D.4lep.root", link_loop, "skipped", "symbolic link loop"),
    Case("wrong-name", "mydata.root", wrong_name, "error",
         r"file name not recognised as a sample of [^;]*; name the file, or a symbolic link to it, as its "
         r"sample in the catalog: .*\(docs/data-access.md, \"Analysing your own files\"\)",
         planning=True),
    Case("truncated", "data_B.4lep.root", truncated, "error", "truncated or corrupt|not a readable ROOT file"),
    Case("random-bytes", "data_C.4lep.root", random_bytes, "error",
         r"not a readable ROOT file \(it does not start with the ROOT file signature\)", planning=True),
    Case("empty", "data_D.4lep.root", empty, "error", r"file is empty \(0 bytes\)", planning=True),
    Case("gzip-named-root", "data_B.4lep.root", gzip_named_root, "error",
         r"not a readable ROOT file \(it is gzip-compressed\)", planning=True),
    Case("html-named-root", "data_C.4lep.root", html_named_root, "error",
         r"not a readable ROOT file \(it looks like HTML or XML text\)", planning=True),
    Case("missing-tree", "data_D.4lep.root", missing_tree, "error", r"no tree 'mini' in file \(found: other\)",
         planning=True),
    Case("missing-branch", "data_B.4lep.root", missing_branch, "error", "branch 'lep_phi': branch missing from tree"),
    Case("scalar-where-jagged", "data_C.4lep.root", scalar_where_jagged, "error",
         "branch 'lep_pt': expected a per-lepton \\(jagged\\) branch"),
)
CASE_BY_NAME = {case.name: case for case in CASES}


def build(folder: Path, cases: tuple[Case, ...] = CASES) -> Path:
    """Write ``cases`` under ``folder`` (see the module's layout); returns ``folder / "allowed"``."""
    outside = folder / "outside"
    outside.mkdir(parents=True, exist_ok=True)
    for case in cases:
        path = case.path(folder)
        path.parent.mkdir(parents=True, exist_ok=True)
        case.make(path, outside)
    return folder / "allowed"


if __name__ == "__main__":
    print(build(Path(sys.argv[1])))

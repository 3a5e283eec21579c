"""``atlaspipe fetch`` against the local HTTP mirror: byte-identical copies, cache reuse, and the
network faults (404, auth failures, 5xx, dropped connections, slow servers, bad checksums)."""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import re
import shutil
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uproot

from atlaspipe.cli import fetch as fetch_command
from atlaspipe.errors import ConfigError, InputError
from atlaspipe.io import fetch, sources
from atlaspipe.io.fetch import FetchError, NetworkOptions, fetch_file, fetch_samples
from atlaspipe.io.sources import Integrity, cached_path, read_sidecar, resolve
from atlaspipe.physics.catalog import load_release
from atlaspipe.physics.selection import analyse, required_branches
from tests.mirror import (
    MIRROR_2020,
    MIRROR_2025E,
    REAL_2020_DATA,
    REAL_2025E_FILE,
    Fault,
    MirrorServer,
    MirrorTree,
    build_mirror_tree,
)

pytestmark = pytest.mark.shared

FAST = NetworkOptions(connect_timeout=2.0, read_timeout=5.0, retries=2, backoff=0.01)
RELEASE = load_release("2020")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> MirrorTree:
    return build_mirror_tree(tmp_path_factory.mktemp("mirror"))


@pytest.fixture(scope="module")
def server(tree: MirrorTree) -> Iterator[MirrorServer]:
    mirror = MirrorServer(tree.root).start()
    yield mirror
    mirror.stop()


@pytest.fixture
def mirror(server: MirrorServer) -> Iterator[MirrorServer]:
    server.clear()
    yield server
    server.clear()


@pytest.fixture
def base(mirror: MirrorServer) -> str:
    return mirror.base_url(MIRROR_2020)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _url_path(name: str) -> str:
    return f"/{MIRROR_2020}/{RELEASE.sample(name).path}"


def _selected(source: str, is_mc: bool) -> Any:
    arrays = uproot.open(source)["mini"].arrays(required_branches("2020", is_mc))
    return analyse(arrays, "2020", is_mc, RELEASE.to_gev)


def test_fetch_real_data_and_generated_mc_gives_identical_files_used_by_resolve(
        tree: MirrorTree, mirror: MirrorServer, base: str, tmp_path: Path) -> None:
    names = ["data", "ggH125_ZZ4lep", "llll"]
    report = fetch_samples("2020", names, base_url=base, cache=tmp_path, jobs=4, progress=False,
                           options=FAST)
    assert report.ok, report.failed
    assert sorted(f.sample for f in report.fetched) == sorted(tree.sources_2020)
    assert report.bytes_downloaded == sum(p.stat().st_size for p in tree.sources_2020.values())
    for name, source in tree.sources_2020.items():
        sample = RELEASE.sample(name)
        cached = cached_path(RELEASE, sample, tmp_path)
        assert cached == tmp_path / "2020" / sample.path
        assert cached.read_bytes() == source.read_bytes()
        sidecar = read_sidecar(cached)
        assert sidecar is not None and sidecar["url"] == f"{base}/{sample.path}"
        assert (sidecar["size"], sidecar["sha256"]) == (source.stat().st_size, _sha256(source))
        assert not cached.with_name(cached.name + ".part").exists()
        assert resolve(RELEASE, sample, base_url=base, cache=tmp_path) == str(cached)
        # The analysis sees the same events through the cache as from the source file.
        from_cache = _selected(str(cached), sample.kind == "mc")
        from_source = _selected(str(source), sample.kind == "mc")
        np.testing.assert_array_equal(from_cache.m4l_gev, from_source.m4l_gev)
        np.testing.assert_array_equal(from_cache.weight, from_source.weight)
    assert len(_selected(str(cached_path(RELEASE, RELEASE.sample("data_A"), tmp_path)), False)) == 27

    mirror.clear()
    again = fetch_samples("2020", names, base_url=base, cache=tmp_path, progress=False, options=FAST)
    assert again.ok and len(again.skipped) == len(tree.sources_2020) and not again.fetched
    assert not mirror.requests, "a complete cache must not touch the network"


@pytest.mark.usefixtures("mirror")
def test_resolve_streams_the_url_when_not_cached_and_fetches_first_on_request(
        tree: MirrorTree, base: str, tmp_path: Path) -> None:
    sample = RELEASE.sample("data_B")
    url = resolve(RELEASE, sample, base_url=base, cache=tmp_path)
    assert url == f"{base}/Data/data_B.4lep.root"
    assert uproot.open(url)["mini"].num_entries == 156
    assert fetch_samples(RELEASE, [sample], base_url=base, cache=tmp_path, progress=False, options=FAST).ok
    path = resolve(RELEASE, sample, base_url=base, cache=tmp_path)
    assert path == str(cached_path(RELEASE, sample, tmp_path))
    assert Path(path).read_bytes() == tree.sources_2020["data_B"].read_bytes()


def test_real_2025e_file_over_http_gives_3424_entries_and_2_selected(mirror: MirrorServer) -> None:
    release = load_release("2025e")
    sample = release.sample("data15_periodD")
    url = resolve(release, sample, base_url=mirror.base_url(MIRROR_2025E), cache=Path("/nonexistent"))
    assert url == f"{mirror.base_url(MIRROR_2025E)}/{REAL_2025E_FILE}"
    ttree = uproot.open(url)["analysis"]
    assert ttree.num_entries == 3424
    selected = analyse(ttree.arrays(required_branches("2025e", False)), "2025e", False, 1.0)
    assert len(selected) == 2
    # uproot read it with byte ranges, not by downloading the whole file.
    assert any(r is not None for r in mirror.ranges(f"/{MIRROR_2025E}/{REAL_2025E_FILE}"))


def test_404_fails_at_once_with_url_and_reason(mirror: MirrorServer, base: str,
                                               tmp_path: Path) -> None:
    report = fetch_samples("2020", ["Zee", "data_A"], base_url=base, cache=tmp_path,
                           progress=False, options=FAST)
    assert [f.sample for f in report.fetched] == ["data_A"]
    (failure,) = report.failed
    assert failure.url == f"{base}/MC/mc_361106.Zee.4lep.root"
    assert "404" in failure.reason and failure.attempts == 1
    assert mirror.count(_url_path("Zee")) == 1
    assert not any((tmp_path / "2020" / "MC").glob("mc_361106*.root*"))


@pytest.mark.parametrize("status", [401, 403])
def test_authentication_failures_are_not_retried(mirror: MirrorServer, base: str, tmp_path: Path,
                                                 status: int) -> None:
    mirror.set_fault(_url_path("data_A"), Fault("status", status=status))
    report = fetch_samples("2020", ["data_A"], base_url=base, cache=tmp_path, progress=False,
                           options=FAST)
    (failure,) = report.failed
    assert str(status) in failure.reason and "not retried" in failure.reason
    assert mirror.count(_url_path("data_A")) == 1


def test_server_error_is_retried_with_backoff(tree: MirrorTree, mirror: MirrorServer, base: str,
                                              tmp_path: Path) -> None:
    mirror.set_fault(_url_path("data_C"), Fault("status", status=503, times=2))
    report = fetch_samples("2020", ["data_C"], base_url=base, cache=tmp_path, progress=False,
                           options=FAST)
    assert report.ok
    assert report.fetched[0].attempts == 3 and mirror.count(_url_path("data_C")) == 3
    assert cached_path(RELEASE, RELEASE.sample("data_C"), tmp_path).read_bytes() == \
        tree.sources_2020["data_C"].read_bytes()


def test_dropped_connection_resumes_with_a_range_request(tree: MirrorTree, mirror: MirrorServer,
                                                         base: str, tmp_path: Path) -> None:
    mirror.set_fault(_url_path("data_D"), Fault("drop", after_bytes=30_000, times=1))
    report = fetch_samples("2020", ["data_D"], base_url=base, cache=tmp_path, progress=False,
                           options=FAST)
    assert report.ok, report.failed
    assert mirror.ranges(_url_path("data_D")) == [None, "bytes=30000-"]
    cached = cached_path(RELEASE, RELEASE.sample("data_D"), tmp_path)
    assert cached.read_bytes() == tree.sources_2020["data_D"].read_bytes()


def test_connection_dropped_every_time_fails_cleanly_then_resumes(
        tree: MirrorTree, mirror: MirrorServer, base: str, tmp_path: Path) -> None:
    path = _url_path("data_D")
    mirror.set_fault(path, Fault("drop", after_bytes=20_000))
    options = NetworkOptions(read_timeout=5.0, retries=1, backoff=0.01)
    report = fetch_samples("2020", ["data_D"], base_url=base, cache=tmp_path, progress=False,
                           options=options)
    (failure,) = report.failed
    assert "closed after" in failure.reason or "connection failed" in failure.reason
    assert "gave up after 2 attempts" in failure.reason
    cached = cached_path(RELEASE, RELEASE.sample("data_D"), tmp_path)
    assert not cached.exists(), "a partial download must never sit under the final name"
    assert resolve(RELEASE, RELEASE.sample("data_D"), base_url=base, cache=tmp_path).startswith("http")
    part = cached.with_name(cached.name + ".part")
    assert part.stat().st_size == 40_000

    mirror.clear()
    report = fetch_samples("2020", ["data_D"], base_url=base, cache=tmp_path, progress=False,
                           options=options)
    assert report.ok
    assert mirror.ranges(path) == ["bytes=40000-"]
    assert report.bytes_downloaded == tree.sources_2020["data_D"].stat().st_size - 40_000
    assert cached.read_bytes() == tree.sources_2020["data_D"].read_bytes()
    assert not part.exists()


def test_server_that_ignores_range_gets_a_fresh_download(tree: MirrorTree, mirror: MirrorServer,
                                                         base: str, tmp_path: Path) -> None:
    cached = cached_path(RELEASE, RELEASE.sample("data_B"), tmp_path)
    cached.parent.mkdir(parents=True)
    part = cached.with_name(cached.name + ".part")
    part.write_bytes(tree.sources_2020["data_B"].read_bytes()[:5000])
    mirror.set_fault(_url_path("data_B"), Fault("ignore_range"))
    report = fetch_samples("2020", ["data_B"], base_url=base, cache=tmp_path, progress=False,
                           options=FAST)
    assert report.ok
    assert mirror.ranges(_url_path("data_B")) == ["bytes=5000-"]
    assert cached.read_bytes() == tree.sources_2020["data_B"].read_bytes()


@pytest.mark.parametrize("with_sidecar", [True, False])
def test_truncated_cache_file_is_detected_and_fetched_again(
        tree: MirrorTree, mirror: MirrorServer, base: str, tmp_path: Path, with_sidecar: bool) -> None:
    sample = RELEASE.sample("data_C")
    cached = cached_path(RELEASE, sample, tmp_path)
    source = tree.sources_2020["data_C"]
    if with_sidecar:
        assert fetch_samples("2020", ["data_C"], base_url=base, cache=tmp_path, progress=False,
                             options=FAST).ok
    else:
        # A copy placed by hand: only the ROOT header tells how long the whole file is.
        cached.parent.mkdir(parents=True)
        shutil.copyfile(source, cached)
        assert resolve(RELEASE, sample, base_url=base, cache=tmp_path) == str(cached)
    with cached.open("r+b") as handle:
        handle.truncate(source.stat().st_size // 2)
    assert resolve(RELEASE, sample, base_url=base, cache=tmp_path) == f"{base}/{sample.path}"
    mirror.clear()
    report = fetch_samples("2020", ["data_C"], base_url=base, cache=tmp_path, progress=False,
                           options=FAST)
    assert [f.sample for f in report.fetched] == ["data_C"]
    assert mirror.ranges(_url_path("data_C")) == [None]
    assert cached.read_bytes() == source.read_bytes()
    assert resolve(RELEASE, sample, base_url=base, cache=tmp_path) == str(cached)


def test_slow_server_hits_the_read_timeout(mirror: MirrorServer, base: str, tmp_path: Path) -> None:
    mirror.set_fault(_url_path("data_A"), Fault("slow", delay=3.0))
    options = NetworkOptions(connect_timeout=1.0, read_timeout=0.3, retries=1, backoff=0.01)
    started = time.perf_counter()
    report = fetch_samples("2020", ["data_A"], base_url=base, cache=tmp_path, progress=False,
                           options=options)
    elapsed = time.perf_counter() - started
    (failure,) = report.failed
    assert "timed out" in failure.reason and failure.attempts == 2
    assert mirror.count(_url_path("data_A")) == 2
    assert elapsed < 2.0
    assert not cached_path(RELEASE, RELEASE.sample("data_A"), tmp_path).exists()


def test_checksums_are_verified(tree: MirrorTree, base: str, tmp_path: Path) -> None:
    source = tree.sources_2020["data_A"]
    data = source.read_bytes()
    url = f"{base}/Data/data_A.4lep.root"
    good = [f"sha256:{hashlib.sha256(data).hexdigest()}", f"md5:{hashlib.md5(data).hexdigest()}",
            f"adler32:{zlib.adler32(data):08x}"]
    for index, checksum in enumerate(good):
        dest = tmp_path / f"ok{index}" / "data_A.4lep.root"
        nbytes, attempts = fetch_file(url, dest, integrity=Integrity(len(data), checksum),
                                      options=FAST)
        assert (nbytes, attempts) == (len(data), 1) and dest.read_bytes() == data
    bad = tmp_path / "bad" / "data_A.4lep.root"
    with pytest.raises(FetchError, match="checksum mismatch") as caught:
        fetch_file(url, bad, integrity=Integrity(checksum="sha256:" + "0" * 64), options=FAST)
    assert caught.value.attempts == 1
    assert not bad.exists() and not bad.with_name(bad.name + ".part").exists()
    with pytest.raises(FetchError, match="the catalog says 1234"):
        fetch_file(url, bad, integrity=Integrity(size=1234), options=FAST)
    assert not bad.exists()


def test_catalog_size_and_checksum_fields_are_used(tree: MirrorTree, base: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    data = tree.sources_2020["data_A"].read_bytes()
    entries = {
        "data_A": {"name": "data_A", "size": len(data),
                   "checksum": f"adler32:{zlib.adler32(data):08x}"},
        "data_B": {"name": "data_B", "checksum": "sha256:" + "1" * 64},
    }
    monkeypatch.setattr(sources, "_raw_entries", lambda _release: entries)
    report = fetch_samples("2020", ["data_A", "data_B"], base_url=base, cache=tmp_path,
                           progress=False, options=FAST)
    assert [f.sample for f in report.fetched] == ["data_A"]
    (failure,) = report.failed
    assert failure.sample == "data_B" and "checksum mismatch" in failure.reason
    # --verify re-hashes cached files; a corrupted byte of the right size is caught.
    cached = cached_path(RELEASE, RELEASE.sample("data_A"), tmp_path)
    corrupt = bytearray(data)
    corrupt[len(data) // 2] ^= 0xFF
    cached.write_bytes(bytes(corrupt))
    kept = fetch_samples("2020", ["data_A"], base_url=base, cache=tmp_path, progress=False,
                         options=FAST)
    assert kept.skipped, "size-only checks cannot see a flipped byte"
    verified = fetch_samples("2020", ["data_A"], base_url=base, cache=tmp_path, progress=False,
                             options=FAST, verify=True)
    assert verified.fetched and cached.read_bytes() == data


def test_concurrent_fetches_of_one_file_download_it_once(tree: MirrorTree, mirror: MirrorServer,
                                                         base: str, tmp_path: Path) -> None:
    sample = RELEASE.sample("llll")
    results: list[str] = []

    def worker() -> None:
        fetch_samples(RELEASE, [sample], base_url=base, cache=tmp_path, progress=False, options=FAST)
        results.append(resolve(RELEASE, sample, base_url=base, cache=tmp_path))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cached = cached_path(RELEASE, sample, tmp_path)
    assert results == [str(cached)] * 4
    assert mirror.count(_url_path("llll")) == 1
    assert cached.read_bytes() == tree.sources_2020["llll"].read_bytes()


def test_fetch_from_a_mirror_folder_copies_files(tree: MirrorTree, tmp_path: Path) -> None:
    report = fetch_samples("2020", ["data_A"], base_url=str(tree.root / MIRROR_2020),
                           cache=tmp_path, progress=False)
    assert report.ok
    cached = cached_path(RELEASE, RELEASE.sample("data_A"), tmp_path)
    assert cached.read_bytes() == tree.sources_2020["data_A"].read_bytes()


def _cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="atlaspipe fetch")
    fetch_command.configure_parser(parser)
    return parser.parse_args(list(argv))


@pytest.mark.usefixtures("tree")
def test_command_reports_failures_and_exit_code(base: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok = fetch_command.main(_cli("--samples", "data_A", "ggH125_ZZ4lep", "--base-url", base,
                         "--cache", str(tmp_path), "--jobs", "2", "--quiet"))
    out = capsys.readouterr().out
    assert ok == 0 and "fetched 2, skipped 0" in out
    failed = fetch_command.main(_cli("--samples", "signal", "--base-url", base, "--cache", str(tmp_path),
                             "--retries", "0", "--quiet"))
    captured = capsys.readouterr()
    assert failed == 1
    assert "skipped 1" in captured.out and "failed 3" in captured.out
    assert f"failed: VBFH125_ZZ4lep {base}/MC/mc_344235.VBFH125_ZZ4lep.4lep.root: HTTP 404" \
        in captured.err


def test_bad_base_url_scheme_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=re.escape("ftp://mirror.example/4lep")):
        fetch_samples("2020", ["data_A"], base_url="ftp://mirror.example/4lep", cache=tmp_path,
                      progress=False)
    with pytest.raises(ConfigError, match="--jobs"):
        fetch_samples("2020", ["data_A"], cache=tmp_path, jobs=0, progress=False)


def test_refresh_catalog_without_atlasopenmagic_says_how_to_install(tmp_path: Path) -> None:
    try:
        import atlasopenmagic  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("atlasopenmagic is installed here")
    with pytest.raises(ConfigError, match="pip install atlasopenmagic"):
        fetch_command.main(_cli("--release", "2025e", "--refresh-catalog", "--cache", str(tmp_path)))
    with pytest.raises(ConfigError, match="2025e only"):
        fetch.refresh_catalog("2020", tmp_path)


def test_root_protocol_without_its_extra_fails_before_any_download(tmp_path: Path) -> None:
    if importlib.util.find_spec("fsspec_xrootd") is not None:
        pytest.skip("fsspec-xrootd is installed here")
    with pytest.raises(InputError, match=re.escape("pip install 'atlaspipe[xrootd]'")):
        fetch_command.main(_cli("--protocol", "root", "--samples", "data", "--cache", str(tmp_path)))
    assert not tmp_path.joinpath("2020").exists()


def _run(*argv: str) -> tuple[list[str], dict[str, Any]]:
    """The inputs and per-sample histograms of ``atlaspipe run`` (its load, process and aggregate
    stages; the fit and plots downstream do not depend on where the files came from)."""
    from atlaspipe.cli import run as runner
    from atlaspipe.pipeline.inprocess import execute_plan
    from atlaspipe.pipeline.processing import aggregate
    from atlaspipe.pipeline.stages import AnalysisStages

    parser = argparse.ArgumentParser()
    runner.configure_parser(parser)
    plan = AnalysisStages().plan(runner.build_request(parser.parse_args(list(argv))))
    merged = aggregate(plan, execute_plan(plan))
    physics = {name: {"histograms": v.histograms, "events_read": v.events_read, "events_selected": v.events_selected}
               for name, v in merged.samples.items()}
    return [f.source for f in plan.files], physics


def test_run_through_the_mirror_matches_a_run_from_local_paths(
        tree: MirrorTree, base: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATLASPIPE_CACHE_DIR", str(tmp_path / "cache"))
    samples = ["--release", "2020", "--samples", "data", "ggH125_ZZ4lep", "llll", "--base-url", base]
    streamed_from, streamed = _run(*samples)
    assert all(source.startswith(base) for source in streamed_from)
    assert not (tmp_path / "cache").exists(), "streaming must not fill the cache"
    fetched_from, fetched = _run(*samples, "--fetch")
    assert all(source.startswith(str(tmp_path / "cache")) for source in fetched_from)
    _, local = _run("--release", "2020", "--input",
                    *(str(p) for p in tree.sources_2020.values()))
    assert sorted(local) == sorted(tree.sources_2020)
    assert sum(local[name]["events_selected"] for name in REAL_2020_DATA) == 27 + 86 + 146 + 248
    assert fetched == local
    assert streamed == local

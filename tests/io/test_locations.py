"""Where a sample is read from: cache folder and layout, completeness of cached copies, URL schemes,
and ``resolve`` choosing between the cache, a stream and a fetch."""

from __future__ import annotations

import importlib.util
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from atlaspipe.errors import ConfigError, InputError
from atlaspipe.io import sources
from atlaspipe.io.sources import (
    Integrity,
    cache_dir,
    cached_path,
    catalog_integrity,
    check_location,
    check_remote_readable,
    complete_cached_copy,
    is_complete,
    resolve,
    root_file_end,
)
from atlaspipe.physics.catalog import load_release
from tests.mirror import MIRROR_2020, MirrorServer, MirrorTree, build_mirror_tree

RELEASE = load_release("2020")
RELEASE_2025E = load_release("2025e")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> MirrorTree:
    return build_mirror_tree(tmp_path_factory.mktemp("mirror"), mc_samples=())


@pytest.fixture
def server(tree: MirrorTree) -> Iterator[MirrorServer]:
    mirror = MirrorServer(tree.root).start()
    yield mirror
    mirror.stop()


def test_cache_dir_prefers_explicit_then_environment_then_home(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ATLASPIPE_CACHE_DIR", raising=False)
    assert cache_dir(None) == tmp_path / "home" / ".cache" / "atlaspipe"
    monkeypatch.setenv("ATLASPIPE_CACHE_DIR", str(tmp_path / "env"))
    assert cache_dir(None) == tmp_path / "env"
    assert cache_dir(tmp_path / "explicit") == tmp_path / "explicit"


def test_cache_layout_mirrors_the_server_layout(tmp_path: Path) -> None:
    assert cached_path(RELEASE, RELEASE.sample("data_A"), tmp_path) == \
        tmp_path / "2020" / "Data" / "data_A.4lep.root"
    assert cached_path("2020", RELEASE.sample("ggH125_ZZ4lep"), tmp_path) == \
        tmp_path / "2020" / "MC" / "mc_345060.ggH125_ZZ4lep.4lep.root"
    assert cached_path(RELEASE_2025E, RELEASE_2025E.sample("data15_periodD"), tmp_path) == \
        tmp_path / "2025e" / "ODEO_FEB2025_v0_exactly4lep_data15_periodD.exactly4lep.root"


def test_resolve_defaults_to_the_public_servers(tmp_path: Path) -> None:
    assert resolve(RELEASE, RELEASE.sample("data_A"), cache=tmp_path) == \
        "https://atlas-opendata.web.cern.ch/atlas-opendata/samples/2020/4lep/Data/data_A.4lep.root"
    assert resolve(RELEASE_2025E, RELEASE_2025E.sample("data15_periodD"), cache=tmp_path) == (
        "https://opendata.cern.ch/eos/opendata/atlas/rucio/opendata/"
        "ODEO_FEB2025_v0_exactly4lep_data15_periodD.exactly4lep.root"
    )


@pytest.mark.shared
def test_root_file_end_is_the_size_of_real_files(tree: MirrorTree) -> None:
    for source in [*tree.sources_2020.values(), *tree.sources_2025e.values()]:
        assert root_file_end(source) == source.stat().st_size


@pytest.mark.shared
def test_completeness_by_catalog_size_sidecar_or_root_header(tree: MirrorTree,
                                                             tmp_path: Path) -> None:
    source = tree.sources_2020["data_B"]
    size = source.stat().st_size
    copy = tmp_path / "data_B.4lep.root"
    shutil.copyfile(source, copy)
    assert is_complete(copy)  # from the ROOT header alone
    assert is_complete(copy, Integrity(size=size))
    assert not is_complete(copy, Integrity(size=size + 1))
    with copy.open("r+b") as handle:
        handle.truncate(size - 1)
    assert not is_complete(copy)
    junk = tmp_path / "junk.root"
    junk.write_bytes(b"not a root file")
    assert not is_complete(junk), "a file of unknown expected size is never trusted"
    sources.sidecar_path(junk).write_text('{"size": 15}')
    assert is_complete(junk)
    assert not is_complete(tmp_path / "missing.root")


@pytest.mark.shared
def test_resolve_uses_a_whole_cached_copy_and_not_a_truncated_one(tree: MirrorTree,
                                                                  tmp_path: Path) -> None:
    sample = RELEASE.sample("data_C")
    cached = cached_path(RELEASE, sample, tmp_path)
    cached.parent.mkdir(parents=True)
    shutil.copyfile(tree.sources_2020["data_C"], cached)
    assert complete_cached_copy(RELEASE, sample, tmp_path) == cached
    assert resolve(RELEASE, sample, base_url="http://127.0.0.1:9/x", cache=tmp_path) == str(cached)
    with cached.open("r+b") as handle:
        handle.truncate(1000)
    assert complete_cached_copy(RELEASE, sample, tmp_path) is None
    assert resolve(RELEASE, sample, base_url="http://127.0.0.1:9/x", cache=tmp_path) == \
        "http://127.0.0.1:9/x/Data/data_C.4lep.root"


@pytest.mark.shared
def test_a_mirror_folder_resolves_to_local_paths(tree: MirrorTree, tmp_path: Path) -> None:
    folder = tree.root / MIRROR_2020
    sample = RELEASE.sample("data_A")
    assert resolve(RELEASE, sample, base_url=str(folder), cache=tmp_path) == \
        str(folder / "Data" / "data_A.4lep.root")
    assert resolve(RELEASE, sample, base_url=f"file://{folder}", cache=tmp_path) == \
        str(folder / "Data" / "data_A.4lep.root")


@pytest.mark.parametrize("url", ["ftp://mirror.example/4lep", "s3://bucket/4lep",
                                 "gopher://x/y", "https:///no-host"])
def test_unsupported_url_schemes_are_input_errors_naming_the_url(url: str,
                                                                 tmp_path: Path) -> None:
    with pytest.raises(InputError, match=re.escape(url)):
        resolve(RELEASE, RELEASE.sample("data_A"), base_url=url, cache=tmp_path)


def test_root_protocol_needs_fsspec_xrootd(tmp_path: Path) -> None:
    sample = RELEASE.sample("data_A")
    if importlib.util.find_spec("fsspec_xrootd") is not None:
        assert resolve(RELEASE, sample, protocol="root", cache=tmp_path).startswith("root://")
        pytest.skip("fsspec-xrootd is installed, so the missing-extra error cannot be shown")
    with pytest.raises(InputError) as caught:
        resolve(RELEASE, sample, protocol="root", cache=tmp_path)
    message = str(caught.value)
    assert "root://eospublic.cern.ch//eos/opendata/atlas/OutreachDatasets/2020-01-22/4lep/" \
        "Data/data_A.4lep.root" in message
    assert "root:// URLs need the optional dependency fsspec-xrootd: " \
        "pip install 'atlaspipe[xrootd]'" in message
    for url in ("http://host/f.root", "https://host/f.root", "/data/f.root", "file:///f.root"):
        assert check_location(url) == url


def test_catalog_checksum_fields_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    sample = RELEASE.sample("data_A")
    assert catalog_integrity(RELEASE, sample) == Integrity()
    monkeypatch.setattr(sources, "_raw_entries", lambda _release: {
        "data_A": {"size": 25826, "checksum": "ADLER32:0A0B0C0D"}})
    assert catalog_integrity(RELEASE, sample) == Integrity(25826, "adler32:0a0b0c0d")
    monkeypatch.setattr(sources, "_raw_entries", lambda _release: {
        "data_A": {"checksum": "crc32:1234"}})
    with pytest.raises(ConfigError, match="crc32:1234"):
        catalog_integrity(RELEASE, sample)


@pytest.mark.shared
def test_fetch_first_downloads_or_names_the_failing_url(tree: MirrorTree, server: MirrorServer,
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from atlaspipe.pipeline.planning import resolve_inputs

    monkeypatch.setenv("ATLASPIPE_CACHE_DIR", str(tmp_path))
    base = server.base_url(MIRROR_2020)
    _, (planned,) = resolve_inputs("2020", samples=["data_A"], base_url=base, fetch_first=True)
    assert Path(planned.source).read_bytes() == tree.sources_2020["data_A"].read_bytes()
    missing = RELEASE.sample("Zee")
    with pytest.raises(InputError, match=re.escape(f"{base}/{missing.path}: fetch failed: HTTP 404")):
        resolve_inputs("2020", samples=["Zee"], base_url=base, fetch_first=True)


@pytest.mark.shared
def test_check_remote_readable(tree: MirrorTree, server: MirrorServer) -> None:
    base = server.base_url(MIRROR_2020)
    check_remote_readable(f"{base}/Data/data_A.4lep.root")
    assert server.count("/2020/4lep/Data/data_A.4lep.root", method="HEAD") == 1
    with pytest.raises(InputError, match="HTTP 404"):
        check_remote_readable(f"{base}/Data/data_Z.4lep.root")
    with pytest.raises(InputError, match="not reachable"):
        check_remote_readable("http://127.0.0.1:9/nothing.root", timeout=1.0)
    check_remote_readable(str(tree.sources_2020["data_A"]))
    with pytest.raises(InputError, match="no such file"):
        check_remote_readable(str(tree.root / "nope.root"))

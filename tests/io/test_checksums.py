"""The manifest's input checksums: sha256 of the bytes, kept per version of a file, hashed beside the chunks."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import pytest

from atlaspipe.io import checksums


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("ATLASPIPE_CACHE_DIR", str(folder))
    return folder


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def kept_records(cache: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text("utf-8")) for p in sorted((cache / "checksums").glob("*.json"))]


def test_the_digest_is_the_files_sha256_and_is_kept(tmp_path: Path, cache: Path) -> None:
    data = tmp_path / "data_A.4lep.root"
    data.write_bytes(os.urandom(3 << 20))
    assert checksums.file_checksum(str(data)) == sha256(data)
    (record,) = kept_records(cache)
    assert record["sha256"] == sha256(data)
    # The next run finds it kept: nothing of the file is read again (a planted digest proves it).
    kept = next((cache / "checksums").glob("*.json"))
    kept.write_text(json.dumps({**record, "sha256": "sha256:planted"}), "utf-8")
    assert checksums.file_checksum(str(data)) == "sha256:planted"


def test_a_changed_file_is_hashed_again_even_with_its_old_size_and_mtime(tmp_path: Path) -> None:
    data = tmp_path / "data_A.4lep.root"
    data.write_bytes(b"a" * 4096)
    before = data.stat()
    first = checksums.file_checksum(str(data))
    data.write_bytes(b"b" * 4096)
    os.utime(data, ns=(before.st_atime_ns, before.st_mtime_ns))  # as `touch -r` would hide the write
    assert data.stat().st_size == before.st_size and data.stat().st_mtime_ns == before.st_mtime_ns
    second = checksums.file_checksum(str(data))
    assert second == sha256(data) != first


def kept_within(cache: Path, count: int, seconds: float = 20.0) -> list[dict[str, object]]:
    deadline = time.monotonic() + seconds
    while len(records := kept_records(cache)) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return records


def test_hashing_in_background_keeps_the_digests_for_the_manifest(tmp_path: Path, cache: Path) -> None:
    paths = []
    for name in ("a.root", "b.root"):
        path = tmp_path / name
        path.write_bytes(os.urandom(1 << 20))
        paths.append(path)
    sources = [str(p) for p in paths] + ["https://example.org/remote.root"]
    checksums.hash_in_background(sources)
    # Kept by the background thread alone, for the finalize step (in another worker) to find.
    assert sorted(str(r["sha256"]) for r in kept_within(cache, 2)) == sorted(sha256(p) for p in paths)
    assert [checksums.file_checksum(str(p)) for p in paths] == [sha256(p) for p in paths]
    # A process that hashed the files once hashes them again for a cache that lost them.
    shutil.rmtree(cache / "checksums")
    checksums.hash_in_background(sources)
    assert len(kept_within(cache, 2)) == 2


def test_remote_missing_and_unkeepable(tmp_path: Path, cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert checksums.file_checksum("https://opendata.cern.ch/some/file.root") is None
    with caplog.at_level(logging.WARNING):
        assert checksums.file_checksum(str(tmp_path / "gone.root")) is None
    assert "no checksum for" in caplog.text and "gone.root" in caplog.text
    # A cache folder that cannot be written does not cost the digest.
    cache.write_text("not a folder", "utf-8")
    data = tmp_path / "data_B.4lep.root"
    data.write_bytes(b"x" * 100)
    assert checksums.file_checksum(str(data)) == sha256(data)


def test_digests_of_files_gone_are_pruned_past_the_limit(tmp_path: Path, cache: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checksums, "KEPT_RECORDS", 3)
    paths = [tmp_path / f"{n}.root" for n in range(4)]
    for path in paths:
        path.write_bytes(path.name.encode())
    for path in paths[:3]:
        checksums.file_checksum(str(path))
    paths[0].unlink()
    checksums.file_checksum(str(paths[3]))  # the fourth record: over the limit, the gone file's goes
    assert sorted(str(r["sha256"]) for r in kept_records(cache)) == sorted(sha256(p) for p in paths[1:])

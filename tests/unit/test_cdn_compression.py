"""Precompression: formats, the 95% rule, mtimes, incremental runs, parallel runs."""

from __future__ import annotations

import gzip
import os
import random
from pathlib import Path

import brotli
import pytest

from sluice.cdn.compression import STATE_NAME, ResourceCompressor, compress_bytes

TEXT = b"function add(a, b) { return a + b; }\n" * 400


def make_tree(root: Path) -> None:
    (root / "js").mkdir(parents=True)
    (root / "js/app.js").write_bytes(TEXT)
    (root / "js/random.js").write_bytes(
        random.Random(1).randbytes(4000)
    )  # incompressible text type
    (root / "img.png").write_bytes(TEXT)  # compressible bytes, but an image type: left alone
    (root / "tiny.css").write_bytes(b"a{}")
    os.utime(root / "js/app.js", ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))


def test_gzip_is_reproducible_and_decodes() -> None:
    first = compress_bytes(TEXT, "gzip", 9)
    assert first == compress_bytes(TEXT, "gzip", 9)
    assert first[4:8] == b"\x00\x00\x00\x00"  # mtime field fixed at 0
    assert gzip.decompress(first) == TEXT
    assert brotli.decompress(compress_bytes(TEXT, "br", 11)) == TEXT
    with pytest.raises(ValueError):
        compress_bytes(TEXT, "zstd", 1)


@pytest.mark.parametrize("workers", [1, 2])
def test_tree_keeps_only_worthwhile_copies(tmp_path: Path, workers: int) -> None:
    make_tree(tmp_path)
    report = ResourceCompressor(workers=workers).compress_tree(tmp_path)
    assert {f.path for f in report.files} == {"js/app.js", "js/random.js", "tiny.css"}
    assert gzip.decompress((tmp_path / "js/app.js.gz").read_bytes()) == TEXT
    assert brotli.decompress((tmp_path / "js/app.js.br").read_bytes()) == TEXT
    for name in ("js/random.js", "tiny.css", "img.png"):
        assert not (tmp_path / f"{name}.gz").exists() and not (tmp_path / f"{name}.br").exists()
    source = (tmp_path / "js/app.js").stat().st_mtime_ns
    assert (tmp_path / "js/app.js.gz").stat().st_mtime_ns == source
    assert (tmp_path / "js/app.js.br").stat().st_mtime_ns == source


def test_ratio_threshold_is_configurable(tmp_path: Path) -> None:
    make_tree(tmp_path)
    ResourceCompressor(min_ratio=0.0001).compress_tree(tmp_path)
    assert not (tmp_path / "js/app.js.br").exists()


def test_incremental_run_skips_unchanged(tmp_path: Path) -> None:
    make_tree(tmp_path)
    compressor = ResourceCompressor(workers=1)
    assert compressor.compress_tree(tmp_path).compressed == 3
    again = compressor.compress_tree(tmp_path)
    assert (again.compressed, again.unchanged) == (0, 3)
    (tmp_path / "js/app.js").write_bytes(TEXT + b"// more\n")
    changed = compressor.compress_tree(tmp_path)
    assert [f.path for f in changed.files if f.compressed] == ["js/app.js"]
    assert gzip.decompress((tmp_path / "js/app.js.gz").read_bytes()).endswith(b"// more\n")


def test_deleted_copy_or_new_quality_recompresses(tmp_path: Path) -> None:
    make_tree(tmp_path)
    ResourceCompressor(workers=1).compress_tree(tmp_path)
    (tmp_path / "js/app.js.br").unlink()
    assert ResourceCompressor(workers=1).compress_tree(tmp_path).compressed == 1
    assert ResourceCompressor(workers=1, brotli_quality=5).compress_tree(tmp_path).compressed == 3


def test_removed_source_removes_copies(tmp_path: Path) -> None:
    make_tree(tmp_path)
    ResourceCompressor(workers=1).compress_tree(tmp_path)
    (tmp_path / "js/app.js").unlink()
    report = ResourceCompressor(workers=1).compress_tree(tmp_path)
    assert report.removed == 1 and not (tmp_path / "js/app.js.gz").exists()


def test_corrupt_state_recompresses(tmp_path: Path) -> None:
    make_tree(tmp_path)
    (tmp_path / STATE_NAME).write_text("{not json")
    assert ResourceCompressor(workers=1).compress_tree(tmp_path).compressed == 3


def test_disabled_does_nothing(tmp_path: Path) -> None:
    make_tree(tmp_path)
    report = ResourceCompressor(enabled=False).compress_tree(tmp_path)
    assert report.files == [] and not (tmp_path / "js/app.js.gz").exists()


def test_progress_reaches_total(tmp_path: Path) -> None:
    make_tree(tmp_path)
    seen: list[tuple[int, int]] = []
    ResourceCompressor(workers=2).compress_tree(tmp_path, lambda d, t: seen.append((d, t)))
    assert seen[-1] == (3, 3)

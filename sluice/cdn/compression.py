"""Precompression of static assets (gzip and brotli) and on-the-fly compression of responses.

A build writes ``file.gz`` and ``file.br`` next to each compressible file, in parallel on every
core, and keeps a copy only when it is at most ``min_ratio`` (95%) of the original: a barely
smaller copy costs a decompression for nothing. Compressed copies get the original's mtime so
nginx's ``gzip_static``/``brotli_static`` and ``Last-Modified`` agree. A small state file records
what each file looked like when compressed, so a rebuild touches only new or changed files.

Workers are processes: neither ``zlib.compress`` nor ``brotli.compress`` releases the GIL, so
threads gain nothing. Only path strings and sizes cross between processes; file contents are read
and written by the worker itself.
"""

from __future__ import annotations

import gzip
import json
import logging
import multiprocessing
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import brotli

from sluice.cdn.policies import is_compressible
from sluice.cdn.versioning import MANIFEST_NAME, SKIPPED_SUFFIXES

log = logging.getLogger(__name__)

STATE_NAME = ".sluice-compress.json"
ENCODINGS = {"br": ".br", "gzip": ".gz"}


def compress_bytes(data: bytes, encoding: str, level: int) -> bytes:
    """``data`` compressed with ``encoding`` (``br`` or ``gzip``) at ``level``.

    gzip gets a fixed mtime of 0 and no file name, so identical input gives identical output
    (reproducible builds, stable ETags). Brotli runs in its generic mode: on minified code the
    text mode hint measured about 1% larger.
    """
    if encoding == "gzip":
        return gzip.compress(data, compresslevel=level, mtime=0)
    if encoding == "br":
        return bytes(brotli.compress(data, quality=level))
    raise ValueError(f"unsupported content coding {encoding!r}")


@dataclass(frozen=True)
class FileResult:
    """One file's compression outcome; a size is 0 when that copy was not kept."""

    path: str
    size: int
    gzip_size: int
    brotli_size: int
    compressed: bool  # False when it was already up to date


@dataclass
class CompressionReport:
    """What :meth:`ResourceCompressor.compress_tree` did."""

    files: list[FileResult] = field(default_factory=list)
    removed: int = 0
    seconds: float = 0.0

    @property
    def compressed(self) -> int:
        """How many files were (re)compressed this run."""
        return sum(1 for f in self.files if f.compressed)

    @property
    def unchanged(self) -> int:
        """How many files were already up to date."""
        return len(self.files) - self.compressed


class ResourceCompressor:
    """gzip/brotli compression with the keep-only-if-smaller rule.

    :param enabled: False turns everything off (``CDN_COMPRESSION_ENABLED=false``).
    :param workers: processes for :meth:`compress_tree` (default: every core).
    """

    def __init__(
        self,
        gzip_level: int = 9,
        brotli_quality: int = 11,
        min_ratio: float = 0.95,
        workers: int | None = None,
        enabled: bool = True,
        runtime_brotli_quality: int = 5,
        cache_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        self.gzip_level = gzip_level
        self.brotli_quality = brotli_quality
        self.runtime_brotli_quality = runtime_brotli_quality
        self.min_ratio = min_ratio
        self.workers = workers or os.cpu_count() or 1
        self.enabled = enabled
        self._cache = _ByteLRU(cache_bytes)

    def keep(self, original_size: int, compressed_size: int) -> bool:
        """Whether a compressed copy is small enough to be worth serving."""
        return compressed_size <= original_size * self.min_ratio

    def compress_response(self, data: bytes, encoding: str, digest: str) -> bytes | None:
        """``data`` in ``encoding`` for a live response, or None when not worth it.

        Live responses use the faster ``runtime_brotli_quality``; results are memoised by content
        hash so a hot asset is compressed once per process.
        """
        key = (digest, encoding)
        cached = self._cache.get(key)
        if cached is None:
            level = self.gzip_level if encoding == "gzip" else self.runtime_brotli_quality
            cached = compress_bytes(data, encoding, level)
            self._cache.put(key, cached)
        return cached if self.keep(len(data), len(cached)) else None

    def compress_tree(
        self, root: Path, progress: Callable[[int, int], None] | None = None
    ) -> CompressionReport:
        """Precompress every compressible file under ``root`` that changed since the last run."""
        started = time.perf_counter()
        report = CompressionReport()
        if not self.enabled:
            return report
        root = root.resolve()
        state_path = root / STATE_NAME
        state = _load_state(state_path)
        levels = [self.gzip_level, self.brotli_quality]
        present = dict(_compressible_files(root))
        todo: list[str] = []
        for rel, stat in present.items():
            entry = state.get(rel)
            if entry and _up_to_date(root / rel, entry, stat, levels):
                report.files.append(FileResult(rel, stat.st_size, entry[2], entry[3], False))
            else:
                todo.append(rel)
        for rel in set(state) - set(present):
            _remove_copies(root / rel)
            del state[rel]
            report.removed += 1
        # Largest first, so one big file does not start last and hold up the end of the run.
        todo.sort(key=lambda r: present[r].st_size, reverse=True)
        for result in self._run(root, todo, progress, len(present) - len(todo), len(present)):
            stat = present[result.path]
            state[result.path] = [
                stat.st_size,
                stat.st_mtime_ns,
                result.gzip_size,
                result.brotli_size,
                *levels,
            ]
            report.files.append(result)
        _save_state(state_path, state)
        report.files.sort(key=lambda f: f.path)
        report.seconds = time.perf_counter() - started
        return report

    def _run(
        self,
        root: Path,
        todo: list[str],
        progress: Callable[[int, int], None] | None,
        done: int,
        total: int,
    ) -> Iterable[FileResult]:
        args = (str(root), self.gzip_level, self.brotli_quality, self.min_ratio)
        workers = min(self.workers, len(todo))
        # A Celery prefork child is a daemon process, which may not start children of its own.
        if workers <= 1 or multiprocessing.current_process().daemon:
            for rel in todo:
                yield _compress_file(rel, *args)
                done += 1
                if progress:
                    progress(done, total)
            return
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_compress_file, rel, *args) for rel in todo]
            for future in as_completed(futures):
                yield future.result()
                done += 1
                if progress:
                    progress(done, total)


def _compress_file(
    rel: str, root: str, gzip_level: int, brotli_quality: int, min_ratio: float
) -> FileResult:
    """Write the kept compressed copies of one file (runs in a worker process)."""
    path = Path(root, rel)
    data = path.read_bytes()
    stat = path.stat()
    sizes = {}
    for encoding, level in (("gzip", gzip_level), ("br", brotli_quality)):
        target = path.with_name(path.name + ENCODINGS[encoding])
        compressed = compress_bytes(data, encoding, level)
        if len(compressed) <= len(data) * min_ratio:
            temporary = target.with_name(f".{target.name}.tmp{os.getpid()}")
            temporary.write_bytes(compressed)
            os.utime(temporary, ns=(stat.st_atime_ns, stat.st_mtime_ns))
            os.replace(temporary, target)
            sizes[encoding] = len(compressed)
        else:
            target.unlink(missing_ok=True)  # a stale copy of an older version must not be served
            sizes[encoding] = 0
    return FileResult(rel, len(data), sizes["gzip"], sizes["br"], True)


def _compressible_files(root: Path) -> Iterable[tuple[str, os.stat_result]]:
    for directory, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if name.startswith(".") or name.endswith(SKIPPED_SUFFIXES) or name == MANIFEST_NAME:
                continue
            if is_compressible(name):
                path = Path(directory, name)
                if path.is_file() and not path.is_symlink():
                    yield path.relative_to(root).as_posix(), path.stat()


def _up_to_date(path: Path, entry: list[int], stat: os.stat_result, levels: list[int]) -> bool:
    size, mtime_ns, gzip_size, brotli_size, *entry_levels = entry
    if (size, mtime_ns, entry_levels) != (stat.st_size, stat.st_mtime_ns, levels):
        return False
    for suffix, kept in ((".gz", gzip_size), (".br", brotli_size)):
        copy = path.with_name(path.name + suffix)
        if kept and not (copy.exists() and copy.stat().st_size == kept):
            return False
    return True


def _remove_copies(path: Path) -> None:
    for suffix in ENCODINGS.values():
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def _load_state(path: Path) -> dict[str, list[int]]:
    try:
        state = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except ValueError:
        log.warning("ignoring unreadable compression state %s; recompressing everything", path)
        return {}
    return state if isinstance(state, dict) else {}


def _save_state(path: Path, state: dict[str, list[int]]) -> None:
    temporary = path.with_name(f"{path.name}.tmp{os.getpid()}")
    temporary.write_text(json.dumps(state, sort_keys=True))
    os.replace(temporary, path)


class _ByteLRU:
    """A thread-safe LRU map bounded by the total size of its byte values."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: tuple[str, str], value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            self._size += len(value) - (len(old) if old is not None else 0)
            self._items[key] = value
            while self._size > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._size -= len(evicted)

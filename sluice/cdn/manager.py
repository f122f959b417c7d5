"""CDNManager: the guide's facade over policies, versioning, compression and invalidation."""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from sluice.cdn.compression import CompressionReport, ResourceCompressor
from sluice.cdn.config import CDNSettings, get_cdn_settings
from sluice.cdn.hitratio import EdgeLogScanner, EdgeStats
from sluice.cdn.invalidation import FlushResult, InvalidationQueue
from sluice.cdn.negotiation import IDENTITY, choose_encoding
from sluice.cdn.nginx import NginxOptions, render_server_config
from sluice.cdn.paths import relative_url_path, resolve_inside
from sluice.cdn.policies import PolicyTable, content_type, is_compressible
from sluice.cdn.providers import PurgeProvider, build_provider
from sluice.cdn.purgepaths import surrogate_keys
from sluice.cdn.versioning import MANIFEST_NAME, Manifest, ResourceVersioner
from sluice.errors import InvalidInput
from sluice.store import Store, get_store

log = logging.getLogger(__name__)

_FINGERPRINT = re.compile(r"\.[0-9a-f]{8,}\.[A-Za-z0-9]+$")


@dataclass(frozen=True)
class BuildResult:
    """What :meth:`CDNManager.build` produced."""

    manifest: Manifest
    compression: CompressionReport


class CDNManager:
    """Everything the guide's ``cdn`` object does.

    :param settings: CDN settings (default: from the environment).
    :param store: the shared store holding the invalidation queue (default: :func:`get_store`).
    :param strict: raise instead of warning when an asset or a reference is missing.
    """

    def __init__(
        self, settings: CDNSettings | None = None, store: Store | None = None, strict: bool = False
    ) -> None:
        self.settings = settings or get_cdn_settings()
        self._store = store
        self.strict = strict
        self.policies = PolicyTable(self.settings)
        self.versioner = ResourceVersioner(
            self.settings.static_url, self.settings.url_style, self.settings.hash_length, strict
        )
        self.compressor = ResourceCompressor(
            gzip_level=self.settings.gzip_level,
            brotli_quality=self.settings.brotli_quality,
            min_ratio=self.settings.min_ratio,
            workers=self.settings.workers,
            enabled=self.settings.compression_enabled,
            runtime_brotli_quality=self.settings.runtime_brotli_quality,
        )
        self._manifest: tuple[int, Manifest] | None = None

    @property
    def store(self) -> Store:
        """The shared store (resolved on first use, so URL helpers never need one)."""
        if self._store is None:
            self._store = get_store()
        return self._store

    @property
    def invalidations(self) -> InvalidationQueue:
        """The invalidation queue in the shared store."""
        return InvalidationQueue(
            self.store, self.settings.wildcard_threshold, self.settings.flush_batch
        )

    # -- URLs ----------------------------------------------------------------------------------

    def get_cdn_url(self, path: str, file_path: str | Path | None = None) -> str:
        """The public, versioned URL of the asset at URL path ``path``.

        The hash comes from ``file_path`` when given (a trusted build-time path), else from the
        build manifest, else from the file under the static root (which ``path`` cannot escape).
        An asset that cannot be found gets an unversioned URL and a warning (strict: an error).
        """
        rel = relative_url_path(path, self.settings.static_url)
        versioned = self._versioned(rel, Path(file_path) if file_path is not None else None)
        if versioned is None:
            message = f"cannot version {path!r}: no such file"
            if self.strict:
                raise InvalidInput(message)
            log.warning("%s; serving it unversioned", message)
            versioned = rel
        return f"{self.settings.base_url}{self.settings.static_url}{versioned}"

    def _versioned(self, rel: str, file_path: Path | None) -> str | None:
        if file_path is not None:
            if not file_path.is_file():
                return None
            return self.versioner.versioned_path(rel, self.versioner.hash_file(file_path))
        manifest = self.manifest()
        if manifest is not None and rel in manifest.paths:
            return manifest.paths[rel]
        root = self.settings.static_root
        if root is None:
            return None
        target = resolve_inside(root, rel)
        if not target.is_file():
            return None
        return self.versioner.versioned_path(rel, self.versioner.hash_file(target))

    def manifest(self) -> Manifest | None:
        """The manifest of the static root, re-read when the file changes; None without one."""
        root = self.settings.static_root
        if root is None:
            return None
        path = root / MANIFEST_NAME
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        if self._manifest is None or self._manifest[0] != mtime:
            self._manifest = (mtime, Manifest.load(path))
        return self._manifest[1]

    # -- responses -----------------------------------------------------------------------------

    def process_resource(
        self,
        content: bytes | str,
        file_path: str,
        accept_encoding: str | None = None,
        versioned: bool | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """The body and headers to send for ``content`` served at ``file_path``.

        The encoding is negotiated from ``accept_encoding`` (RFC 9110); each encoding gets its own
        strong ETag, since the bytes differ. ``immutable`` is sent only for a content-addressed
        URL: ``versioned`` says so, or (when None) it is detected from ``?v=`` or a hashed name.
        """
        data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
        url_path = file_path.split("#", 1)[0]
        name = url_path.split("?", 1)[0]
        if versioned is None:
            versioned = "v=" in url_path.partition("?")[2] or bool(_FINGERPRINT.search(name))
        digest = hashlib.sha256(data).hexdigest()[:20]
        headers = {"Content-Type": content_type(name)}
        headers.update(self.policies.policy_for(name).headers(versioned))
        body, encoding = data, IDENTITY
        if is_compressible(name):
            headers["Vary"] = "Accept-Encoding"
            if self.compressor.enabled:
                encoding = choose_encoding(accept_encoding)
                if encoding != IDENTITY:
                    compressed = self.compressor.compress_response(data, encoding, digest)
                    body, encoding = (compressed, encoding) if compressed else (data, IDENTITY)
        if encoding != IDENTITY:
            headers["Content-Encoding"] = encoding
        headers["ETag"] = f'"{digest}"' if encoding == IDENTITY else f'"{digest}-{encoding}"'
        headers["Content-Length"] = str(len(body))
        headers["Surrogate-Key"] = " ".join(surrogate_keys(name))
        return body, headers

    # -- builds --------------------------------------------------------------------------------

    def build(
        self, source: Path, output: Path, progress: Callable[[int, int], None] | None = None
    ) -> BuildResult:
        """Hash, copy and rewrite ``source`` into ``output``, then precompress the output."""
        manifest = self.versioner.build(Path(source), Path(output))
        return BuildResult(manifest, self.compressor.compress_tree(Path(output), progress))

    def compress_static(
        self, progress: Callable[[int, int], None] | None = None
    ) -> CompressionReport:
        """Precompress new or changed files under the configured static root (the beat task)."""
        if self.settings.static_root is None:
            raise InvalidInput("SLUICE_CDN_STATIC_ROOT is not set; nothing to compress")
        return self.compressor.compress_tree(self.settings.static_root, progress)

    def nginx_config(
        self,
        root: Path | None = None,
        listen: str = "80",
        server_name: str = "_",
        access_log: str = "/var/log/nginx/sluice-cdn.access.log",
        brotli: bool = True,
    ) -> str:
        """The nginx configuration serving ``root`` (default: the static root)."""
        root = root or self.settings.static_root
        if root is None:
            raise InvalidInput("give the build directory or set SLUICE_CDN_STATIC_ROOT")
        options = NginxOptions(
            Path(root), self.settings.static_url, listen, server_name, access_log, brotli
        )
        return render_server_config(options, self.policies)

    # -- invalidation --------------------------------------------------------------------------

    def queue_invalidation(self, paths: Iterable[str]) -> int:
        """Queue CDN purges of ``paths`` (``*`` allowed anywhere); return how many were new."""
        return self.invalidations.queue(paths)

    def invalidate_all(self) -> None:
        """Queue a purge of everything."""
        self.invalidations.invalidate_all()

    def get_pending_invalidations(self) -> list[str]:
        """The paths waiting for the next flush (left in the queue)."""
        return self.invalidations.pending()

    def flush_invalidations(self, provider: PurgeProvider | None = None) -> FlushResult:
        """Send the queued purges through ``provider`` (default: the configured one)."""
        owned = provider is None
        provider = provider or build_provider(self.settings)
        try:
            return self.invalidations.flush(provider)
        finally:
            if owned:
                provider.close()

    def update_edge_hit_ratio(self) -> EdgeStats:
        """Count new edge log lines (``SLUICE_CDN_EDGE_LOGS``) and return the cluster totals."""
        return EdgeLogScanner(self.store).scan(self.settings.edge_logs)


_manager: CDNManager | None = None
_manager_lock = threading.Lock()


def get_cdn_manager() -> CDNManager:
    """The process-wide :class:`CDNManager` built from the environment."""
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = CDNManager()
        return _manager


def reset_cdn_manager() -> None:
    """Forget the process-wide manager (tests, settings reloads)."""
    global _manager
    with _manager_lock:
        _manager = None

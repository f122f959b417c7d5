"""The guide's section 4 examples, run with only the import path changed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import brotli
import pytest

from sluice.cdn import get_cdn_manager, reset_cdn_manager
from sluice.cdn.config import load_cdn_settings
from sluice.cdn.manager import CDNManager
from sluice.errors import InvalidInput
from sluice.settings import get_settings
from sluice.store import DiskStore, reset_store_cache

APP_JS = b"export function start() { console.log('started'); }\n" * 200


def _reset() -> None:
    get_settings.cache_clear()
    reset_store_cache()
    reset_cdn_manager()


@pytest.fixture
def cdn_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A process-wide CDN manager on a private data dir (its own store) and a built tree."""
    dist = tmp_path / "app/dist"
    (dist / "js").mkdir(parents=True)
    (dist / "js/app.js").write_bytes(APP_JS)
    monkeypatch.setenv("SLUICE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SLUICE_CDN_BASE_URL", "https://cdn.example.com")
    monkeypatch.setenv("SLUICE_CDN_STATIC_ROOT", str(dist))
    _reset()
    yield dist
    monkeypatch.undo()
    _reset()


def test_guide_versioning_example(cdn_env: Path) -> None:
    cdn = get_cdn_manager()

    # Generate versioned URL
    url = cdn.get_cdn_url("/static/js/app.js", file_path=str(cdn_env / "js/app.js"))

    digest = cdn.versioner.hash_bytes(APP_JS)
    assert url == f"https://cdn.example.com/static/js/app.js?v={digest}"
    # Without file_path the file is found under the static root.
    assert cdn.get_cdn_url("/static/js/app.js") == url


def test_guide_compression_example(cdn_env: Path) -> None:
    cdn = get_cdn_manager()
    file_content = APP_JS

    # Automatic compression based on Accept-Encoding
    content, headers = cdn.process_resource(
        content=file_content, file_path="/static/js/app.js", accept_encoding="br, gzip"
    )

    assert brotli.decompress(content) == APP_JS
    assert headers["Content-Encoding"] == "br"
    assert headers["Vary"] == "Accept-Encoding"
    # Not content-addressed, so not immutable (a change would never reach a browser).
    assert headers["Cache-Control"] == "public, max-age=31536000"
    _, versioned = cdn.process_resource(APP_JS, cdn.get_cdn_url("/static/js/app.js"), "br, gzip")
    assert versioned["Cache-Control"] == "public, max-age=31536000, immutable"


def test_guide_invalidation_example(cdn_env: Path) -> None:
    cdn = get_cdn_manager()

    # Invalidate specific paths
    cdn.queue_invalidation(
        [
            "/static/js/app.*.js",
            "/static/css/styles.*.css",
        ]
    )
    assert cdn.get_pending_invalidations() == ["/static/js/app.*.js", "/static/css/styles.*.css"]

    # Invalidate all
    cdn.invalidate_all()

    # Get pending invalidations for CDN API
    paths = cdn.get_pending_invalidations()
    assert paths == ["/static/js/app.*.js", "/static/css/styles.*.css", "/*"]


@pytest.fixture
def manager(tmp_path: Path) -> CDNManager:
    settings = load_cdn_settings({"SLUICE_CDN_STATIC_ROOT": str(tmp_path)})
    return CDNManager(settings, store=DiskStore(tmp_path / ".store"))


def test_etag_differs_per_encoding(manager: CDNManager) -> None:
    tags = {
        enc: manager.process_resource(APP_JS, "/static/a.js", enc)[1]["ETag"]
        for enc in ("br", "gzip", "identity")
    }
    assert len(set(tags.values())) == 3
    assert all(t.startswith('"') and not t.startswith("W/") for t in tags.values())
    assert tags["br"].endswith('-br"')


def test_refused_gzip_is_not_sent(manager: CDNManager) -> None:
    body, headers = manager.process_resource(APP_JS, "/static/a.js", "gzip;q=0")
    assert (
        body == APP_JS
        and "Content-Encoding" not in headers
        and headers["Vary"] == "Accept-Encoding"
    )


def test_incompressible_type_and_small_content(manager: CDNManager) -> None:
    _, png = manager.process_resource(b"\x89PNG" * 100, "/static/a.png", "br")
    assert "Content-Encoding" not in png and "Vary" not in png
    body, tiny = manager.process_resource("a", "/static/a.css", "br")
    assert body == b"a" and "Content-Encoding" not in tiny


def test_compression_disabled(tmp_path: Path) -> None:
    settings = load_cdn_settings({})
    object.__setattr__(settings, "compression_enabled", False)
    body, headers = CDNManager(settings).process_resource(APP_JS, "/static/a.js", "br")
    assert body == APP_JS and "Content-Encoding" not in headers


def test_headers_for_html(manager: CDNManager) -> None:
    _, headers = manager.process_resource(b"<html></html>", "/index.html", "identity")
    assert headers["Cache-Control"] == "public, max-age=0, s-maxage=3600, must-revalidate"
    assert headers["Surrogate-Control"] == "max-age=3600"
    assert headers["Content-Type"] == "text/html; charset=utf-8"


def test_manifest_url_in_filename_style(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "js").mkdir(parents=True)
    (src / "js/app.js").write_bytes(APP_JS)
    dist = tmp_path / "dist"
    settings = load_cdn_settings(
        {"SLUICE_CDN_STATIC_ROOT": str(dist), "SLUICE_CDN_URL_STYLE": "filename"}
    )
    manager = CDNManager(settings)
    result = manager.build(src, dist)
    hashed = result.manifest.paths["js/app.js"]
    assert manager.get_cdn_url("/static/js/app.js") == f"/static/{hashed}"
    _, headers = manager.process_resource(APP_JS, f"/static/{hashed}", "gzip")
    assert headers["Cache-Control"].endswith("immutable")


def test_missing_asset_unversioned_or_strict(manager: CDNManager, tmp_path: Path) -> None:
    assert manager.get_cdn_url("/static/none.js") == "/static/none.js"
    strict = CDNManager(manager.settings, strict=True)
    with pytest.raises(InvalidInput, match=r"none\.js"):
        strict.get_cdn_url("/static/none.js")


@pytest.mark.parametrize("path", ["/static/../../etc/passwd", "/static/a\\b.js", "//etc/passwd"])
def test_url_paths_cannot_escape(manager: CDNManager, path: str) -> None:
    with pytest.raises(InvalidInput):
        manager.get_cdn_url(path)

"""Content hashes, the manifest, reference rewriting, and path safety."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sluice.cdn.paths import clean_relative, relative_url_path, resolve_inside
from sluice.cdn.versioning import MANIFEST_NAME, Manifest, ResourceVersioner
from sluice.errors import InvalidInput


def write(root: Path, rel: str, content: bytes | str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    write(src, "img/logo.png", b"\x89PNG fake")
    write(src, "fonts/a.woff2", b"wOF2")
    write(src, "css/base.css", "a { color: red }\n")
    write(
        src,
        "css/site.css",
        '@import "base.css";\n'
        "body { background: url(../img/logo.png) }\n"
        ".f { src: url('/static/fonts/a.woff2?#iefix') format('woff2') }\n"
        ".d { background: url(data:image/png;base64,AAAA) }\n"
        ".e { background: url(https://example.com/x.png) }\n"
        "/*# sourceMappingURL=site.css.map */\n",
    )
    write(src, "css/site.css.map", "{}")
    write(src, "js/app.js", "console.log(1)\n//# sourceMappingURL=app.js.map\n")
    write(src, "js/app.js.map", "{}")
    return src


def test_query_style_rewrites_references(tree: Path, tmp_path: Path) -> None:
    versioner = ResourceVersioner()
    manifest = versioner.build(tree, tmp_path / "dist")
    css = (tmp_path / "dist/css/site.css").read_text()
    h = manifest.hashes
    assert f'@import "base.css?v={h["css/base.css"]}"' in css
    assert f"url(../img/logo.png?v={h['img/logo.png']})" in css
    assert f"url('/static/fonts/a.woff2?v={h['fonts/a.woff2']}#iefix')" in css
    assert "url(data:image/png;base64,AAAA)" in css and "url(https://example.com/x.png)" in css
    assert f"sourceMappingURL=site.css.map?v={h['css/site.css.map']}" in css
    js = (tmp_path / "dist/js/app.js").read_text()
    assert f"sourceMappingURL=app.js.map?v={h['js/app.js.map']}" in js
    assert manifest.missing == []
    # The stylesheet's hash covers its rewritten content, so it changes when an image does.
    assert h["css/site.css"] == versioner.hash_bytes((tmp_path / "dist/css/site.css").read_bytes())


def test_filename_style_writes_hashed_copies_and_manifest(tree: Path, tmp_path: Path) -> None:
    versioner = ResourceVersioner(style="filename")
    manifest = versioner.build(tree, tmp_path / "dist")
    hashed = manifest.paths["css/site.css"]
    assert hashed == f"css/site.{manifest.hashes['css/site.css']}.css"
    out = tmp_path / "dist"
    assert (out / hashed).read_bytes() == (out / "css/site.css").read_bytes()
    css = (out / hashed).read_text()
    assert f"url(../img/logo.{manifest.hashes['img/logo.png']}.png)" in css
    body = json.loads((out / MANIFEST_NAME).read_text())
    assert body["paths"]["js/app.js"] == manifest.paths["js/app.js"]
    assert Manifest.load(out / MANIFEST_NAME).paths == manifest.paths


def test_changed_dependency_changes_dependent_hash(tree: Path, tmp_path: Path) -> None:
    first = ResourceVersioner().build(tree, tmp_path / "a")
    write(tree, "img/logo.png", b"\x89PNG other")
    second = ResourceVersioner().build(tree, tmp_path / "b")
    assert first.hashes["css/base.css"] == second.hashes["css/base.css"]
    assert first.hashes["css/site.css"] != second.hashes["css/site.css"]


def test_missing_reference_is_reported_not_fatal(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(
        src, "css/a.css", "a { background: url(nope.png) } b { background: url(../../etc/passwd) }"
    )
    manifest = ResourceVersioner().build(src, tmp_path / "dist")
    reasons = {(m.reference, m.reason) for m in manifest.missing}
    assert reasons == {
        ("nope.png", "no such file"),
        ("../../etc/passwd", "points outside the static root"),
    }
    assert (tmp_path / "dist/css/a.css").read_text().count("url(nope.png)") == 1


def test_strict_mode_raises_before_writing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src, "css/a.css", "a { background: url(nope.png) }")
    with pytest.raises(InvalidInput, match=r"nope\.png"):
        ResourceVersioner(strict=True).build(src, tmp_path / "dist")
    assert not (tmp_path / "dist").exists()


def test_non_utf8_css_is_rewritten_bytewise(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src, "img/a.png", b"png")
    write(src, "a.css", "/* caf\u00e9 */ a { background: url(img/a.png) }".encode("latin-1"))
    write(src, "b.css", b"a { background: url(\xff\xfe.png) }")
    manifest = ResourceVersioner().build(src, tmp_path / "dist")
    out = (tmp_path / "dist/a.css").read_bytes()
    assert (
        out.startswith(b"/* caf\xe9 */")
        and f"img/a.png?v={manifest.hashes['img/a.png']}".encode() in out
    )
    assert [m.reason for m in manifest.missing] == ["not valid UTF-8"]


def test_import_cycle_terminates(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src, "a.css", '@import "b.css";')
    write(src, "b.css", '@import "a.css";')
    manifest = ResourceVersioner().build(src, tmp_path / "dist")
    assert set(manifest.hashes) == {"a.css", "b.css"}


def test_rebuild_keeps_unchanged_outputs(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "dist"
    ResourceVersioner().build(tree, out)
    before = (out / "js/app.js").stat().st_mtime_ns
    again = ResourceVersioner().build(tree, out)
    assert again.written == 0 and (out / "js/app.js").stat().st_mtime_ns == before


def test_symlink_out_of_root_is_refused(tree: Path, tmp_path: Path) -> None:
    secret = write(tmp_path, "secret.txt", "s3cret")
    os.symlink(secret, tree / "js/leak.js")
    with pytest.raises(InvalidInput, match="outside the static root"):
        ResourceVersioner().build(tree, tmp_path / "dist")


def test_output_inside_source_is_refused(tree: Path) -> None:
    with pytest.raises(InvalidInput, match="must not be inside"):
        ResourceVersioner().build(tree, tree / "dist")


@pytest.mark.parametrize(
    "path", ["../x", "a/../../x", "/etc/passwd", "a\\..\\b", "C:/x", "", "a/\x00", ".", "a/.."]
)
def test_escaping_paths_are_refused(path: str) -> None:
    with pytest.raises(InvalidInput):
        clean_relative(path)


def test_clean_relative_normalises() -> None:
    assert clean_relative("./js//app.js") == "js/app.js"
    assert relative_url_path("/static/js/app.js?x#y", "/static/") == "js/app.js"
    with pytest.raises(InvalidInput):
        relative_url_path("/static/../settings.py", "/static/")


def test_resolve_inside_refuses_symlink_out(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(tmp_path, root / "up")
    with pytest.raises(InvalidInput, match="outside"):
        resolve_inside(root, "up/secret")
    assert resolve_inside(root, "js/a.js") == root.resolve() / "js/a.js"

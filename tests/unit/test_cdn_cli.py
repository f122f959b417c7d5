"""The `cdn` command group, invoked directly with click's CliRunner."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from sluice.cdn.cli import cdn
from tests.unit.test_cdn_manager import cdn_env  # noqa: F401 - fixture

JS = b"const answer = 42; function f() { return answer * 2; }\n" * 100


def make_source(root: Path) -> Path:
    (root / "js").mkdir(parents=True)
    (root / "js/app.js").write_bytes(JS)
    (root / "css").mkdir()
    (root / "css/site.css").write_text(
        "body { background: url(../img/x.png) } a { b: url(gone.png) }\n" * 20
    )
    (root / "img").mkdir()
    (root / "img/x.png").write_bytes(b"\x89PNG")
    return root


def test_build_prints_summary_and_warnings(cdn_env: Path, tmp_path: Path) -> None:  # noqa: F811
    src = make_source(tmp_path / "src")
    result = CliRunner().invoke(cdn, ["build", str(src), "--out", str(tmp_path / "dist")])
    assert result.exit_code == 0, result.output
    assert "javascript" in result.output and "css" in result.output
    assert "gone.png (no such file)" in result.output
    assert (tmp_path / "dist/js/app.js.br").exists()
    again = CliRunner().invoke(cdn, ["build", str(src), "--out", str(tmp_path / "dist")])
    assert "0 file(s) written, 0 compressed, 2 unchanged" in again.output


def test_build_refuses_symlink_out(cdn_env: Path, tmp_path: Path) -> None:  # noqa: F811
    src = make_source(tmp_path / "src")
    (src / "js/evil.js").symlink_to("/etc/hostname")
    result = CliRunner().invoke(cdn, ["build", str(src), "--out", str(tmp_path / "dist")])
    assert result.exit_code == 2 and "outside the static root" in result.output


def test_invalidate_and_flush_without_provider(cdn_env: Path) -> None:  # noqa: F811
    runner = CliRunner()
    ok = runner.invoke(cdn, ["invalidate", "/static/a.js", "/static/*.css"])
    assert ok.exit_code == 0 and "queued 2 new path(s)" in ok.output
    assert runner.invoke(cdn, ["invalidate", "--all"]).output.strip() == "queued: /*"
    bad = runner.invoke(cdn, ["invalidate", "no-slash"])
    assert bad.exit_code == 2 and "must start with '/'" in bad.output
    assert runner.invoke(cdn, ["invalidate"]).exit_code == 2
    flush = runner.invoke(cdn, ["flush"])
    assert flush.exit_code == 1 and "SLUICE_CDN_PROVIDER" in flush.output


def test_nginx_prints_config(cdn_env: Path) -> None:  # noqa: F811
    result = CliRunner().invoke(cdn, ["nginx", "--listen", "127.0.0.1:8080"])
    assert result.exit_code == 0
    assert f'alias "{cdn_env}/";' in result.output and "brotli_static on;" in result.output
    assert "brotli_static" not in CliRunner().invoke(cdn, ["nginx", "--no-brotli"]).output


def test_nginx_refuses_injected_arguments(cdn_env: Path) -> None:  # noqa: F811
    result = CliRunner().invoke(cdn, ["nginx", "--listen", "80; include /etc/passwd"])
    assert result.exit_code == 2 and "not a valid nginx listen" in result.output
    result = CliRunner().invoke(cdn, ["nginx", "--server-name", 'a"}'])
    assert result.exit_code == 2


def test_build_prints_references_from_the_css_as_text(cdn_env: Path, tmp_path: Path) -> None:  # noqa: F811
    """A CSS reference is data, not rich markup: ``url([/x].png)`` once crashed the report."""
    src = make_source(tmp_path / "src")
    (src / "css/site.css").write_text("a { b: url([/x].png) } i { c: url([bold]y\x1b[2J.png) }\n")
    result = CliRunner().invoke(cdn, ["build", str(src), "--out", str(tmp_path / "dist")])
    assert result.exit_code == 0, result.output
    assert "[/x].png (no such file)" in result.output
    assert "[bold]y\\x1b[2J.png" in result.output and "\x1b" not in result.output

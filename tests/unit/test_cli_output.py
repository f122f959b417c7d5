"""Text from the code under review reaches the terminal as text: never parsed as rich markup, never
as terminal control sequences (file names, file contents, rule names, messages)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.analysis.walker import WalkReport
from sluice.cli import _print_findings, _summary_table
from sluice.clitools import SafeConsole, printable

#: Rich markup, its escapes, and the characters a terminal obeys.
HOSTILE = st.lists(
    st.sampled_from([*"[]/\\=#x ab:@", "[/x]", "[bold]", "[/]", "[link=x]", "\x1b",
                    "\x07", "\r", "\x00", "\x9b", "\u202e", "\n", "é"]),
    max_size=20,
).map("".join) | st.text(max_size=30)  # fmt: skip


def _render(renderable: object) -> str:
    buffer = io.StringIO()
    SafeConsole(file=buffer, width=200, color_system=None).print(renderable)
    return buffer.getvalue()


def _no_raw_controls(output: str) -> bool:
    return not any(
        (ord(c) < 32 and c != "\n") or 0x7F <= ord(c) < 0xA0 or c == "\u202e" for c in output
    )


@settings(max_examples=150, deadline=None)
@given(text=HOSTILE)
def test_any_text_prints_as_itself_with_controls_escaped(text: str) -> None:
    output = _render(text)
    assert _no_raw_controls(output)
    # Each line comes out as itself, up to whitespace (rich expands tabs, strips trailing spaces).
    squeezed = "".join(output.split())
    for line in printable(text, keep_newlines=True).splitlines():
        assert "".join(line.split()) in squeezed


@settings(max_examples=100, deadline=None)
@given(path=HOSTILE, rule=HOSTILE, message=HOSTILE)
def test_findings_and_summary_tables_take_any_text(path: str, rule: str, message: str) -> None:
    finding = {"path": path or "a.py", "line": 3, "column": 0, "severity": "high", "rule": rule,
               "message": message}  # fmt: skip
    buffer = io.StringIO()
    console = SafeConsole(file=buffer, width=400, color_system=None)
    _print_findings(console, [finding], 1)
    assert _no_raw_controls(buffer.getvalue())
    if path.strip() and not any(c in path for c in "\n\t"):
        assert printable(path) in buffer.getvalue()


def test_summary_table_escapes_unreadable_paths() -> None:
    report = type("R", (), {})()
    walk = WalkReport()
    walk.unreadable.append("a[/x]\x1b[31m.py")
    for name, value in dict(
        session_id=1, root="/t[/x]", mode="inline", changes=None, changed_lines_only=False,
        files_done=0, files_total=0, walk=walk, by_severity={}, findings_total=0,
        provider_calls=0, cache_hits=0, cost_saved_usd=0.0, files_embedded=0, duration_s=0.0,
        files_per_second=0.0,
    ).items():  # fmt: skip
        setattr(report, name, value)
    output = _render(_summary_table(report))  # type: ignore[arg-type]
    assert "a[/x]\\x1b[31m.py" in output and "/t[/x]" in output and _no_raw_controls(output)


@pytest.mark.parametrize(
    "text,shown",
    [("a\x1bb", "a\\x1bb"), ("\u202e", "\\u202e"), ("tab\tkept", "tab\tkept"), ("[/x]", "[/x]")],
)
def test_printable_escapes_every_form(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_printable_keeps_newlines_only_when_asked() -> None:
    assert printable("a\nb") == "a\\x0ab"
    assert printable("a\nb", keep_newlines=True) == "a\nb"


def test_help_lists_every_subcommand_without_importing_them(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys, sluice.cli as c; from click.testing import CliRunner; "
        "r = CliRunner().invoke(c.main, ['--help']); "
        "print(r.output); print('LOADED', sorted(m for m in sys.modules if m.startswith("
        "('celery', 'sqlalchemy', 'sluice.cdn', 'sluice.query', 'sluice.workers.cli'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    for name in ("analyze", "cache", "cdn", "dlq", "queue", "serve", "sessions", "stats"):
        assert f"  {name} " in done.stdout
    assert "LOADED []" in done.stdout


def test_the_celery_config_does_not_import_the_cdn_package() -> None:
    """Every process that loads the Celery config (``sluice analyze`` on workers, each worker, beat)
    would pay for the CDN package's compression, brotli and Prometheus imports."""
    import subprocess
    import sys

    code = "import sys, celeryconfig; print(sorted(m for m in sys.modules if m.startswith('sluice.cdn')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_command_skips_the_interpreters_final_garbage_collection() -> None:
    """At exit every object is frozen (out of reach of the final collections, a third of a warm
    `sluice analyze`), and only after every other exit handler, which may still create objects."""
    import subprocess
    import sys

    code = (
        "import atexit, gc, sluice.cli\n"
        "atexit.register(lambda: print('OTHER HANDLER SAW', gc.get_freeze_count(), flush=True))\n"
        "class Cycle:\n"
        "    def __init__(self): self.me = self\n"
        "    def __del__(self): print('FINALIZED', flush=True)\n"
        "Cycle()\n"
        "atexit.register(lambda: print('FROZEN BEFORE EXIT HANDLERS', gc.get_freeze_count()))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "OTHER HANDLER SAW 0" in done.stdout, done.stdout
    assert "FROZEN BEFORE EXIT HANDLERS 0" in done.stdout, done.stdout
    # The cycle was frozen, not collected: the final collections never looked at it.
    assert "FINALIZED" not in done.stdout, done.stdout

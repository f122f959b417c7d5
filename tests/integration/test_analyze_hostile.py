"""``sluice analyze`` on odd trees: names and contents that look like markup or terminal control
sequences, and files that are not regular files. A clean report and exit, never a crash or a hang."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import run_sluice, service_env

#: File names a careless or hostile tree may hold (each also gets markup and controls inside).
NAMES = ["a[/x].py", "b[bold]c.py", "ctl\x1b[2Jd.py", "bell\x07.py", "nl\nx.py", "rtl\u202eyp.js",
         "emoji:smile:.py"]  # fmt: skip
CONTENT = "def f(cmd):\n    return eval(cmd)  # TODO [/x] [bold]\x1b[31m :smile:\n"


def test_markup_and_control_characters_in_names_and_contents(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in NAMES:  # "a[/x].py" is x].py in a folder named "a[": its relative path is markup
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text(CONTENT)
    os.mkfifo(tree / "pipe.py")  # nobody writes to it: reading it would block forever
    env = service_env(tmp_path, ASYNC_PROCESSING_ENABLED="false")
    result = run_sluice("analyze", str(tree), env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    out = result.stdout
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "a[/x].py" in out and "b[bold]c.py" in out and "emoji:smile:.py" in out
    assert "ctl\\x1b[2Jd.py" in out and "bell\\x07.py" in out and "nl\\x0ax.py" in out
    assert "1 not a regular file" in out
    assert f"{len(NAMES)} of {len(NAMES)}" in out  # files analysed


@pytest.mark.parametrize("rules", ["[/x]", "\x1b[2J", ""])
def test_a_hostile_rule_name_is_refused_as_text(tmp_path: Path, rules: str) -> None:
    result = run_sluice("analyze", str(tmp_path), "--rules", rules, env=service_env(tmp_path))
    assert result.returncode == 2
    assert "unknown rule" in result.stderr and "\x1b" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

"""One redaction function, used everywhere: no password of any URL reaches a message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sluice.errors import ConfigurationError, InvalidInput, SluiceError, TaskFailed
from sluice.redaction import redact
from tests.conftest import ROOT, service_env

PASSWORD = "TopSecretPW1"


@pytest.mark.parametrize(
    "url",
    [
        f"mysql://u:{PASSWORD}@h/x",
        f"redis://:{PASSWORD}@cache:6379/1",
        f"redis://u:{PASSWORD}@h:port/0",  # malformed port
        f"redis://u:{PASSWORD}@h:99999999/0",
        f"postgresql+psycopg://app:{PASSWORD}@db/x?sslmode=require",
        f"amqp://guest:{PASSWORD}@rabbit//",
        f"redis://u:Top/{PASSWORD}@h/0",  # "/" in the password: not a valid URL, still masked
        f"redis://u:{PASSWORD}@x@h/0",  # "@" in the password
        f"db+postgresql://u:{PASSWORD}@h/x",
        f"https://user:{PASSWORD}@example.com/hook",
    ],
)
@pytest.mark.parametrize(
    "template", ["{}", "'{}'", '"{}"', "url={} failed", "({})", "a {} and {}", "{}\n{}"]
)
def test_every_url_password_is_masked_wherever_it_appears(url: str, template: str) -> None:
    text = redact(template.format(url, url))
    assert PASSWORD not in text and "***" in text


def test_what_is_not_a_password_is_left_alone() -> None:
    text = "GET https://cdn.example.com/static/a.js?v=1:2 from redis://cache:6379/0 at 12:30"
    assert redact(text) == text


@pytest.mark.parametrize("kind", [SluiceError, ConfigurationError, InvalidInput, TaskFailed])
def test_every_sluice_error_redacts_its_own_message(kind: type[SluiceError]) -> None:
    error = kind(f"cannot reach redis://:{PASSWORD}@db:6379/0")
    assert PASSWORD not in str(error) and "redis://:***@db:6379/0" in str(error)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SLUICE_DATABASE_URL", f"mysql://u:{PASSWORD}@h/x"),
        ("SLUICE_DATABASE_URL", f"postgresql://u:{PASSWORD}@127.0.0.1:1/x"),
        ("SLUICE_BROKER_URL", f"redis://u:{PASSWORD}@h:port/0"),
        ("SLUICE_BROKER_URL", f"redis://u:{PASSWORD}@127.0.0.1:1/0"),
        ("SLUICE_REDIS_URL", f"redis://u:Top/{PASSWORD}@h/0"),
        ("SLUICE_RESULT_BACKEND", f"db+mysql://u:{PASSWORD}@h/x"),
        ("SLUICE_CDN_WEBHOOK_URL", f"https://u:{PASSWORD}@hooks.example.com/x"),
    ],
)
def test_sluice_config_never_prints_a_password(tmp_path: Path, name: str, value: str) -> None:
    """Whether the value is accepted (shown masked) or refused (named in the error, masked)."""
    done = subprocess.run(
        [sys.executable, "-m", "sluice.cli", "config"],
        env={**service_env(tmp_path, **{name: value}), "COLUMNS": "300"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert PASSWORD not in output
    assert "Traceback" not in output
    assert name in output or "***" in output


def test_a_data_dir_that_is_a_file_is_one_clear_error(tmp_path: Path) -> None:
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("x")
    for data_dir in (a_file, a_file / "below"):
        done = subprocess.run(
            [sys.executable, "-m", "sluice.cli", "dlq", "list"],
            env={**service_env(tmp_path), "SLUICE_DATA_DIR": str(data_dir)},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert (
            done.stderr.startswith("Error: SLUICE_DATA_DIR=") and "not a directory" in done.stderr
        )

"""docker-compose.yml, without Docker: every service's command runs here against local services.

The file is parsed; each sluice service's ``command`` is run as written (``sluice`` and ``celery``
resolved to this interpreter, published ports swapped for free ones, hosts for the test services),
then its own ``healthcheck`` command is run until it passes. redis and postgres are the local
servers, checked with their compose health checks; nginx runs the mounted config on a free port.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from sluice.cdn.nginx import find_brotli_module, render_main_config
from tests.conftest import REQUIRE_SERVICES, ROOT, service_env, stop_processes

pytestmark = pytest.mark.integration
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
SLUICE_SERVICES = ["api", "worker", "batch-worker", "beat", "flower"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if not k.lstrip().startswith("#")}


class Localizer:
    """Rewrites a compose command for this machine."""

    def __init__(self, env: dict[str, str], tmp_path: Path) -> None:
        self.env = env
        self.ports = {"8000": str(free_port()), "5555": str(free_port())}
        self.tmp_path = tmp_path

    def text(self, value: str) -> str:
        value = re.sub(r"\$\{(\w+)\}", lambda m: self.env[m.group(1)], value)
        value = value.replace("$$", "$").replace("/tmp/", f"{self.tmp_path}/")
        for published, local in self.ports.items():
            value = re.sub(rf"(?<=[:= ]){published}\b|^{published}$", local, value)
        return value

    def argv(self, command: list[str]) -> list[str]:
        head = {
            "sluice": [sys.executable, "-m", "sluice.cli"],
            "celery": [sys.executable, "-m", "celery"],
        }
        return [*head.get(command[0], [command[0]]), *(self.text(a) for a in command[1:])]

    def health(self, test: list[str]) -> list[str]:
        if test[0] == "CMD-SHELL":
            return ["sh", "-c", self.text(test[1])]
        return self.argv(test[1:])


def healthy(argv: list[str], env: dict[str, str], timeout: float = 90) -> tuple[bool, str]:
    deadline = time.monotonic() + timeout
    output = ""
    while time.monotonic() < deadline:
        done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        if done.returncode == 0:
            return True, done.stdout
        output = done.stdout + done.stderr
        time.sleep(1)
    return False, output


@pytest.fixture
def local_env(
    tmp_path: Path, redis_url: str, redis_broker_url: str, key_prefix: str, pg_schema: str
) -> dict[str, str]:
    values = env_file(ROOT / ".env.example")
    values.update(
        SLUICE_BROKER_URL=redis_broker_url,
        SLUICE_RESULT_BACKEND=redis_broker_url,
        SLUICE_REDIS_URL=redis_url,
        SLUICE_KEY_PREFIX=key_prefix,
        SLUICE_DATABASE_URL=pg_schema,
    )
    env = service_env(tmp_path, **values)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def test_compose_file_has_every_service_with_a_health_check() -> None:
    assert set(SERVICES) >= {
        "redis",
        "postgres",
        "api",
        "worker",
        "batch-worker",
        "beat",
        "flower",
        "nginx",
    }
    for name, service in SERVICES.items():
        assert name == "migrate" or "healthcheck" in service, name
    worker = SERVICES["worker"]["command"]
    assert worker[worker.index("-Q") + 1] == "critical,high,normal,low"
    assert worker[worker.index("--prefetch-multiplier") + 1] == "1"
    assert (
        SERVICES["batch-worker"]["command"][SERVICES["batch-worker"]["command"].index("-Q") + 1]
        == "batch"
    )
    assert all(s.get("env_file") == ".env" for n, s in SERVICES.items() if n in SLUICE_SERVICES)


def test_every_sluice_service_starts_and_passes_its_health_check(
    tmp_path: Path, local_env: dict[str, str]
) -> None:
    local = Localizer(local_env, tmp_path)
    migrate = subprocess.run(local.argv(SERVICES["migrate"]["command"]), env=local_env, cwd=ROOT,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert migrate.returncode == 0, migrate.stderr
    for name in ("redis", "postgres"):
        test = SERVICES[name]["healthcheck"]["test"]
        argv = local.health(test) + (["-h", "127.0.0.1"] if name == "postgres" else [])
        assert healthy(argv, local_env, timeout=10)[0], name
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in SLUICE_SERVICES:
            log = (tmp_path / f"{name}.log").open("wb")
            processes[name] = subprocess.Popen(local.argv(SERVICES[name]["command"]), env=local_env,
                                               cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        for name in SLUICE_SERVICES:
            ok, output = healthy(local.health(SERVICES[name]["healthcheck"]["test"]), local_env)
            log_tail = (tmp_path / f"{name}.log").read_text()[-1500:]
            assert ok, f"{name} unhealthy: {output[-1500:]}\n{log_tail}"
            assert processes[name].poll() is None, f"{name} exited: {log_tail}"
    finally:
        for process in processes.values():
            stop_processes(process)


def test_nginx_serves_the_mounted_config(tmp_path: Path) -> None:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    brotli = find_brotli_module()
    if not os.path.exists(binary) or brotli is None:
        message = "nginx with the brotli_static module is not installed"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    mounted: dict[str, Any] = dict(
        v.split(":")[:2] for v in SERVICES["nginx"]["volumes"] if v.startswith("./")
    )  # type: ignore[misc]
    config = (ROOT / next(iter(mounted))).read_text()
    static = tmp_path / "static"
    static.mkdir()
    port = free_port()
    config = config.replace("listen 80;", f"listen 127.0.0.1:{port};").replace(
        "/srv/sluice/static", str(static)
    )
    prefix = tmp_path / "nginx"
    (prefix / "tmp").mkdir(parents=True)
    conf = prefix / "nginx.conf"
    conf.write_text(render_main_config(config, prefix, brotli))
    checked = subprocess.run(
        [binary, "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen([binary, "-p", str(prefix), "-c", str(conf)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, (
                    "nginx did not listen"
                )
                time.sleep(0.2)
    finally:
        stop_processes(process)

"""The consumer watchdog drill: a loopback TCP proxy between one worker and its broker (RabbitMQ,
then Redis) black-holes the worker's connections (data dropped, nothing closed or reset) for 60 s.
The stall must be reported (``/health``'s consumers check and ``sluice_worker_consumer_stalled``)
within 30 s, the worker must recycle itself and finish every task: lost = 0.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from sluice.errors import ConfigurationError
from sluice.monitoring.consumers import check_consumers, consumer_metrics
from sluice.settings import load_settings
from sluice.store import get_store
from sluice.workers import Priority, submit_task
from tests.conftest import Broker, WorkerProcess, service_env
from tests.worker_fixtures import settings_env, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.drill]
BLACK_HOLE_SECONDS = 60
INTERVAL = 3.0
TASKS = 40


class BlackHoleProxy:
    """Forwards 127.0.0.1:<port> to a target; :meth:`black_hole` makes every open connection
    swallow what either side sends, without closing it, while new connections pass."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.loop = asyncio.new_event_loop()
        self.holed_until: dict[int, float] = {}
        self.connections: set[int] = set()
        self._next = 0
        ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0)
        )
        self.port = self.server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._next += 1
        number = self._next
        self.connections.add(number)
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            while data := await source.read(65536):
                if time.monotonic() < self.holed_until.get(number, 0):
                    continue  # dropped: neither side hears anything, nothing is closed
                sink.write(data)
                await sink.drain()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except (ConnectionError, OSError):
            pass
        finally:
            self.connections.discard(number)
            for w in (writer, up_writer):
                w.close()

    def black_hole(self, seconds: float) -> int:
        """Black-hole every connection open now for ``seconds``; returns how many."""
        until = time.monotonic() + seconds
        holed = list(self.connections)
        for number in holed:
            self.holed_until[number] = until
        return len(holed)

    def holed_open(self) -> int:
        now = time.monotonic()
        return sum(1 for n in self.connections if self.holed_until.get(n, 0) > now)

    def close(self) -> None:
        async def shut() -> None:
            self.server.close()
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def proxy(broker: Broker) -> Iterator[BlackHoleProxy]:
    parts = urlsplit(broker.url)
    running = BlackHoleProxy(parts.hostname or "127.0.0.1", parts.port or 5672)
    yield running
    running.close()


def _through(url: str, port: int) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    return parts._replace(
        netloc=f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    ).geturl()


@pytest.mark.parametrize("value", ["0", "-1", "-0.5"])
def test_a_watchdog_interval_of_zero_or_below_is_refused(value: str) -> None:
    with pytest.raises(ConfigurationError, match="SLUICE_WATCHDOG_INTERVAL"):
        load_settings({"SLUICE_WATCHDOG_INTERVAL": value})


def _stalled_metric() -> float:
    (stalled, _) = consumer_metrics()
    return sum(sample.value for sample in stalled.samples)


def _healthy() -> bool:
    try:
        check_consumers()
        return True
    except ConnectionError:
        return False


def test_black_holed_worker_is_reported_recycles_and_loses_nothing(
    tmp_path: Path,
    broker: Broker,
    proxy: BlackHoleProxy,
    redis_url: str,
    key_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    through_proxy = _through(broker.url, proxy.port)
    common = {
        "SLUICE_RESULT_BACKEND": broker.result_backend,
        # Redis hands a dead consumer's unacknowledged messages out again after this; RabbitMQ
        # when it sees the connection close.
        "SLUICE_VISIBILITY_TIMEOUT": "10",
        "SLUICE_MAX_COUNTDOWN": "5",
        "SLUICE_REDIS_URL": redis_url,
        "SLUICE_KEY_PREFIX": key_prefix,
        "SLUICE_HANDLER_MODULES": "tests.worker_handlers",
        "SLUICE_WATCHDOG_INTERVAL": str(INTERVAL),
    }
    env = service_env(tmp_path, SLUICE_BROKER_URL=through_proxy, **common)
    worker = WorkerProcess(env, tmp_path / "worker.log", "critical,high,normal,low", 2)
    try:
        worker.wait_ready()
        with settings_env(reconfigure_celery=True, SLUICE_BROKER_URL=broker.url, **common):
            import tests.worker_handlers  # noqa: F401 - registers t_record here too

            for i in range(TASKS):
                submit_task("t_record", {"id": i, "sleep": 0.5}, Priority.NORMAL)
            runs = lambda: get_store().hgetall_counters("runs")  # noqa: E731
            wait_for(lambda: len(runs()) >= 6, 60, "some tasks to run")
            wait_for(_healthy, 30, "the watchdog's first report")
            holed = proxy.black_hole(BLACK_HOLE_SECONDS)
            holed_at, at = time.monotonic(), len(runs())
            wait_for(lambda: not _healthy(), 45, "the stall to be reported")
            detected = time.monotonic() - holed_at
            assert _stalled_metric() >= 1
            wait_for(lambda: len(runs()) == TASKS and _healthy(), 120, "recovery and every task")
            recovered = time.monotonic() - holed_at
            assert _stalled_metric() == 0
    finally:
        worker.stop()
    log = worker.log_file.read_text()
    with settings_env(SLUICE_REDIS_URL=redis_url, SLUICE_KEY_PREFIX=key_prefix):
        finished = get_store().hgetall_counters("runs")
    lost = TASKS - len(finished)
    with capsys.disabled():
        print(
            f"\ndrill watchdog[{broker.kind}]: black-holed {holed} connections for {BLACK_HOLE_SECONDS} s at "
            f"{at}/{TASKS} tasks; stall reported after {detected:.1f} s, recovered (healthy, all "
            f"tasks done) after {recovered:.1f} s; lost {lost}, reruns {sum(finished.values()) - TASKS}"
        )
    assert holed >= 1
    assert detected <= 30
    assert lost == 0
    assert "consumer stalled on" in log

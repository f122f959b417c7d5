"""Chaos drill: one provider call per request while Redis redelivers tasks still in flight.

The visibility timeout is shorter than a task (the loopback provider takes longer to answer), so
Redis hands most tasks to a second worker while their first run is still calling the provider;
meanwhile workers are SIGKILLed at random and replaced, and the Redis that is both broker and
shared store restarts once. The cache key is each request's idempotency key: a redelivered copy
joins the run in flight (it waits on the fill lock for as long as the holder renews its lease) or
is answered from the cache, so every request is answered by the provider exactly once. The one
exception, counted apart, is a call whose worker was SIGKILLed before it stored the answer: that
answer died with the process, and the request is taken over once the dead holder's lease lapses.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import psutil
import pytest

from tests.conftest import stop_processes
from tests.fake_openai import Recorded, running_fake_openai
from tests.integration.test_drills import (
    _analyze,
    _announce,
    _counts,
    _drill_env,
    _migrate,
    _ready,
    _restartable_broker,
    _tree,
    _worker,
)
from tests.worker_fixtures import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.drill]
FILES = 40
WORKERS = 3
#: The provider's answer takes longer than the visibility timeout: every task is redelivered.
LATENCY = 2.5
VISIBILITY = "2"
#: The fill lock's lease: longer than the Redis restart's outage plus a renewal interval.
LEASE = "10"
#: How long after its answer a killed worker may still not have stored it (a CPU-starved process
#: under ``--stress`` takes a while to parse and write it).
STORE_GRACE = 3.0
RECEIVED = re.compile(r"Task sluice\.(?:handlers\.analysis|run_batch)\[([0-9a-f-]+)\] received")


def test_redelivered_tasks_make_one_provider_call_per_request(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    pg_schema: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    with (
        running_fake_openai(latency=LATENCY) as fake,
        _restartable_broker("redis", tmp_path, request) as broker,
    ):
        fake.record_callers = True
        env = _drill_env(
            tmp_path,
            fake.url,
            SLUICE_DATABASE_URL=pg_schema,
            SLUICE_VISIBILITY_TIMEOUT=VISIBILITY,
            SLUICE_MAX_COUNTDOWN="1",
            # A SIGKILLed holder's requests are taken over LEASE s after its last renewal. A live
            # holder keeps its lock through an outage shorter than the lease less one renewal
            # interval (a third of it); with a 3 s lease, the Redis restart (3 s down) outlived
            # the locks of calls in flight, and a copy redelivered after it called again.
            SLUICE_CACHE_LOCK_LEASE=LEASE,
            **broker.settings,
        )
        _migrate(env)
        tree = _tree(tmp_path / "tree", FILES)
        logs: list[Path] = []
        killed: dict[int, float] = {}  # pid of every killed worker process -> when it was killed
        outage = (0.0, 0.0)  # when the Redis restart began and ended
        workers: dict[int, subprocess.Popen[bytes]] = {}

        def start() -> None:
            log = tmp_path / f"w{len(logs)}.log"
            logs.append(log)
            workers[len(logs) - 1] = _worker(env, log)

        def done() -> int:
            return _counts(pg_schema)[1]

        def kill_one() -> str:
            victim = rng.choice(sorted(workers))
            main = psutil.Process(workers[victim].pid)
            group = [main.pid, *(child.pid for child in main.children(recursive=True))]
            os.killpg(workers.pop(victim).pid, signal.SIGKILL)
            killed.update(dict.fromkeys(group, time.monotonic()))
            start()
            # Ready before the next fault: a worker still starting when Redis stops gives up.
            wait_for(lambda: _ready(logs[-1]), 60, "replacement worker")
            return f"SIGKILL of worker {victim} at {done()}/{FILES} files"

        for _ in range(WORKERS):
            start()
        try:
            wait_for(lambda: all(_ready(log) for log in logs), 60, "workers")
            run = _analyze(env, tree)
            injected = []
            for step, at in enumerate(sorted(rng.sample(range(4, FILES - 8), 3))):
                wait_for(lambda at=at: done() >= at, 120, f"{at} files analysed")
                if step == 1:
                    down = time.monotonic()
                    injected.append(f"{broker.restart()} at {done()}/{FILES} files")
                    outage = (down, time.monotonic())
                else:
                    injected.append(kill_one())
            out, err = run.communicate(timeout=180)
        finally:
            stop_processes(*workers.values(), whole_group=True)
        assert run.returncode == 0, out[-2000:] + err[-2000:]

    rows, distinct, dead = _counts(pg_schema)
    calls = [r for r in fake.requests if r.path == "/v1/chat/completions"]
    by_request: dict[str, list[Recorded]] = defaultdict(list)
    for call in calls:
        by_request[str(call.body.get("messages"))].append(call)

    def died_with_its_worker(call: Recorded) -> bool:
        # Sent by a process that was SIGKILLed before it could have stored the answer: mid-call
        # (it never read the reply), or soon after the reply. An answer that arrived while Redis
        # was down is stored once Redis is back.
        kills = [killed[pid] for pid in call.callers if pid in killed]
        if not call.callers and call.abandoned:
            # Gone before the server could look it up: it died as the call was read.
            return any(abs(at - call.at) <= 1.0 for at in killed.values())
        answered = call.at + LATENCY
        if outage[0] <= answered <= outage[1]:
            answered = outage[1]
        return any(call.abandoned or kill <= answered + STORE_GRACE for kill in kills)

    # Every call of a request but its last must have died with its worker.
    repeats = [c for cs in by_request.values() for c in sorted(cs, key=lambda c: c.at)[:-1]]
    unexplained = [c.at for c in repeats if not died_with_its_worker(c)]
    received = [m for log in logs if log.exists() for m in RECEIVED.findall(log.read_text())]
    _announce(
        capsys,
        f"drill redelivery[seed {seed}]: injected {'; '.join(injected)}; provider calls "
        f"{len(calls)}, unique requests {len(by_request)} of {FILES}, repeated because their "
        f"worker was SIGKILLed mid-call {len(repeats) - len(unexplained)}, otherwise "
        f"{len(unexplained)}; deliveries {len(received)} (redelivered "
        f"{len(received) - len(set(received))}); completed {distinct} (rows {rows}), "
        f"dead-lettered {dead}, lost {FILES - distinct - dead}",
    )
    assert (rows, distinct, dead) == (FILES, FILES, 0)  # lost = 0, each file written once
    assert len(by_request) == FILES
    start = min(c.at for c in calls)
    detail = [
        [(round(c.at - start, 2), sorted(c.callers), c.abandoned) for c in cs]
        for cs in by_request.values()
        if len(cs) > 1
    ]
    # provider calls == unique requests + calls killed with their worker
    assert unexplained == [], (
        f"repeated requests (s since the first call, sender pids, abandoned): {detail}; killed "
        f"{ {pid: round(at - start, 2) for pid, at in killed.items()} }; outage "
        f"{[round(at - start, 2) for at in outage]}"
    )
    assert len(received) > len(set(received))  # the drill did redeliver tasks in flight

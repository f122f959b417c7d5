"""Handlers and plain sluice tasks used only by the worker tests; they record what they did in the
shared store.

Worker subprocesses import this module through ``SLUICE_HANDLER_MODULES=tests.worker_handlers``; the
store (``SLUICE_REDIS_URL`` + a per-test ``SLUICE_KEY_PREFIX``) is how a test counts executions,
``execute_batch`` calls and execution order across processes.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery.signals import task_received

from sluice.errors import RetryLater
from sluice.store import get_store
from sluice.taskcontext import current_priority
from sluice.workers import Priority, SluiceTask, TaskHandler, registry, sluice_task

#: Set this store key to make the poison handlers succeed ("the handler is fixed").
FIXED_FLAG = "flag:fixed"


def _store() -> Any:
    return get_store()


def record_run(payload: dict[str, Any]) -> None:
    store = _store()
    seq = store.incr("seq")
    store.hincr("order", f"{seq:08d}|{payload.get('label', '')}")
    store.hincr("runs", str(payload.get("id", "")))


#: Set in a worker's environment to record, in its main process, every task the broker hands it.
RECORD_RECEIPTS = "SLUICE_TEST_RECORD_RECEIPTS"


@task_received.connect
def record_receipt(request: Any, **_: Any) -> None:
    """Which worker received which task, in order (``received_order``: ``seq|worker|label``),
    whatever the pool then does: a drill can tell a priority the broker broke from a pool child
    the OS scheduled late."""
    if not os.environ.get(RECORD_RECEIPTS):
        return
    payload = request.args[0] if request.args and isinstance(request.args[0], dict) else {}
    store = _store()
    seq = store.incr("received")
    store.hincr("received_order", f"{seq:08d}|{request.hostname}|{payload.get('label', '')}")


class RecordHandler(TaskHandler):
    """Records its execution order; sleeps ``payload["sleep"]`` seconds."""

    backoff = 0.05
    backoff_max = 0.1

    @property
    def task_name(self) -> str:
        return "t_record"

    def execute(self, payload: dict[str, Any]) -> dict[str, Any]:
        record_run(payload)
        if payload.get("sleep"):
            time.sleep(float(payload["sleep"]))
        return {"id": payload.get("id"), "label": payload.get("label")}


class PoisonHandler(TaskHandler):
    """Fails every attempt until :data:`FIXED_FLAG` is set."""

    max_retries = 2
    backoff = 0.05
    backoff_max = 0.1

    @property
    def task_name(self) -> str:
        return "t_poison"

    def execute(self, payload: dict[str, Any]) -> dict[str, Any]:
        store = _store()
        store.hincr("attempts", str(payload.get("id", "")))
        if store.get(FIXED_FLAG) is None:
            raise RuntimeError(f"poisoned payload {payload.get('id')}")
        return {"fixed": payload.get("id")}


class ChunkHandler(TaskHandler):
    """Batches of 10; an item with ``poison`` fails (its slot holds the error) until fixed."""

    priority = Priority.BATCH
    batch_size = 10
    max_retries = 2
    backoff = 0.05
    backoff_max = 0.1

    @property
    def task_name(self) -> str:
        return "t_chunk"

    def supports_batch(self) -> bool:
        return True

    async def execute_batch(self, payloads: list[dict[str, Any]]) -> list[Any]:
        store = _store()
        store.incr("batch_calls")
        store.hincr("batch_sizes", str(len(payloads)))
        fixed = store.get(FIXED_FLAG) is not None
        results: list[Any] = []
        for payload in payloads:
            store.hincr("runs", str(payload["id"]))
            if payload.get("poison") and not fixed:
                results.append(ValueError(f"poison item {payload['id']}"))
            else:
                results.append({"id": payload["id"], "double": payload["id"] * 2})
        return results


class MicroHandler(TaskHandler):
    """Micro-batched: counts its ``execute_batch`` calls."""

    priority = Priority.BATCH
    batch_size = 100
    backoff = 0.05

    @property
    def task_name(self) -> str:
        return "t_micro"

    def supports_batch(self) -> bool:
        return True

    def execute_batch(self, payloads: list[dict[str, Any]]) -> list[Any]:
        store = _store()
        store.incr("batch_calls")
        for payload in payloads:
            store.hincr("runs", str(payload["id"]))
        return [{"id": p["id"]} for p in payloads]


class LimitedHandler(TaskHandler):
    """Takes a token of the ``t`` limit (``SLUICE_RATE_LIMITS="t=RATE:BURST"``) per call."""

    rate_limit = "t"
    max_retries = 3
    backoff = 0.05

    @property
    def task_name(self) -> str:
        return "t_limited"

    def execute(self, payload: dict[str, Any]) -> dict[str, Any]:
        record_run(payload)
        return {"id": payload["id"], "at": time.time()}


class StampHandler(TaskHandler):
    """Records when it started (epoch ms, field = payload id) and sleeps ``payload["sleep"]``."""

    @property
    def task_name(self) -> str:
        return "t_stamp"

    def execute(self, payload: dict[str, Any]) -> dict[str, Any]:
        _store().hincr("started_ms", str(payload["id"]), int(time.time() * 1000))
        if payload.get("sleep"):
            time.sleep(float(payload["sleep"]))
        return {"id": payload["id"]}


class AICallHandler(TaskHandler):
    """One chat call through the configured provider (so under admission control); no retries,
    so any failure would be a dead letter. Records its run like :class:`RecordHandler`."""

    max_retries = 0

    @property
    def task_name(self) -> str:
        return "t_ai_call"

    def execute(self, payload: dict[str, Any]) -> dict[str, Any]:
        from sluice.ai import get_provider

        completion = get_provider().complete(
            [{"role": "user", "content": payload["text"]}], max_tokens=int(payload["max_tokens"])
        )
        record_run(payload)
        return {"id": payload["id"], "tokens": completion.usage.total_tokens}


for _handler in (
    AICallHandler(),
    RecordHandler(),
    PoisonHandler(),
    ChunkHandler(),
    MicroHandler(),
    LimitedHandler(),
    StampHandler(),
):
    registry.register(_handler)


# -- plain Celery tasks with sluice's features -------------------------------------------------


@sluice_task(
    name="tests.limited_call",
    priority=Priority.HIGH,
    rate_limit="t",
    max_retries=2,
    backoff=0.05,
    backoff_max=0.1,
    bind=True,
)
def limited_call(self: SluiceTask, key: str, fail: bool = False) -> dict[str, Any]:
    """Takes a token of the global limit ``t``; fails until :data:`FIXED_FLAG` when ``fail``."""
    store = _store()
    store.hincr("attempts", key)
    if fail and store.get(FIXED_FLAG) is None:
        raise RuntimeError(f"plain task {key} failed")
    record_run({"id": key, "label": key})
    return {
        "key": key,
        "at": time.time(),
        "worker": self.request.hostname,
        "priority": current_priority.get(),
    }


@sluice_task(name="tests.later", max_retries=0)
def later(key: str) -> int:
    """Asks to run again later on its first two runs (neither is a failed attempt)."""
    runs = _store().incr(f"later:{key}")
    if runs <= 2:
        raise RetryLater(0.05, f"window closed for {key}")
    return int(runs)


@sluice_task(name="tests.total")
def total(values: list[dict[str, Any]]) -> int:
    """A chord body: how many results arrived."""
    return len(values)

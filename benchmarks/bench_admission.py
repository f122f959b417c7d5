"""AI admission control benchmark: four worker processes on Redis against the limit-enforcing fake.

    python -m benchmarks.bench_admission [--quick] [--redis-url redis://127.0.0.1:6379/11]

The fake OpenAI-compatible provider (``tests.fake_openai``) runs in this process on loopback and
enforces a tokens-per-minute cap per model like the real API, answering 429 with ``Retry-After``.
Four ``celery -A sluice worker`` processes (threads pool, 8 slots each: 32 concurrent calls) run
``bench_ai`` tasks that each make one chat call. Phases, each on its own model so ledgers and the
fake's windows start empty:

1. anchor: the same mixed load through a provider with admission control off (429s counted);
2. CRITICAL alone at a steady rate, limiter on (its wait: submission to arrival at the provider);
3. CRITICAL at that rate + BATCH submitted faster than its share: 429s, TPM used, CRITICAL wait;
4. a daily budget with 64 CRITICAL calls submitted at once (32 in flight): overshoot;
5. one injected 429 with ``Retry-After: 5``: calls reaching the provider inside the pause, lost.

Full mode uses real minutes (phase 3 runs 70 s); quick mode a 5-second limit window
(``SLUICE_AI_LIMIT_WINDOW``) and phases of seconds. The Redis database given is FLUSHED.
"""

from __future__ import annotations

import sys

from benchmarks import services

if __name__ == "__main__":  # settings are read once: set them before sluice is imported
    services.configure_environment(sys.argv)

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.report import Measurement, print_table
from benchmarks.services import Worker, flush
from sluice.ai import OpenAIProvider, get_provider
from sluice.errors import ProviderError
from sluice.pricing import cost_usd
from sluice.workers import Priority, TaskHandler, registry, submit_task
from tests.fake_openai import KEY, FakeOpenAI, Reply, running_fake_openai

SECTION = "admission"
MAX_TOKENS = 150
ANSWER_TOKENS = 100
LATENCY = 0.2
#: A model added to the price table for the budget phase: about $0.09 reserved per call.
BUDGET_MODEL, BUDGET_PRICE = "bench-budget", (0.15, 0.6)
MODELS = {"anchor": "gpt-4", "alone": "gpt-4o", "mixed": "gpt-4o-mini", "pause": "gpt-4o-mini"}


# -- what the workers run ----------------------------------------------------------------------


class AIHandler(TaskHandler):
    """One chat call; ``raw`` payloads use a provider without admission control (the anchor)."""

    max_retries = 0

    @property
    def task_name(self) -> str:
        return "bench_ai"

    def execute(self, payload: dict[str, Any]) -> str:
        if time.time() > payload["deadline"]:
            return "expired"  # its phase is over: do not let it spill into the next one
        text = f"id={payload['id']} please review this short function for defects"
        messages = [{"role": "user", "content": text}]
        if payload.get("raw"):
            try:
                _raw_provider().complete(messages, payload["model"], max_tokens=MAX_TOKENS)
            except ProviderError:
                return "refused"
            return "done"
        _provider().complete(messages, payload["model"], max_tokens=MAX_TOKENS)
        return "done"


_providers: dict[tuple[int, bool], Any] = {}


def _provider() -> Any:
    """The settings' provider (admission on), one per process: its connection pool is reused."""
    key = (os.getpid(), False)
    if key not in _providers:
        _providers[key] = get_provider()
    return _providers[key]


def _raw_provider() -> OpenAIProvider:
    """The same provider without admission control, failing on a 429 (the anchor)."""
    key = (os.getpid(), True)
    if key not in _providers:
        url = os.environ["SLUICE_AI_BASE_URL"]
        _providers[key] = OpenAIProvider(url, KEY, "gpt-4", "e", max_retries=0)
    return _providers[key]  # type: ignore[no-any-return]


registry.register(AIHandler())


# -- harness -----------------------------------------------------------------------------------


class Load:
    """Submits ``bench_ai`` tasks and remembers when, by id."""

    def __init__(self) -> None:
        self.submitted: dict[str, float] = {}

    def submit(self, model: str, priority: Priority, deadline: float, raw: bool = False) -> str:
        ident = f"{priority.name}-{uuid.uuid4().hex[:10]}"
        payload = {"id": ident, "model": model, "deadline": deadline, "raw": raw}
        self.submitted[ident] = time.monotonic()
        submit_task("bench_ai", payload, priority)
        return ident

    def steady(
        self, model: str, rates: dict[Priority, float], seconds: float, raw: bool = False
    ) -> None:
        """Submit at ``rates`` (per second, per priority) for ``seconds``; tasks expire 60 s later."""
        deadline = time.time() + seconds + 60
        started = time.monotonic()
        due = dict.fromkeys(rates, 0.0)
        while (elapsed := time.monotonic() - started) < seconds:
            for priority, rate in rates.items():
                while due[priority] <= elapsed:
                    self.submit(model, priority, deadline, raw)
                    due[priority] += 1 / rate
            time.sleep(0.01)


def _id_of(request: Any) -> str:
    return str(request.body["messages"][0]["content"].split()[0].removeprefix("id="))


def arrivals(fake: FakeOpenAI, model: str, since: float) -> list[tuple[float, str]]:
    return [
        (r.at, _id_of(r))
        for r in list(fake.requests)
        if r.body.get("model") == model and r.at >= since
    ]


def waits(load: Load, seen: list[tuple[float, str]], prefix: str) -> list[float]:
    return [
        at - load.submitted[i] for at, i in seen if i.startswith(prefix) and i in load.submitted
    ]


def p99(values: list[float]) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def window_usage(fake: FakeOpenAI, model: str, start: float, end: float, window: float) -> float:
    """Median over [start + window, end] of the tokens the provider accepted in the last window."""
    used = [
        (r.at, r.usage["total_tokens"])
        for r in list(fake.requests)
        if r.body.get("model") == model and r.status == 200 and r.usage
    ]
    samples = []
    at = start + window
    while at <= end:
        samples.append(sum(amount for t, amount in used if at - window < t <= at))
        at += window / 10
    return statistics.median(samples) if samples else 0.0


def wait_done(fake: FakeOpenAI, load: Load, ids: list[str], timeout: float) -> int:
    """Wait until every id reached the provider (or timeout); return how many never did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = {_id_of(r) for r in list(fake.requests) if r.status == 200}
        missing = [i for i in ids if i not in seen]
        if not missing:
            return 0
        time.sleep(0.2)
    return len(missing)


def run(quick: bool = False, url: str | None = None) -> list[Measurement]:
    url = url or services.REDIS_URL
    window = 5.0 if quick else 60.0
    scale = window / 60
    tpm = 24_000  # per minute (quick mode: the same rate over its shorter window)
    cap = round(tpm * scale)
    alone_s, mixed_s = (4.0, 8.0) if quick else (60.0, 70.0)
    anchor_s = mixed_s  # the same load for as long
    # Calls take ~125 tokens: CRITICAL at 0.5/s uses ~15% of the cap, BATCH's share (80%) is
    # ~2.6 calls/s and it is submitted at 3.5/s, so it always has a backlog.
    critical_rate, batch_rate = 0.5, 3.5
    flush(url)
    measurements: list[Measurement] = []
    with running_fake_openai(latency=LATENCY) as fake, tempfile.TemporaryDirectory() as tmp:
        fake.window, fake.tpm, fake.completion_tokens = window, cap, ANSWER_TOKENS
        limits = ";".join(
            [
                f"openai:{MODELS['alone']}=tpm:{cap},reserve:0.2",
                f"openai:{MODELS['mixed']}=tpm:{cap},reserve:0.2",
                f"openai:{BUDGET_MODEL}=usd_per_day:2",
            ]
        )
        env = {
            **os.environ,
            "SLUICE_BROKER_URL": url,
            "SLUICE_RESULT_BACKEND": url,
            "SLUICE_REDIS_URL": url,
            "SLUICE_DATA_DIR": tmp,
            "SLUICE_HANDLER_MODULES": "benchmarks.bench_admission",
            "SLUICE_AI_PROVIDER": "openai",
            "SLUICE_AI_BASE_URL": fake.url,
            "SLUICE_AI_API_KEY": KEY,
            "SLUICE_AI_LIMITS": limits,
            "SLUICE_AI_LIMIT_WINDOW": str(window),
            "SLUICE_CACHE_PRICES": f'{{"{BUDGET_MODEL}": [{BUDGET_PRICE[0]}, {BUDGET_PRICE[1]}]}}',
            "SLUICE_KEY_PREFIX": f"bench-admission-{uuid.uuid4().hex[:8]}:",
        }
        os.environ.update({k: v for k, v in env.items() if k.startswith("SLUICE_")})
        _reload_settings()
        workers = [
            Worker(Path(tmp), "critical,high,normal,low,batch", 8, "-P", "threads", env=env)
            for _ in range(4)
        ]
        from sluice.celery import app

        try:
            services.wait_ready(workers, lambda: app.control.ping(timeout=0.5))
            load = Load()
            rates = {Priority.CRITICAL: critical_rate, Priority.BATCH: batch_rate}
            # Warm-up on unlimited models: every worker builds its provider and loads both
            # tokenizers before anything is measured.
            warm = [
                load.submit(m, Priority.HIGH, time.time() + 60)
                for m in ("gpt-4", "gpt-4o-warm-up") * 32
            ]
            wait_done(fake, load, warm, 60)

            # 1. anchor: no admission control
            fake.rejected = 0
            load.steady(MODELS["anchor"], rates, anchor_s, raw=True)
            time.sleep(LATENCY * 3)
            anchor_429 = fake.rejected
            anchor_calls = len(arrivals(fake, MODELS["anchor"], 0))

            # 2. CRITICAL alone
            start = time.monotonic()
            load.steady(MODELS["alone"], {Priority.CRITICAL: critical_rate}, alone_s)
            time.sleep(2)
            alone = waits(load, arrivals(fake, MODELS["alone"], start), "CRITICAL")

            # 3. CRITICAL + saturating BATCH
            fake.rejected = 0
            start = time.monotonic()
            load.steady(MODELS["mixed"], rates, mixed_s)
            end = time.monotonic()
            mixed_429 = fake.rejected
            seen = arrivals(fake, MODELS["mixed"], start)
            mixed = waits(load, seen, "CRITICAL")
            usage = window_usage(fake, MODELS["mixed"], start, end, window)
            batch_done = sum(1 for _, i in seen if i.startswith("BATCH"))

            # 4. budget: 64 CRITICAL calls at once against a $2 day
            for _ in range(64):
                load.submit(BUDGET_MODEL, Priority.CRITICAL, time.time() + 30)
            time.sleep(4 if quick else 8)
            spent = sum(
                cost_usd(BUDGET_PRICE, r.usage["prompt_tokens"], r.usage["completion_tokens"])
                for r in list(fake.requests)
                if r.body.get("model") == BUDGET_MODEL and r.usage
            )
            prompt_max = 40
            one_call = cost_usd(BUDGET_PRICE, prompt_max, MAX_TOKENS)
            admitted_budget = sum(
                1 for r in list(fake.requests) if r.body.get("model") == BUDGET_MODEL
            )

            # 5. one 429 with Retry-After: 5 under load
            time.sleep(window if quick else 5)
            pause_model = "gpt-4o"  # a limited model whose window is idle by now
            fake.script.append(
                Reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "5"})
            )
            mark = len(fake.requests)
            pause_ids = [
                load.submit(pause_model, Priority.NORMAL, time.time() + 120) for _ in range(48)
            ]
            lost = wait_done(fake, load, pause_ids, 60)
            after = list(fake.requests)[mark:]
            refused_at = next(r.at for r in after if r.status == 429)
            inside = [r for r in list(fake.requests) if refused_at + 0.3 < r.at < refused_at + 5.0]
        finally:
            services.stop_all(workers)
    flush(url)

    critical_alone, critical_mixed = p99(alone), p99(mixed)
    measurements += [
        Measurement(
            SECTION, "429 responses, limiter on (mixed load)", mixed_429, "count",
            target="0", anchor="same load, limiter off", anchor_value=anchor_429,
            met=mixed_429 == 0,
            note=f"anchor made {anchor_calls} calls in {anchor_s:.0f} s; "
            f"mixed phase {mixed_s:.0f} s, window {window:.0f} s",
        ),
        Measurement(
            SECTION, "TPM used / cap (mixed, median window)", usage / cap, "ratio",
            target=">= 0.9", met=usage / cap >= 0.9,
            note=f"{usage:.0f} of {cap} tokens per {window:.0f} s; {batch_done} BATCH calls ran",
        ),
        Measurement(
            SECTION, "CRITICAL p99 wait, BATCH saturating", critical_mixed * 1000, "ms",
            target="<= 1.2x alone", anchor="CRITICAL alone, same rate",
            anchor_value=critical_alone * 1000,
            met=critical_mixed <= 1.2 * critical_alone,
            note=f"{len(mixed)} vs {len(alone)} CRITICAL calls; wait = submit to provider arrival; "
            f"medians {statistics.median(mixed) * 1000:.0f} vs {statistics.median(alone) * 1000:.0f} ms",
            samples=[w * 1000 for w in mixed], anchor_samples=[w * 1000 for w in alone],
        ),
        Measurement(
            SECTION, "budget overshoot, 64 calls / 32 in flight", max(0.0, spent - 2.0), "USD",
            target="<= one call's max cost", anchor="one call's max cost", anchor_value=one_call,
            met=spent - 2.0 <= one_call,
            note=f"spent ${spent:.3f} of $2.00 in {admitted_budget} calls",
        ),
        Measurement(
            SECTION, "calls inside a 5 s 429 pause", len(inside), "count",
            target="<= 1 (the probe)", met=len(inside) <= 1,
            note=f"lost {lost} of {len(pause_ids)} tasks (target 0); "
            "calls already in flight when the 429 came are not counted",
        ),
    ]  # fmt: skip
    return measurements


def _reload_settings() -> None:
    import importlib

    import celeryconfig
    from sluice.celery import app
    from sluice.settings import get_settings
    from sluice.store import reset_store_cache

    get_settings.cache_clear()
    reset_store_cache()
    importlib.reload(celeryconfig)
    app.conf.update(broker_url=celeryconfig.broker_url, result_backend=celeryconfig.result_backend)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--redis-url", default=services.REDIS_URL)
    args = parser.parse_args()
    print_table(run(args.quick, args.redis_url), "AI admission control vs no admission control")


if __name__ == "__main__":
    main()

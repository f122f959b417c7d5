"""Admission control for hosted AI providers: limits shared by the whole cluster, and 429 pauses.

Before a provider call goes out, :meth:`Admission.admit` reserves it in a quota ledger in the shared
store (one per provider and model, see :meth:`sluice.store.Store.reserve_quota`): one request, its
prompt tokens (counted with the model's real tokenizer from ``bpe-openai``, which ships OpenAI's
vocabularies and works offline; for other models estimated as one token per
:data:`BYTES_PER_TOKEN_ESTIMATE` bytes, rounded up) plus its ``max_tokens``, and the cost of both at
the model's price. After the call, :meth:`Ticket.settle` replaces that with the usage the provider
reported, giving back the difference; a call that failed before reaching the provider is released.
A reservation's lease lapses if its worker dies, so nothing leaks.

Work below :data:`sluice.taskcontext.URGENT_PRIORITY` may hold at most ``1 - reserve`` of each
limit (its own calls counted), so it saturates that share while HIGH and CRITICAL use the rest. A
call that does not fit raises :class:`~sluice.errors.RetryLater` with the time its share will be
free: workers never sleep.

A 429 (or a 503 with ``Retry-After``) from the provider pauses it for the whole cluster: the first
worker to see it records the pause in the store, and every worker holds its calls until the pause
ends, except one probe in the pause's last :data:`PROBE_LEAD` seconds (a probe that is refused
again extends the pause).

Only the provider call path runs this (a cache hit reserves and spends nothing).
"""

from __future__ import annotations

import functools
import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sluice.ai.base import Usage
from sluice.errors import BackendUnavailable, InvalidInput, RetryLater
from sluice.pricing import cost_usd
from sluice.retrying import backoff_with_jitter
from sluice.settings import AILimit
from sluice.store import BufferedCounters, Quota, QuotaGrant, Store
from sluice.taskcontext import URGENT_PRIORITY, current_priority

log = logging.getLogger(__name__)

#: Where the cluster-wide admission counters live (a counter hash in the shared store).
STATS_KEY = "ai:admission:stats"
#: Counted events per ``provider/model`` scope (``refused_<reason>`` for each refusal reason).
EVENTS = (
    "admitted",
    "tokens_reserved",
    "tokens_used",
    "cost_used_micro_usd",
    "refused_requests",
    "refused_tokens",
    "refused_cost",
    "refused_paused",
    "refused_store",
    "rate_limited",
    "probes",
    "paused_ms",
)
#: Why an admission was refused (``refused_<reason>`` events).
REFUSAL_REASONS = ("requests", "tokens", "cost", "paused", "store")
#: The documented estimate for models without an offline tokenizer: UTF-8 bytes per token. English
#: prose averages about 4; code and non-Latin text run denser, so 3 over-reserves slightly.
BYTES_PER_TOKEN_ESTIMATE = 3
#: Tokens OpenAI adds per chat message (role, separators) and to prime the reply.
TOKENS_PER_MESSAGE = 4
REPLY_PRIMING_TOKENS = 3
#: Output tokens reserved for a chat request that does not set ``max_tokens``.
DEFAULT_MAX_TOKENS = 4096
#: A refused call comes back no sooner than this (plus jitter) even when its tokens free up sooner:
#: under saturation a sliding window frees a little every instant, and a backlog re-checking every
#: few milliseconds would spend the workers on bouncing messages.
MIN_RETRY = 0.5
#: A call whose ledger cannot be reached (store outage) is held this long, then tried again.
STORE_RETRY = 2.0
#: A 429 without ``Retry-After`` pauses the provider this long.
DEFAULT_PAUSE = 2.0
#: The single probe of a pause may go out only in its last this-many seconds (or its second half).
PROBE_LEAD = 1.0


@functools.cache
def _encoding(model: str) -> Any | None:
    """The model's offline tokenizer, or None when bpe-openai has none for it.

    A dated or suffixed name (``gpt-4o-2024-08-06``) uses its family's tokenizer (``gpt-4o``).
    """
    import bpe_openai

    name = model
    while name:
        try:
            return bpe_openai.get_encoding(bpe_openai.encoding_name_for_model(name))
        except (bpe_openai.TokenizerError, KeyError, ValueError):
            name = name.rpartition("-")[0]
    return None


def count_tokens(text: str, model: str) -> int:
    """Tokens of ``text`` for ``model``: exact where bpe-openai knows the model, else estimated."""
    encoding = _encoding(model)
    if encoding is None:
        return math.ceil(len(text.encode()) / BYTES_PER_TOKEN_ESTIMATE)
    return len(encoding.encode_ordinary(text))


def _text_of(content: object) -> str:
    """The text of a message's content: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return ""


def request_tokens(payload: Mapping[str, Any]) -> tuple[int, int]:
    """``(prompt tokens, most output tokens)`` of a ``/chat/completions`` or ``/embeddings`` body."""
    model = str(payload.get("model", ""))
    if "messages" in payload:
        prompt = REPLY_PRIMING_TOKENS + sum(
            TOKENS_PER_MESSAGE
            + count_tokens(str(message.get("role", "")), model)
            + count_tokens(_text_of(message.get("content")), model)
            for message in payload["messages"]
        )
        limit = payload.get("max_completion_tokens") or payload.get("max_tokens")
        output = limit if isinstance(limit, int) and limit > 0 else DEFAULT_MAX_TOKENS
        return prompt, output * max(1, int(payload.get("n") or 1))
    inputs = payload.get("input", [])
    texts = [inputs] if isinstance(inputs, str) else list(inputs)
    return sum(count_tokens(str(text), model) for text in texts), 0


@dataclass(frozen=True)
class ModelLimit:
    """One model's ledger: its caps, headroom share, and price (USD per 1K prompt, completion)."""

    quota: Quota
    reserve: float
    price: tuple[float, float]


class Ticket:
    """One admitted call: settle it with the provider's usage, or release it if it never ran."""

    def __init__(
        self,
        admission: Admission,
        model: str,
        reservation: str | None,
        prompt: int,
        output: int,
        probe: bool,
    ) -> None:
        self.admission = admission
        self.model = model
        self.reservation = reservation
        self.prompt = prompt
        self.output = output
        #: Whether this call is the one probe allowed while the provider is paused.
        self.probe = probe

    def settle(self, usage: Usage) -> None:
        """Record what the call used; without usage in the reply, the reservation stands."""
        prompt, completion = usage.prompt_tokens, usage.completion_tokens
        if not (prompt or completion or usage.total_tokens):
            prompt, completion = self.prompt, self.output
        self.admission._settle(self, prompt, completion)

    def release(self) -> None:
        """Give the whole reservation back (the call did not reach the provider)."""
        self.admission._release(self)


class Admission:
    """Admission control of one provider (``name``) for every model it has limits for.

    :param limits: the :class:`~sluice.settings.AILimit` entries of this provider.
    :param prices: the price table (USD per 1K prompt and completion tokens by model).
    :param store: the shared store, or a callable returning it (default: the process's store).
    :param lease: seconds a reservation holds if its call is neither settled nor released.
    :param window: seconds ``rpm`` and ``tpm`` are counted over (a minute, except in tests).
    :param stats: where to count events (default: a buffer of its own on ``store``); pass one that
        lives as long as the process when admissions are short-lived, so no count is dropped.
    """

    def __init__(
        self,
        name: str,
        limits: Sequence[AILimit],
        prices: Mapping[str, tuple[float, float]],
        store: Store | Callable[[], Store] | None = None,
        lease: float = 600.0,
        window: float = 60.0,
        stats: BufferedCounters | None = None,
    ) -> None:
        if not math.isfinite(lease) or lease <= 0:
            raise InvalidInput(f"lease must be a positive number of seconds, got {lease!r}")
        self.name = name
        self.lease = lease
        self.limits: dict[str, ModelLimit] = {}
        for limit in limits:
            if limit.provider != name:
                continue
            if limit.model not in prices:
                raise InvalidInput(f"no price for {limit.model!r}; add it to SLUICE_CACHE_PRICES")
            quota = Quota(
                requests=limit.rpm,
                tokens=limit.tpm,
                cost_per_day=limit.usd_per_day,
                window=window,
            )
            self.limits[limit.model] = ModelLimit(quota, limit.reserve, prices[limit.model])
        if store is None:
            from sluice.store import get_store

            store = get_store
        self._store = store if callable(store) else (lambda: store)
        self.stats = stats or BufferedCounters.in_hash(self._store, STATS_KEY)

    def __repr__(self) -> str:
        return f"Admission({self.name!r}, models={sorted(self.limits)})"

    @property
    def store(self) -> Store:
        return self._store()

    def ledger_key(self, model: str) -> str:
        return f"ai:quota:{self.name}:{model}"

    @property
    def pause_key(self) -> str:
        return f"ai:pause:{self.name}"

    def _scope(self, model: str) -> str:
        return f"{self.name}/{model}"

    # -- before the call -----------------------------------------------------------------------

    def admit(self, payload: Mapping[str, Any]) -> Ticket:
        """Reserve the call ``payload`` describes, or raise :class:`RetryLater` saying when to.

        Raises :class:`InvalidInput` for a request larger than its limit, which no wait can admit.
        """
        model = str(payload.get("model", ""))
        probe = self._check_pause(model)
        prompt, output = request_tokens(payload)
        limit = self.limits.get(model)
        if limit is None:
            return Ticket(self, model, None, prompt, output, probe)
        tokens = prompt + output
        cost = cost_usd(limit.price, prompt, output)
        urgent = current_priority.get() >= URGENT_PRIORITY
        share = 1.0 if urgent else 1.0 - limit.reserve
        quota = limit.quota
        for what, amount, cap in (
            ("tokens", tokens, quota.tokens),
            ("USD", cost, quota.cost_per_day),
        ):
            if cap is not None and amount > cap * share:
                raise InvalidInput(
                    f"a {self.name}:{model} request needing {amount:g} {what} can never fit its "
                    f"limit of {cap * share:g} for this priority; lower max_tokens or the input"
                )
        reservation = secrets.token_hex(8)
        scope = self._scope(model)
        try:
            grant = self.store.reserve_quota(
                self.ledger_key(model),
                reservation,
                quota,
                tokens=tokens,
                cost=cost,
                share=share,
                lease=self.lease,
            )
        except BackendUnavailable as exc:
            # A limit is a promise: without the ledger, hold the call (not a failed attempt).
            self.stats.incr(scope, "refused_store")
            raise RetryLater(STORE_RETRY + _spread(STORE_RETRY), f"{scope}: {exc}") from None
        if not grant.granted:
            self.stats.incr(scope, f"refused_{grant.reason}")
            wait = max(grant.wait_seconds, MIN_RETRY)
            raise RetryLater(wait + _spread(wait), f"{scope} {grant.reason} limit reached")
        self.stats.incr(scope, "admitted")
        self.stats.incr(scope, "tokens_reserved", tokens)
        return Ticket(self, model, reservation, prompt, output, probe)

    def _check_pause(self, model: str) -> bool:
        """Raise RetryLater while the provider is paused, except for the one probe; True for it."""
        store = self.store
        try:
            info = store.get(self.pause_key)  # one round trip on the hot path; absent unless paused
        except BackendUnavailable as exc:
            # Fail open: a pause only spares the provider; were it still limiting, it says 429.
            log.warning("cannot read the %s pause (%s); calling anyway", self.name, exc)
            return False
        if not isinstance(info, dict):
            return False
        remaining = float(info["until"]) - time.time()
        if remaining <= 0:
            return False
        if remaining <= min(PROBE_LEAD, float(info["seconds"]) / 2) and store.add(
            f"{self.pause_key}:probe", secrets.token_hex(8), ttl=remaining
        ):
            self.stats.incr(self._scope(model), "probes")
            return True
        self.stats.incr(self._scope(model), "refused_paused")
        raise RetryLater(remaining + _spread(remaining), f"{self.name} is paused after a 429")

    # -- after the call ------------------------------------------------------------------------

    def _settle(self, ticket: Ticket, prompt: int, completion: int) -> None:
        limit = self.limits.get(ticket.model)
        if limit is None or ticket.reservation is None:
            return
        cost = cost_usd(limit.price, prompt, completion)
        try:
            self.store.settle_quota(
                self.ledger_key(ticket.model),
                ticket.reservation,
                limit.quota,
                tokens=prompt + completion,
                cost=cost,
            )
        except BackendUnavailable as exc:
            # The call succeeded: failing the task now would make it again. The reservation (an
            # upper bound) stands until its lease lapses.
            log.warning(
                "could not settle a %s call (%s); its reservation stands", ticket.model, exc
            )
        scope = self._scope(ticket.model)
        self.stats.incr(scope, "tokens_used", prompt + completion)
        self.stats.incr(scope, "cost_used_micro_usd", round(cost * 1e6))

    def _release(self, ticket: Ticket) -> None:
        limit = self.limits.get(ticket.model)
        if limit is not None and ticket.reservation is not None:
            try:
                self.store.release_quota(
                    self.ledger_key(ticket.model), ticket.reservation, limit.quota
                )
            except BackendUnavailable as exc:
                log.warning(
                    "could not release a %s reservation (%s); its lease will", ticket.model, exc
                )

    def rate_limited(self, ticket: Ticket, retry_after: float | None) -> RetryLater:
        """The provider refused ``ticket``'s call: release it, pause the provider cluster-wide, and
        return the :class:`RetryLater` to raise. The first worker to see it records the pause; a
        refused probe extends it."""
        ticket.release()
        seconds = DEFAULT_PAUSE if retry_after is None else max(retry_after, 0.001)
        # The end as wall-clock time: hosts' clocks agree far better than a pause's length.
        info = {"seconds": seconds, "until": time.time() + seconds}
        scope = self._scope(ticket.model)
        self.stats.incr(scope, "rate_limited")
        store = self.store
        try:
            if store.add(self.pause_key, info, ttl=seconds) or ticket.probe:
                if ticket.probe:
                    store.set(self.pause_key, info, ttl=seconds)
                self.stats.incr(scope, "paused_ms", round(seconds * 1000))
                log.warning(
                    "%s answered 429: pausing it cluster-wide for %.3gs", self.name, seconds
                )
        except BackendUnavailable as exc:
            log.warning("%s answered 429 but the pause cannot be recorded: %s", self.name, exc)
        return RetryLater(seconds + _spread(seconds), f"{self.name} answered 429")

    # -- visibility ----------------------------------------------------------------------------

    def usage(self, model: str) -> QuotaGrant:
        """The model's ledger now (window usage, spent and pending cost)."""
        limit = self.limits[model]
        return self.store.quota_state(self.ledger_key(model), limit.quota)

    def report(self) -> dict[str, Any]:
        """Cluster-wide state and counters, JSON-ready (``sluice stats`` and Prometheus).

        ``models`` has one entry per limited model, and per model any event was counted for:
        its limits, what the current window and today's budget hold, and its counters.
        """
        totals, _ = self.stats.totals()
        prefix = f"{self.name}/"
        counted = {
            field.split(":", 1)[0][len(prefix) :] for field in totals if field.startswith(prefix)
        }
        models: dict[str, Any] = {}
        for model in sorted(set(self.limits) | counted):
            scope = self._scope(model)
            entry: dict[str, Any] = {
                event: totals[f"{scope}:{event}"]
                for event in EVENTS
                if not event.startswith("refused_")
            }
            entry["refused"] = {
                reason: totals[f"{scope}:refused_{reason}"] for reason in REFUSAL_REASONS
            }
            limit = self.limits.get(model)
            if limit is not None:
                quota, state = limit.quota, self.usage(model)
                entry["limits"] = {
                    "rpm": quota.requests,
                    "tpm": quota.tokens,
                    "usd_per_day": quota.cost_per_day,
                    "reserve": limit.reserve,
                    "window_seconds": quota.window,
                }
                entry["window"] = {"requests": state.requests, "tokens": state.tokens}
                spent = state.cost_spent + state.cost_pending
                entry["budget"] = {
                    "spent_usd": state.cost_spent,
                    "pending_usd": state.cost_pending,
                    "remaining_usd": (
                        None if quota.cost_per_day is None else max(0.0, quota.cost_per_day - spent)
                    ),
                }
            models[model] = entry
        pause = self.store.get(self.pause_key)
        remaining = float(pause["until"]) - time.time() if isinstance(pause, dict) else 0.0
        return {"models": models, "paused_for_seconds": max(0.0, remaining)}


def _spread(wait: float) -> float:
    """A little jitter so tasks held together do not all come back in the same instant."""
    ceiling = min(1.0, max(wait, 0.01) / 4)
    return backoff_with_jitter(0, ceiling, ceiling)

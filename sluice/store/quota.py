"""The quota ledger's arithmetic, in Python, for backends that run it inside a transaction.

A ledger is a set of entries ``id -> [stamp, lease_until, tokens, cost, settled, restricted]`` and the
cost spent on the current UTC day. A settled entry counts in the sliding window until
``stamp + window``; an unsettled one (a reservation) counts until it is settled, released, or its
lease lapses. ``restricted`` marks entries reserved with a share below 1: restricted work may hold at
most ``share`` of the window's requests and tokens (its own entries counted), every entry together at
most all of it; the day's budget admits restricted work only while spent plus pending stays within
``share`` of it.

Refused callers are spaced out: each refusal of a class (restricted or not) is told to come back at
the later of "when the window frees enough" and the class's cursor, which then moves on by the time
the limit takes to free that request's share (``amount * window / limit``). A backlog of waiters so
returns about as fast as capacity frees, instead of all at once to be refused again. The Redis
backend runs the same steps as one Lua script (``sluice.store.redis._QUOTA_*``); the store contract
tests hold both to the same behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sluice.store.base import Quota, QuotaGrant

DAY = 86400.0
#: When today's pending (unsettled) reservations are all that blocks the budget, check back this
#: soon: they settle as their calls return, usually giving some of it back.
PENDING_RECHECK = 1.0
#: A ledger untouched this long is gone (it outlives any window, lease and day it holds).
LEDGER_TTL = 2 * DAY


@dataclass
class Ledger:
    """A ledger's state: ``entries`` maps reservation ids to
    ``[stamp, until, tokens, cost, done, restricted]``."""

    entries: dict[str, list[float]] = field(default_factory=dict)
    day: int = 0
    spent: float = 0.0
    #: When the next refused caller of each class (``"0"`` any, ``"1"`` restricted) may come back.
    cursors: dict[str, float] = field(default_factory=dict)

    def to_data(self) -> dict[str, object]:
        return {"e": self.entries, "d": self.day, "s": self.spent, "q": self.cursors}

    @classmethod
    def from_data(cls, data: dict[str, object] | None) -> Ledger:
        if not data:
            return cls()
        entries = data.get("e") or {}
        cursors = data.get("q") or {}
        assert isinstance(entries, dict) and isinstance(cursors, dict)
        return cls(
            {str(k): [float(x) for x in v] for k, v in entries.items()},
            int(data.get("d") or 0),  # type: ignore[call-overload]
            float(data.get("s") or 0.0),  # type: ignore[arg-type]
            {str(k): float(v) for k, v in cursors.items()},
        )

    def expire(self, now: float, window: float) -> None:
        """Drop entries past their window or lease, and yesterday's spending."""
        today = int(now // DAY)
        if self.day != today:
            self.day, self.spent = today, 0.0
        self.entries = {
            rid: entry
            for rid, entry in self.entries.items()
            if (entry[0] + window > now if entry[4] else entry[1] > now)
        }

    def state(self, granted: bool, wait: float, reason: str | None) -> QuotaGrant:
        pending = sum(entry[3] for entry in self.entries.values() if not entry[4])
        return QuotaGrant(
            granted=granted,
            wait_seconds=wait,
            reason=reason,
            requests=float(len(self.entries)),
            tokens=float(sum(entry[2] for entry in self.entries.values())),
            cost_spent=self.spent,
            cost_pending=float(pending),
        )

    def reserve(
        self,
        now: float,
        reservation: str,
        quota: Quota,
        tokens: float,
        cost: float,
        share: float,
        lease: float,
    ) -> QuotaGrant:
        self.expire(now, quota.window)
        current = self.state(False, 0.0, None)
        restricted = share < 1
        for reason, cap, amount, index in (
            ("requests", quota.requests, 1.0, None),
            ("tokens", quota.tokens, tokens, 2),
        ):
            if cap is None:
                continue
            limits = [(cap, False)] + ([(cap * share, True)] if restricted else [])
            for limit, only_restricted in limits:
                used = self._used(index, only_restricted)
                if used + amount > limit:
                    excess = used + amount - limit
                    wait = self._window_wait(now, quota.window, excess, index, only_restricted)
                    cursor = str(int(restricted))
                    at = max(now + wait, self.cursors.get(cursor, 0.0))
                    self.cursors[cursor] = at + amount * quota.window / limit
                    return self.state(False, at - now, reason)
        if quota.cost_per_day is not None:
            budget = quota.cost_per_day * share
            if current.cost_spent + cost > budget:
                return self.state(False, (self.day + 1) * DAY - now, "cost")
            if current.cost_spent + current.cost_pending + cost > budget:
                return self.state(False, PENDING_RECHECK, "cost")
        self.entries[reservation] = [now, now + lease, tokens, cost, 0.0, float(restricted)]
        return self.state(True, 0.0, None)

    def _used(self, index: int | None, only_restricted: bool) -> float:
        """Requests (``index`` None) or column ``index`` summed over the (restricted) entries."""
        return float(
            sum(
                1.0 if index is None else entry[index]
                for entry in self.entries.values()
                if entry[5] or not only_restricted
            )
        )

    def _window_wait(
        self, now: float, window: float, excess: float, index: int | None, only_restricted: bool
    ) -> float:
        """Seconds until (restricted) entries holding at least ``excess`` (requests, or column
        ``index``) leave the window; an unsettled entry is assumed to settle now and count a
        window more."""
        releases = sorted(
            (
                entry[0] + window if entry[4] else now + window,
                1.0 if index is None else entry[index],
            )
            for entry in self.entries.values()
            if entry[5] or not only_restricted
        )
        freed = 0.0
        for at, amount in releases:
            freed += amount
            if freed >= excess:
                return max(0.0, at - now)
        return window

    def settle(
        self, now: float, reservation: str, quota: Quota, tokens: float, cost: float
    ) -> None:
        self.expire(now, quota.window)
        # A reservation that lapsed meanwhile is unknown: count it as restricted (the cautious side).
        restricted = self.entries.get(reservation, [1.0] * 6)[5]
        self.entries[reservation] = [now, 0.0, tokens, 0.0, 1.0, restricted]
        self.spent += cost

    def release(self, reservation: str) -> bool:
        entry = self.entries.get(reservation)
        if entry is None or entry[4]:
            return False
        del self.entries[reservation]
        return True

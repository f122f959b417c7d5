"""What the task being run is, for the layers below the workers that must act on it.

The task layer sets :data:`current_priority` around each handler call; admission control (``sluice.ai``)
reads it to decide whether a call may use the headroom kept for urgent work. It lives here, below
both, so neither imports the other.
"""

from __future__ import annotations

from contextvars import ContextVar

#: ``Priority`` value of the task whose code is running (NORMAL, 5, outside any task).
current_priority: ContextVar[int] = ContextVar("sluice_current_priority", default=5)
#: Priorities at or above this (HIGH, CRITICAL) may use the reserved headroom of a limit.
URGENT_PRIORITY = 7

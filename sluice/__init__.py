"""sluice: a Celery-based distributed worker platform for AI code review.

The Celery app lives in :mod:`sluice.celery` (``celery -A sluice worker`` finds it there); importing
this package stays cheap so the CLI and libraries do not pay for Celery until they use it.
"""

__version__ = "0.1.0"

"""Celery settings for sluice, derived from :mod:`sluice.settings` (``SLUICE_*`` variables).

Loaded by ``sluice.celery.app`` through ``config_from_object``. Every value a deployment may need
to change is a ``SLUICE_*`` variable, so this module holds policy, not configuration.
"""

from __future__ import annotations

from sluice.settings import get_settings
from sluice.workers.backend import result_backend_url
from sluice.workers.brokers import declared_queues, physical_queue
from sluice.workers.priority import PRIORITY_QUEUES

_settings = get_settings()

#: Longest a dead worker can block other workers' restores of unacknowledged messages (Redis).
UNACKED_MUTEX_EXPIRE = 30

#: Longest countdown/ETA sluice ever schedules (retries and rate-limit waits are capped to it).
MAX_COUNTDOWN_SECONDS = _settings.max_countdown

broker_url = _settings.broker_url
# Celery's Redis and database backends, with two changes (sluice.workers.backend): no SUBSCRIBE per
# published sluice task (they are polled), and no bulk arguments in extended results.
result_backend = result_backend_url(_settings.result_backend)
result_extended = True
result_expires = 24 * 3600
broker_connection_retry_on_startup = True
broker_connection_max_retries = None  # a restarted broker is waited for, never given up on
# Result reads and writes survive a backend restart instead of failing the task or the caller.
result_backend_always_retry = True
result_backend_max_retries = 30
redis_retry_on_timeout = True
redis_socket_keepalive = True

# JSON only: nothing that crosses a process is ever pickled.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]
event_serializer = "json"
# A message that bypassed submit_task and cannot be decoded (nested too deeply for the pool to pickle,
# not JSON) is dead-lettered raw by this consumer, never dropped, never fatal to the worker.
worker_consumer = "sluice.workers.poison:PoisonSafeConsumer"

# ASYNC_PROCESSING_ENABLED=false: every task, group and chord runs in the calling process.
task_always_eager = not _settings.async_processing_enabled

# A task is acknowledged after it ran, and redelivered if its worker dies mid-task.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
# A task running when the broker connection drops runs on: its provider call finishes and is cached,
# and the redelivered copy (it could not be acknowledged) is answered from the cache. Cancelling it
# would throw away a provider call in flight and make the copy call again.
worker_cancel_long_running_tasks_on_connection_loss = False
task_track_started = True
task_send_sent_event = True
worker_send_task_events = True

# Chord unlock polls (result backends without native chords, such as the embedded SQLite one):
# Celery's 1 s would add up to a second to every short batch.
result_chord_retry_interval = 0.2

# Declared from sluice's own policy (``sluice.workers.brokers``): on RabbitMQ one durable classic
# queue with x-max-priority carries the four priority levels, because RabbitMQ orders by priority
# only within a queue.
task_queues = declared_queues(broker_url)
task_default_queue = physical_queue("normal", broker_url)
task_default_priority = 5
task_queue_max_priority = 10
#: Handler tasks are routed per call (``Priority.route``); maintenance runs on ``low``.
_low = physical_queue("low", broker_url)
task_routes = {"sluice.prune_*": {"queue": _low}, "sluice.cdn.*": {"queue": _low}}

_broker_options: dict[str, object] = {}
if _settings.broker_url.startswith(("redis://", "rediss://")):
    from sluice.workers.redisbroker import use_for_redis_urls

    # kombu's Redis transport, except that a message is recorded as unacknowledged in the same
    # atomic step that takes it off its queue: a consumer killed mid-take loses nothing.
    use_for_redis_urls()
    # Drain queues in the order a worker lists them (critical first), and never redeliver a
    # message whose countdown is still pending: the visibility timeout must exceed any countdown.
    _broker_options = {
        "queue_order_strategy": "priority",
        "visibility_timeout": _settings.visibility_timeout,
        # A dead worker's unacknowledged messages are looked for this often (kombu's default scans
        # only every 10th sweep of 10 s), so they come back soon after the visibility timeout.
        "unacked_restore_interval": max(1, min(10, int(_settings.visibility_timeout // 4))),
        "unacked_restore_throttle": 1,
        # One worker at a time restores, under a mutex in Redis. A worker killed while holding it
        # (SIGKILL, OOM) blocked every restore for kombu's 5 minutes, so a message the dead worker
        # had taken stayed invisible that long (the SIGKILL and redelivery drills under load). A
        # restore pass takes milliseconds; 30 s bounds that gap.
        "unacked_mutex_expire": UNACKED_MUTEX_EXPIRE,
    }
elif _settings.broker_url.startswith(("amqp://", "amqps://", "pyamqp://")):
    # Publisher confirms: a publish returns once RabbitMQ has the message, so a submission that
    # returned is never lost in transit, and priority ordering starts from the moment it returns
    # (without them, under load, tasks went on starting while a CRITICAL publish was in flight).
    _broker_options = {"confirm_publish": True}
elif _settings.broker_url.startswith("filesystem://"):
    from sluice.workers.fsbroker import SCHEME

    # kombu's filesystem transport, with atomic message files. The host means nothing to it; named,
    # kombu does not warn "No hostname was supplied" on every new pooled connection.
    broker_url = f"{SCHEME}://localhost/"
    _folder = str(_settings.broker_dir)
    # kombu's filesystem transport polls once a second by default: far too slow for a CLI run.
    _broker_options = {
        "data_folder_in": _folder,
        "data_folder_out": _folder,
        "control_folder": str(_settings.data_dir / "broker-control"),
        "store_processed": False,
        "polling_interval": 0.005,
    }
broker_transport_options = _broker_options
result_backend_transport_options = (
    {"visibility_timeout": _settings.visibility_timeout}
    if _settings.result_backend.startswith("redis")
    else {}
)
database_engine_options = {"connect_args": {"timeout": 30}} if "sqlite" in result_backend else {}

#: Priority workers drain these, in this order; batch workers run with ``-Q batch``.
worker_default_queues = list(PRIORITY_QUEUES)

# Beat: only tasks that exist are scheduled; later capabilities add their own entries.
beat_schedule: dict[str, dict[str, object]] = {
    "prune-analysis-sessions": {
        "task": "sluice.prune_analysis_sessions",
        "schedule": 24 * 3600.0,
        "options": {"queue": _low, "priority": 3},
    },
    "prune-dead-letters": {
        "task": "sluice.prune_dead_letters",
        "schedule": 24 * 3600.0,
        "options": {"queue": _low, "priority": 3},
    },
}
_cdn = _settings.cdn  # not sluice.cdn: its package imports compression, brotli and Prometheus
beat_schedule.update(
    {
        "cdn-flush-invalidations": {
            "task": "sluice.cdn.flush_invalidations",
            "schedule": _cdn.flush_interval,
            "options": {"queue": _low, "priority": 4},
        },
        "cdn-compress-static": {
            "task": "sluice.cdn.compress_static",
            "schedule": _cdn.compress_interval,
            "options": {"queue": _low, "priority": 3},
        },
        "cdn-hit-ratio": {
            "task": "sluice.cdn.update_hit_ratio",
            "schedule": _cdn.hit_ratio_interval,
            "options": {"queue": _low, "priority": 3},
        },
    }
)
beat_schedule_filename = str(_settings.data_dir / "celerybeat-schedule")

timezone = "UTC"
enable_utc = True

import importlib

import pytest

from sluice.errors import InvalidInput
from sluice.settings import get_settings
from sluice.workers.priority import ALL_QUEUES, Priority, route


def test_priorities_map_to_their_queues_in_urgency_order() -> None:
    assert [p.queue for p in sorted(Priority, reverse=True)] == list(ALL_QUEUES)
    assert route(Priority.CRITICAL) == {"queue": "critical", "priority": 9}
    assert route("batch") == {"queue": "batch", "priority": 0}
    assert Priority.parse(7) is Priority.HIGH


@pytest.mark.parametrize("bad", ["urgent", 8, None, True])
def test_unknown_priority_is_invalid_input(bad: object) -> None:
    with pytest.raises(InvalidInput, match="unknown priority"):
        Priority.parse(bad)  # type: ignore[arg-type]


def test_app_is_json_only_late_ack_and_declares_every_queue() -> None:
    from sluice.celery import app

    conf = app.conf
    assert conf.task_serializer == conf.result_serializer == "json"
    assert list(conf.accept_content) == ["json"]
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert [q.name for q in conf.task_queues] == list(ALL_QUEUES)
    app.loader.import_default_modules()  # what every worker does at start-up
    assert {"sluice.run_batch", "sluice.microbatch"} <= set(app.tasks)
    # the main job's handlers, each its own task, come in through the app's include list
    builtin = {
        "sluice.handlers.analysis",
        "sluice.handlers.embedding",
        "sluice.handlers.security_alert",
    }
    assert builtin <= set(app.tasks)
    # Embedded default: the filesystem broker under the data dir, polled fast.
    options = conf.broker_transport_options
    assert options["data_folder_in"] == str(get_settings().broker_dir)
    assert options["polling_interval"] < 0.1


def test_redis_broker_gets_strict_priority_and_a_long_visibility_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kombu.transport import TRANSPORT_ALIASES

    import celeryconfig
    from sluice import settings as settings_module

    monkeypatch.setenv("SLUICE_BROKER_URL", "redis://127.0.0.1:6379/0")
    # kombu's own alias, as in a process that has not loaded the config yet.
    monkeypatch.setitem(TRANSPORT_ALIASES, "redis", "kombu.transport.redis:Transport")
    settings_module.get_settings.cache_clear()
    try:
        config = importlib.reload(celeryconfig)
        options = config.broker_transport_options
        assert options["queue_order_strategy"] == "priority"
        assert options["visibility_timeout"] > config.MAX_COUNTDOWN_SECONDS
        # redis:// connections use sluice's transport, which keeps a message taken mid-outage.
        from kombu import Connection

        from sluice.workers.redisbroker import Transport

        assert isinstance(Connection(config.broker_url).transport, Transport)
        assert options["unacked_mutex_expire"] == config.UNACKED_MUTEX_EXPIRE
    finally:
        monkeypatch.delenv("SLUICE_BROKER_URL")
        settings_module.get_settings.cache_clear()
        importlib.reload(celeryconfig)


def test_every_beat_entry_names_a_registered_task() -> None:
    from sluice.celery import app

    app.loader.import_default_modules()
    assert app.conf.beat_schedule
    for name, entry in app.conf.beat_schedule.items():
        assert entry["task"] in app.tasks, name


def test_rabbitmq_broker_gets_one_priority_queue_for_every_route() -> None:
    import celeryconfig
    from tests.worker_fixtures import settings_env

    try:
        with settings_env(SLUICE_BROKER_URL="amqp://guest:guest@127.0.0.1:5672//"):
            config = importlib.reload(celeryconfig)
            assert [q.name for q in config.task_queues] == ["priority", "batch"]
            assert config.task_default_queue == "priority"
            assert {route["queue"] for route in config.task_routes.values()} == {"priority"}
            assert {e["options"]["queue"] for e in config.beat_schedule.values()} == {"priority"}
            # A returned publish is one RabbitMQ has: nothing lost in transit.
            assert config.broker_transport_options["confirm_publish"] is True
    finally:
        importlib.reload(celeryconfig)  # back to the settings outside the block

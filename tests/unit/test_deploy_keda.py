"""The KEDA ScaledObject example: valid against the fields KEDA requires, and scaling on a metric
sluice exports, with labels that exist."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import pytest
import yaml

from tests.conftest import ROOT
from tests.unit.test_monitoring_deploy import exported_names, metric_names

SCALED_OBJECT = ROOT / "deploy/keda/priority-worker-scaledobject.yaml"
SCHEMA = json.loads((ROOT / "tests/deploy/keda_scaledobject.schema.json").read_text())


def document() -> dict[str, Any]:
    loaded = yaml.safe_load(SCALED_OBJECT.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_the_example_satisfies_the_schema() -> None:
    jsonschema.validate(document(), SCHEMA)


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d.pop("apiVersion"),
        lambda d: d["spec"].pop("scaleTargetRef"),
        lambda d: d["spec"]["triggers"][0]["metadata"].pop("query"),
        lambda d: d["spec"]["triggers"][0]["metadata"].__setitem__("threshold", 30),
        lambda d: d["spec"].__setitem__("triggers", []),
        lambda d: d["spec"].__setitem__("scaleTargetref", {"name": "typo"}),
    ],
    ids=["no-apiVersion", "no-target", "no-query", "numeric-threshold", "no-trigger", "typo"],
)
def test_the_schema_rejects_what_keda_would(breakage: Any) -> None:
    broken = copy.deepcopy(document())
    breakage(broken)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)


def test_it_scales_on_the_oldest_message_age_sluice_exports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    query = document()["spec"]["triggers"][0]["metadata"]["query"]
    used = metric_names(query)
    assert used == {"sluice_queue_oldest_message_age_seconds"}
    assert used <= exported_names(monkeypatch)
    # every priority queue on both brokers is matched: the levels on Redis, "priority" on RabbitMQ
    for queue in ("critical", "high", "normal", "low", "priority"):
        assert queue in query

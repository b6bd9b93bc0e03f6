"""The Grafana dashboard of the agent's metrics (deploy/grafana/coordinator.json): a dashboard
Grafana imports (ids, grid, a Prometheus datasource variable), whose queries name only metrics the
agent exposes. tests/integration/test_prometheus.py has a real Prometheus parse every query."""

from __future__ import annotations

import json
import re
from pathlib import Path

from agent import metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "coordinator.json"
#: what Grafana puts in a query before sending it, for a check outside Grafana
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "15s"}


def queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in board["panels"] for target in panel["targets"]]


def as_prometheus_reads_it(query: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        query = query.replace(name, value)
    assert "$" not in query, f"a Grafana variable this check does not know: {query}"
    return query


def test_the_dashboard_is_one_grafana_imports() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] and board["title"] and isinstance(board["schemaVersion"], int)
    [variable] = board["templating"]["list"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["type"] in {"stat", "timeseries"} and panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_every_query_names_only_metrics_the_agent_exposes() -> None:
    families = [*metrics.REGISTRY.collect(), *metrics.WORKER_REGISTRY.collect()]
    exposed = {sample for family in families for sample in
               {family.name, f"{family.name}_total", f"{family.name}_bucket", f"{family.name}_count",
                f"{family.name}_sum"}}
    for query in queries():
        named = set(re.findall(r"\b(coordinator_[a-z_]+)", as_prometheus_reads_it(query)))
        assert named and named <= exposed, f"{query}: {sorted(named - exposed)} not exposed"


def test_the_dashboard_shows_what_an_operator_asks_first() -> None:
    text = " ".join(queries())
    for metric in ("coordinator_executions_total", "coordinator_time_to_recover_seconds_bucket",
                   "coordinator_worker_verdicts_total", "coordinator_worker_events_total",
                   "coordinator_active_faults", 'coordinator_reverts_total{outcome="failed"}'):
        assert metric in text, metric

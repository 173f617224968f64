"""Alerts and dashboards (Deploy/monitoring): the rules pass
`promtool check rules` and their unit tests (`promtool test rules`); every
/metrics a broker and a gateway serve passes `promtool check metrics`; and
every metric the rules and the Grafana dashboard ask for is one a broker
or a gateway really exports (or etcd's, or Prometheus's own `up`)."""
import asyncio
import json
import os
import re
import subprocess
import urllib.request

import pytest
from kafka import KafkaProducer
from nio import AsyncClient

from conftest import ROOT, BrokerProcess, unique
from test_chat import GatewayProcess, registered

MONITORING = os.path.join(ROOT, "Deploy", "monitoring")
RULES = os.path.join(MONITORING, "postduif-alerts.yml")
DASHBOARD = os.path.join(MONITORING, "postduif-dashboard.json")
# Not ours: Prometheus's scrape health, etcd's own, and PromQL's functions and keywords.
FOREIGN = {"up", "etcd_server_has_leader"}
PROMQL_WORDS = {"sum", "by", "rate", "increase", "max", "count", "on", "or", "and", "vector", "time", "histogram_quantile",
                "predict_linear", "le", "api", "instance", "job", "group", "topic", "certificate", "without"}


def scrape(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as response:
        return response.read().decode()


def exported_names(text):
    """Metric family names in a Prometheus text exposition (a histogram's
    _bucket, _sum and _count lines count under their family too)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, 1)[0])
    for name in list(names):
        for suffix in ("_bucket", "_sum", "_count"):
            names.add(name + suffix)
    return names


def referenced_names(expression):
    expression = re.sub(r'"[^"]*"', '""', expression)  # label values
    expression = re.sub(r"\[[^\]]*\]", "", expression)  # ranges
    words = set(re.findall(r"[a-zA-Z_][a-zA-Z0-9_]*", expression))
    return {word for word in words if word not in PROMQL_WORDS and (word.startswith("postduif_") or word in FOREIGN or "_" in word)}


@pytest.fixture(scope="module")
def scraped():
    """The /metrics of a broker that served a producer, and of a gateway that served a chat."""
    broker = BrokerProcess().start()
    gateway = GatewayProcess(broker).start()
    try:
        producer = KafkaProducer(bootstrap_servers=broker.address)
        for number in range(20):
            producer.send(unique("monitored"), b"m%d" % number)
        producer.flush()
        producer.close()

        async def chat():
            client = await registered(gateway.url, unique("watcher"))
            await client.sync(timeout=0)
            await client.close()
        asyncio.run(chat())
        yield {"broker": scrape(broker.http_port), "gateway": scrape(gateway.http_port)}
    finally:
        assert gateway.stop() == 0, gateway.read_log()
        assert broker.stop() == 0, broker.read_log()


def test_the_rules_pass_promtool_check_rules():
    result = subprocess.run(["promtool", "check", "rules", RULES], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"SUCCESS: \d+ rules found", result.stdout), result.stdout


def test_the_rules_pass_their_unit_tests():
    result = subprocess.run(["promtool", "test", "rules", "postduif-alerts.test.yml"], capture_output=True, text=True, cwd=MONITORING)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("side", ["broker", "gateway"])
def test_every_metrics_page_passes_promtool_check_metrics(scraped, side):
    result = subprocess.run(["promtool", "check", "metrics"], input=scraped[side], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "postduif_" in scraped[side]


def test_the_broker_reports_its_data_disk(scraped):
    free = re.search(r"^postduif_data_free_bytes (\S+)$", scraped["broker"], re.M)
    capacity = re.search(r"^postduif_data_capacity_bytes (\S+)$", scraped["broker"], re.M)
    assert free and capacity, "the disk gauges are missing"
    assert 0 < float(free.group(1)) <= float(capacity.group(1))


def test_every_metric_the_rules_and_the_dashboard_use_is_exported(scraped):
    exported = exported_names(scraped["broker"]) | exported_names(scraped["gateway"]) | FOREIGN
    # Exported only in some situations (a cluster, TLS, a group with lag): named by the code instead.
    sources = subprocess.run(["grep", "-rhoE", r'label: "postduif_[a-z_]+"', os.path.join(ROOT, "Sources")], capture_output=True, text=True).stdout
    declared = {line.split('"')[1] for line in sources.splitlines()}
    declared |= {name + suffix for name in declared for suffix in ("_bucket", "_sum", "_count")}
    with open(RULES) as f:
        rule_expressions = re.findall(r"^\s*expr: (.*)$", f.read(), re.M)
    with open(DASHBOARD) as f:
        dashboard = json.load(f)
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels), "panel ids repeat"
    dashboard_expressions = [target["expr"] for panel in panels for target in panel.get("targets", [])]
    assert len(rule_expressions) >= 10 and len(dashboard_expressions) >= 20
    unknown = set()
    for expression in rule_expressions + dashboard_expressions:
        for name in referenced_names(expression):
            if name not in exported and name not in declared:
                unknown.add(name)
    assert not unknown, "metrics neither exported nor declared: %s" % sorted(unknown)
    # Most of what the dashboard shows is on the pages scraped right now.
    shown = {name for expression in dashboard_expressions for name in referenced_names(expression)}
    assert len(shown & exported) >= len(shown) * 2 // 3, sorted(shown - exported)

"""postduif-bench end to end: each workload runs a few seconds against a
broker the test started (and against NATS JetStream, started from Debian's
nats-server by the peer script), every message sent is counted as
acknowledged and, where a consumer runs, received; the report is valid
HTML with its charts. No timing assertions: speed is measured in
Docs/benchmarks.md, not here."""
import json
import os
import subprocess
import tempfile
import xml.dom.minidom

import pytest

from conftest import ROOT, free_port, unique

BENCH = os.environ.get("POSTDUIF_BENCH_BIN", os.path.join(ROOT, ".build", "debug", "postduif-bench"))
NATS_SCRIPT = os.path.join(ROOT, "Benchmarks", "peers", "nats", "nats.sh")


def bench(*args, timeout=120):
    folder = tempfile.mkdtemp(prefix="postduif-bench-test-")
    out_json = os.path.join(folder, "result.json")
    out_html = os.path.join(folder, "report.html")
    result = subprocess.run([BENCH, *args, "--json", out_json, "--html", out_html],
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, "postduif-bench failed: %s %s" % (result.stdout, result.stderr[-2000:])
    with open(out_json) as f:
        report = json.load(f)
    with open(out_html) as f:
        html = f.read()
    return report, html, result.stdout


def check_html(html, charts):
    assert html.startswith("<!DOCTYPE html>")
    # Well-formed markup (the doctype aside): the charts are inline SVG.
    xml.dom.minidom.parseString(html.replace("<!DOCTYPE html>\n", ""))
    for chart in charts:
        assert 'id="%s"' % chart in html
    assert html.count("<svg ") == len(charts)


def totals(report):
    assert len(report["results"]) == 1
    return report["results"][0]["figures"]["totals"]


@pytest.fixture(scope="module")
def kafka(broker):
    return "kafka://%s" % broker.address


def test_produce_closed_loop_counts_every_message(kafka):
    report, html, _ = bench("run", "produce", "--target", kafka, "--stream", unique("bench-produce"), "--seconds", "2")
    counts = totals(report)
    assert counts["sent"] > 0
    assert counts["acknowledged"] == counts["sent"]
    assert counts["errors"] == 0
    latency = report["results"][0]["figures"]["latency"]
    assert latency["count"] == counts["acknowledged"]
    assert latency["p50"] <= latency["p99"] <= latency["max"]
    check_html(html, ["throughput", "latency"])


def test_produce_open_loop_sends_the_scheduled_count(kafka):
    report, _, _ = bench("run", "produce", "--target", kafka, "--stream", unique("bench-rate"), "--rate", "2000", "--seconds", "2")
    counts = totals(report)
    # Message i is due at i / rate: 2 s at 2000/s schedules about 4000, all acknowledged.
    assert 3900 <= counts["sent"] <= 4001
    assert counts["acknowledged"] == counts["sent"]


def test_consume_from_start_reads_everything_the_fill_wrote(kafka):
    report, html, _ = bench("run", "consume", "--target", kafka, "--stream", unique("bench-consume"), "--count", "20000", "--seconds", "30")
    counts = totals(report)
    assert counts["received"] == 20000
    assert report["results"][0]["notes"] == []
    check_html(html, ["throughput"])


def test_e2e_receives_every_acknowledged_message_once(kafka):
    report, html, _ = bench("run", "e2e", "--target", kafka, "--stream", unique("bench-e2e"), "--rate", "1000", "--seconds", "2")
    counts = totals(report)
    assert counts["sent"] > 1900
    assert counts["acknowledged"] == counts["sent"]
    assert counts["received"] == counts["acknowledged"]
    assert report["results"][0]["figures"]["latency"]["count"] == counts["received"]
    check_html(html, ["throughput", "latency"])


def test_chat_counts_deliveries_to_online_members(kafka):
    report, _, _ = bench("run", "chat", "--target", kafka, "--stream", unique("conversations"), "--rate", "500", "--seconds", "2",
                         "--conversations", "100", "--members-max", "50", "--online", "0.5")
    counts = totals(report)
    assert counts["received"] == counts["acknowledged"] == counts["sent"] > 900
    # Every room has two or more members and about half are online: deliveries outnumber messages.
    assert counts["deliveries"] > counts["received"]
    assert report["results"][0]["figures"]["latency"]["count"] == counts["deliveries"]


def test_discard_target_measures_the_tool_alone():
    report, _, _ = bench("run", "produce", "--target", "discard://", "--seconds", "1")
    counts = totals(report)
    assert counts["sent"] > 0 and counts["acknowledged"] == counts["sent"]


@pytest.fixture(scope="module")
def nats():
    assert subprocess.run(["which", "nats-server"], capture_output=True).returncode == 0, "nats-server is missing: make deps installs it"
    state = tempfile.mkdtemp(prefix="postduif-nats-test-")
    os.rmdir(state)
    port = free_port()
    subprocess.run([NATS_SCRIPT, "start", "single", state], check=True, env={**os.environ, "NATS_PORT": str(port)}, timeout=60)
    yield "nats://127.0.0.1:%d" % port
    subprocess.run([NATS_SCRIPT, "stop", state], check=True, timeout=60)


def test_the_same_workloads_run_against_nats_jetstream(nats):
    report, _, _ = bench("run", "produce", "--target", nats, "--stream", "benchproduce", "--seconds", "2")
    counts = totals(report)
    assert counts["sent"] > 0 and counts["acknowledged"] == counts["sent"] and counts["errors"] == 0
    report, _, _ = bench("run", "e2e", "--target", nats, "--stream", "benche2e", "--rate", "1000", "--seconds", "2")
    counts = totals(report)
    assert counts["received"] == counts["acknowledged"] == counts["sent"] > 1900


def test_compare_runs_pairs_in_turns_and_reports_ratios(kafka, nats):
    report, html, out = bench("compare", "e2e", "--a", kafka, "--b", nats, "--pairs", "2", "--stream", "benchcompare",
                              "--rate", "500", "--seconds", "1")
    assert [r["label"] for r in report["results"]] == ["postduif #1", "nats #1", "postduif #2", "nats #2"]
    assert out.count("pair ") == 2
    assert "median throughput ratio postduif/nats" in out
    check_html(html, ["throughput", "latency", "comparison"])

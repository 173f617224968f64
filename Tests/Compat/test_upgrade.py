"""A rolling upgrade of a cluster under load: three brokers run the
previous release's binary (built here from the commit Deploy/previous-release
names: the last main that landed), an idempotent acks=all confluent-kafka
producer writes, and each broker in turn gets SIGTERM and starts again on
this tree's binary, catching up before the next goes. No delivery fails,
every acknowledged record is read once and in order. Then one broker is
rolled back to the previous binary, on the store the new one wrote, and
the cluster stays whole."""
import os
import shutil
import signal
import subprocess
import tempfile

import pytest

from conftest import BINARY, ROOT
from test_cluster import Cluster
from test_cluster_reshape import Load, metadata, wait_for

PREVIOUS = open(os.path.join(ROOT, "Deploy", "previous-release")).read().split()[0]


@pytest.fixture(scope="module")
def previous_binary():
    """The previous release's `postduif`, built in a folder of the test's own
    from `git archive` of its commit (the repository is left as it is)."""
    work = tempfile.mkdtemp(prefix="postduif-previous-")
    source = os.path.join(work, "source")
    os.mkdir(source)
    known = subprocess.run(["git", "-C", ROOT, "cat-file", "-e", PREVIOUS + "^{commit}"], capture_output=True)
    if known.returncode != 0:
        # A shallow clone: ask its origin for the commit.
        subprocess.run(["git", "-C", ROOT, "fetch", "--quiet", "origin", PREVIOUS], capture_output=True, timeout=300)
        known = subprocess.run(["git", "-C", ROOT, "cat-file", "-e", PREVIOUS + "^{commit}"], capture_output=True)
    if known.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        pytest.skip("the previous release %s is not in this clone's history and its origin did not give it" % PREVIOUS)
    archive = subprocess.run(["git", "-C", ROOT, "archive", PREVIOUS], capture_output=True, timeout=120)
    assert archive.returncode == 0, archive.stderr.decode()
    subprocess.run(["tar", "-x", "-C", source], input=archive.stdout, check=True)
    built = subprocess.run(["swift", "build", "--product", "postduif", "--scratch-path", os.path.join(work, "build")],
                           cwd=source, capture_output=True, text=True, timeout=1800)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    binary = os.path.join(work, "build", "debug", "postduif")
    assert os.access(binary, os.X_OK)
    yield binary
    shutil.rmtree(work, ignore_errors=True)


def test_a_rolling_upgrade_from_the_previous_release_under_load_fails_no_delivery_and_rolls_back(previous_binary):
    cluster = Cluster()
    cluster.env["BINARY"] = previous_binary
    cluster.start()
    try:
        topic = "upgraded"
        cluster.create_topic(topic, partitions=3, replication=3)
        load = Load(cluster.bootstrap, topic, 60000, rate=1500).start()
        wait_for(lambda: len(load.acknowledged) > 2000, "the load acknowledged")
        for broker in (1, 2, 3):
            cluster.signal(broker, signal.SIGTERM)
            cluster.wait_exited(broker, timeout=60)
            cluster.env["BINARY"] = BINARY
            cluster.restart(broker)
            wait_for(lambda: all(isr == [1, 2, 3] for _, _, isr in metadata(cluster, topic).values()),
                     "broker %d back in sync on the new binary" % broker, timeout=120)
            # This tree's binary serves the operator console; the previous one did not.
            assert "serving the console at /" in cluster.log(broker), "broker %d did not start on the new binary" % broker
        # Rollback of one broker to the previous binary, on the store the new one wrote.
        cluster.signal(2, signal.SIGTERM)
        cluster.wait_exited(2, timeout=60)
        cluster.env["BINARY"] = previous_binary
        cluster.restart(2)
        wait_for(lambda: all(isr == [1, 2, 3] for _, _, isr in metadata(cluster, topic).values()), "broker 2 back in sync on the previous binary", timeout=120)
        load.stop.set()
        load.finish()
        print("acknowledged", len(load.acknowledged), "longest produce-to-ack wait %.3f s" % load.longest)
        load.check(cluster.bootstrap, 3)
    finally:
        cluster.env["BINARY"] = BINARY
        cluster.stop()

"""What the benchmark scripts share: free loopback ports, a release broker
started (and waited for) on them, CPU and memory of a process, percentiles."""
import os
import socket
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE_BINARY = os.path.join(ROOT, ".build", "release", "postduif")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(binary, work, extra=(), wait_port=None):
    """A broker with its data and log under `work`, on a free Kafka port;
    returns (process, Kafka address) once `wait_port` (the Kafka port
    unless given) accepts connections."""
    port = free_port()
    log = open(os.path.join(work, "broker.log"), "wb")
    process = subprocess.Popen([binary, "serve", "--data", os.path.join(work, "data"), "--port", str(port), "--http-port", "0",
                                "--durability", "none", "--log-level", "warning", *extra], stdout=log, stderr=subprocess.STDOUT)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", wait_port or port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    return process, "127.0.0.1:%d" % port


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else float("nan")

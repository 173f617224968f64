#!/usr/bin/env python3
"""Summarises the statistics `rdkafka-bench --stats FILE` wrote: for each
one-second window and each broker, how long librdkafka's requests took
there and back (`rtt`), how long records waited for a request
(`int_latency`) and in the output buffer (`outbuf_latency`), in
microseconds, and how many requests awaited an answer at the end.

    Benchmarks/clients/rdkafka-stats.py FILE

Beside the broker's own `postduif_request_duration_seconds`, this tells
the client's share of an acknowledgement's time from the broker's."""
import json
import sys


def window(name, value):
    return "%s p50 %d p99 %d avg %d" % (name, value["p50"], value["p99"], value["avg"])


def main(path):
    print("window | broker | requests sent | rtt | int_latency | outbuf_latency | awaiting an answer")
    for number, line in enumerate(open(path), start=1):
        statistics = json.loads(line)
        for name, broker in sorted(statistics["brokers"].items()):
            if broker["nodeid"] < 0 or broker["tx"] == 0:
                continue  # the bootstrap entry, or a broker not used
            print(" | ".join([str(number), name, str(broker["tx"]), window("rtt", broker["rtt"]),
                              window("int_latency", broker["int_latency"]),
                              window("outbuf_latency", broker["outbuf_latency"]), str(broker["waitresp_cnt"])]))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: rdkafka-stats.py FILE")
    main(sys.argv[1])

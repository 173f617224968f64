#!/usr/bin/env python3
"""How long the broker took to answer each Kafka request, as seen on the
wire: from the packet that completes a request to the packet that begins
its answer, matched by correlation id, per API. Reads a capture of the
broker's port taken with Debian's tcpdump:

    tcpdump -i lo -s 0 -w CAPTURE "tcp port PORT"    # a few seconds, under load
    Benchmarks/clients/kafka-wire-times.py CAPTURE PORT

Beside the broker's own `postduif_request_duration_seconds` (which starts
once a request is decoded) this adds the time a request waits in the
socket before the broker reads it and an answer waits behind earlier
ones on the connection; beside librdkafka's `rtt` (rdkafka-stats.py) it
leaves out the client's own delays. Only IPv4 over Ethernet or Linux
cooked captures (what `-i lo` gives) are read; gaps in a capture that
lost packets (tcpdump says so when it stops) are counted and reported."""
import collections
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchkit import percentile  # noqa: E402 (Benchmarks/, beside this folder)

API_NAMES = {0: "Produce", 1: "Fetch", 2: "ListOffsets", 3: "Metadata", 8: "OffsetCommit",
             9: "OffsetFetch", 10: "FindCoordinator", 11: "JoinGroup", 12: "Heartbeat",
             14: "SyncGroup", 18: "ApiVersions", 22: "InitProducerId"}


def packets(path):
    """(time in seconds, source port, destination port, sequence, payload) per TCP segment."""
    data = open(path, "rb").read()
    magic = struct.unpack("<I", data[:4])[0]
    if magic not in (0xA1B2C3D4, 0xA1B23C4D):
        sys.exit("%s: not a little-endian pcap capture" % path)
    fraction = 1e9 if magic == 0xA1B23C4D else 1e6
    link = struct.unpack("<I", data[20:24])[0]
    header = {1: 14, 113: 16}.get(link)
    if header is None:
        sys.exit("%s: link type %d not read (Ethernet or Linux cooked only)" % (path, link))
    offset = 24
    while offset + 16 <= len(data):
        seconds, part, captured, length = struct.unpack("<IIII", data[offset:offset + 16])
        offset += 16
        frame = data[offset:offset + captured]
        offset += captured
        if captured < length:
            sys.exit("a packet was cut at %d of %d bytes: capture with -s 0" % (captured, length))
        ip = frame[header:]
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
            continue
        tcp = ip[(ip[0] & 15) * 4:]
        source, destination, sequence = struct.unpack(">HHI", tcp[:8])
        payload = tcp[(tcp[12] >> 4) * 4:]
        if payload:
            yield seconds + part / fraction, source, destination, sequence, payload


class Stream:
    """One direction of one connection: frames cut from its bytes."""

    def __init__(self, sequence, to_broker):
        self.sequence = sequence
        self.to_broker = to_broker
        self.buffered = b""
        self.skip = 0          # bytes of the current frame still to pass over
        self.pending = None    # a request whose end is still to come: (API, correlation id)

    def feed(self, time, payload, seen):
        """Calls seen(API or None, correlation id, time) for each request
        completed and each answer begun in `payload`."""
        data = payload
        while data:
            if self.skip:
                taken = min(self.skip, len(data))
                self.skip -= taken
                data = data[taken:]
                if not self.skip and self.pending:
                    seen(*self.pending, time)
                    self.pending = None
                continue
            self.buffered += data
            data = b""
            header = 12 if self.to_broker else 8
            while len(self.buffered) >= header:
                size = struct.unpack(">i", self.buffered[:4])[0]
                if self.to_broker:
                    api, _, correlation = struct.unpack(">hhi", self.buffered[4:12])
                else:
                    api, correlation = None, struct.unpack(">i", self.buffered[4:8])[0]
                    seen(None, correlation, time)
                if len(self.buffered) >= 4 + size:
                    if self.to_broker:
                        seen(api, correlation, time)
                    self.buffered = self.buffered[4 + size:]
                    continue
                self.skip = 4 + size - len(self.buffered)
                self.pending = (api, correlation) if self.to_broker else None
                self.buffered = b""
                break

    def restart(self):
        self.buffered, self.skip, self.pending = b"", 0, None


def main(path, port):
    streams = {}
    asked = {}  # (client port, correlation id) -> (API, time the request was whole)
    times = collections.defaultdict(list)
    lost = 0
    for time, source, destination, sequence, payload in packets(path):
        if port not in (source, destination):
            continue
        to_broker = destination == port
        client = source if to_broker else destination
        stream = streams.get((source, destination))
        if stream is None:
            stream = streams[(source, destination)] = Stream(sequence, to_broker)
        ahead = (sequence - stream.sequence) % (1 << 32)
        if ahead >= 1 << 31:
            continue  # a retransmission of bytes already read
        if ahead:
            # A gap (a packet the capture lost): reading resumes at this
            # segment as if it began a frame. Answers whose request was
            # not read match nothing; the gaps are counted below.
            lost += 1
            stream.restart()
        stream.sequence = (sequence + len(payload)) % (1 << 32)

        def seen(api, correlation, when, client=client):
            if api is not None:
                asked[(client, correlation)] = (api, when)
            else:
                request = asked.pop((client, correlation), None)
                if request:
                    times[request[0]].append((when - request[1]) * 1000)

        stream.feed(time, payload, seen)
    print("api | answers | p50 | p90 | p99 | p99.9 | max (ms, from the request whole to its answer begun)")
    for api, values in sorted(times.items()):
        print("%s | %d | %.3f | %.3f | %.3f | %.3f | %.3f" % (
            API_NAMES.get(api, str(api)), len(values), percentile(values, 0.5), percentile(values, 0.9), percentile(values, 0.99),
            percentile(values, 0.999), max(values)))
    if lost:
        print("gaps in the capture: %d (the figures may miss or misread frames around them)" % lost)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: kafka-wire-times.py CAPTURE PORT")
    main(sys.argv[1], int(sys.argv[2]))

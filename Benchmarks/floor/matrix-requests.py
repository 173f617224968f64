#!/usr/bin/env python3
"""Server CPU per Matrix request of one kind, one request at a time per
client (so every request wakes the server, as in a latency-bound room).

    matrix-requests.py --url http://127.0.0.1:8008 --pid PID [--count 3000] [--clients 1] versions sync send

`versions` is a routed request that does no work, `sync` a `/sync` with
nothing new (answered on the event loop), `send` a message send into a room
of one with nobody syncing. PID is the server's (broker with its gateway
inside, or the gateway); its CPU is read from /proc before and after.
Only the standard library, so any python3 runs it."""
import argparse
import http.client
import json
import os
import threading
import time
import urllib.parse

parser = argparse.ArgumentParser()
parser.add_argument("--url", default="http://127.0.0.1:8008")
parser.add_argument("--pid", type=int, required=True)
parser.add_argument("--count", type=int, default=3000, help="requests per client")
parser.add_argument("--clients", type=int, default=1)
parser.add_argument("kinds", nargs="+", choices=["versions", "sync", "send"])
options = parser.parse_args()
address = urllib.parse.urlparse(options.url)


def call(connection, method, path, body=None, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    connection.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    response = connection.getresponse()
    return response.status, json.loads(response.read() or b"{}")


def server_cpu():
    fields = open("/proc/%d/stat" % options.pid).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def connect():
    return http.client.HTTPConnection(address.hostname, address.port)


setup = connect()
tokens = []
for number in range(options.clients):
    status, body = call(setup, "POST", "/_matrix/client/v3/register",
                        {"username": "floor%d_%d" % (number, time.time_ns()), "password": "floor", "auth": {"type": "m.login.dummy"}})
    assert status == 200, body
    tokens.append(body["access_token"])
status, room = call(setup, "POST", "/_matrix/client/v3/createRoom", {}, tokens[0])
assert status == 200, room


def run(kind, number, token):
    connection = connect()
    status, body = call(connection, "GET", "/_matrix/client/v3/sync?timeout=0", token=token)
    since = body["next_batch"]
    for sequence in range(options.count):
        if kind == "sync":
            status, body = call(connection, "GET", "/_matrix/client/v3/sync?timeout=0&since=" + since, token=token)
        elif kind == "versions":
            status, body = call(connection, "GET", "/_matrix/client/versions")
        else:
            path = "/_matrix/client/v3/rooms/%s/send/m.room.message/f%d-%d-%d" % (urllib.parse.quote(room["room_id"]), number, sequence, time.time_ns())
            status, body = call(connection, "PUT", path, {"msgtype": "m.text", "body": "floor"}, token)
        assert status == 200, (status, body)


for kind in options.kinds:
    # Sends go into the room of the first client alone.
    senders = tokens if kind != "send" else tokens[:1]
    started, cpu = time.monotonic(), server_cpu()
    threads = [threading.Thread(target=run, args=(kind, number, token)) for number, token in enumerate(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed, used, total = time.monotonic() - started, server_cpu() - cpu, options.count * len(senders)
    print("%s: %d requests in %.1f s (%.0f/s), server CPU %.2f s = %.0f us per request" % (kind, total, elapsed, total / elapsed, used, used / total * 1e6))

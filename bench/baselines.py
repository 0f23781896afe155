"""What a user would otherwise write: the peers measured beside our gateway.

``naive``: paho-mqtt → json → one InfluxDB write per message (the common first attempt).
``batched``: paho-mqtt → json → f-string line protocol → 5,000-line posts from a thread
(the careful "afternoon script" of perf-baselines.md). Neither validates, enriches, keeps
dead letters or evaluates rules, and both acknowledge on receipt (nothing is spooled).

Run: ``python -m bench.baselines naive|batched --port P --influx-url U --database D``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import sys
import threading
import urllib.parse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def line_of(topic: str, payload: bytes | bytearray) -> str | None:
    """A line of protocol from a JSON payload, numbers as floats, like a hand script does."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    device = topic.split("/")[2]
    fields = ",".join(
        f"{k}={float(v)}" for k, v in doc.items() if isinstance(v, int | float) and k != "ts"
    )
    if not fields:
        return None
    return f"bench,device_id={device} {fields} {int(doc['ts']) * 1_000_000}"


class Poster:
    """POST /write over one kept-alive connection."""

    def __init__(self, url: str, database: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.conn = http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port or 8086, timeout=30
        )
        self.path = "/write?" + urllib.parse.urlencode({"db": database, "precision": "ns"})

    def post(self, body: str) -> None:
        self.conn.request("POST", self.path, body=body.encode())
        response = self.conn.getresponse()
        response.read()


def main(argv: list[str] | None = None) -> int:
    """Run one baseline until stdin closes."""
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("naive", "batched"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--influx-url", required=True)
    parser.add_argument("--database", required=True)
    args = parser.parse_args(argv)
    poster = Poster(args.influx_url, args.database)
    lines: queue.Queue[str | None] = queue.Queue()

    def batcher() -> None:
        batch: list[str] = []
        while True:
            try:
                item = lines.get(timeout=0.05)
            except queue.Empty:
                item = ""
            if item:
                batch.append(item)
            if batch and (len(batch) >= 5000 or not item):
                poster.post("\n".join(batch))
                batch = []
            if item is None:
                return

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        line = line_of(message.topic, message.payload)
        if line is None:
            return
        if args.mode == "naive":
            poster.post(line)
        else:
            lines.put(line)

    if args.mode == "batched":
        threading.Thread(target=batcher, daemon=True).start()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"baseline-{args.mode}-{os.getpid()}",
        clean_session=True,  # nothing queued by earlier runs may count for this one
    )
    client.on_message = on_message
    client.on_connect = lambda c, u, f, rc, p: c.subscribe("scc/v1/+/+", qos=1)
    client.on_subscribe = lambda c, u, mid, rc, p: print("ready", flush=True)
    client.connect("127.0.0.1", args.port)
    client.loop_start()
    sys.stdin.read()  # the runner closes stdin to stop us
    client.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

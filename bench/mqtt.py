"""Outbound MQTT: publishes per second from one guest request loop, against local mosquitto.

    .venv/bin/python -m bench.mqtt [--count 2000] [--repeats 3] [--payload 64]

A mosquitto broker (tests/mqtt_server.py) on loopback, pinned to the client
core; `host up` (pinned to the server core) serves apps/spin-python, whose
`/mqtt` route opens one connection and publishes --count messages of
--payload bytes in a loop (spin_sdk.mqtt), timing the loop itself with the
guest's clock. Rows, per QoS (0 at-most-once, 1 at-least-once, 2
exactly-once), median of --repeats requests after one warm-up:
  guest   the Spin SDK app through `host up` (a wasm call into the host per publish)
  host    the same host functions called from Python in this process (on the
          server core): what a publish costs without the guest and the
          component boundary
  paho    paho-mqtt's own client, publish + wait_for_publish with its network
          thread (loop_start), on the server core: how a plain Python program
          would publish
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import paho.mqtt.client as paho
import wasmtime
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import CLIENT_CORE, SERVER_CORE, free_port, host_up_cmd, pinned, serve
from host.capabilities import Ok, store_key
from host.capabilities.allowed_hosts import AllowList
from host.capabilities.mqtt import MQTT, Mqtt
from tests.apps import built_app
from tests.loopback import stop_process
from tests.mqtt_server import start_mosquitto

QOS_NAMES = {0: "at-most-once", 1: "at-least-once", 2: "exactly-once"}
MANIFEST = """spin_manifest_version = 2
[application]
name = "bench-mqtt"
[[trigger.http]]
route = "/..."
component = "spin-python"
[component.spin-python]
source = "{wasm}"
allowed_outbound_hosts = ["mqtt://127.0.0.1:{port}"]
"""


def _median_rate(run: Callable[[], float], count: int, repeats: int) -> float:
    run()  # warm-up
    return count / statistics.median(run() for _ in range(repeats))


def guest_rate(base: str, port: int, qos: int, count: int, payload: int,
               repeats: int) -> float:
    params = {"address": f"mqtt://127.0.0.1:{port}?client_id=bench-guest",
              "topic": f"bench/guest/{qos}", "qos": str(qos), "count": str(count),
              "payload": "x" * payload}

    def run() -> float:
        response = httpx.get(f"{base}/mqtt", params=params, timeout=300)
        response.raise_for_status()
        seconds: float = response.json()["seconds"]
        return seconds
    return _median_rate(run, count, repeats)


def host_rate(port: int, qos: int, count: int, payload: int, repeats: int) -> float:
    capability = Mqtt("bench", AllowList.parse([f"mqtt://127.0.0.1:{port}"]))
    functions = capability.functions(MQTT)
    body = b"x" * payload

    def run() -> float:
        store = wasmtime.Store()
        opened = functions["[static]connection.open"](
            store, f"mqtt://127.0.0.1:{port}?client_id=bench-host", "", "", 30)
        assert isinstance(opened, Ok), opened
        publish = functions["[method]connection.publish"]
        started = time.perf_counter()
        for _ in range(count):
            result = publish(store, opened.value, f"bench/host/{qos}", body, QOS_NAMES[qos])
            assert isinstance(result, Ok), result
        seconds = time.perf_counter() - started
        capability.release_store(store_key(store))
        return seconds
    return _median_rate(run, count, repeats)


def paho_rate(port: int, qos: int, count: int, payload: int, repeats: int) -> float:
    body = b"x" * payload

    def run() -> float:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-paho")
        client.connect("127.0.0.1", port)
        client.loop_start()
        try:
            started = time.perf_counter()
            for _ in range(count):
                client.publish(f"bench/paho/{qos}", body, qos).wait_for_publish(30)
            return time.perf_counter() - started
        finally:
            client.disconnect()
            client.loop_stop()
    return _median_rate(run, count, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--payload", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as tmp:
        work = Path(tmp)
        with pinned(CLIENT_CORE):  # the broker inherits the client core
            broker = start_mosquitto(work / "broker")
        try:
            wasm = built_app("spin-python") / "spin-python.wasm"
            app = work / "app"
            app.mkdir()
            (app / "spin.toml").write_text(MANIFEST.format(wasm=wasm, port=broker.port))
            http_port = free_port()
            base = f"http://127.0.0.1:{http_port}"
            with serve(host_up_cmd(app, http_port, work / "cache")) as server:
                server.wait_ready(f"{base}/")
                print(f"publishes/s, {args.count} x {args.payload} B per run, median of "
                      f"{args.repeats} (one connection per run)")
                print(f"{'qos':<18}{'guest':>10}{'host':>10}{'paho':>10}")
                for qos in (0, 1, 2):
                    guest = guest_rate(base, broker.port, qos, args.count, args.payload,
                                       args.repeats)
                    with pinned(SERVER_CORE):  # where `host up` runs the guest row
                        host = host_rate(broker.port, qos, args.count, args.payload,
                                         args.repeats)
                        plain = paho_rate(broker.port, qos, args.count, args.payload,
                                          args.repeats)
                    print(f"{qos} {QOS_NAMES[qos]:<16}{guest:>10,.0f}{host:>10,.0f}"
                          f"{plain:>10,.0f}")
        finally:
            stop_process(broker.process)


if __name__ == "__main__":
    main()

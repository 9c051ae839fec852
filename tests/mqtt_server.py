"""A real `mosquitto` broker for the tests, and a subscriber to see what reached it.

Each broker is started on a free loopback port with a config file written in a
temp dir (no persistence, no system config). A missing `mosquitto` (Debian
package `mosquitto`, installed by `make test`) fails the tests rather than
skipping them.
"""

from __future__ import annotations

import getpass
import queue
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.loopback import free_port, stop_process

START_TIMEOUT_SECONDS = 10.0
POLL_INTERVAL_SECONDS = 0.02
INSTALL_HINT = "apt-get install mosquitto"
USER, PASSWORD = "spin", "s3cret-pw"


@dataclass
class Broker:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found is None:
        pytest.fail(f"{name} is not installed; install it: {INSTALL_HINT}", pytrace=False)
    return found


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def start_mosquitto(workdir: Path, *, password: bool = False,
                    tls: tuple[Path, Path] | None = None) -> Broker:
    """Start a broker in `workdir` on a free loopback port; wait until it accepts.

    `password`: only USER/PASSWORD may connect (a mosquitto_passwd file).
    `tls`: (certificate, key) for a TLS listener."""
    binary = _tool("mosquitto")
    workdir.mkdir(parents=True, exist_ok=True)
    lines = ["persistence false", f"user {getpass.getuser()}", "log_type error",
             "log_type warning", "log_type notice", "log_dest stderr"]
    if password:
        passwords = workdir / "passwords"
        subprocess.run([_tool("mosquitto_passwd"), "-b", "-c", str(passwords), USER, PASSWORD],
                       check=True, capture_output=True)
        passwords.chmod(0o600)
        lines += ["allow_anonymous false", f"password_file {passwords}"]
    else:
        lines.append("allow_anonymous true")
    if tls is not None:
        lines += [f"certfile {tls[0]}", f"keyfile {tls[1]}"]
    log_path = workdir / "mosquitto.log"
    for _attempt in range(3):  # another process may grab the port between probe and bind
        port = free_port()
        config = workdir / "mosquitto.conf"
        config.write_text("\n".join([f"listener {port} 127.0.0.1", *lines]) + "\n")
        with log_path.open("wb") as log:
            proc = subprocess.Popen([binary, "-c", str(config)], cwd=workdir, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while proc.poll() is None and time.monotonic() < deadline:
            if _listening(port):
                return Broker(port, proc, log_path)
            time.sleep(POLL_INTERVAL_SECONDS)
        stop_process(proc)
    tail = log_path.read_text(errors="replace")[-2000:]
    pytest.fail(f"mosquitto did not listen within {START_TIMEOUT_SECONDS}s:\n{tail}",
                pytrace=False)


class Subscriber:
    """A paho client subscribed (QoS 2) to `topic` on a broker; `messages` fills as
    messages arrive."""

    def __init__(self, port: int, topic: str = "#", username: str | None = None,
                 password: str | None = None) -> None:
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        subscribed: queue.Queue[bool] = queue.Queue()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="test-subscriber")
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_message = lambda client, userdata, message: self.messages.put(message)
        self.client.on_connect = (
            lambda client, userdata, flags, reason, properties: client.subscribe(topic, qos=2))
        self.client.on_subscribe = (
            lambda client, userdata, mid, reasons, properties: subscribed.put(True))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        subscribed.get(timeout=10)

    def get(self, timeout: float = 10.0) -> paho.MQTTMessage:
        return self.messages.get(timeout=timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A private anonymous broker, running for the whole session."""
    broker = start_mosquitto(tmp_path_factory.mktemp("mosquitto"))
    try:
        yield broker
    finally:
        stop_process(broker.process)


@pytest.fixture
def subscriber(mqtt_broker: Broker) -> Iterator[Subscriber]:
    sub = Subscriber(mqtt_broker.port)
    yield sub
    sub.close()

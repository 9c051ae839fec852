"""`host watch` through a real process on loopback: a source change rebuilds and reloads
one component while a client keeps sending requests, none of which may fail.

The app's "build" copies one of several prebuilt WAT components (tests/wat.py) over
the component's source, chosen by the text of `src/version.txt`, so no toolchain is
needed: writing `v2` there is "editing the source".
"""

from __future__ import annotations

import re
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests import wat
from tests.conftest import HostProcess, run_host

BODY = """
  (data (i32.const 400) "{text}")
  (func (export "{export}") (param $req i32) (result i32)
    (i32.store16 (i32.const 16) (i32.const 200))
    (i32.store (i32.const 20) (i32.const 0))
    (i32.store (i32.const 24) (i32.const 0))
    (i32.store (i32.const 28) (i32.const 400))
    (i32.store (i32.const 32) (i32.const {length}))
    (i32.const 16))
"""


def text_component(text: str, out: Path) -> Path:
    """A component answering 200 with `text` as its body."""
    return wat.build_component(
        BODY.replace("{text}", text).replace("{length}", str(len(text)))
        .replace("{export}", wat.EXPORT), out)


MANIFEST = """spin_manifest_version = 2
[application]
name = "watched"

[[trigger.http]]
route = "/hello"
component = "hello"

[component.hello]
source = "app.wasm"
[component.hello.build]
command = "cp prebuilt/$(cat src/version.txt).wasm app.wasm"
watch = ["src/**/*.txt"]
"""

OTHER_ROUTE = """
[[trigger.http]]
route = "/other"
component = "other"

[component.other]
source = "prebuilt/other.wasm"
"""


@pytest.fixture(scope="module")
def prebuilt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prebuilt")
    for name in ("v1", "v2", "v3", "other"):
        text_component(f"hello {name}", out / f"{name}.wasm")
    (out / "broken.wasm").write_bytes(b"\0asm\x0d\0\x01\0 not a component")
    return out


@pytest.fixture
def app_dir(tmp_path: Path, prebuilt: Path) -> Path:
    (tmp_path / "prebuilt").mkdir()
    for wasm in prebuilt.glob("*.wasm"):
        if not wasm.name.endswith(".core.wasm"):
            (tmp_path / "prebuilt" / wasm.name).write_bytes(wasm.read_bytes())
    (tmp_path / "src" / "nested").mkdir(parents=True)
    (tmp_path / "src" / "version.txt").write_text("v1")
    (tmp_path / "spin.toml").write_text(MANIFEST)
    return tmp_path


@pytest.fixture
def watching(app_dir: Path, cache_dir: Path) -> Iterator[HostProcess]:
    host = HostProcess(["-f", str(app_dir), "--cache-dir", str(cache_dir), "--no-access-log",
                        "-d", "50"], command=("watch",))
    with host:
        assert host.wait_for_output("Watching ")
        yield host


def set_version(app_dir: Path, version: str) -> None:
    (app_dir / "src" / "version.txt").write_text(version)


def wait_body(host: HostProcess, path: str, body: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with host.client() as client:
        while True:
            response = client.get(path)
            if response.status_code == 200 and response.text == body:
                return
            assert time.monotonic() < deadline, (response.status_code, response.text,
                                                 host.output)
            time.sleep(0.02)


def test_builds_first_then_reloads_on_a_source_change(watching: HostProcess,
                                                       app_dir: Path) -> None:
    assert "Building component hello" in watching.output
    with watching.client() as client:
        assert client.get("/hello").text == "hello v1"
    set_version(app_dir, "v2")
    assert watching.wait_for_output("Reloaded hello", timeout=30), watching.output
    with watching.client() as client:
        assert client.get("/hello").text == "hello v2"
    # A change deeper in the tree matches `src/**/*.txt` too.
    (app_dir / "src" / "nested" / "notes.txt").write_text("x")
    assert watching.wait_for_output("built the .wasm being served", timeout=30)


def test_a_failing_build_keeps_the_old_version(watching: HostProcess, app_dir: Path) -> None:
    set_version(app_dir, "missing")  # cp: no such file
    assert watching.wait_for_output("Build command for component hello failed", timeout=30)
    assert watching.wait_for_output("Still serving the previous version")
    with watching.client() as client:
        assert client.get("/hello").text == "hello v1"
    set_version(app_dir, "v2")  # fixed: the next change reloads
    assert watching.wait_for_output("Reloaded hello", timeout=30), watching.output
    wait_body(watching, "/hello", "hello v2")


def test_a_component_that_does_not_load_keeps_the_old_version(watching: HostProcess,
                                                              app_dir: Path) -> None:
    set_version(app_dir, "broken")
    assert watching.wait_for_output("Still serving the previous version of hello",
                                    timeout=30), watching.output
    with watching.client() as client:
        assert client.get("/hello").text == "hello v1"
    assert watching.output.count("Still serving the previous version of hello") == 1
    set_version(app_dir, "v2")
    assert watching.wait_for_output("Reloaded hello", timeout=30)
    wait_body(watching, "/hello", "hello v2")


def test_a_manifest_change_reloads_the_app_with_its_new_route(watching: HostProcess,
                                                              app_dir: Path) -> None:
    with watching.client() as client:
        assert client.get("/other").status_code == 404
    (app_dir / "spin.toml").write_text(MANIFEST + OTHER_ROUTE)
    assert watching.wait_for_output("Reloaded the app", timeout=30), watching.output
    with watching.client() as client:
        assert client.get("/other").text == "hello other"
        assert client.get("/hello").text == "hello v1"
    # A manifest that does not parse leaves the app as it is.
    (app_dir / "spin.toml").write_text(MANIFEST + "[component.bad\n")
    assert watching.wait_for_output("Still serving the previous version", timeout=30)
    with watching.client() as client:
        assert client.get("/other").text == "hello other"


def test_a_wasm_changed_by_hand_reloads_without_a_build(app_dir: Path, cache_dir: Path,
                                                        prebuilt: Path) -> None:
    (app_dir / "app.wasm").write_bytes((prebuilt / "v1.wasm").read_bytes())
    host = HostProcess(["-f", str(app_dir), "--cache-dir", str(cache_dir), "--skip-build"],
                       command=("watch",))
    with host:
        assert host.wait_for_output("Watching ")
        assert "Building component" not in host.output
        (app_dir / "app.wasm").write_bytes((prebuilt / "v3.wasm").read_bytes())
        assert host.wait_for_output("Reloaded hello", timeout=30), host.output
        wait_body(host, "/hello", "hello v3")
        set_version(app_dir, "v2")  # sources are not watched with --skip-build
        time.sleep(0.5)
        with host.client() as client:
            assert client.get("/hello").text == "hello v3"


def test_refuses_several_workers(app_dir: Path) -> None:
    result = run_host("watch", "-f", str(app_dir), "--workers", "2")
    assert result.returncode == 2
    assert "host watch serves with one process" in result.stderr


class SteadyClient:
    """Requests one after another on `clients` connections; records each one's start,
    latency and outcome."""

    def __init__(self, base_url: str, path: str, clients: int = 2) -> None:
        self.base_url = base_url
        self.path = path
        self.stop = threading.Event()
        self.samples: list[tuple[float, float, int | str, str]] = []  # start, s, status, body
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> SteadyClient:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30.0) as client:
            while not self.stop.is_set():
                start = time.monotonic()
                outcome: int | str
                body = ""
                try:
                    response = client.get(self.path)
                    outcome, body = response.status_code, response.text
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                with self.lock:
                    self.samples.append((start, time.monotonic() - start, outcome, body))

    def between(self, start: float, end: float) -> list[tuple[float, float, int | str, str]]:
        with self.lock:
            return [s for s in self.samples if start <= s[0] < end]


def p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100)[98] if len(latencies) >= 2 else latencies[0]


def test_reloads_under_load_drop_no_request(watching: HostProcess, app_dir: Path) -> None:
    reloads = 6
    with SteadyClient(watching.base_url, "/hello") as load:
        time.sleep(2.0)  # steady state
        steady_end = time.monotonic()
        windows = []
        for n in range(reloads):
            version = ("v2", "v1")[n % 2]
            began = time.monotonic()
            set_version(app_dir, version)
            assert watching.wait_for_count("Reloaded hello", n + 1, timeout=30), watching.output
            windows.append((began, time.monotonic()))
            wait_body(watching, "/hello", f"hello {version}")
            time.sleep(0.3)
        time.sleep(0.5)
    samples = load.between(0, time.monotonic())
    failed = [s for s in samples if s[2] != 200]
    assert not failed, failed[:5]
    assert {s[3] for s in samples} == {"hello v1", "hello v2"}
    steady = [s[1] for s in load.between(0, steady_end)]
    during = [s[1] for start, end in windows for s in load.between(start, end)]
    print(f"\nreload gap: {len(samples)} requests, {len(failed)} failed, {reloads} reloads; "
          f"steady p50 {statistics.median(steady) * 1000:.2f} ms p99 "
          f"{p99(steady) * 1000:.2f} ms ({len(steady)} requests); during reloads p50 "
          f"{statistics.median(during) * 1000:.2f} ms p99 {p99(during) * 1000:.2f} ms "
          f"({len(during)} requests); added p99 {(p99(during) - p99(steady)) * 1000:.2f} ms")


SLOW = """
  (data (i32.const 400) "{text}")
  (func (export "{export}") (param $req i32) (result i32)
    (local $i i32)
    (loop $l (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 4000000000))))
    (i32.store16 (i32.const 16) (i32.const 200))
    (i32.store (i32.const 20) (i32.const 0))
    (i32.store (i32.const 24) (i32.const 0))
    (i32.store (i32.const 28) (i32.const 400))
    (i32.store (i32.const 32) (i32.const {length}))
    (i32.const 16))
"""


def test_a_request_running_during_a_reload_finishes_on_its_version(
        app_dir: Path, cache_dir: Path) -> None:
    for version in ("v1", "v2"):  # ~1 s of guest loop before answering
        text = f"slow {version}"
        wat.build_component(SLOW.replace("{text}", text).replace("{length}", str(len(text)))
                            .replace("{export}", wat.EXPORT),
                            app_dir / "prebuilt" / f"{version}.wasm")
    host = HostProcess(["-f", str(app_dir), "--cache-dir", str(cache_dir), "-d", "20",
                        "--request-timeout", "60"], command=("watch",))
    with host, host.client() as client:
        assert host.wait_for_output("Watching ")
        answers: list[httpx.Response] = []
        running = threading.Thread(target=lambda: answers.append(client.get("/hello")))
        running.start()
        time.sleep(0.1)
        set_version(app_dir, "v2")
        assert host.wait_for_output("Reloaded hello", timeout=30), host.output
        overlapped = running.is_alive()
        with host.client() as other:
            assert other.get("/hello").text == "slow v2"
        running.join(timeout=60)
        assert answers[0].status_code == 200
        assert answers[0].text == "slow v1"
        if not overlapped:
            pytest.skip("the reload took longer than the slow request: nothing overlapped")


# -- Redis triggers ------------------------------------------------------------------
# The handler is tests/wat.py's REDIS_PRINTER with its "got " prefix replaced by the
# version ("v1: ", "v2: "), so each line says which version handled the message.

REDIS_MANIFEST = """spin_manifest_version = 2
[application]
name = "watched-redis"
[application.trigger.redis]
address = "{address}"

[[trigger.redis]]
channel = "{channel}"
component = "printer"

[component.printer]
source = "printer.wasm"
[component.printer.build]
command = "cp prebuilt/$(cat src/version.txt).wasm printer.wasm"
watch = ["src/**/*.txt"]
"""

HANDLED = re.compile(r"\[printer\] (v\d): (x\d+)$")


@pytest.fixture(scope="module")
def redis_prebuilt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("redis-prebuilt")
    for version in ("v1", "v2"):
        core = wat.REDIS_PRINTER.replace('(data (i32.const 1024) "got ")',
                                         f'(data (i32.const 1024) "{version}: ")')
        assert core != wat.REDIS_PRINTER
        wat.build_redis_handler(out / f"{version}.wasm", core)
    (out / "broken.wasm").write_bytes(b"\0asm\x0d\0\x01\0 not a component")
    return out


@pytest.fixture
def redis_app(tmp_path: Path, redis_prebuilt: Path, clean_redis_url: str) -> Path:
    (tmp_path / "prebuilt").mkdir()
    for name in ("v1", "v2", "broken"):
        (tmp_path / "prebuilt" / f"{name}.wasm").write_bytes(
            (redis_prebuilt / f"{name}.wasm").read_bytes())
    (tmp_path / "src").mkdir()
    set_version(tmp_path, "v1")
    (tmp_path / "spin.toml").write_text(redis_manifest(clean_redis_url, "events"))
    return tmp_path


def redis_manifest(url: str, channel: str) -> str:
    return REDIS_MANIFEST.format(address=url.rsplit("/", 1)[0], channel=channel)


@pytest.fixture
def redis_watching(redis_app: Path, cache_dir: Path) -> Iterator[HostProcess]:
    host = HostProcess(["-f", str(redis_app), "--cache-dir", str(cache_dir), "--no-access-log",
                        "--state-dir", "", "-d", "50"], command=("watch",))
    with host:
        assert host.wait_for_output("Watching "), host.output
        yield host


@pytest.fixture
def publisher(clean_redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(clean_redis_url)
    yield client
    client.close()


def handled(host: HostProcess) -> list[tuple[str, str]]:
    """(version, message) for each message a handler printed, in order."""
    return [(m.group(1), m.group(2)) for line in list(host.lines)
            if (m := HANDLED.search(line))]


def wait_handled(host: HostProcess, count: int, timeout: float = 30.0) -> list[tuple[str, str]]:
    assert host.wait_for_count("[printer] v", count, timeout=timeout), host.output
    return handled(host)


def subscriber_ids(client: redis.Redis) -> list[int]:
    return [int(c["id"]) for c in client.client_list(_type="pubsub")]


def test_a_rebuild_under_a_stream_of_messages_drops_and_repeats_none(
        redis_watching: HostProcess, redis_app: Path, publisher: redis.Redis) -> None:
    subscribers = subscriber_ids(publisher)
    assert len(subscribers) == 1
    sent: list[str] = []
    receivers: set[int] = set()
    after_reload: int | None = None  # index of the first message sent after "Reloaded"

    def send() -> None:
        name = f"x{len(sent)}"  # not "m...": REDIS_PRINTER would not print it
        receivers.add(publisher.publish("events", name))
        sent.append(name)

    for _ in range(20):
        send()
    set_version(redis_app, "v2")
    # Publish until the reload is done, then until the new version has handled 50.
    while after_reload is None or len(sent) - after_reload < 50:
        if after_reload is None and "Reloaded printer" in redis_watching.output:
            after_reload = len(sent)
        send()
        time.sleep(0.001)  # pacing only: nothing depends on it
    got = wait_handled(redis_watching, len(sent))
    assert receivers == {1}, receivers  # one subscriber throughout: never gone, never two
    assert subscriber_ids(publisher) == subscribers  # the same connection
    assert sorted(m for _, m in got) == sorted(sent)  # each message exactly once
    assert [m for _, m in got] == sent  # one at a time, in order (--max-concurrent 1)
    versions = [v for v, _ in got]
    first_v2 = versions.index("v2")
    assert set(versions[:first_v2]) == {"v1"} and set(versions[first_v2:]) == {"v2"}
    assert first_v2 <= after_reload, (first_v2, after_reload)  # from the reload on: v2


def test_a_broken_rebuild_keeps_the_old_version_handling(
        redis_watching: HostProcess, redis_app: Path, publisher: redis.Redis) -> None:
    set_version(redis_app, "broken")
    assert redis_watching.wait_for_output("Still serving the previous version of printer",
                                          timeout=30), redis_watching.output
    assert publisher.publish("events", "x0") == 1
    assert wait_handled(redis_watching, 1) == [("v1", "x0")]
    set_version(redis_app, "v2")  # and a good build after it is served
    assert redis_watching.wait_for_output("Reloaded printer", timeout=30)
    assert publisher.publish("events", "x1") == 1
    assert wait_handled(redis_watching, 2) == [("v1", "x0"), ("v2", "x1")]


def test_an_app_reload_keeps_an_unchanged_subscriber_and_replaces_a_changed_one(
        redis_watching: HostProcess, redis_app: Path, publisher: redis.Redis,
        clean_redis_url: str) -> None:
    subscribers = subscriber_ids(publisher)
    manifest = redis_app / "spin.toml"
    manifest.write_text(manifest.read_text() + "\n# touched\n")
    assert redis_watching.wait_for_output("Reloaded the app", timeout=30), redis_watching.output
    assert subscriber_ids(publisher) == subscribers  # same address and channels: kept
    assert publisher.publish("events", "x0") == 1
    assert wait_handled(redis_watching, 1) == [("v1", "x0")]

    manifest.write_text(redis_manifest(clean_redis_url, "other"))
    assert redis_watching.wait_for_count("Reloaded the app", 2, timeout=30), \
        redis_watching.output
    assert redis_watching.wait_for_output("Stopped the subscriber of", timeout=30)
    (new,) = subscriber_ids(publisher)
    assert new not in subscribers
    assert publisher.publish("events", "x1") == 0  # nobody listens there any more
    assert publisher.publish("other", "x2") == 1
    assert wait_handled(redis_watching, 2) == [("v1", "x0"), ("v1", "x2")]
    assert "Active Channels on redis://127.0.0.1" in redis_watching.output


def test_an_unreachable_new_address_keeps_the_old_subscriber(
        redis_watching: HostProcess, redis_app: Path, publisher: redis.Redis) -> None:
    from tests.loopback import free_port

    (redis_app / "spin.toml").write_text(
        redis_manifest(f"redis://127.0.0.1:{free_port()}/0", "events"))
    assert redis_watching.wait_for_output("Still serving the previous version", timeout=30)
    assert "cannot subscribe to redis://127.0.0.1" in redis_watching.output
    assert publisher.publish("events", "x0") == 1
    assert wait_handled(redis_watching, 1) == [("v1", "x0")]

"""host/config.py: every knob from a flag, SPINHOST_<FLAG>, Spin's variable or a default."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import pytest

from host.config import OPTIONS, Config, VariableError, add_options, env_name
from host.errors import ConfigError
from host.limits import (
    DEFAULT_POOL_SIZE,
    HttpLimits,
    KeyValueLimits,
    Limits,
    MiB,
    RedisTriggerLimits,
)

ROOT = Path(__file__).resolve().parent.parent


def load(flags: dict[str, Any] | None = None, environ: dict[str, str] | None = None,
         command: str = "up") -> Config:
    return Config.load(command, flags or {}, environ or {})


def test_defaults_are_the_limits_modules() -> None:
    config = load()
    assert config.listen == ("127.0.0.1", 3000)
    assert config.pool_size == DEFAULT_POOL_SIZE
    assert config.limits == Limits()
    assert config.http == HttpLimits()
    assert config.key_value == KeyValueLimits()
    assert config.redis_trigger == RedisTriggerLimits()
    assert config.cache_dir is not None and config.cache_dir.name == "compiled"
    assert (config.quiet, config.build, config.log_format) == (False, False, "plain")


@pytest.mark.parametrize(("flags", "environ", "listen"), [
    ({}, {}, ("127.0.0.1", 3000)),
    ({}, {"SPIN_HTTP_LISTEN_ADDR": "localhost:1"}, ("127.0.0.1", 1)),
    ({}, {"SPIN_HTTP_LISTEN_ADDR": "[::1]:1", "SPINHOST_LISTEN": "0.0.0.0:2"}, ("0.0.0.0", 2)),
    ({"listen": "127.0.0.1:3"}, {"SPINHOST_LISTEN": "0.0.0.0:2"}, ("127.0.0.1", 3)),
])
def test_a_flag_wins_over_spinhost_over_spin_over_the_default(
        flags: dict[str, Any], environ: dict[str, str], listen: tuple[str, int]) -> None:
    assert load(flags, environ).listen == listen


@pytest.mark.parametrize(("pool_size", "flag", "expected"), [
    (4, None, 16), (1, None, 4), (0, None, 4), (8, None, 32), (8, 3, 3),
])
def test_max_concurrent_follows_the_pool_size(pool_size: int, flag: int | None,
                                              expected: int) -> None:
    config = load({"pool_size": pool_size, "max_concurrent_requests": flag})
    assert config.http.max_concurrent == expected


def test_values_from_the_environment_are_converted() -> None:
    config = load(environ={"SPINHOST_MAX_INSTANCE_MEMORY": "64", "SPINHOST_QUIET": "yes",
                           "SPINHOST_ENV": "A=1,B=2", "SPINHOST_DRAIN_TIMEOUT": "2.5",
                           "SPINHOST_REQUEST_TIMEOUT": "5,echo=1", "SPIN_ALWAYS_BUILD": "1",
                           "DISABLE_WASMTIME_CACHE": "whatever", "SPINHOST_LOG_DIR": ""})
    assert config.limits.memory_bytes == 64 * MiB
    assert config.quiet and config.build
    assert config.cache_dir is not None  # Spin's variables: anything but a true word is off
    assert config.env == {"A": "1", "B": "2"}
    assert config.http.drain_seconds == 2.5
    assert config.limits.deadline_seconds == 5 and config.deadlines == {"echo": 1}
    assert config.set_log_dir and config.log_dir is None  # "": no log files


def test_redis_trigger_flags() -> None:
    config = load({"max_concurrent_messages": 4},
                  {"SPINHOST_MAX_MESSAGE_BYTES": "100", "SPINHOST_MAX_CONCURRENT_MESSAGES": "8"})
    assert config.redis_trigger == RedisTriggerLimits(max_in_flight=4, max_message_bytes=100)


@pytest.mark.parametrize(("environ", "message"), [
    ({"SPINHOST_POOL_SIZE": "many"}, "SPINHOST_POOL_SIZE='many': not a valid value for "
                                     "--pool-size"),
    ({"SPINHOST_POOL_SIZE": "-1"}, "SPINHOST_POOL_SIZE='-1' (--pool-size): must be 0 or more"),
    ({"SPINHOST_MAX_BODY_BYTES": "0"}, "SPINHOST_MAX_BODY_BYTES='0' (--max-body-bytes): "
                                       "must be positive"),
    ({"SPINHOST_QUIET": "maybe"}, "SPINHOST_QUIET='maybe': expected true or false"),
    ({"SPINHOST_LOG_FORMAT": "xml"}, "SPINHOST_LOG_FORMAT='xml': choose from plain, json"),
    ({"SPINHOST_ENV": "A"}, "SPINHOST_ENV 'A' (--env): expected KEY=VALUE"),
    ({"SPINHOST_REQUEST_TIMEOUT": "soon"}, "SPINHOST_REQUEST_TIMEOUT 'soon' "
                                           "(--request-timeout): expected SECONDS"),
    ({"SPIN_HTTP_LISTEN_ADDR": "nowhere"}, "SPIN_HTTP_LISTEN_ADDR 'nowhere': expected "
                                           "HOST:PORT"),
])
def test_a_bad_variable_is_a_usage_error_naming_it(environ: dict[str, str],
                                                   message: str) -> None:
    with pytest.raises(VariableError) as caught:
        load(environ=environ)
    assert message in str(caught.value)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(("flags", "message"), [
    ({"pool_size": -1}, "--pool-size -1: must be 0 or more"),
    ({"max_instance_memory": 0}, "--max-instance-memory 0: must be positive"),
    ({"max_instance_reuse_count": 0}, "--max-instance-reuse-count 0: must be positive"),
    ({"max_queued_requests": -1}, "--max-queued-requests -1: must be 0 or more"),
    ({"drain_timeout": -1.0}, "--drain-timeout -1.0: must be 0 or more"),
    ({"max_guest_threads": 0}, "--max-guest-threads 0: must be positive"),
    ({"max_concurrent_messages": 0}, "--max-concurrent-messages 0: must be positive"),
    ({"max_concurrent_messages": 2000}, "--max-concurrent-messages 2000: must be 1024 or less"),
    ({"max_message_bytes": 0}, "--max-message-bytes 0: must be positive"),
    ({"env": ["=x"]}, "-e/--env '=x': expected KEY=VALUE"),
    ({"request_timeout": ["echo=0"]}, "--request-timeout 'echo=0': must be positive"),
    ({"listen": "127.0.0.1:99999"}, "--listen '127.0.0.1:99999': port 99999 is out of range"),
])
def test_a_bad_flag_is_a_configuration_error_naming_it(flags: dict[str, Any],
                                                       message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(flags)
    assert str(caught.value) == message
    assert caught.value.exit_code == 1


def test_a_command_reads_only_its_own_variables() -> None:
    environ = {"SPINHOST_MAX_BODY_BYTES": "abc", "SPINHOST_CACHE_DIR": "/tmp/c"}
    config = Config.load("check", {}, environ, defaults={"pool_size": 1})
    assert config.cache_dir == Path("/tmp/c") and config.pool_size == 1
    with pytest.raises(VariableError, match="SPINHOST_MAX_BODY_BYTES"):
        Config.load("up", {}, environ)


def test_defaults_of_a_command_lose_to_flags_and_variables() -> None:
    defaults = {"listen": "0.0.0.0:80", "log_dir": "", "source": "/rootfs/spin.toml"}
    config = Config.load("run-bundle", {}, {}, defaults=defaults)
    assert config.listen == ("0.0.0.0", 80) and config.source == "/rootfs/spin.toml"
    assert config.set_log_dir and config.log_dir is None
    config = Config.load("run-bundle", {"log_dir": "/logs"},
                         {"SPIN_HTTP_LISTEN_ADDR": "127.0.0.1:8"}, defaults=defaults)
    assert config.listen == ("127.0.0.1", 8) and config.log_dir == Path("/logs")


def test_guest_threads_follow_the_concurrency_unless_capped() -> None:
    assert HttpLimits(max_concurrent=16).guest_threads(components=5) == 80
    assert HttpLimits(max_concurrent=16, max_guest_threads=8).guest_threads(5) == 8
    assert load({"max_guest_threads": 8}).http.max_guest_threads == 8


def test_every_flag_defaults_to_not_given() -> None:
    # A default in the parser would hide SPINHOST_<FLAG> and Spin's variables.
    parser = argparse.ArgumentParser()
    add_options(parser, "up")
    assert all(value is None for value in vars(parser.parse_args([])).values())


def test_readme_documents_every_flag_of_host_up() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("`host up` options:")[1].split("Every long flag")[0]
    documented = set(re.findall(r"`(--[a-z-]+)", table))
    assert {option.flag for option in OPTIONS["up"]} == documented
    assert env_name("--max-body-bytes") == "SPINHOST_MAX_BODY_BYTES"


def test_workers_default_flag_variable_and_bounds() -> None:
    assert Config.load("up", {}, {}).workers == 1
    assert Config.load("up", {}, {"SPINHOST_WORKERS": "3"}).workers == 3
    assert Config.load("up", {"workers": 2}, {"SPINHOST_WORKERS": "3"}).workers == 2
    assert Config.load("run-bundle", {}, {}, defaults={"workers": "4"}).workers == 4
    with pytest.raises(ConfigError, match="--workers 0: must be positive"):
        Config.load("up", {"workers": 0}, {})
    with pytest.raises(VariableError, match=r"SPINHOST_WORKERS='300' \(--workers\): must be "
                                            "256 or less"):
        Config.load("up", {}, {"SPINHOST_WORKERS": "300"})


@pytest.mark.parametrize("cpu_max,expected", [("150000 100000", 2), ("50000 100000", 1),
                                              ("max 100000", None)])
def test_usable_cpus_reads_the_cgroup_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            cpu_max: str, expected: int | None) -> None:
    from host import limits

    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    monkeypatch.setattr(limits, "CGROUP_ROOT", tmp_path)
    affinity = len(limits.os.sched_getaffinity(0))
    assert limits.usable_cpus() == min(affinity, expected or affinity)

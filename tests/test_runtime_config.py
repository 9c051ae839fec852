"""host/runtime_config.py: Spin's runtime-config shapes, and clear errors for the rest."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from host.capabilities.variables import EnvProvider, StaticProvider
from host.errors import ConfigError
from host.runtime_config import UNSUPPORTED, load_runtime_config


def load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "conf" / "runtime-config.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return load_runtime_config(path)


def test_full_config(tmp_path: Path) -> None:
    config = load(tmp_path, """
state_dir = "state"
[key_value_store.default]
type = "spin"
path = "kv/data.db"
[key_value_store.cache]
type = "redis"
url = "redis://localhost:6379/1"
[key_value_store.scratch]
type = "spin"
[sqlite_database.default]
type = "spin"
path = "/var/db/app.db"
[[variables_provider]]
type = "static"
values = { greeting = "hi" }
[[config_provider]]
type = "env"
prefix = "MYAPP"
""")
    conf = tmp_path / "conf"
    assert config.state_dir == conf / "state"
    assert config.key_value_stores["default"].path == conf / "kv" / "data.db"
    assert config.key_value_stores["cache"].url == "redis://localhost:6379/1"
    assert config.key_value_stores["scratch"].path is None  # in memory
    assert config.sqlite_databases["default"].path == Path("/var/db/app.db")
    static, env = config.variables_providers
    assert isinstance(static, StaticProvider) and static.get("greeting") == "hi"
    assert isinstance(env, EnvProvider) and env.prefix == "MYAPP"


def test_empty_state_dir_means_none(tmp_path: Path) -> None:
    config = load(tmp_path, 'state_dir = ""\n')
    assert config.sets_state_dir and config.state_dir is None
    assert not load(tmp_path, "").sets_state_dir


@pytest.mark.parametrize(("text", "message"), [
    ('[key_value_store.x]\ntype = "azure_cosmos"\n',
     '[key_value_store.x]: unsupported key-value store type "azure_cosmos"'),
    ("[key_value_store.x]\n", '[key_value_store.x]: missing required key "type"'),
    ('[key_value_store.x]\ntype = "redis"\nurl = "http://h"\n', "must be a redis://"),
    ('[key_value_store.x]\ntype = 3\n', '"type" must be a string, got 3'),
    ('[key_value_store.x]\ntype = "spin"\npath = ""\n', '"path" must not be empty'),
    ('key_value_store = 1\n', 'must be a table of [key_value_store.LABEL] tables'),
    ('[sqlite_database.x]\ntype = "spin"\nallow = 1\n', 'unknown key "allow"'),
    ('[[variables_provider]]\ntype = "static"\nvalues = { a = 1 }\n', "table of strings"),
    ('[[variables_provider]]\ntype = "azure_key_vault"\n', "unsupported variables provider"),
    ('variables_provider = "env"\n', "must be an array of tables"),
    ('[llm_compute]\ntype = "remote_http"\n',
     '"llm_compute" is not supported by this host; remove it: this host has no AI'),
    ('[outbound_http]\nconnection_pooling = false\n',
     '"outbound_http" is not supported by this host; remove it: outbound HTTP always goes '
     "through one pooled client"),
    ('[outbound_networking]\nblock_networks = ["private"]\n',
     "no network block list or socket cap; limit destinations with allowed_outbound_hosts"),
    ('[outbound_mqtt]\nmax_payload_size_bytes = 1024\n',
     '"outbound_mqtt" is not supported by this host; remove it: MQTT payloads (2 MiB)'),
    ('log_dir = "logs"\n', "use `host up --log-dir DIR`"),
    ("max_instance_memory = 64\n", "use `host up --max-instance-memory MIB`"),
    ('x = 1\ny = 2\n', 'unknown keys "x", "y"; expected keys: state_dir,'),
    ('stat_dir = "s"\n', 'unknown key "stat_dir" (did you mean "state_dir"?)'),
    ('[key_value_store.x]\ntype = "redis"\nulr = "redis://h"\n',
     '[key_value_store.x]: unknown key "ulr" (did you mean "url"?); expected keys: type, url'),
    ('[key_value_store.x]\ntype = "spin"\nurl = "redis://h"\n',
     'unknown key "url"; expected keys: type, path'),
    ('[[variables_provider]]\ntype = "static"\nvaules = { a = "1" }\n',
     '[[variables_provider]] #1: unknown key "vaules" (did you mean "values"?)'),
    ('[[variables_provider]]\ntype = "env"\nprefx = "A"\n', 'did you mean "prefix"?'),
    ("[broken\n", "invalid TOML"),
])
def test_errors_name_file_table_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    assert message in str(err.value)
    assert "runtime-config.toml" in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_runtime_config(tmp_path / "nope.toml")


def test_unsupported_keys_point_at_flags_that_exist() -> None:
    flags = {f for advice in UNSUPPORTED.values() for f in re.findall(r"--[a-z-]+", advice)}
    assert flags, "the advice for log_dir and max_instance_memory names flags"
    out = subprocess.run([sys.executable, "-m", "host", "up", "--help"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    for flag in flags:
        assert re.search(rf"{flag}\b", out), f"{flag} is not a `host up` flag"

"""host/runtime_config.py: Spin's runtime-config shapes, and clear errors for the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from host.capabilities.variables import EnvProvider, StaticProvider
from host.errors import ConfigError
from host.runtime_config import load_runtime_config


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
    ('[llm_compute]\ntype = "remote_http"\n', '"llm_compute" is not supported'),
    ('x = 1\ny = 2\n', 'unknown keys "x", "y"'),
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

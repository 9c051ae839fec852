"""host/manifest.py: valid manifests parse; each malformed one names its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from host.errors import ManifestError
from host.manifest import (
    FileMapping,
    FilePattern,
    FileSource,
    RedisTrigger,
    UrlSource,
    id_error,
    load_manifest,
    parse_manifest,
)

ROOT = Path(__file__).resolve().parent.parent

HEAD = """spin_manifest_version = 2
[application]
name = "app"
"""
TRIGGER = """
[[trigger.http]]
route = "/..."
component = "web"
"""
COMPONENT = """
[component.web]
source = "web.wasm"
"""
VALID = HEAD + TRIGGER + COMPONENT
REDIS_HEAD = HEAD + '[application.trigger.redis]\naddress = "redis://127.0.0.1:6379"\n'
REDIS = REDIS_HEAD + '[[trigger.redis]]\nchannel = "orders"\ncomponent = "web"\n' + COMPONENT


def parse(text: str):
    return parse_manifest(text, Path("/apps/x/spin.toml"))


# (case id, manifest text, substrings the one-line error must contain)
MALFORMED = [
    ("empty file", "", ["spin_manifest_version"]),
    ("bad toml", "spin_manifest_version = = 2", ["invalid TOML"]),
    ("version 3", VALID.replace("= 2", "= 3", 1), ["invalid manifest version: 3"]),
    ("version string 2", VALID.replace("= 2", '= "2"', 1), ['invalid manifest version: "2"']),
    ("version bool", VALID.replace("= 2", "= true", 1), ["invalid manifest version"]),
    ("no application", "spin_manifest_version = 2\n" + TRIGGER + COMPONENT, ["'application'"]),
    ("no app name", "spin_manifest_version = 2\n[application]\nversion = '1'\n" + TRIGGER
     + COMPONENT, ["[application]", "'name'"]),
    ("app name not string", VALID.replace('name = "app"', "name = 5"), ["'name'", "5"]),
    ("unknown app key", VALID.replace('name = "app"', 'name = "app"\ncolour = "red"'),
     ["[application]", "'colour'", '"red"']),
    ("authors not list", VALID.replace('name = "app"', 'name = "app"\nauthors = "me"'),
     ["'authors'", "array"]),
    ("base not slash", VALID.replace('name = "app"', 'name = "app"\n[application.trigger.http]\n'
                                     'base = "/api"'), ["base", '"/api"']),
    ("unknown top-level key", "extra = 1\n" + VALID, ["top level", "'extra'"]),
    ("no trigger", HEAD + COMPONENT, ["'trigger'"]),
    ("sqs trigger", VALID + '\n[[trigger.sqs]]\nqueue_url = "x"\ncomponent = "web"\n',
     ["trigger.sqs", "not supported", "only http and redis"]),
    ("trigger missing route", HEAD + '[[trigger.http]]\ncomponent = "web"\n' + COMPONENT,
     ["web-http-trigger", "'route'"]),
    ("trigger unknown key", VALID.replace('component = "web"', 'component = "web"\nroutes = 1'),
     ["'routes'"]),
    ("trigger no such component", VALID.replace('component = "web"', 'component = "nope"'),
     ['no such component "nope"']),
    ("trigger component wrong type", VALID.replace('component = "web"', "component = 42"),
     ["'component'", "42"]),
    ("private false", VALID.replace('route = "/..."', "route = { private = false }"),
     ["{ private = false }", "web-http-trigger"]),
    ("route wrong type", VALID.replace('route = "/..."', "route = 7"), ["'route'", "7"]),
    ("neither component nor static", HEAD + '[[trigger.http]]\nroute = "/"\n' + COMPONENT,
     ["either component or static_response", "neither"]),
    ("both component and static", VALID.replace(
        'component = "web"', 'component = "web"\nstatic_response = { body = "x" }'),
     ["either component or static_response", "both"]),
    ("unknown executor", VALID.replace('component = "web"',
                                       'component = "web"\nexecutor = { type = "cgi" }'),
     ["executor", '"cgi"']),
    ("wagi entrypoint", VALID.replace(
        'component = "web"', 'component = "web"\nexecutor = { type = "wagi", entrypoint = "go" }'),
     ["entrypoint", '"go"']),
    ("bad component id underscore", VALID.replace("[component.web]", "[component.bad_id]")
     .replace('"web"', '"bad_id"'), ["bad_id", "separated with '-', not '_'"]),
    ("bad component id digit", VALID.replace("[component.web]", '[component."1-2"]'),
     ["1-2", "must start with an ASCII letter"]),
    ("bad component id empty word", VALID.replace("[component.web]", '[component."a--b"]'),
     ["a--b", "must not be empty"]),
    ("bad component id mixed case", VALID.replace("[component.web]", "[component.Web]"),
     ["Web", "all lowercase or all UPPERCASE"]),
    ("component missing source", HEAD + TRIGGER + "[component.web]\ndescription = 'x'\n",
     ["[component.web]", "'source'"]),
    ("component source wrong type", VALID.replace('source = "web.wasm"', "source = 1"),
     ["'source'", "1"]),
    ("component url bad digest", VALID.replace(
        'source = "web.wasm"', 'source = { url = "https://x/y.wasm", digest = "md5:00" }'),
     ["digest", "md5:00", "sha256:"]),
    ("component unknown key", VALID + "sauce = 'web.wasm'\n", ["[component.web]", "'sauce'"]),
    ("environment not table", VALID + 'environment = "A=1"\n', ["'environment'", '"A=1"']),
    ("environment value not string", VALID + "environment = { A = 1 }\n",
     ["'environment'", "'A'", "1"]),
    ("files not array", VALID + 'files = "static"\n', ["'files'"]),
    ("files dot", VALID + 'files = ["."]\n', ["'files'", '"."']),
    ("files mapping relative destination", VALID
     + 'files = [{ source = "a", destination = "data" }]\n', ["destination", '"data"']),
    ("files mapping unknown key", VALID + 'files = [{ source = "a", dest = "/d" }]\n',
     ["files entry", "'destination'"]),
    ("kv label bad", VALID + 'key_value_stores = ["My Store"]\n',
     ["key_value_stores", "My Store", "kebab-case or snake_case"]),
    ("sqlite label wrong type", VALID + "sqlite_databases = [1]\n", ["sqlite_databases"]),
    ("allowed hosts not list", VALID + 'allowed_outbound_hosts = "*://*:*"\n',
     ["allowed_outbound_hosts"]),
    ("allowed hosts insecure", VALID + 'allowed_outbound_hosts = ["insecure:allow-all"]\n',
     ["insecure:allow-all", "*://*:*"]),
    ("component variable unknown app var", VALID + 'variables = { x = "{{ nope }}" }\n',
     ["variables", 'unknown variable "nope"']),
    ("component variable unbalanced", HEAD + '[variables]\nnope = { default = "1" }\n'
     + TRIGGER + COMPONENT + 'variables = { x = "{{ nope" }\n', ["unbalanced"]),
    ("app variable bad name", HEAD + '[variables]\na_1 = { default = "x" }\n' + TRIGGER
     + COMPONENT, ["a_1", "must start with an ASCII letter; got '1'"]),
    ("app variable dash", HEAD + '[variables]\na-b = { default = "x" }\n' + TRIGGER + COMPONENT,
     ["a-b", "separated with '_', not '-'"]),
    ("app variable upper", HEAD + '[variables]\nFOO = { default = "x" }\n' + TRIGGER + COMPONENT,
     ["FOO", "all lowercase"]),
    ("app variable neither", HEAD + "[variables]\nx = { secret = true }\n" + TRIGGER + COMPONENT,
     ["[variables.x]", "`required` OR have a `default`"]),
    ("app variable both", HEAD + '[variables]\nx = { required = true, default = "1" }\n' + TRIGGER
     + COMPONENT, ["[variables.x]", "`required` OR have a `default`"]),
    ("app variable unknown field", HEAD + '[variables]\nx = { default = "1", kind = "s" }\n'
     + TRIGGER + COMPONENT, ["[variables.x]", "'kind'"]),
    ("build command wrong type", VALID + "[component.web.build]\ncommand = 5\n",
     ["[component.web.build]", "'command'", "5"]),
    ("build workdir absolute", VALID + '[component.web.build]\ncommand = "make"\n'
     'workdir = "/tmp"\n', ["workdir", "must be relative"]),
    ("build unknown key", VALID + '[component.web.build]\ncommand = "make"\ncwd = "x"\n',
     ["'cwd'"]),
    ("static status not int", HEAD + '[[trigger.http]]\nroute = "/"\n'
     'static_response = { status_code = "ok" }\n', ["status_code", '"ok"']),
    ("static header name invalid", HEAD + '[[trigger.http]]\nroute = "/"\n'
     'static_response = { headers = { "bad name" = "x" } }\n', ["headers", "'bad name'"]),
    ("duplicate trigger id", HEAD + '[[trigger.http]]\nid = "t"\nroute = "/a"\ncomponent = "web"\n'
     '[[trigger.http]]\nid = "t"\nroute = "/b"\ncomponent = "web"\n' + COMPONENT,
     ['duplicate trigger id "t"']),
    ("dependencies unsupported", VALID + '[component.web.dependencies]\n"a:b/c" = "1.0"\n',
     ["dependencies", "not supported"]),
    ("v1 missing trigger", 'spin_manifest_version = "1"\nname = "x"\n', ["'trigger'"]),
    ("allowed_http_hosts path", VALID + 'allowed_http_hosts = ["https://a.com/p"]\n',
     ["[component.web]", "'allowed_http_hosts'", '"https://a.com/p" contains a path']),
    ("allowed_http_hosts ftp", VALID + 'allowed_http_hosts = ["ftp://a.com"]\n',
     ["'allowed_http_hosts'", '"ftp://a.com"', "http or https"]),
    ("allowed_http_hosts bad port", VALID + 'allowed_http_hosts = ["a.com:99999"]\n',
     ["'allowed_http_hosts'", '"a.com:99999"', "bad port"]),
    ("allowed_http_hosts no host", VALID + 'allowed_http_hosts = ["http://"]\n',
     ["'allowed_http_hosts'", "no host name"]),
    ("v1 wrong trigger type", 'spin_manifest_version = "1"\nname = "x"\n'
     'trigger = { type = "sqs" }\n', ["sqs", "not supported"]),
    # [[trigger.redis]] (Spin's trigger-redis: channel and component required, address
    # optional; [application.trigger.redis] address required when the table is there)
    ("redis no channel", REDIS.replace('channel = "orders"\n', ""),
     ["[[trigger.redis]] 'web-redis-trigger'", "missing the required key 'channel'"]),
    ("redis no component", REDIS.replace('component = "web"\n', "", 1),
     ["[[trigger.redis]] 'redis-trigger1'", "missing the required key 'component'"]),
    ("redis unknown component", REDIS.replace('component = "web"', 'component = "nope"', 1),
     ["[[trigger.redis]] 'nope-redis-trigger'", "'component'", 'no such component "nope"']),
    ("redis channel not string", REDIS.replace('"orders"', "7"), ["'channel'", "7"]),
    ("redis no address", REDIS.replace('address = "redis://127.0.0.1:6379"\n', ""),
     ["[application.trigger.redis] is missing the required key 'address'"]),
    ("redis no address anywhere", HEAD + '[[trigger.redis]]\nchannel = "c"\ncomponent = "web"\n'
     + COMPONENT, ["[[trigger.redis]] 'web-redis-trigger' has no Redis address",
                   "[application.trigger.redis]"]),
    ("redis address http", REDIS.replace("redis://127.0.0.1", "http://127.0.0.1"),
     ["[application.trigger.redis] key 'address'", '"http://127.0.0.1:6379" is not a Redis '
      "address"]),
    ("redis address no host", REDIS.replace("redis://127.0.0.1:6379", "redis://"),
     ["'address'", "names no host"]),
    ("redis address bad port", REDIS.replace(":6379", ":99999"), ["'address'", "not a valid URL"]),
    ("redis address bad database", REDIS.replace(":6379", ":6379/zero"),
     ["'address'", "database number"]),
    ("redis address password hidden", REDIS.replace("redis://", "rediss://:s3cret@")
     .replace(":6379", ":6379/x"), ['"rediss://:***@127.0.0.1:6379/x"']),
    ("redis trigger address bad", REDIS.replace('channel = "orders"',
                                                'channel = "orders"\naddress = "localhost"'),
     ["[[trigger.redis]] 'web-redis-trigger' key 'address'", '"localhost"']),
    ("redis address unknown variable", REDIS.replace("redis://127.0.0.1:6379",
                                                     "redis://{{ host }}"),
     ["'address'", 'unknown variable "host"']),
    ("redis channel unknown variable", REDIS.replace('"orders"', '"{{ topic }}"'),
     ["'channel'", 'unknown variable "topic"']),
    ("redis route", REDIS.replace('channel = "orders"', 'channel = "orders"\nroute = "/"'),
     ["[[trigger.redis]] #1", "unknown key 'route'"]),
    ("redis static_response", REDIS.replace('channel = "orders"',
                                            'channel = "orders"\nstatic_response = {}'),
     ["unknown key 'static_response'"]),
    ("redis dependencies", REDIS.replace('channel = "orders"',
                                         'channel = "orders"\ndependencies = { a = "b" }'),
     ["'dependencies'", "not supported"]),
    ("redis empty", "trigger = { redis = [] }\n" + REDIS_HEAD + COMPONENT,
     ["[[trigger.redis]] must be a non-empty array of tables"]),
    ("redis duplicate id with http", HEAD + '[[trigger.http]]\nid = "t"\nroute = "/"\n'
     'component = "web"\n[[trigger.redis]]\nid = "t"\nchannel = "c"\ncomponent = "web"\n'
     'address = "redis://r:6379"\n' + COMPONENT, ['duplicate trigger id "t"']),
]


@pytest.mark.parametrize("text,needles", [(t, n) for _, t, n in MALFORMED],
                         ids=[c for c, _, _ in MALFORMED])
def test_malformed_manifest_errors_name_the_key(text: str, needles: list[str]) -> None:
    with pytest.raises(ManifestError) as info:
        parse(text)
    message = str(info.value)
    assert message.startswith("/apps/x/spin.toml"), message
    assert "\n" not in message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"


def test_at_least_thirty_malformed_cases() -> None:
    assert len(MALFORMED) >= 30


V1_HEAD = 'spin_manifest_version = "1"\nname = "old"\ntrigger = { type = "http" }\n'
V1_COMPONENT = '[[component]]\nid = "c"\nsource = "a.wasm"\n[component.trigger]\nroute = "/"\n'
INLINE = HEAD + '[[trigger.http]]\nroute = "/"\ncomponent = { source = "a.wasm" }\n'

# (case id, manifest text, table, unknown key, suggestion or None). Every table is
# checked for unknown keys before anything else, so a misspelt required key is
# named as unknown, not reported as missing.
UNKNOWN_KEYS = [
    ("top level", "componet = 1\n" + VALID, "top level", "componet", "component"),
    ("application", VALID.replace('name = "app"', 'name = "app"\ndescripton = "x"'),
     "[application]", "descripton", "description"),
    ("application.trigger.http", VALID.replace(
        'name = "app"', 'name = "app"\n[application.trigger.http]\nbsae = "/"'),
     "[application.trigger.http]", "bsae", "base"),
    ("variable", HEAD + '[variables]\nx = { defualt = "1" }\n' + TRIGGER + COMPONENT,
     "[variables.x]", "defualt", "default"),
    ("trigger", HEAD + '[[trigger.http]]\nroute = "/"\ncomponnet = "web"\n' + COMPONENT,
     "[[trigger.http]] #1", "componnet", "component"),
    ("trigger no close match", VALID.replace('route = "/..."', 'route = "/..."\ncolour = 1'),
     "[[trigger.http]] #1", "colour", None),
    ("executor", VALID.replace('component = "web"', 'component = "web"\n'
                               'executor = { type = "wagi", agrv = "x" }'),
     "executor", "agrv", "argv"),
    ("static_response", HEAD + '[[trigger.http]]\nroute = "/"\n'
     "static_response = { status = 404 }\n", "static_response", "status", "status_code"),
    ("component", VALID + 'enviroment = { A = "1" }\n', "[component.web]", "enviroment",
     "environment"),
    ("component misspelt source", HEAD + TRIGGER + '[component.web]\nsorce = "web.wasm"\n',
     "[component.web]", "sorce", "source"),
    ("inline component", INLINE.replace("source =", "sorce ="), "inline component", "sorce",
     "source"),
    ("source table", VALID.replace('source = "web.wasm"',
                                   'source = { url = "https://x/a.wasm", digets = "sha256:0" }'),
     "[component.web] source", "digets", "digest"),
    ("files entry", VALID + 'files = [{ source = "a", dest = "/d" }]\n', "files entry", "dest",
     "destination"),
    ("build", VALID + '[component.web.build]\ncomand = "make"\n', "[component.web.build]",
     "comand", "command"),
    ("profile", VALID + '[component.web.profile.debug]\nsoruce = "d.wasm"\n',
     "[component.web.profile.debug]", "soruce", "source"),
    ("profile build", VALID + '[component.web.profile.debug.build]\ncomand = "make"\n',
     "[component.web.profile.debug.build]", "comand", "command"),
    ("v1 top level", V1_HEAD + "nmae = 1\n" + V1_COMPONENT, "top level (manifest v1)", "nmae",
     "name"),
    ("v1 trigger", V1_HEAD.replace('type = "http"', 'type = "http", bas = "/"') + V1_COMPONENT,
     "[trigger] (manifest v1)", "bas", "base"),
    ("v1 component", V1_HEAD + V1_COMPONENT.replace("source", "sorce"),
     "[[component]] #1 (manifest v1)", "sorce", "source"),
    ("v1 component trigger", V1_HEAD + V1_COMPONENT.replace("route", "rout"),
     "[component.trigger] of 'c'", "rout", "route"),
    ("application.trigger.redis", REDIS.replace("address =", "adress ="),
     "[application.trigger.redis]", "adress", "address"),
    ("redis trigger", REDIS.replace("channel =", "chanel ="), "[[trigger.redis]] #1", "chanel",
     "channel"),
]


@pytest.mark.parametrize("text,table,key,suggestion", [c[1:] for c in UNKNOWN_KEYS],
                         ids=[c[0] for c in UNKNOWN_KEYS])
def test_unknown_keys_are_named_with_a_suggestion(
        text: str, table: str, key: str, suggestion: str | None) -> None:
    with pytest.raises(ManifestError) as info:
        parse(text)
    message = str(info.value)
    assert message.startswith("/apps/x/spin.toml: "), message
    assert table in message and f"has unknown key '{key}'" in message, message
    if suggestion is None:
        assert "did you mean" not in message, message
    else:
        assert f"did you mean '{suggestion}'?" in message, message
    assert "\n" not in message


def test_keys_spin_accepts_are_accepted_even_when_ignored() -> None:
    m = parse(HEAD + """targets = ["spin-up:3.3", { registry = "ghcr.io/x", id = "env:1" }]
[application.tool.lint]
level = "strict"
[[trigger.http]]
route = "/..."
component = "web"
components = {}
dependencies = {}
""" + COMPONENT + """description = "web"
ai_models = []
targets = [{ path = "env.toml" }]
dependencies_inherit_configuration = false
[component.web.tool.clean]
command = "rm -rf target"
[component.web.profile.debug]
source = "debug.wasm"
environment = { LOG = "debug" }
build = { command = "make debug" }
""")
    assert m.components["web"].source == FileSource(Path("web.wasm"))  # default profile


# (allowed_http_hosts entries, the allowed_outbound_hosts they become). As Spin's
# compat layer: an entry is a host and an optional port (a scheme is allowed but only
# says how to read it); each host gets http and https; a port equal to the scheme's
# default is dropped; `self` stays http; insecure:allow-all anywhere allows all.
HTTP_HOSTS = [
    (["example.com"], ["http://example.com", "https://example.com"]),
    (["example.com:8080"], ["http://example.com:8080", "https://example.com:8080"]),
    (["https://x.com"], ["http://x.com", "https://x.com"]),
    (["http://x.com/"], ["http://x.com", "https://x.com"]),
    (["HTTPS://X.com:4444"], ["http://x.com:4444", "https://x.com:4444"]),
    (["x.com:80"], ["http://x.com", "https://x.com"]),
    (["https://x.com:443"], ["http://x.com", "https://x.com"]),
    (["localhost:3001"], ["http://localhost:3001", "https://localhost:3001"]),
    (["192.168.1.1:3002"], ["http://192.168.1.1:3002", "https://192.168.1.1:3002"]),
    (["[::1]"], ["http://[::1]", "https://[::1]"]),
    (["http://[::1]:8001"], ["http://[::1]:8001", "https://[::1]:8001"]),
    (["*.example.com"], ["http://*.example.com", "https://*.example.com"]),
    (["self"], ["http://self"]),
    (["a.com", "b.com"], ["http://a.com", "https://a.com", "http://b.com", "https://b.com"]),
    (["insecure:allow-all"], ["http://*:*", "https://*:*", "http://self"]),
    (["a.com", "insecure:allow-all"], ["http://*:*", "https://*:*", "http://self"]),
    ([], []),
]


@pytest.mark.parametrize("entries,expected", HTTP_HOSTS, ids=[str(e) for e, _ in HTTP_HOSTS])
def test_allowed_http_hosts_converts_like_spin(entries: list[str], expected: list[str]) -> None:
    listed = ", ".join(f'"{e}"' for e in entries)
    m = parse(VALID + f'allowed_outbound_hosts = ["redis://db:6379"]\n'
              f"allowed_http_hosts = [{listed}]\n")
    assert m.components["web"].allowed_outbound_hosts == ("redis://db:6379", *expected)
    warnings = [w for w in m.warnings if "allowed_http_hosts is deprecated" in w]
    if expected:
        quoted = ", ".join(f'"{h}"' for h in expected)
        assert warnings == [f"[component.web] allowed_http_hosts is deprecated: replace it "
                            f"with allowed_outbound_hosts = [{quoted}]"]
    else:
        assert warnings == []


def test_v1_allowed_http_hosts_add_to_the_implicit_database_hosts() -> None:
    m = parse(V1_HEAD + V1_COMPONENT.replace(
        'source = "a.wasm"', 'source = "a.wasm"\nallowed_http_hosts = ["https://api.x.com"]'))
    assert m.components["c"].allowed_outbound_hosts == (
        "redis://*:*", "mysql://*:*", "postgres://*:*", "http://api.x.com", "https://api.x.com")


def test_full_manifest_parses_into_frozen_objects() -> None:
    m = parse(HEAD + """
version = "1.2.3"
authors = ["a <a@example.com>"]
[application.trigger.http]
base = "/"
[variables]
api_host = { default = "example.com" }
token = { required = true, secret = true }
[[trigger.http]]
route = "/api/..."
component = "api"
[[trigger.http]]
id = "internal"
route = { private = true }
component = "api"
[[trigger.http]]
route = "/inline"
component = { source = "inline.wasm" }
[[trigger.http]]
route = "/teapot"
static_response = { status_code = 418, headers = { x-tea = "yes" }, body = "short and stout" }
[component.api]
source = "api.wasm"
description = "the API"
files = ["static/**/*", { source = "assets", destination = "/data" }]
exclude_files = ["static/secret.txt"]
environment = { LOG = "debug" }
allowed_outbound_hosts = ["https://{{ api_host }}"]
key_value_stores = ["default", "cache_2"]
sqlite_databases = ["default"]
variables = { endpoint = "https://{{ api_host }}/v1", secret = "{{token}}" }
[component.api.build]
command = ["npm ci", "npm run build"]
workdir = "api"
watch = ["src/**/*.ts"]
""")
    assert m.application.version == "1.2.3"
    assert m.variables["token"].secret and m.variables["token"].required
    api = m.components["api"]
    assert api.source == FileSource(Path("api.wasm"))
    assert api.files == (FilePattern("static/**/*"), FileMapping("assets", "/data"))
    assert dict(api.environment) == {"LOG": "debug"}
    assert api.key_value_stores == ("default", "cache_2")
    assert api.build is not None and api.build.commands == ("npm ci", "npm run build")
    ids = [t.id for t in m.triggers]
    assert ids == ["api-http-trigger", "internal", "http-trigger1", "http-trigger2"]
    assert m.triggers[1].private
    assert m.triggers[2].component == "http-trigger1-component"
    assert m.components["http-trigger1-component"].source == FileSource(Path("inline.wasm"))
    assert m.triggers[3].static_response is not None
    assert m.triggers[3].static_response.status == 418
    with pytest.raises(TypeError):
        api.environment["X"] = "y"  # type: ignore[index]
    with pytest.raises(AttributeError):
        api.id = "other"  # type: ignore[misc]


def test_url_source_parses() -> None:
    m = parse(VALID.replace('source = "web.wasm"',
                            'source = { url = "https://x/y.wasm", digest = "sha256:ab" }'))
    assert m.components["web"].source == UrlSource("https://x/y.wasm", "sha256:ab")


def test_v1_manifest_is_converted_like_spin() -> None:
    m = parse("""spin_manifest_version = "1"
name = "old"
version = "0.1.0"
trigger = { type = "http", base = "/" }
[[component]]
id = "my_comp"
source = "a.wasm"
config = {}
[component.trigger]
route = "/a/..."
""")
    assert m.application.name == "old"
    assert list(m.components) == ["my-comp"]
    assert m.components["my-comp"].allowed_outbound_hosts == (
        "redis://*:*", "mysql://*:*", "postgres://*:*")
    assert m.triggers[0].id == "trigger-my-comp"
    assert m.triggers[0].route == "/a/..."
    assert any("version 1 is deprecated" in w for w in m.warnings)


@pytest.mark.parametrize("value,sep,lower,expected", [
    ("hello", "-", False, None),
    ("FOO-bar", "-", False, None),
    ("a1-b2", "-", False, None),
    ("", "-", False, "empty"),
    ("a.b", "-", False, "may only contain alphanumeric ASCII; got '.'"),
    ("bad+name", "_", True, "may only contain alphanumeric ASCII; got '+'"),
    ("api_host", "_", True, None),
])
def test_id_rules(value: str, sep: str, lower: bool, expected: str | None) -> None:
    err = id_error(value, sep, lower)
    if expected is None:
        assert err is None
    else:
        assert err is not None and expected in err


def test_example_manifests_parse() -> None:
    paths = [ROOT / "spin.toml.example", *sorted(ROOT.glob("apps/*/spin.toml"))]
    assert len(paths) >= 4
    for path in paths:
        manifest = parse_manifest(path.read_text(), path)
        assert manifest.triggers or manifest.redis_triggers


def test_directory_and_missing_paths(tmp_path: Path) -> None:
    (tmp_path / "spin.toml").write_text(VALID)
    assert load_manifest(tmp_path).application.name == "app"
    with pytest.raises(ManifestError, match="no spin.toml"):
        load_manifest(tmp_path / "sub" if (tmp_path / "sub").mkdir() is None else tmp_path)
    with pytest.raises(ManifestError, match="no such file"):
        load_manifest(tmp_path / "nope.toml")


def test_redis_triggers_parse_as_spin_reads_them() -> None:
    m = parse(HEAD + """[variables]
redis_host = { default = "127.0.0.1:6379" }
topic = { default = "orders" }
[application.trigger.redis]
address = "redis://{{ redis_host }}"
[[trigger.http]]
route = "/..."
component = "web"
[[trigger.redis]]
channel = "{{ topic }}"
component = "web"
[[trigger.redis]]
id = "audit"
channel = "audit"
component = "web"
address = "rediss://user:pw@other:6380/2"
[[trigger.redis]]
channel = "inline"
component = { source = "inline.wasm" }
[[trigger.redis]]
channel = "again"
component = "web"
[[trigger.redis]]
channel = "socket"
component = "web"
address = "unix:///run/redis.sock"
""" + COMPONENT)
    assert m.application.redis_address == "redis://{{ redis_host }}"
    assert [t.id for t in m.triggers] == ["web-http-trigger"]
    assert m.redis_triggers == (
        RedisTrigger("web-redis-trigger", "{{ topic }}", "web"),  # rendered at start-up
        RedisTrigger("audit", "audit", "web", "rediss://user:pw@other:6380/2"),
        RedisTrigger("redis-trigger1", "inline", "redis-trigger1-component"),
        RedisTrigger("redis-trigger2", "again", "web"),  # Spin's counter once the id is taken
        RedisTrigger("redis-trigger3", "socket", "web", "unix:///run/redis.sock"),
    )
    assert m.components["redis-trigger1-component"].source == FileSource(Path("inline.wasm"))
    assert m.warnings == ()


def test_a_repeated_redis_trigger_is_a_warning() -> None:
    m = parse(REDIS.replace("[component.web]", '[[trigger.redis]]\nchannel = "orders"\n'
                            'component = "web"\n[component.web]'))
    assert m.warnings == ("[[trigger.redis]] 'redis-trigger1' repeats 'web-redis-trigger' "
                          '(channel "orders", component "web"): each message is handled twice',)


def test_v1_redis_manifest_is_converted_like_spin() -> None:
    m = parse("""spin_manifest_version = "1"
name = "old"
trigger = { type = "redis", address = "redis://localhost:6379" }
[[component]]
id = "echo"
source = "a.wasm"
[component.trigger]
channel = "messages"
""")
    assert m.application.redis_address == "redis://localhost:6379"
    assert m.triggers == ()
    assert m.redis_triggers == (RedisTrigger("trigger-echo", "messages", "echo"),)

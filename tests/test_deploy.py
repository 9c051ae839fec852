"""deploy/: the node image's Dockerfile and the Kubernetes manifests, checked offline.

Every manifest under deploy/k8s validates against the Kubernetes JSON schemas
bundled with `kubernetes-validate` (strict: unknown fields are errors), for the
newest bundled version and for 1.33 (image volumes beta). The rest checks that
the pieces fit together: the flags the Dockerfile and the Deployment pass are
flags `host` accepts, the ConfigMap's runtime config parses with the host's own
parser, labels, ports, volumes and paths agree between files. No cluster and
no image build here: see deploy/README.md for what is not tested.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from host.runtime_config import parse_runtime_config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"

HEALTH_PATH = "/.well-known/spin/health"
APP_MOUNT = "/app"
CACHE_DIR = "/var/cache/spinhost"
PORT = 8080
DEFAULT_DRAIN_SECONDS = 10.0  # host/limits.py; `host up --drain-timeout`
NODE_UID = 10001
# Image volumes (`volumes[].image`) are in the API from 1.31; beta from 1.33.
MIN_VERSION = "1.33.0"
LATEST_VERSION = kubernetes_validate.latest_version()
KUSTOMIZE_SKIPPED = {"kustomization.yaml", "runtimeclass-shim.yaml"}


# -- loading ------------------------------------------------------------------


def manifest_files() -> list[Path]:
    return sorted(K8S.glob("*.yaml")) + sorted(K8S.glob("*.yml"))


def resources_in(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def k8s_resources() -> list[tuple[Path, dict[str, Any]]]:
    """Every Kubernetes API object under deploy/k8s (not the Kustomization)."""
    return [(path, doc) for path in manifest_files() for doc in resources_in(path)
            if doc.get("kind") != "Kustomization"]


def find(kind: str, name: str) -> dict[str, Any]:
    hits = [doc for _, doc in k8s_resources()
            if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(hits) == 1, f"expected exactly one {kind}/{name} under deploy/k8s, got {len(hits)}"
    return hits[0]


def deployment() -> dict[str, Any]:
    return find("Deployment", "kv-counter")


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = deployment()["spec"]["template"]["spec"]
    return spec


def host_container() -> dict[str, Any]:
    containers = pod_spec()["containers"]
    assert len(containers) == 1, "one container per pod: the host"
    container: dict[str, Any] = containers[0]
    return container


def volume(name: str) -> dict[str, Any]:
    hits = [v for v in pod_spec()["volumes"] if v["name"] == name]
    assert len(hits) == 1, f"volume {name!r}"
    return hits[0]


def mount_at(container: dict[str, Any], path: str) -> dict[str, Any]:
    hits = [m for m in container.get("volumeMounts", []) if m["mountPath"] == path]
    assert len(hits) == 1, f"container {container['name']!r} mounts nothing at {path}"
    return hits[0]


def option_value(args: list[str], *names: str) -> str | None:
    for i, arg in enumerate(args):
        if arg in names:
            return args[i + 1]
        for name in names:
            if name.startswith("--") and arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


@cache
def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "Dockerfile ends in a line continuation"
    return out


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in dockerfile_instructions():
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def exec_form(instruction: str) -> list[str]:
    """The JSON (exec form) argument list of ENTRYPOINT/CMD in the final stage."""
    values = [rest for word, rest in dockerfile_stages()[-1] if word == instruction]
    assert len(values) == 1, f"exactly one {instruction} in the runtime stage"
    parsed = json.loads(values[0])
    assert isinstance(parsed, list) and all(isinstance(a, str) for a in parsed), (
        f"{instruction} must use the exec (JSON array) form so signals reach the host"
    )
    return parsed


@cache
def help_flags(command: str) -> frozenset[str]:
    """Every option `host COMMAND --help` lists, long and short."""
    result = subprocess.run([sys.executable, "-m", "host", command, "--help"],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    return frozenset(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", result.stdout))


def flags_used(args: list[str]) -> list[str]:
    return [arg.split("=", 1)[0] for arg in args if arg.startswith("-")]


# -- schemas --------------------------------------------------------------------


def test_manifests_exist() -> None:
    names = {p.name for p in manifest_files()}
    assert {"deployment.yaml", "configmap.yaml", "service.yaml", "redis.yaml",
            "runtimeclass-shim.yaml", "kustomization.yaml"} <= names


# kustomization.yaml is kustomize's own format, not a Kubernetes API object: the
# bundled schemas have none. It is checked by test_kustomization_* below.
@pytest.mark.parametrize("version", [MIN_VERSION, LATEST_VERSION])
@pytest.mark.parametrize("path", [p for p in manifest_files() if p.name != "kustomization.yaml"],
                         ids=lambda p: p.name)
def test_manifest_validates_strictly(path: Path, version: str) -> None:
    docs = resources_in(path)
    assert docs, f"{path.name} holds no resource"
    for doc in docs:
        assert doc.get("kind") != "Kustomization", f"{path.name}: name it kustomization.yaml"
        validated = kubernetes_validate.validate(doc, version, strict=True)
        assert validated == version.rsplit(".", 1)[0]


def test_strict_validation_rejects_unknown_fields() -> None:
    """The validator is really strict: a misspelt field fails (guards the test above)."""
    doc = copy.deepcopy(deployment())
    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, LATEST_VERSION, strict=True)


def test_image_volume_needs_a_recent_kubernetes() -> None:
    """1.30's schema has no image volumes: the version we validate against matters."""
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment(), "1.30.0", strict=True)


def test_kustomization_lists_every_manifest_but_the_optional_ones() -> None:
    kustomization = resources_in(K8S / "kustomization.yaml")[0]
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    expected = {p.name for p in manifest_files()} - KUSTOMIZE_SKIPPED
    assert set(listed) == expected
    assert all((K8S / name).is_file() for name in listed)


# -- the Deployment ---------------------------------------------------------------


def test_deployment_runs_three_replicas_of_the_node_image() -> None:
    assert deployment()["spec"]["replicas"] == 3
    containers = pod_spec()["containers"] + pod_spec().get("initContainers", [])
    assert {c["image"] for c in containers} == {"spinhost/node:0.1.0"}


def test_app_image_is_mounted_read_only_at_app() -> None:
    app = volume("app")
    assert app["image"] == {"reference": "registry.example.com/apps/kv-counter:0.1.0",
                            "pullPolicy": "IfNotPresent"}
    for container in [host_container(), *pod_spec().get("initContainers", [])]:
        mounts = [m for m in container.get("volumeMounts", []) if m["name"] == "app"]
        for mount in mounts:
            assert mount["mountPath"] == APP_MOUNT
            assert mount.get("readOnly") is True
    assert mount_at(host_container(), APP_MOUNT)["name"] == "app"


def test_host_serves_the_app_manifest_on_8080() -> None:
    args = host_container()["args"]
    assert args[0] == "up"
    assert option_value(args, "-f", "--from") == f"{APP_MOUNT}/spin.toml"
    assert option_value(args, "--listen") == f"0.0.0.0:{PORT}"
    assert option_value(args, "--state-dir") == "", "state lives in Redis, none on the pod"
    ports = host_container()["ports"]
    assert [(p["name"], p["containerPort"]) for p in ports] == [("http", PORT)]


def test_probes_hit_the_health_endpoint() -> None:
    container = host_container()
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == HEALTH_PATH, probe
        assert get["port"] in (PORT, "http"), probe


def test_every_container_has_a_locked_down_security_context() -> None:
    spec = pod_spec()
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == NODE_UID
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, container["name"]
        assert sc["allowPrivilegeEscalation"] is False, container["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], container["name"]
    host_sc = host_container()["securityContext"]
    assert "runAsUser" not in host_sc and host_sc.get("runAsNonRoot") is not False
    assert "add" not in host_sc["capabilities"]


def test_only_the_cache_owner_step_runs_as_root_and_only_with_chown() -> None:
    for init in pod_spec().get("initContainers", []):
        sc = init["securityContext"]
        if sc.get("runAsUser") == 0:
            assert init["name"] == "cache-owner"
            assert sc["capabilities"]["add"] == ["CHOWN"]
            assert init["command"] == ["chown", f"{NODE_UID}:{NODE_UID}", CACHE_DIR]


def test_grace_period_outlasts_the_drain() -> None:
    args = host_container()["args"]
    drain = float(option_value(args, "--drain-timeout") or DEFAULT_DRAIN_SECONDS)
    pre_stop = host_container().get("lifecycle", {}).get("preStop", {})
    pre_stop_seconds = pre_stop.get("sleep", {}).get("seconds", 0)
    grace = pod_spec()["terminationGracePeriodSeconds"]
    assert grace > DEFAULT_DRAIN_SECONDS
    assert grace > pre_stop_seconds + drain


def test_compile_cache_is_a_writable_node_volume() -> None:
    cache_volume = volume("compile-cache")
    assert cache_volume["hostPath"] == {"path": CACHE_DIR, "type": "DirectoryOrCreate"}
    env = {e["name"]: e.get("value") for e in host_container().get("env", [])}
    assert env.get("SPINHOST_CACHE_DIR", CACHE_DIR) == CACHE_DIR
    mount = mount_at(host_container(), CACHE_DIR)
    assert mount["name"] == "compile-cache" and not mount.get("readOnly", False)


def test_cache_is_filled_before_the_server_starts() -> None:
    inits = {c["name"]: c for c in pod_spec().get("initContainers", [])}
    assert list(inits) == ["cache-owner", "compile"], "chown first, then compile"
    compile_step = inits["compile"]
    assert compile_step["args"][0] == "check"
    assert option_value(compile_step["args"], "-f", "--from") == f"{APP_MOUNT}/spin.toml"
    assert not mount_at(compile_step, CACHE_DIR).get("readOnly", False)


def test_tmp_is_an_empty_dir() -> None:
    mount = mount_at(host_container(), "/tmp")
    assert "emptyDir" in volume(mount["name"])


def test_every_mount_has_a_volume_and_every_volume_is_used() -> None:
    spec = pod_spec()
    names = {v["name"] for v in spec["volumes"]}
    used = {m["name"] for c in [*spec.get("initContainers", []), *spec["containers"]]
            for m in c.get("volumeMounts", [])}
    assert used == names


def test_resources_are_set() -> None:
    resources = host_container()["resources"]
    assert resources["requests"]["cpu"] == "100m"
    assert resources["requests"]["memory"] == "96Mi"
    assert resources["limits"]["memory"] == "256Mi"
    for init in pod_spec().get("initContainers", []):
        assert init["resources"]["limits"]["memory"], init["name"]


# -- ConfigMap, Services, Redis ---------------------------------------------------


def runtime_config_text() -> tuple[str, str]:
    """(file name, TOML) of the runtime config the Deployment mounts."""
    config_volume = volume("runtime-config")["configMap"]
    configmap = find("ConfigMap", config_volume["name"])
    mount = mount_at(host_container(), "/etc/spinhost")
    assert mount["name"] == "runtime-config" and mount.get("readOnly") is True
    path = option_value(host_container()["args"], "--runtime-config-file")
    assert path is not None and path.startswith("/etc/spinhost/")
    file_name = path.removeprefix("/etc/spinhost/")
    items = {i["path"]: i["key"] for i in config_volume.get("items", [])}
    key = items.get(file_name, file_name)
    return file_name, configmap["data"][key]


def test_runtime_config_parses_with_the_hosts_parser_and_uses_redis() -> None:
    file_name, text = runtime_config_text()
    config = parse_runtime_config(tomllib.loads(text), Path("/etc/spinhost") / file_name)
    assert config.sets_state_dir and config.state_dir is None
    store = config.key_value_stores["default"]
    assert store.type == "redis"
    assert store.url == "redis://redis:6379/0"


def test_runtime_config_redis_url_reaches_the_redis_service() -> None:
    _, text = runtime_config_text()
    url = urlsplit(tomllib.loads(text)["key_value_store"]["default"]["url"])
    service = find("Service", url.hostname or "")
    assert url.port in [p["port"] for p in service["spec"]["ports"]]
    redis = find("Deployment", "redis")
    assert redis["spec"]["template"]["spec"]["containers"][0]["image"] == "redis:7-alpine"
    labels = redis["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_service_maps_80_to_the_hosts_8080() -> None:
    service = find("Service", "kv-counter")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    [port] = service["spec"]["ports"]
    assert port["port"] == 80
    named = {p["name"]: p["containerPort"] for p in host_container()["ports"]}
    target = port["targetPort"]
    assert named.get(target, target) == PORT
    labels = deployment()["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment()["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_runtime_class_example_names_the_spinhost_handler() -> None:
    runtime_class = find("RuntimeClass", "wasmtime-spinhost-v2")
    assert runtime_class["handler"] == "spinhost"


# -- the Dockerfile ---------------------------------------------------------------


def test_dockerfile_is_multi_stage_on_python_311_slim() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "a builder stage and a runtime stage"
    args = dict(rest.split("=", 1) for word, rest in dockerfile_instructions()
                if word == "ARG" and "=" in rest)
    base = args.get("PYTHON_IMAGE", "")
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base), base
    for stage in stages:
        assert stage[0][1].split()[0] in ("${PYTHON_IMAGE}", base)
    runtime = stages[-1]
    copies = [rest for word, rest in runtime if word == "COPY"]
    assert copies and all(rest.startswith("--from=builder") for rest in copies), (
        "the runtime stage takes only the builder's output, never the source tree"
    )


def test_dockerfile_installs_the_package_without_toolchains() -> None:
    runs = " ".join(rest for word, rest in dockerfile_instructions() if word == "RUN")
    assert re.search(r"pip wheel [^&]*\s\.(\s|$)", runs), "builds the repo with pip"
    for tool in ("componentize", "ziglang", "wasm-tools", "nodejs", "npm", "gcc",
                 "build-essential", "[test]", "[toolchains]"):
        assert tool not in runs, tool
    runtime_runs = " ".join(rest for word, rest in dockerfile_stages()[-1] if word == "RUN")
    assert "pip install" not in runtime_runs and "apt-get" not in runtime_runs


def test_dockerfile_runs_the_host_as_non_root_with_the_node_cache() -> None:
    runtime = dockerfile_stages()[-1]
    users = [rest for word, rest in runtime if word == "USER"]
    assert users, "USER in the runtime stage"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) == NODE_UID, "numeric, so runAsNonRoot can verify it"
    env = " ".join(rest for word, rest in runtime if word == "ENV")
    assert f"SPINHOST_CACHE_DIR={CACHE_DIR}" in env
    assert not [rest for word, rest in runtime if word == "HEALTHCHECK"]
    assert f"{PORT}" in [rest for word, rest in runtime if word == "EXPOSE"]


def test_dockerfile_entrypoint_is_the_console_script() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["host"] == "host.cli:main"
    assert exec_form("ENTRYPOINT") == ["host"]
    assert exec_form("CMD") == ["up", "-f", f"{APP_MOUNT}/spin.toml", "--listen",
                                f"0.0.0.0:{PORT}"]


def test_dockerignore_keeps_only_what_pip_install_reads() -> None:
    lines = [line.strip() for line in (DEPLOY / "Dockerfile.dockerignore").read_text()
             .splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "host"}
    for word, rest in dockerfile_stages()[0]:
        if word == "COPY":
            for name in shlex.split(rest)[:-1]:  # the last one is the destination
                assert name.rstrip("/") in allowed, f"COPY {name} but the ignore file drops it"


# -- flags the host must accept ----------------------------------------------------


def commands_used() -> list[tuple[str, list[str]]]:
    """(where, args after the ENTRYPOINT) for every way the manifests run `host`."""
    uses = [("Dockerfile CMD", exec_form("CMD"))]
    for container in [*pod_spec().get("initContainers", []), *pod_spec()["containers"]]:
        if "command" not in container:  # the image's ENTRYPOINT: host
            uses.append((f"container {container['name']}", container["args"]))
    return uses


def test_the_host_is_run_three_ways() -> None:
    assert [where for where, _ in commands_used()] == [
        "Dockerfile CMD", "container compile", "container host"]


@pytest.mark.parametrize(("where", "args"), commands_used(),
                         ids=[where for where, _ in commands_used()])
def test_every_flag_used_is_accepted_by_the_host(where: str, args: list[str]) -> None:
    command = args[0]
    accepted = help_flags(command)
    unknown = [flag for flag in flags_used(args) if flag not in accepted]
    assert not unknown, f"{where}: `host {command}` does not accept {unknown}"


def test_help_flag_parsing_sees_the_real_options() -> None:
    flags = help_flags("up")
    assert {"-f", "--listen", "--state-dir", "--runtime-config-file", "--drain-timeout",
            "--cache-dir"} <= flags
    assert "--no-such-flag" not in flags

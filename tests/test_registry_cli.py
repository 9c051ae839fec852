"""`host registry push | pull | login | logout` against Debian's docker-registry requiring logins.

Two real registries for the session (tests/oci_registry.py): one with its own
htpasswd Basic auth, one with its own token auth (JWTs from `TokenServer`,
verified by the registry against the issuer's certificate). Commands run as
subprocesses through `python -m host`, with `XDG_CONFIG_HOME` and
`DOCKER_CONFIG` pointing into the test's directory, so no real login is read
or written.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from host.oci import credentials
from host.oci.image import build_image
from host.oci.layout import LocalLayout
from tests.conftest import ROOT, HostProcess, write_app
from tests.loopback import stop_process
from tests.oci_registry import (
    Registry,
    TokenServer,
    htpasswd_auth,
    start_registry,
    token_auth,
)
from tests.test_oci import MANIFEST, MakeApp

USER, PASSWORD = "alice", "s3cret-Pa55"
WRONG = "not-the-Pa55word"
REFRESH_TOKEN = "refresh-0123456789abcdef"


@pytest.fixture(name="make_app")
def make_app_fixture(tmp_path: Path, wat_components: dict[str, Path]) -> MakeApp:
    """`make_app(marker=...)`: test_oci's tiny app (answers "fixed response")."""

    def make(marker: str = "") -> Path:
        app = tmp_path / f"app-{marker}"
        if not app.exists():
            write_app(app, MANIFEST, {"web.wasm": wat_components["fixed"]})
            for rel, text in {"static/index.html": f"<h1>hi {marker}</h1>",
                              "static/sub/page.html": "page", "assets/data.txt": "data"}.items():
                (app / rel).parent.mkdir(parents=True, exist_ok=True)
                (app / rel).write_text(text)
        return app

    return make


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    workdir = tmp_path_factory.mktemp("basic-registry")
    proc, registry = start_registry(workdir, htpasswd_auth(workdir, {USER: PASSWORD}))
    try:
        yield registry
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def token_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenServer]:
    with TokenServer(tmp_path_factory.mktemp("token-service"), {USER: PASSWORD},
                     {REFRESH_TOKEN: USER}) as service:
        yield service


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory,
                   token_service: TokenServer) -> Iterator[Registry]:
    workdir = tmp_path_factory.mktemp("token-registry")
    proc, registry = start_registry(workdir, token_auth(token_service.realm, token_service.cert))
    try:
        yield registry
    finally:
        stop_process(proc)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of every command: logins in the test's directory only."""
    for name in ("SPINHOST_REGISTRY_USERNAME", "SPINHOST_REGISTRY_PASSWORD",
                 "SPINHOST_ALLOW_INSECURE_REMOTE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    return dict(os.environ, PYTHONPATH=str(ROOT))


def host(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "host", *args], input=stdin, env=env,
                          cwd=ROOT, text=True, capture_output=True, timeout=300)


def login(env: dict[str, str], server: str, password: str = PASSWORD,
          *extra: str) -> subprocess.CompletedProcess[str]:
    return host(env, "registry", "login", server, "-u", USER, "--password-stdin", *extra,
                stdin=password + "\n")


def assert_clean_failure(result: subprocess.CompletedProcess[str], *secrets: str) -> None:
    """Exit 1, one `Error:` line, no traceback, no secret anywhere."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    for secret in secrets:
        assert secret not in result.stdout + result.stderr


def digest_of(app: Path, tmp_path: Path, tag: str) -> str:
    """What `host registry push` must push: the same app builds the same image."""
    return build_image(app, tmp_path / f"expected-{tag}", tag=tag).manifest_digest


def auth_file(tmp_path: Path) -> Path:
    return tmp_path / "config" / "spinhost" / "registry-auth.json"


# ---------------------------------------------------------------------------
# The whole path: login -> push -> pull -> `host up REF`


@pytest.mark.parametrize("kind", ["basic", "token"])
def test_login_push_pull_and_serve(kind: str, request: pytest.FixtureRequest, make_app: MakeApp,
                                   tmp_path: Path, env: dict[str, str], cache_dir: Path) -> None:
    registry: Registry = request.getfixturevalue(f"{kind}_registry")
    app = make_app(marker=f"registry-{kind}")
    ref = f"{registry.address}/apps/web:1.0"
    # Not logged in: a clear error that says how to log in.
    refused = host(env, "registry", "push", ref, "-f", str(app))
    assert_clean_failure(refused)
    assert f"host registry login {registry.address}" in refused.stderr

    wrong = login(env, registry.address, WRONG)
    assert_clean_failure(wrong, WRONG)
    assert "refused the login" in wrong.stderr and repr(USER) in wrong.stderr
    assert not auth_file(tmp_path).exists()

    ok = login(env, registry.address)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"Login Succeeded: {USER} at {registry.address}")
    assert PASSWORD not in ok.stdout + ok.stderr
    saved = auth_file(tmp_path)
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert stat.S_IMODE(saved.parent.stat().st_mode) == 0o700
    entry = json.loads(saved.read_text())["auths"][registry.address]
    assert base64.b64decode(entry["auth"]).decode() == f"{USER}:{PASSWORD}"  # Docker's shape

    pushed = host(env, "registry", "push", ref, "-f", str(app))
    assert pushed.returncode == 0, pushed.stderr
    digest = digest_of(app, tmp_path, "1.0")
    assert pushed.stdout.startswith(f"pushed {ref} {digest} (")
    assert PASSWORD not in pushed.stdout + pushed.stderr

    cache = tmp_path / "node-cache"
    pulled = host(env, "registry", "pull", ref, "--cache-dir", str(cache))
    assert pulled.returncode == 0, pulled.stderr
    hex_ = digest.removeprefix("sha256:")
    app_dir = cache / "oci" / "apps" / hex_
    assert pulled.stdout.strip() == f"pulled {ref} {digest} -> {app_dir / 'spin.toml'}"
    assert (app_dir / "static" / "index.html").read_text() == f"<h1>hi registry-{kind}</h1>"

    # `host up REF` finds the stored login too (a fresh cache: it pulls itself).
    serve_cache = tmp_path / "serve-cache"
    shutil.copytree(cache_dir, serve_cache)  # compiled components: a warm node
    with HostProcess(["-f", ref, "--cache-dir", str(serve_cache)], env=env) as served, \
            served.client() as client:
        assert client.get("/").text == "fixed response"
        assert client.get("/.well-known/spin/info").json()["oci_image_digest"] == digest

    # Logging out forgets it: pulling needs a login again.
    out = host(env, "registry", "logout", registry.address)
    assert out.returncode == 0 and "Removed the login" in out.stdout
    assert registry.address not in json.loads(saved.read_text())["auths"]
    again = host(env, "registry", "pull", ref, "--cache-dir", str(tmp_path / "other-cache"))
    assert_clean_failure(again)
    assert "host registry login" in again.stderr
    assert "Not logged in" in host(env, "registry", "logout", registry.address).stdout


def test_token_flow_asks_for_the_push_scope_as_the_user(
        make_app: MakeApp, tmp_path: Path, env: dict[str, str], token_registry: Registry,
        token_service: TokenServer) -> None:
    assert login(env, token_registry.address).returncode == 0
    start = len(token_service.requests)
    ref = f"{token_registry.address}/team/scoped:v2"
    assert host(env, "registry", "push", ref, "-f", str(make_app())).returncode == 0
    asked = token_service.requests[start:]
    assert any("repository:team/scoped:pull,push" in r.get("scope", []) and
               r.get("service") == ["test-registry"] and r.get("account") == [USER]
               for r in asked), asked


def test_push_builds_first_with_build(make_app: MakeApp, tmp_path: Path, env: dict[str, str],
                                      basic_registry: Registry) -> None:
    app = make_app(marker="built")
    manifest = app / "spin.toml"
    manifest.write_text(manifest.read_text() +
                        '[component.web.build]\ncommand = "echo building > built.txt"\n')
    assert login(env, basic_registry.address).returncode == 0
    ref = f"{basic_registry.address}/apps/built:v1"
    result = host(env, "registry", "push", ref, "-f", str(app), "--build")
    assert result.returncode == 0, result.stderr
    assert (app / "built.txt").read_text() == "building\n"
    assert result.stdout.splitlines()[-1].startswith(f"pushed {ref} sha256:")
    by_digest = host(env, "registry", "push", f"{ref}@sha256:" + "a" * 64, "-f", str(app))
    assert_clean_failure(by_digest)
    assert "push to a tag" in by_digest.stderr


# ---------------------------------------------------------------------------
# Docker's config


def write_docker_config(tmp_path: Path, config: dict[str, object]) -> None:
    (tmp_path / "docker").mkdir(exist_ok=True)
    (tmp_path / "docker" / "config.json").write_text(json.dumps(config))


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("key", ["{address}", "https://{address}", "http://{address}/v2/"])
def test_docker_auths_are_read(key: str, make_app: MakeApp, tmp_path: Path,
                               env: dict[str, str], basic_registry: Registry) -> None:
    write_docker_config(tmp_path, {"auths": {
        key.format(address=basic_registry.address): {"auth": basic(USER, PASSWORD)},
        "other.example": {"auth": basic("bob", "x")}}})
    ref = f"{basic_registry.address}/apps/from-docker:v1"
    assert host(env, "registry", "push", ref, "-f", str(make_app())).returncode == 0
    assert not auth_file(tmp_path).exists()  # Docker's file is read, ours not written


def test_our_login_wins_over_docker_and_a_bad_docker_login_fails_clearly(
        make_app: MakeApp, tmp_path: Path, env: dict[str, str],
        basic_registry: Registry) -> None:
    write_docker_config(tmp_path, {"auths": {basic_registry.address: {
        "auth": basic(USER, WRONG)}}})
    ref = f"{basic_registry.address}/apps/docker-wrong:v1"
    failed = host(env, "registry", "push", ref, "-f", str(make_app()))
    assert_clean_failure(failed, WRONG)
    assert str(tmp_path / "docker" / "config.json") in failed.stderr  # names where it came from
    assert login(env, basic_registry.address).returncode == 0
    assert host(env, "registry", "push", ref, "-f", str(make_app())).returncode == 0


def fake_helper(tmp_path: Path, name: str, answer: dict[str, str] | None) -> dict[str, str]:
    """`docker-credential-NAME` on PATH: prints `answer` for `get`, or "not found"."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / f"docker-credential-{name}"
    body = (f"printf '%s' '{json.dumps(answer)}'" if answer is not None
            else "echo 'credentials not found in native keychain'; exit 1")
    script.write_text(f"#!/bin/sh\n[ \"$1\" = get ] || exit 2\n"
                      f"read server; echo \"$server\" >> {bin_dir}/asked\n{body}\n")
    script.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def test_credential_helpers(make_app: MakeApp, tmp_path: Path, env: dict[str, str],
                            basic_registry: Registry, token_registry: Registry) -> None:
    app = make_app()
    # credsStore: every registry; the helper is asked with the registry's name.
    path = fake_helper(tmp_path, "store", {"Username": USER, "Secret": PASSWORD})
    write_docker_config(tmp_path, {"credsStore": "store"})
    ref = f"{basic_registry.address}/apps/helper:v1"
    assert host({**env, **path}, "registry", "push", ref, "-f", str(app)).returncode == 0
    assert (tmp_path / "bin" / "asked").read_text() == f"{basic_registry.address}\n"
    # credHelpers wins for its registry; a `<token>` user means an identity token,
    # exchanged at the token service as an OAuth2 refresh token.
    path = fake_helper(tmp_path, "tok", {"Username": "<token>", "Secret": REFRESH_TOKEN})
    write_docker_config(tmp_path, {"credsStore": "store",
                                   "credHelpers": {token_registry.address: "tok"}})
    ref = f"{token_registry.address}/apps/helper:v1"
    assert host({**env, **path}, "registry", "push", ref, "-f", str(app)).returncode == 0
    # A helper that has nothing: anonymous, and the usual hint.
    path = fake_helper(tmp_path, "store", None)
    write_docker_config(tmp_path, {"credsStore": "store"})
    nothing = host({**env, **path}, "registry", "pull", f"{basic_registry.address}/apps/x:v1",
                   "--cache-dir", str(tmp_path / "cache"))
    assert_clean_failure(nothing)
    assert "requires a login" in nothing.stderr
    # A helper missing from PATH: a warning naming it, then the same.
    write_docker_config(tmp_path, {"credsStore": "missing-helper"})
    missing = host(env, "registry", "pull", f"{basic_registry.address}/apps/x:v1",
                   "--cache-dir", str(tmp_path / "cache"))
    assert missing.returncode == 1
    assert "docker-credential-missing-helper is not on PATH" in missing.stderr
    assert "requires a login" in missing.stderr and "Traceback" not in missing.stderr


def test_identity_token_in_docker_auths(make_app: MakeApp, tmp_path: Path,
                                        env: dict[str, str], token_registry: Registry,
                                        token_service: TokenServer) -> None:
    write_docker_config(tmp_path, {"auths": {token_registry.address: {
        "auth": "", "identitytoken": REFRESH_TOKEN}}})
    start = len(token_service.requests)
    ref = f"{token_registry.address}/apps/identity:v1"
    assert host(env, "registry", "push", ref, "-f", str(make_app())).returncode == 0
    forms = [r for r in token_service.requests[start:] if "grant_type" in r]
    assert forms and forms[0]["refresh_token"] == [REFRESH_TOKEN]
    assert "repository:apps/identity:pull,push" in forms[0]["scope"][0].split(" ")


def test_unreadable_logins_are_named_not_quoted(tmp_path: Path, env: dict[str, str],
                                                basic_registry: Registry) -> None:
    saved = auth_file(tmp_path)
    saved.parent.mkdir(parents=True)
    saved.write_text('{"auths": {"x": {"auth": "' + PASSWORD)  # truncated JSON
    result = host(env, "registry", "pull", f"{basic_registry.address}/apps/x:v1",
                  "--cache-dir", str(tmp_path / "cache"))
    assert_clean_failure(result, PASSWORD)
    assert f"{saved}: not valid JSON" in result.stderr


# ---------------------------------------------------------------------------
# login's input and plain HTTP


def test_password_flag_warns_and_input_is_checked(tmp_path: Path, env: dict[str, str],
                                                  basic_registry: Registry) -> None:
    result = host(env, "registry", "login", basic_registry.address, "-u", USER, "-p", PASSWORD)
    assert result.returncode == 0, result.stderr
    assert "WARNING! Using --password via the CLI is insecure. Use --password-stdin." \
        in result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    # A second login keeps the other entries, and the file stays 0600.
    credentials_file = auth_file(tmp_path)
    data = json.loads(credentials_file.read_text())
    data["auths"]["other.example"] = {"auth": basic("bob", "x")}
    credentials_file.write_text(json.dumps(data))
    credentials_file.chmod(0o644)
    assert login(env, f"http://{basic_registry.address}/").returncode == 0  # URL form accepted
    assert stat.S_IMODE(credentials_file.stat().st_mode) == 0o600
    assert set(json.loads(credentials_file.read_text())["auths"]) == {
        basic_registry.address, "other.example"}
    no_password = host(env, "registry", "login", basic_registry.address, "-u", USER)
    assert_clean_failure(no_password)
    assert "--password-stdin" in no_password.stderr
    empty = host(env, "registry", "login", basic_registry.address, "-u", USER,
                 "--password-stdin")
    assert_clean_failure(empty)


def test_insecure_is_for_loopback_unless_asked(tmp_path: Path, env: dict[str, str]) -> None:
    remote = "registry.invalid:5000"
    refused = login(env, remote, PASSWORD, "--insecure")
    assert_clean_failure(refused, PASSWORD)
    assert "only for loopback" in refused.stderr and "--allow-insecure-remote" in refused.stderr
    assert not auth_file(tmp_path).exists()
    for command in (["registry", "pull", f"{remote}/app:v1"],
                    ["oci", "pull", f"{remote}/app:v1"], ["up", "-f", f"{remote}/app:v1"]):
        result = host(env, *command, "--insecure")
        assert result.returncode == 1 and "--allow-insecure-remote" in result.stderr, command
    # Asked for: the policy lets it through (and the unresolvable name fails to connect).
    allowed = login(env, remote, PASSWORD, "--insecure", "--allow-insecure-remote")
    assert_clean_failure(allowed, PASSWORD)
    assert "cannot reach the registry (GET http://registry.invalid:5000/v2/)" in allowed.stderr
    by_env = host({**env, "SPINHOST_ALLOW_INSECURE_REMOTE": "1"}, "registry", "pull",
                  f"{remote}/app:v1", "--insecure")
    assert "cannot reach the registry (GET http://" in by_env.stderr


def test_server_key_and_lookup_order(tmp_path: Path, env: dict[str, str]) -> None:
    assert credentials.server_key("HTTPS://Ghcr.IO/v2/") == "ghcr.io"
    assert credentials.server_key("localhost:5000") == "localhost:5000"
    assert credentials.lookup("localhost:5000") is None
    write_docker_config(tmp_path, {"auths": {"https://index.docker.io/v1/": {
        "auth": basic("hub", "pw")}}})
    hub = credentials.lookup("docker.io")
    assert hub is not None and (hub.username, hub.password) == ("hub", "pw")
    assert "pw" not in str(hub) + repr(hub)
    credentials.store("docker.io", credentials.Credentials("mine", "pw2"))
    ours = credentials.lookup("docker.io")
    assert ours is not None and ours.username == "mine"
    assert credentials.remove("docker.io") and not credentials.remove("docker.io")


def test_oci_push_still_takes_a_layout(make_app: MakeApp, tmp_path: Path, env: dict[str, str],
                                       basic_registry: Registry) -> None:
    """`host oci push LAYOUT REF` is unchanged, and uses the stored login too."""
    layout = tmp_path / "layout"
    build_image(make_app(), layout)
    assert login(env, basic_registry.address).returncode == 0
    ref = f"{basic_registry.address}/apps/layout:v1"
    result = host(env, "oci", "push", str(layout), ref)
    assert result.returncode == 0, result.stderr
    with LocalLayout(layout) as source:
        assert result.stdout.startswith(f"pushed {ref} {source.manifest().digest}")

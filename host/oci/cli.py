"""`host oci build | push | pull` and `host registry push | pull | login | logout`.

`host oci` works on image layouts; `host registry push` builds the app's image
and pushes it in one step (as `spin registry push`), `host registry pull` is
`host oci pull`, and `login`/`logout` keep logins (host/oci/credentials.py).
Each command prints one line (what, where, digest, size); every failure is a
HostError the `host` CLI prints as one line with exit code 1. Passwords are
never printed.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import tempfile
from pathlib import Path
from typing import TypedDict

from host.build import build_app
from host.errors import ConfigError
from host.manifest import load_manifest
from host.oci import credentials
from host.oci.image import DEFAULT_PLATFORM, DEFAULT_TAG, build_image
from host.oci.registry import (
    ALLOW_INSECURE_REMOTE_ENV,
    ALLOW_INSECURE_REMOTE_FLAG,
    PASSWORD_ENV,
    USERNAME_ENV,
    login,
    parse_reference,
    pull,
    push,
)
from host.oci.store import default_cache_dir, resolve_app

EXIT_OK = 0
EXIT_USAGE = 2
# Building the parser reads no environment: the default is resolved when used.
CACHE_HELP = "$XDG_CACHE_HOME/spinhost"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `oci` and its subcommands to the `host` command line."""
    oci = subparsers.add_parser("oci", help="build, push and pull app-only OCI images")
    sub = oci.add_subparsers(metavar="COMMAND")
    oci.set_defaults(run=lambda args: _usage(oci))

    build = sub.add_parser("build", help="write the app as an OCI image layout (dir or .tar)")
    build.add_argument("-o", "--output", required=True, metavar="OUT",
                       help="layout directory to write (replaced if it holds a layout), "
                            "or a .tar file")
    build.add_argument("--tag", default=DEFAULT_TAG, help=f"tag in the layout (default "
                                                           f"{DEFAULT_TAG})")
    _image_flags(build)
    build.set_defaults(run=cmd_build)

    push_p = sub.add_parser("push", help="push an image layout to a registry")
    push_p.add_argument("layout", metavar="LAYOUT", help="layout directory or .tar")
    push_p.add_argument("ref", metavar="REF", help="host[:port]/name[:tag]")
    _registry_flags(push_p)
    push_p.set_defaults(run=cmd_push)

    _pull_parser(sub)


def add_registry_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `registry` and its subcommands to the `host` command line."""
    registry = subparsers.add_parser(
        "registry", help="push the app to a registry in one step, pull it, log in")
    sub = registry.add_subparsers(metavar="COMMAND")
    registry.set_defaults(run=lambda args: _usage(registry))

    push_p = sub.add_parser(
        "push", help="package the app as an OCI image and push it (as `spin registry push`)",
        description="Build the app's image (as `host oci build`) and push it to REF; print "
                    "its digest. Uses the login stored by `host registry login`, or Docker's.")
    push_p.add_argument("ref", metavar="REF", help="host[:port]/name[:tag]")
    push_p.add_argument("--build", action="store_true",
                        help="run the components' build commands first")
    _image_flags(push_p)
    _registry_flags(push_p)
    push_p.set_defaults(run=cmd_registry_push)

    _pull_parser(sub)

    login_p = sub.add_parser(
        "login", help="check a login with a registry and save it",
        description=f"Save a login in {_auth_file_help()} (mode 0600). Lookups read it "
                    "first, then Docker's config.json.")
    login_p.add_argument("server", metavar="SERVER", help="registry host[:port], e.g. ghcr.io")
    login_p.add_argument("-u", "--username", default=None, help="user name (else prompted)")
    secret = login_p.add_mutually_exclusive_group()
    secret.add_argument("-p", "--password", default=None,
                        help="password (insecure: other users can see command lines; prefer "
                             "--password-stdin)")
    secret.add_argument("--password-stdin", action="store_true",
                        help="read the password from standard input")
    _plain_http_flags(login_p)
    login_p.set_defaults(run=cmd_login)

    logout_p = sub.add_parser("logout", help="forget the login saved for a registry")
    logout_p.add_argument("server", metavar="SERVER", help="registry host[:port]")
    logout_p.set_defaults(run=cmd_logout)


def _auth_file_help() -> str:
    return "$XDG_CONFIG_HOME/spinhost/registry-auth.json (~/.config/...)"


def _image_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--from", dest="from_path", default=None, metavar="PATH",
                   help="spin.toml, or a directory containing one (default ./spin.toml)")
    p.add_argument("--runtime-config-file", default=None, metavar="PATH",
                   help="also ship this file as /runtime-config.toml")
    p.add_argument("--platform", default=DEFAULT_PLATFORM, metavar="OS/ARCH",
                   help=f"platform in the image config (default {DEFAULT_PLATFORM}, "
                        "Spin's; `umoci unpack` wants linux/...)")


def _pull_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pull_p = sub.add_parser("pull", help="pull an image from a registry (into the cache "
                                         "`host up REF` uses)")
    pull_p.add_argument("ref", metavar="REF", help="host[:port]/name[:tag|@sha256:...]")
    pull_p.add_argument("-o", "--output", default=None, metavar="LAYOUT_DIR",
                        help="write an image layout there (default: unpack into the cache "
                             f"{CACHE_HELP}/oci, as `host up` would)")
    pull_p.add_argument("--cache-dir", default=None, metavar="DIR",
                        help=f"image cache without -o (default {CACHE_HELP}; "
                             "images go to DIR/oci)")
    _registry_flags(pull_p)
    pull_p.set_defaults(run=cmd_pull)


def _plain_http_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--insecure", action="store_true",
                   help="plain HTTP (automatic for localhost, 127.0.0.0/8 and ::1); refused for "
                        f"any other host without {ALLOW_INSECURE_REMOTE_FLAG}")
    p.add_argument(ALLOW_INSECURE_REMOTE_FLAG, dest="allow_insecure_remote", action="store_true",
                   help="let --insecure reach a registry that is not on this machine (env "
                        f"{ALLOW_INSECURE_REMOTE_ENV}=1): the login and the image travel "
                        "unencrypted")


def _registry_flags(p: argparse.ArgumentParser) -> None:
    _plain_http_flags(p)
    p.add_argument("-u", "--username", default=None,
                   help=f"registry user (env {USERNAME_ENV})")
    secret = p.add_mutually_exclusive_group()
    secret.add_argument("-p", "--password", default=None,
                        help=f"registry password (env {PASSWORD_ENV})")
    secret.add_argument("--password-stdin", action="store_true",
                        help="read the password from standard input")


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _password(args: argparse.Namespace) -> str | None:
    """-p (with Docker's warning), --password-stdin, or None."""
    if args.password is not None:
        print("WARNING! Using --password via the CLI is insecure. Use --password-stdin.",
              file=sys.stderr)
        return str(args.password)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise ConfigError("--password-stdin: standard input held no password")
        return password
    return None


class _PlainHttp(TypedDict):
    insecure: bool | None
    allow_insecure_remote: bool | None


class _Access(_PlainHttp):
    username: str | None
    password: str | None


def _insecure(args: argparse.Namespace) -> _PlainHttp:
    return {"insecure": True if args.insecure else None,
            "allow_insecure_remote": True if args.allow_insecure_remote else None}


def _auth(args: argparse.Namespace) -> _Access:
    return {**_insecure(args), "username": args.username, "password": _password(args)}


def _size(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KiB" if n < 1024 * 1024 \
        else f"{n / 1024 / 1024:.1f} MiB"


def cmd_build(args: argparse.Namespace) -> int:
    path = Path(args.from_path) if args.from_path else None
    runtime_config = Path(args.runtime_config_file) if args.runtime_config_file else None
    info = build_image(path, Path(args.output), tag=args.tag, runtime_config=runtime_config,
                       platform=args.platform)
    print(f"{info.path}:{info.tag} {info.manifest_digest} ({len(info.files)} files, "
          f"layer {_size(info.layer_size)}, total {_size(info.total_size)})")
    return EXIT_OK


def cmd_push(args: argparse.Namespace) -> int:
    result = push(Path(args.layout), args.ref, **_auth(args))
    print(f"pushed {args.ref} {result.digest} ({_size(result.size)}; {result.uploaded} blobs "
          f"sent, {result.present} already there)")
    return EXIT_OK


def cmd_registry_push(args: argparse.Namespace) -> int:
    reference = parse_reference(args.ref)  # a bad REF fails before anything is built
    if reference.digest:
        raise ConfigError(f"{args.ref}: push to a tag (host[:port]/name:tag); the digest is "
                          "what the push prints")
    auth = _auth(args)  # read --password-stdin before a build command could
    manifest = load_manifest(args.from_path)
    if args.build:
        build_app(manifest)
    runtime_config = Path(args.runtime_config_file) if args.runtime_config_file else None
    with tempfile.TemporaryDirectory(prefix="spinhost-push-") as tmp:
        layout = Path(tmp) / "layout"
        build_image(manifest.path, layout, tag=reference.tag or DEFAULT_TAG,
                    runtime_config=runtime_config, platform=args.platform)
        result = push(layout, args.ref, **auth)
    print(f"pushed {args.ref} {result.digest} ({_size(result.size)}; {result.uploaded} blobs "
          f"sent, {result.present} already there)")
    return EXIT_OK


def cmd_login(args: argparse.Namespace) -> int:
    server = credentials.server_key(args.server)
    interactive = sys.stdin.isatty()
    username = args.username
    if username is None:
        if args.password_stdin or not interactive:
            raise ConfigError("-u/--username is required (standard input is not a terminal, "
                              "or holds the password)")
        username = input("Username: ").strip()
    password = _password(args)
    if password is None:
        if not interactive:
            raise ConfigError("no password: pass --password-stdin and write it to standard "
                              "input (or -p PASSWORD)")
        password = getpass.getpass("Password: ")
    if not username or not password:
        raise ConfigError("a login needs a username and a password")
    login(server, username, password, **_insecure(args))
    path = credentials.store(server, credentials.Credentials(username, password))
    print(f"Login Succeeded: {username} at {server} (saved in {path})")
    return EXIT_OK


def cmd_logout(args: argparse.Namespace) -> int:
    server = credentials.server_key(args.server)
    if credentials.remove(server):
        print(f"Removed the login for {server} from {credentials.auth_file()}")
        return EXIT_OK
    message = f"Not logged in to {server} (no login in {credentials.auth_file()})"
    if credentials.lookup(server) is not None:
        message += (f"; Docker's config ({credentials.docker_config_file()}) still has one: "
                    f"`docker logout {server}` removes it")
    print(message)
    return EXIT_OK


def cmd_pull(args: argparse.Namespace) -> int:
    auth = _auth(args)
    if args.output is not None:
        out = Path(args.output)
        digest = pull(args.ref, out, **auth)
        size = sum(p.stat().st_size for p in (out / "blobs").rglob("*") if p.is_file())
        print(f"pulled {args.ref} {digest} -> {out} ({_size(size)})")
        return EXIT_OK
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    app = resolve_app(args.ref, cache, **auth)
    print(f"pulled {args.ref} {app.digest} -> {app.manifest_path}")
    return EXIT_OK

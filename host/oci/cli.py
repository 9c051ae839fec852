"""`host oci build | push | pull`: app-only OCI images without Docker.

Each command prints one line (what, where, digest, size); every failure is a
HostError the `host` CLI prints as one line with exit code 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from host.errors import ConfigError
from host.oci.image import DEFAULT_PLATFORM, DEFAULT_TAG, build_image
from host.oci.registry import PASSWORD_ENV, USERNAME_ENV, pull, push
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
    build.add_argument("-f", "--from", dest="from_path", default=None, metavar="PATH",
                       help="spin.toml, or a directory containing one (default ./spin.toml)")
    build.add_argument("-o", "--output", required=True, metavar="OUT",
                       help="layout directory to write (replaced if it holds a layout), "
                            "or a .tar file")
    build.add_argument("--tag", default=DEFAULT_TAG, help=f"tag in the layout (default "
                                                           f"{DEFAULT_TAG})")
    build.add_argument("--runtime-config-file", default=None, metavar="PATH",
                       help="also ship this file as /runtime-config.toml")
    build.add_argument("--platform", default=DEFAULT_PLATFORM, metavar="OS/ARCH",
                       help=f"platform in the image config (default {DEFAULT_PLATFORM}, "
                            "Spin's; `umoci unpack` wants linux/...)")
    build.set_defaults(run=cmd_build)

    push_p = sub.add_parser("push", help="push an image layout to a registry")
    push_p.add_argument("layout", metavar="LAYOUT", help="layout directory or .tar")
    push_p.add_argument("ref", metavar="REF", help="host[:port]/name[:tag]")
    _registry_flags(push_p)
    push_p.set_defaults(run=cmd_push)

    pull_p = sub.add_parser("pull", help="pull an image from a registry")
    pull_p.add_argument("ref", metavar="REF", help="host[:port]/name[:tag|@sha256:...]")
    pull_p.add_argument("-o", "--output", default=None, metavar="LAYOUT_DIR",
                        help="write an image layout there (default: unpack into the cache "
                             f"{CACHE_HELP}/oci, as `host up` would)")
    pull_p.add_argument("--cache-dir", default=None, metavar="DIR",
                        help=f"image cache without -o (default {CACHE_HELP}; "
                             "images go to DIR/oci)")
    _registry_flags(pull_p)
    pull_p.set_defaults(run=cmd_pull)


def _registry_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--insecure", action="store_true",
                   help="plain HTTP (automatic for localhost, 127.0.0.1 and ::1)")
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


def _auth(args: argparse.Namespace) -> tuple[bool | None, str | None, str | None]:
    password = args.password
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise ConfigError("--password-stdin: standard input held no password")
    return (True if args.insecure else None), args.username, password


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
    insecure, username, password = _auth(args)
    result = push(Path(args.layout), args.ref, insecure=insecure, username=username,
                  password=password)
    print(f"pushed {args.ref} {result.digest} ({_size(result.size)}; {result.uploaded} blobs "
          f"sent, {result.present} already there)")
    return EXIT_OK


def cmd_pull(args: argparse.Namespace) -> int:
    insecure, username, password = _auth(args)
    if args.output is not None:
        out = Path(args.output)
        digest = pull(args.ref, out, insecure=insecure, username=username, password=password)
        size = sum(p.stat().st_size for p in (out / "blobs").rglob("*") if p.is_file())
        print(f"pulled {args.ref} {digest} -> {out} ({_size(size)})")
        return EXIT_OK
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    app = resolve_app(args.ref, cache, insecure=insecure, username=username, password=password)
    print(f"pulled {args.ref} {app.digest} -> {app.manifest_path}")
    return EXIT_OK

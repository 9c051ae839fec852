"""`host up | check | build | watch | new | add | templates | run-bundle | oci | registry`:
parse and dispatch.

Flags, their variables and defaults are declared once in host/config.py; the
server's life is host/serve.py. Every HostError ends the command with a
one-line message and its exit code; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from host import __version__, bundle, logs, new
from host.app import load_app
from host.build import build_app
from host.config import Config, add_options
from host.errors import HostError
from host.manifest import load_manifest
from host.oci.cli import add_parser as add_oci_parser
from host.oci.cli import add_registry_parser
from host.runtime.engine import Engine
from host.serve import load_runtime_config_file, print_warnings, route_lines, serve
from host.watch import DEFAULT_DEBOUNCE_MS, WatchOptions, watch

# Exit codes (documented in README.md).
EXIT_OK = 0
EXIT_ERROR = 1  # manifest, component or configuration error; failure to start
EXIT_USAGE = 2  # bad command line or SPINHOST_* value
EXIT_INTERRUPTED = 130  # Ctrl-C during start-up (a second signal while draining: serve.py)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if rest:  # only `host build -u` takes more: `host up`'s flags, as `spin build -u` does
        if getattr(args, "run", None) is not cmd_build or not args.up:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        args.up_args = rest
    logs.configure("plain", quiet=False)
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.run(args))
    except HostError as exc:
        logs.write_lines(sys.stderr, f"Error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="host",
                                description="Serve Spin apps of WebAssembly components.")
    p.add_argument("--version", action="version", version=f"host {__version__}")
    sub = p.add_subparsers(metavar="COMMAND")

    up = sub.add_parser("up", help="serve an app")
    add_options(up, "up")
    up.set_defaults(run=cmd_up)

    check = sub.add_parser("check", help="validate the manifest and components; print routes")
    add_options(check, "check")
    check.set_defaults(run=cmd_check)

    run_bundle = sub.add_parser(
        "run-bundle", help="serve the Spin app in an OCI runtime bundle (containerd shim entry)",
        description="Start the app whose spin.toml is at the root of BUNDLE's root filesystem, "
                    "with the bundle's process.env and process.cwd (config.json). Listens on "
                    f"SPIN_HTTP_LISTEN_ADDR, default {bundle.SHIM_LISTEN}. Exit codes: 0 stopped "
                    "cleanly (SIGTERM drained), 1 the app could not start, 2 bad command line, "
                    "3 not a Spin app (no /spin.toml), 130 a second signal cut the drain short.")
    run_bundle.add_argument("bundle", metavar="BUNDLE_DIR", help="directory with config.json")
    add_options(run_bundle, "run-bundle")
    run_bundle.set_defaults(run=cmd_run_bundle)

    add_oci_parser(sub)
    add_registry_parser(sub)

    build = sub.add_parser("build", help="run each component's build command")
    build.add_argument("-f", "--from", dest="source", default=None, metavar="PATH",
                       help="spin.toml, or a directory containing one (default ./spin.toml)")
    build.add_argument("-c", "--component-id", action="append", default=[], metavar="ID",
                       help="build only this component (repeatable)")
    build.add_argument("-u", "--up", action="store_true",
                       help="serve the app after building; the arguments after the build's "
                            "own are host up's (e.g. host build -u --listen 0.0.0.0:3000)")
    build.set_defaults(run=cmd_build)

    watch = sub.add_parser(
        "watch", help="build and serve the app; rebuild and reload a component when its "
                      "sources change, without dropping requests",
        description="Build and serve the app, as host build -u; then rebuild a component "
                    "when a file matching its [component.ID.build] watch globs changes, and "
                    "reload it (or the whole app when spin.toml changes) while the previous "
                    "version keeps serving. Takes host up's flags; one process only.")
    add_options(watch, "up")
    watch.add_argument("-c", "--clear", action="store_true",
                       help="clear the screen before each build or reload")
    watch.add_argument("-d", "--debounce", type=int, default=DEFAULT_DEBOUNCE_MS, metavar="MS",
                       help="group changes for this long before acting "
                            f"(default {DEFAULT_DEBOUNCE_MS})")
    watch.add_argument("--skip-build", action="store_true",
                       help="run no build: reload when a .wasm, a component's files or "
                            "spin.toml change")
    watch.set_defaults(run=cmd_watch, parser=watch)

    _add_template_parsers(sub)
    return p


def _add_template_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for command, summary in (("new", "create an app from a template"),
                             ("add", "add a component from a template to an existing app")):
        p = sub.add_parser(command, help=summary, description=summary + " (`host templates "
                           "list` shows the templates). Prompts for the template's parameters "
                           "when run in a terminal, unless --accept-defaults.")
        p.add_argument("template", metavar="TEMPLATE", help="template id, e.g. http-py")
        p.add_argument("name", metavar="NAME",
                       help="app or component name: a letter, then letters, digits, - or _")
        if command == "add":
            p.add_argument("-f", "--file", dest="source", default=None, metavar="PATH",
                           help="spin.toml, or a directory containing one (default ./spin.toml)")
        p.add_argument("-o", "--output", default=None, metavar="DIR",
                       help="directory to create (default: NAME"
                            + (", next to spin.toml)" if command == "add" else ")"))
        p.add_argument("--value", action="append", default=[], metavar="KEY=VALUE",
                       help="a template parameter, e.g. http-path=/api/... (repeatable)")
        p.add_argument("-a", "--accept-defaults", action="store_true",
                       help="use the default of every parameter not given with --value")
        p.set_defaults(run=cmd_new if command == "new" else cmd_add)

    templates = sub.add_parser("templates", help="list the templates of `host new`/`host add`")
    templates.set_defaults(run=lambda _args: _usage(templates))
    templates_sub = templates.add_subparsers(metavar="COMMAND")
    listing = templates_sub.add_parser("list", help="print each template's id and description")
    listing.set_defaults(run=cmd_templates_list)


def cmd_up(args: argparse.Namespace) -> int:
    config = Config.load("up", vars(args), os.environ)
    logs.configure(config.log_format, config.quiet)
    return serve(config)


def cmd_run_bundle(args: argparse.Namespace) -> int:
    found = bundle.read_bundle(Path(args.bundle))
    manifest = load_manifest(found.manifest)
    bundle.enter(found, list(manifest.variables))
    config = Config.load("run-bundle", vars(args), os.environ, defaults=bundle.defaults(found))
    logs.configure(config.log_format, config.quiet)
    return serve(config)


def cmd_build(args: argparse.Namespace) -> int:
    manifest = load_manifest(args.source)
    config = _up_config(args, manifest.path) if args.up else None  # bad flags: before building
    build_app(manifest, args.component_id)
    if config is None:
        return EXIT_OK
    logs.configure(config.log_format, config.quiet)
    return serve(config)


def cmd_watch(args: argparse.Namespace) -> int:
    flags = {k: v for k, v in vars(args).items()
             if k not in ("clear", "debounce", "skip_build", "run", "parser")}
    config = Config.load("up", flags, os.environ)
    if config.workers > 1:
        args.parser.error(f"--workers {config.workers}: host watch serves with one process "
                          "(a reload swaps components inside it); serve with several "
                          "through host up --workers N")
    if args.debounce < 0:
        args.parser.error(f"-d/--debounce {args.debounce}: give milliseconds, 0 or more")
    logs.configure(config.log_format, config.quiet)
    return watch(config, WatchOptions(debounce_ms=args.debounce, skip_build=args.skip_build,
                                      clear=args.clear))


def _up_config(args: argparse.Namespace, manifest_path: Path) -> Config:
    """`host build -u`'s trailing `host up` flags."""
    up = argparse.ArgumentParser(prog="host build -u", description="host up's flags")
    add_options(up, "up")
    flags = vars(up.parse_args(getattr(args, "up_args", [])))
    if flags.get("source") is not None:
        up.error("give the app with host build's own -f/--from")
    return Config.load("up", {**flags, "source": str(manifest_path)}, os.environ)


def cmd_check(args: argparse.Namespace) -> int:
    # One instance per component proves it instantiates; more would prove nothing.
    config = Config.load("check", vars(args), os.environ, defaults={"pool_size": 1})
    manifest = load_manifest(config.source)
    print_warnings(manifest)
    engine = Engine(config.cache_dir)
    # Settings of a check: capabilities validate, and create or connect to nothing.
    settings = config.app_settings(
        manifest, load_runtime_config_file(config.runtime_config_file))
    app = load_app(manifest, engine, settings, report=print)
    try:
        print(f"{manifest.path}: OK")
        print("Routes (in precedence order):")
        print("\n".join(route_lines(app.manifest, app.router, "")))
        if app.subscriptions:
            print("Redis channels (not connected to by check):")
            print("\n".join(f"  {s.shown}/{channel}: [{','.join(ids)}]"
                             for s in app.subscriptions for channel, ids in s.channels.items()))
    finally:
        app.close()
    return EXIT_OK


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def cmd_new(args: argparse.Namespace) -> int:
    ask = new.terminal_prompt(args.accept_defaults)
    directory = new.new_app(args.template, args.name, args.output, args.value, ask)
    print(f"Created {directory} from template {args.template}")
    new.print_next_steps(directory)
    return EXIT_OK


def cmd_add(args: argparse.Namespace) -> int:
    ask = new.terminal_prompt(args.accept_defaults)
    manifest, directory = new.add_component(args.template, args.name, args.source,
                                            args.output, args.value, ask)
    print(f"Added {directory} from template {args.template} to {manifest}")
    return EXIT_OK


def cmd_templates_list(args: argparse.Namespace) -> int:
    print("\n".join(new.describe_templates()))
    return EXIT_OK

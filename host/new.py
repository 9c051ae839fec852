"""`host new`, `host add` and `host templates list`: apps and components from templates.

A template is a directory of `host/templates_data/` (directories starting with `_`
hold files shared by several templates):

    template.toml         description, [parameters], optional include = ["_dir"], host_wit
    content/              the files of a new app, spin.toml included
    snippets/component.toml
                          what `host add` appends to an existing spin.toml

Files are rendered with Spin's placeholders: `{{ name }}`, `{{ name | kebab_case }}`,
`{{ name | snake_case }}`. The values are `project-name` (NAME), `output-path` (the
component's directory relative to the manifest, for `host add`) and each parameter.
Values are escaped as the inside of a double-quoted TOML/JSON string, which is
where every placeholder sits. A file named `gitignore` is written as `.gitignore`
(a real one would apply to this repository). `host_wit = true` copies the host's
WIT (wit/*.wit, wit/deps) into the app's `wit/`.

(`host/templates.py` is something else: the `{{ variable }}` expressions of a
manifest's component variables.)
"""

from __future__ import annotations

import json
import os
import re
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from host.errors import ManifestError, TemplateError
from host.manifest import Manifest, find_manifest, id_error, load_manifest, parse_manifest
from host.routing import based_route, parse_route

TEMPLATES_DIR = Path(__file__).parent / "templates_data"
HOST_WIT_DIR = Path(__file__).resolve().parent.parent / "wit"

# Spin's rule for a new app's or component's name.
NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*\Z")
_PLACEHOLDER = re.compile(r"\{\{\s*([a-z][a-z0-9-]*)\s*(?:\|\s*([a-z_]+)\s*)?\}\}")
_WORD = re.compile(r"[A-Z]+[0-9]*(?![a-z])|[A-Z]?[a-z0-9]+|[0-9]+")
_SKIP_NAMES = {"__pycache__", ".DS_Store"}

Prompt = Callable[[str], str]  # asks a person: prompt text -> answer


@dataclass(frozen=True)
class Parameter:
    name: str
    prompt: str
    default: str
    pattern: str | None = None

    def check(self, value: str) -> str | None:
        """Why `value` is refused, or None."""
        if self.pattern is not None and not re.search(self.pattern, value):
            return f"{self.name} \"{value}\" does not match {self.pattern}"
        return None


@dataclass(frozen=True)
class Template:
    id: str
    description: str
    parameters: tuple[Parameter, ...]
    dir: Path
    include: tuple[str, ...] = ()
    host_wit: bool = False

    def files(self) -> dict[str, bytes]:
        """The content files, relative path -> raw bytes, includes first."""
        found: dict[str, bytes] = {}
        for root in [*(TEMPLATES_DIR / name for name in self.include), self.dir / "content"]:
            found.update(_read_tree(root))
        return found

    def snippet(self) -> str:
        return (self.dir / "snippets" / "component.toml").read_text(encoding="utf-8")


# ---------------------------------------------------------------------------
# The catalogue


def list_templates() -> list[Template]:
    return [_load_template(d) for d in sorted(TEMPLATES_DIR.iterdir())
            if d.is_dir() and not d.name.startswith("_") and (d / "template.toml").is_file()]


def get_template(template_id: str) -> Template:
    templates = {t.id: t for t in list_templates()}
    if template_id not in templates:
        raise TemplateError(
            f"no template named \"{template_id}\" (templates: {', '.join(templates)}; "
            "`host templates list` describes them)", exit_code=2)
    return templates[template_id]


def _load_template(path: Path) -> Template:
    data = tomllib.loads((path / "template.toml").read_text(encoding="utf-8"))
    params = tuple(
        Parameter(name, str(spec.get("prompt", name)), str(spec.get("default", "")),
                  spec.get("pattern"))
        for name, spec in data.get("parameters", {}).items())
    return Template(path.name, str(data["description"]), params, path,
                    tuple(data.get("include", ())), bool(data.get("host_wit", False)))


def describe_templates() -> list[str]:
    templates = list_templates()
    width = max(len(t.id) for t in templates)
    return [f"{'ID':<{width}}  DESCRIPTION",
            *(f"{t.id:<{width}}  {t.description}" for t in templates)]


# ---------------------------------------------------------------------------
# Names, values and prompts


def kebab_case(text: str) -> str:
    return "-".join(w.lower() for w in _WORD.findall(text))


def snake_case(text: str) -> str:
    return "_".join(w.lower() for w in _WORD.findall(text))


def check_name(name: str) -> str:
    """NAME's component id (its kebab case), or a TemplateError saying what is wrong."""
    if not NAME_RE.match(name):
        raise TemplateError(
            f"invalid name \"{name}\": a name starts with a letter and holds only letters, "
            "digits, '-' and '_'", exit_code=2)
    component_id = kebab_case(name)
    why = id_error(component_id, "-", lower_only=True)
    if why:
        raise TemplateError(
            f"invalid name \"{name}\": its component id \"{component_id}\" is not a valid "
            f"Spin id ({why})", exit_code=2)
    return component_id


def parse_values(pairs: Sequence[str], template: Template) -> dict[str, str]:
    """`--value key=value` flags -> {key: value}, each checked against its parameter."""
    params = {p.name: p for p in template.parameters}
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise TemplateError(f"invalid --value \"{pair}\": expected KEY=VALUE", exit_code=2)
        if key not in params:
            raise TemplateError(
                f"invalid --value \"{pair}\": template {template.id} has no parameter "
                f"\"{key}\" (parameters: {', '.join(params)})", exit_code=2)
        why = params[key].check(value)
        if why:
            raise TemplateError(f"invalid --value \"{pair}\": {why}", exit_code=2)
        values[key] = value
    return values


def resolve_values(template: Template, given: Mapping[str, str], ask: Prompt | None
                   ) -> dict[str, str]:
    """Every parameter's value: given, else asked (interactive), else its default."""
    values: dict[str, str] = {}
    for param in template.parameters:
        if param.name in given:
            values[param.name] = given[param.name]
        elif ask is None:
            values[param.name] = param.default
        else:
            values[param.name] = _ask_until_valid(param, ask)
    return values



def _ask_until_valid(param: Parameter, ask: Prompt) -> str:
    while True:
        shown = f" [{param.default}]" if param.default else ""
        try:
            answer = ask(f"{param.prompt}{shown}: ").strip()
        except EOFError:
            return param.default
        value = answer or param.default
        why = param.check(value)
        if why is None:
            return value
        print(why, file=sys.stderr)


def terminal_prompt(accept_defaults: bool) -> Prompt | None:
    """`input` when a person can answer (stdin is a terminal), else None: use defaults."""
    if accept_defaults or not sys.stdin.isatty():
        return None
    return input


# ---------------------------------------------------------------------------
# Rendering


def render(text: str, values: Mapping[str, str], where: str) -> str:
    def substitute(found: re.Match[str]) -> str:
        name, fltr = found.group(1), found.group(2)
        if name not in values:
            raise TemplateError(f"{where}: unknown placeholder \"{name}\" (a template bug)")
        value = values[name]
        if fltr == "kebab_case":
            value = kebab_case(value)
        elif fltr == "snake_case":
            value = snake_case(value)
        elif fltr is not None:
            raise TemplateError(f"{where}: unknown filter \"{fltr}\" (a template bug)")
        return json.dumps(value, ensure_ascii=False)[1:-1]
    return _PLACEHOLDER.sub(substitute, text)


def render_files(template: Template, values: Mapping[str, str], skip: Iterable[str] = ()
                 ) -> dict[str, bytes]:
    skipped = set(skip)
    rendered: dict[str, bytes] = {}
    for rel, raw in template.files().items():
        if rel in skipped:
            continue
        text = render(raw.decode("utf-8"), values, f"template {template.id}: {rel}")
        out = "/".join(".gitignore" if part == "gitignore" else part for part in rel.split("/"))
        rendered[out] = text.encode("utf-8")
    if template.host_wit:
        if not (HOST_WIT_DIR / "platform.wit").is_file():
            raise TemplateError(
                f"template {template.id} needs the host's WIT, which is not installed at "
                f"{HOST_WIT_DIR} (install the host from its source tree)")
        for rel, raw in _read_tree(HOST_WIT_DIR).items():
            if rel.endswith(".wit"):
                rendered[f"wit/{rel}"] = raw
    return rendered


def _read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*"))
            if p.is_file() and not _SKIP_NAMES.intersection(p.relative_to(root).parts)}


def _check_empty(directory: Path, flag_hint: str) -> None:
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise TemplateError(
            f"{directory} already exists and is not empty; {flag_hint}")


def _write(directory: Path, files: Mapping[str, bytes]) -> None:
    try:
        for rel, data in files.items():
            path = directory / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    except OSError as exc:
        raise TemplateError(f"cannot write {directory}: {exc}") from None


# ---------------------------------------------------------------------------
# host new


def new_app(template_id: str, name: str, output: str | None, value_flags: Sequence[str],
            ask: Prompt | None) -> Path:
    """Write a new app from a template; return its directory."""
    template = get_template(template_id)
    check_name(name)
    given = parse_values(value_flags, template)
    directory = Path(output if output is not None else name)
    _check_empty(directory, "choose another NAME or --output DIR")
    values = {**resolve_values(template, given, ask), "project-name": name, "output-path": "."}
    if "http-path" in values:
        _check_route(values["http-path"], kebab_case(name))
    files = render_files(template, values)
    manifest_text = files["spin.toml"].decode("utf-8")
    try:
        parse_manifest(manifest_text, directory / "spin.toml")
    except ManifestError as exc:  # the values made an invalid manifest
        raise TemplateError(f"the generated spin.toml would not load: {exc}") from None
    _write(directory, files)
    return directory


# ---------------------------------------------------------------------------
# host add


def add_component(template_id: str, name: str, source: str | None, output: str | None,
                  value_flags: Sequence[str], ask: Prompt | None) -> tuple[Path, Path]:
    """Add a component + trigger to an existing spin.toml; return (manifest, component dir).

    The manifest's text is kept as it is: the snippet is appended, and the result
    must load before anything is written.
    """
    template = get_template(template_id)
    component_id = check_name(name)
    given = parse_values(value_flags, template)
    manifest_path = find_manifest(source)
    manifest = load_manifest(manifest_path)
    text = manifest_path.read_text(encoding="utf-8")
    if tomllib.loads(text).get("spin_manifest_version") != 2:
        raise TemplateError(f"{manifest_path}: `host add` needs spin_manifest_version = 2")
    if component_id in manifest.components:
        raise TemplateError(
            f"{manifest_path}: a component named \"{component_id}\" already exists; "
            "choose another NAME")
    app_dir = manifest.dir.resolve()
    directory = (Path(output) if output is not None else app_dir / name).resolve()
    if directory == app_dir or not directory.is_relative_to(app_dir):
        raise TemplateError(
            f"{directory}: a component's directory must be inside the app's directory "
            f"{app_dir}")
    _check_empty(directory, "choose another NAME or --output DIR")
    values = resolve_values(template, given, ask)
    _refuse_route_clash(manifest, values.get("http-path"), component_id)
    values = {**values, "project-name": name,
              "output-path": directory.relative_to(app_dir).as_posix()}
    snippet = render(template.snippet(), values, f"template {template.id}: snippet")
    new_text = text + ("" if text.endswith("\n") or not text else "\n") + "\n" + snippet
    try:
        parse_manifest(new_text, manifest_path)
    except ManifestError as exc:
        raise TemplateError(
            f"{manifest_path}: adding {component_id} would make it invalid: {exc}") from None
    _write(directory, render_files(template, values, skip=["spin.toml"]))
    try:
        manifest_path.write_text(new_text, encoding="utf-8")
    except OSError as exc:
        raise TemplateError(f"cannot write {manifest_path}: {exc}") from None
    return manifest_path, directory


def _route_key(raw: str, owner: str) -> tuple[tuple[int, str], ...]:
    # Routes that parse to the same segments match the same requests (`/a` and `/a/`,
    # `/...` and `/*`, `/:x` and `/:y`): Spin would serve only one of them.
    return tuple((s.kind.value, s.text if s.kind.name == "LITERAL" else "")
                 for s in parse_route(based_route(raw), owner))


def _check_route(route: str, component_id: str) -> tuple[tuple[int, str], ...]:
    try:
        return _route_key(route, component_id)
    except ManifestError as exc:
        raise TemplateError(f"invalid http-path \"{route}\": {exc}", exit_code=2) from None


def _refuse_route_clash(manifest: Manifest, route: str | None, component_id: str) -> None:
    if route is None:
        return
    key = _check_route(route, component_id)
    for trigger in manifest.triggers:
        if trigger.route is not None and _route_key(trigger.route, trigger.id) == key:
            owner = trigger.component or trigger.id
            raise TemplateError(
                f"{manifest.path}: route \"{route}\" is already served by {owner} "
                f"(route \"{trigger.route}\"); choose another with "
                f"--value http-path=/{component_id}/...")


def print_next_steps(directory: Path) -> None:
    shown = os.path.relpath(directory)
    print(f"Next: cd {shown} && host build && host up")

"""host/errors.py: the tree in the module docstring is the class hierarchy, and every
exception the host raises across module boundaries is in it."""

from __future__ import annotations

import re
from pathlib import Path

import host.errors

ROOT = Path(__file__).resolve().parent.parent


def _documented_tree() -> dict[str, str | None]:
    """Class name -> documented parent (None for a root), from the docstring."""
    tree: dict[str, str | None] = {}
    parents: list[str] = []  # the open branch: parents[depth] is a class at that depth
    for line in (host.errors.__doc__ or "").splitlines():
        child = re.match(r"[ |]*\+-- (\w+)", line)
        root = re.match(r"([A-Z]\w+) ", line)
        if child:
            depth = line.index("+--") // 5 + 1  # " +-- " at column 1, 6, 11...
            del parents[depth:]
            tree[child.group(1)] = parents[depth - 1]
            parents.append(child.group(1))
        elif root and root.group(1).endswith(("Error", "Timeout")):
            parents = [root.group(1)]
            tree[root.group(1)] = None
    return tree


def test_the_docstring_tree_is_the_class_hierarchy() -> None:
    tree = _documented_tree()
    defined = {name for name, value in vars(host.errors).items()
               if isinstance(value, type) and issubclass(value, Exception)}
    assert set(tree) == defined
    for name, parent in tree.items():
        cls = getattr(host.errors, name)
        if parent is None:
            assert not any(base.__name__ in tree for base in cls.__mro__[1:]), name
        else:
            assert cls.__bases__ == (getattr(host.errors, parent),), name


def test_tree_exceptions_are_defined_only_in_host_errors() -> None:
    names = set(_documented_tree())
    elsewhere = [f"{path.relative_to(ROOT)}: {match}"
                 for path in sorted((ROOT / "host").rglob("*.py")) if path.name != "errors.py"
                 for match in re.findall(r"^class (\w+)\(", path.read_text(), re.M)
                 if match in names]
    assert not elsewhere, elsewhere
